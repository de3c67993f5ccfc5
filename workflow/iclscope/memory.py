"""Large arrays without the kernel's page-compaction stalls.

numpy asks the kernel (``madvise``) for transparent huge pages for every large array. Where
the kernel's huge-page defrag setting is ``madvise`` (Linux's default), the first touch of
such an array may compact memory on the spot, and once a model's forwards have fragmented
memory that stalls: assembling the reading task's 178 MB embeddings table took 1.7-2.5 s
with it and 0.2-0.5 s without, the same bytes (SmolLM2, the 2-core development machine).
Every ``iclscope`` command turns it off, unless ``NUMPY_MADVISE_HUGEPAGE`` is set (numpy's
own switch, read when numpy is imported: the user's choice stands).
"""

from __future__ import annotations

import os

ENV = "NUMPY_MADVISE_HUGEPAGE"


def avoid_hugepage_stalls() -> bool:
    """Stop numpy asking for huge pages (where the user did not choose); returns whether it
    was turned off here."""
    if ENV in os.environ:
        return False
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return False
    _set_madvise_hugepage(False)
    return True
