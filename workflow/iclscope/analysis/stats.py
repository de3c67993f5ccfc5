"""Shared statistics: percentile bootstrap confidence intervals, seeded."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from iclscope.analysis.defaults import LEVEL, N_BOOT


class Interval(NamedTuple):
    """A point estimate with a confidence interval."""

    mean: float
    low: float
    high: float


def tail_quantiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """The ``alpha`` and ``1 - alpha`` quantiles of ``values``: a percentile interval's ends."""
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def percentile_ends(values: np.ndarray, level: float) -> tuple[float, float]:
    """The ends of the central ``level`` percentile interval of ``values``."""
    return tail_quantiles(values, (1.0 - level) / 2.0)


def bootstrap_ci(
    values: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
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
    return Interval(point, *percentile_ends(boots, level))


def bootstrap_ci_columns(
    matrix: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT, level: float = LEVEL
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
    n_boot: int = N_BOOT,
    level: float = LEVEL,
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
    per_unit = paired_unit_means(a, b)
    per_unit = per_unit[~np.isnan(per_unit)]
    return bootstrap_ci(per_unit, rng, n_boot=n_boot, level=level), int(len(per_unit))


def paired_unit_means(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each unit's (row's) mean of ``a - b`` over the cells present on both sides; NaN for
    a unit with no such cell. ``a``, ``b``: aligned (n_units, n_columns)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    ok = ~np.isnan(diff)
    counts = ok.sum(axis=1)
    return np.where(counts > 0, np.where(ok, diff, 0.0).sum(axis=1) / np.maximum(counts, 1), np.nan)


class ControlVariate(NamedTuple):
    """A cross-fitted control-variate adjustment of per-unit values (see
    :func:`cross_fitted_control_variate`)."""

    adjusted: np.ndarray  # (n,): y - beta_(-fold) * c per unit
    beta: float  # the coefficient estimated on all units (for reading; not the one applied)
    variance_ratio: float  # var(adjusted) / var(y), measured


# fewest units a control-variate coefficient is estimated from (two folds of two)
MIN_CONTROL_UNITS = 4


def cross_fitted_control_variate(y: np.ndarray, c: np.ndarray, folds: int = 5) -> ControlVariate:
    """Per-unit values ``y`` adjusted by a control ``c`` of known mean zero:
    ``y - beta * c`` with ``beta = cov(y, c) / var(c)``, the coefficient that minimises the
    adjusted variance (to ``var(y) (1 - corr(y, c)^2)``).

    ``beta`` is cross-fitted: units are dealt into ``min(folds, n // 2)`` folds in order
    (unit i to fold i mod k) and each fold is adjusted with the beta estimated on the
    others, so no unit's own noise enters its coefficient and the adjusted mean stays
    unbiased for E[y] (a beta fitted on the same units is biased toward the sample's own
    ``c``). A fixed beta of 1 only helps when 2 cov(y, c) > var(c); the fitted one never
    hurts but for its estimation noise (order 1/n). A control without variance gives
    beta 0. Fewer than :data:`MIN_CONTROL_UNITS` units: everything NaN.
    """
    y = np.asarray(y, dtype=float)
    c = np.asarray(c, dtype=float)
    if y.shape != c.shape or y.ndim != 1:
        raise ValueError(f"y, c: expected two 1-D arrays of one length, got {y.shape} and {c.shape}")
    if np.isnan(y).any() or np.isnan(c).any():
        raise ValueError("y, c: NaN values (drop units missing on either side first)")
    n = len(y)
    if n < MIN_CONTROL_UNITS:
        return ControlVariate(np.full(n, np.nan), float("nan"), float("nan"))
    k = max(2, min(int(folds), n // 2))
    fold = np.arange(n) % k

    def beta_of(mask: np.ndarray) -> float:
        var = float(np.var(c[mask], ddof=1))
        return float(np.cov(y[mask], c[mask], ddof=1)[0, 1] / var) if var > 0 else 0.0

    adjusted = np.empty(n)
    for f in range(k):
        held = fold == f
        adjusted[held] = y[held] - beta_of(~held) * c[held]
    var_y = float(np.var(y, ddof=1))
    ratio = float(np.var(adjusted, ddof=1) / var_y) if var_y > 0 else float("nan")
    return ControlVariate(adjusted, beta_of(np.ones(n, dtype=bool)), ratio)
