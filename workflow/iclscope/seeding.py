"""Deterministic random generators derived from the config seed and names.

Every random draw in the pipeline goes through :func:`rng`, keyed by the global seed
plus the names of what is drawn (task, condition, repeat ...). Adding a condition
therefore never changes the draws of another one.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_int(key: object) -> int:
    """A 64-bit integer from ``str(key)`` that is the same on every machine and run."""
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def rng(seed: int, *keys: object) -> np.random.Generator:
    """A NumPy generator seeded by ``seed`` and the stable hashes of ``keys``."""
    return np.random.default_rng([int(seed), *(stable_int(k) for k in keys)])
