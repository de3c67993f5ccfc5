"""iclscope: look inside in-context learning of causal language models.

The package holds all logic of the pipeline; the Snakemake rules only call its CLI
(`iclscope ...`, see :mod:`iclscope.cli`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iclscope")
except PackageNotFoundError:  # imported from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
