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
