"""Progress of the long steps (extraction, generation, preparation, bootstraps) with rate and ETA.

On a terminal a live tqdm bar; in a Snakemake job's log (stderr is a file) the same bar
rewritten at most every :data:`LOG_INTERVAL` seconds, so logs stay short. Quiet when the
command runs with ``-q``, when ``ICLSCOPE_PROGRESS=0``, and under pytest.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_INTERVAL = 30.0  # seconds between updates when stderr is not a terminal


def enabled() -> bool:
    """Whether progress bars show: not in tests, not asked off, not with ``-q``."""
    if os.environ.get("ICLSCOPE_PROGRESS", "1") == "0" or "PYTEST_CURRENT_TEST" in os.environ:
        return False
    return logging.getLogger("iclscope").getEffectiveLevel() <= logging.INFO


def bar(total: int | None, desc: str, unit: str = "it", file: IO[str] | None = None,
        force: bool | None = None, **kwargs: Any) -> tqdm:
    """A progress bar of ``total`` ``unit`` s (update it by hand, e.g. by tokens per batch).

    ``force`` overrides :func:`enabled` (tests of the bar itself)."""
    stream = file if file is not None else sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    show = enabled() if force is None else force
    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not show, dynamic_ncols=tty,
                mininterval=0.1 if tty else LOG_INTERVAL, unit_scale=unit != "it", leave=True, **kwargs)


def track(iterable: Iterable[T], total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> Iterator[T]:
    """``iterable`` with a progress bar (see :func:`bar`)."""
    with bar(total, desc, unit, **kwargs) as progress:
        for item in iterable:
            yield item
            progress.update(1)
