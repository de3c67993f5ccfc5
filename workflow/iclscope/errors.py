"""User-facing errors that the CLI reports without a traceback.

Kept free of heavy imports (no torch), so analysis-only environments can load the CLI.
"""

from __future__ import annotations


class ModelError(RuntimeError):
    """A model cannot be found, prepared or loaded."""


class ExtractionError(ValueError):
    """A prompt cannot be extracted (too long, empty table, non-finite values ...)."""
