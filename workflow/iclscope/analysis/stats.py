"""Shared statistics: percentile bootstrap confidence intervals, seeded."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Interval(NamedTuple):
    """A point estimate with a confidence interval."""

    mean: float
    low: float
    high: float


def bootstrap_ci(
    values: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 1000,
    level: float = 0.95,
    statistic=np.mean,
) -> Interval:
    """Percentile bootstrap CI of ``statistic`` over the first axis of ``values``.

    ``values``: shape (n,) or (n, ...); NaNs are dropped for 1-D input. With one value the
    interval collapses to it; with none every field is NaN.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[~np.isnan(values)]
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    point = float(statistic(values, axis=0))
    if n == 1:
        return Interval(point, point, point)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.asarray(statistic(values[idx], axis=1), dtype=float)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return Interval(point, float(low), float(high))


def bootstrap_ci_columns(
    matrix: np.ndarray, rng: np.random.Generator, n_boot: int = 1000, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile CI of every column of ``matrix`` (n_samples, n_columns).

    Rows are resampled jointly, so the columns' intervals come from the same draws
    (e.g. every in-context position of one repeat). NaNs are ignored per column.
    Returns (mean, low, high), each shape (n_columns,).
    """
    matrix = np.asarray(matrix, dtype=float)
    n = matrix.shape[0]
    mean = np.nanmean(matrix, axis=0) if n else np.full(matrix.shape[1], np.nan)
    if n < 2:
        return mean, mean.copy(), mean.copy()
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.nanmean(matrix[idx], axis=1)  # (n_boot, n_columns)
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(boots, [alpha, 1.0 - alpha], axis=0)
    return mean, low, high


def paired_pooled_ci(
    a: np.ndarray,
    b: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 1000,
    level: float = 0.95,
) -> tuple[Interval, int]:
    """Paired, pooled difference ``a - b`` with a percentile bootstrap CI over units.

    ``a``, ``b``: shape (n_units, n_columns), aligned: row u of both belongs to the same unit
    (e.g. one repeat, whose example draws every condition shares) and column j to the same
    cell (e.g. one in-context position). Each unit's effect is the mean over columns of
    ``a - b`` (cells NaN on either side skipped); units with no cell left are dropped. The
    estimate is the mean of the unit effects and the interval resamples units (pairs stay
    together, and the columns of one unit move together, since they are not independent).

    Returns (interval, n_units used). Draws come from :func:`bootstrap_ci`, so the same
    ``rng`` state gives the same interval.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a, b: expected two arrays of one shape (n_units, n_columns), got {a.shape} and {b.shape}")
    diff = a - b
    ok = ~np.isnan(diff)
    counts = ok.sum(axis=1)
    per_unit = np.where(counts > 0, np.where(ok, diff, 0.0).sum(axis=1) / np.maximum(counts, 1), np.nan)
    per_unit = per_unit[counts > 0]
    return bootstrap_ci(per_unit, rng, n_boot=n_boot, level=level), int(len(per_unit))
