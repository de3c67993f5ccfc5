"""Intervals that resample the experimental units: distinct prompts, prompt pairs, the
variants within each condition, or the conditions of a correlation.

Study B's designs share prompts between rows (every regression condition reads the same
zero-shot prompt of a variant) and average neighbouring layers, which are strongly
correlated; an interval over rows or layers would treat both as independent samples. Each
function here resamples what was drawn independently and recomputes the whole statistic,
band averages included, in every resample.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from iclscope.analysis.attention_ratio import _rowwise_pearson
from iclscope.analysis.defaults import CORRELATION, LEVEL, N_BOOT
from iclscope.analysis.stats import Interval, percentile_ends


def percentile_interval(point: float, boots: np.ndarray, level: float) -> Interval:
    """``point`` with the percentile interval of the finite ``boots`` (NaN without any)."""
    boots = np.asarray(boots, dtype=float)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0 or not np.isfinite(point):
        return Interval(float(point), float("nan"), float("nan"))
    return Interval(float(point), *percentile_ends(boots, level))


def normal_interval(point: float, boots: np.ndarray, level: float) -> Interval:
    """``point`` plus or minus the normal quantile times the standard deviation of the finite
    ``boots`` (the bootstrap standard error). For statistics of resampled means whose bootstrap
    distribution is shifted away from the estimate (a resample's duplicates make condition means
    noisier and RSA alignment smaller), where a percentile interval may not even contain it."""
    from scipy.stats import norm

    boots = np.asarray(boots, dtype=float)
    boots = boots[np.isfinite(boots)]
    if boots.size < 2 or not np.isfinite(point):
        return Interval(float(point), float("nan"), float("nan"))
    half = float(norm.ppf(0.5 + level / 2)) * float(boots.std(ddof=1))
    return Interval(float(point), float(point) - half, float(point) + half)


def distinct_values(values: np.ndarray, units: Sequence[Hashable]) -> np.ndarray:
    """One value per distinct unit, the mean of its rows, in order of first appearance.

    Rows that share a unit are one observation: e.g. regression's zero-shot prompt is one
    prompt, read once by the model, even though each condition scores its answer against its
    own target. NaN rows are left out of their unit's mean (a unit of only NaN gives NaN).
    """
    values = np.asarray(values, dtype=float)
    codes, uniques = pd.factorize(pd.Series(list(units), dtype=object), sort=False)
    ok = ~np.isnan(values)
    sums = np.bincount(codes[ok], weights=values[ok], minlength=len(uniques))
    counts = np.bincount(codes[ok], minlength=len(uniques))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


class Difference(NamedTuple):
    """An after - before difference with its interval and what was resampled."""

    interval: Interval
    n_units: int
    units: str


def difference_ci(
    before: Sequence[float],
    before_units: Sequence[Hashable],
    after: Sequence[float],
    after_units: Sequence[Hashable],
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
) -> Difference:
    """Mean change from ``before`` to ``after`` over pairs, with a percentile bootstrap over
    independent clusters of pairs.

    Row i of ``before`` and row i of ``after`` belong to one pair (e.g. one condition and
    variant, before and after ICL); ``*_units`` name the distinct prompt of each row. Pairs
    that share a prompt on either side are one cluster (regression's zero-shot prompt of a
    variant is shared by every condition: 4 clusters of 12 pairs, not 48 independent pairs),
    and clusters are resampled whole, keeping the pairing; repeated rows of one pair count
    once. With no prompt shared, the clusters are the pairs. NaN rows are dropped first.
    """
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    pairs = pd.DataFrame({"b": [u for u, k in zip(before_units, keep) if k],
                          "a": [u for u, k in zip(after_units, keep) if k], "d": (a - b)[keep]})
    pairs = pairs.groupby(["b", "a"], sort=False)["d"].mean().reset_index()  # a pair written twice is one
    cluster = _clusters(pairs["b"].tolist(), pairs["a"].tolist())
    n = int(cluster.max()) + 1 if len(cluster) else 0
    point = float(pairs["d"].mean()) if len(pairs) else float("nan")
    units = "prompt pairs" if n == len(pairs) else f"clusters of prompt pairs sharing a prompt ({len(pairs)} pairs)"
    if n < 2:
        return Difference(Interval(point, float("nan"), float("nan")), n, units)
    sums = np.bincount(cluster, weights=pairs["d"].to_numpy(), minlength=n)
    sizes = np.bincount(cluster, minlength=n).astype(float)
    draws = rng.integers(0, n, size=(n_boot, n))
    boots = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    return Difference(percentile_interval(point, boots, level), n, units)


def _clusters(left: Sequence[Hashable], right: Sequence[Hashable]) -> np.ndarray:
    """Connected components of pairs linked by a shared left or right unit (union-find);
    component ids in order of first appearance."""
    parent = list(range(len(left)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[int, Hashable], int] = {}
    for i, (x, y) in enumerate(zip(left, right)):
        for key in ((0, x), (1, y)):
            if key in first:
                parent[find(i)] = find(first[key])
            else:
                first[key] = i
    roots = [find(i) for i in range(len(left))]
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(r, len(ids)) for r in roots], dtype=int)


def stratified_draws(rng: np.random.Generator, sizes: Sequence[int], n_boot: int, joint: bool = False) -> np.ndarray:
    """Bootstrap draws within strata of equal size: (n_boot, n_strata, size) indices, each
    stratum's units resampled with replacement among its own (every stratum stays present,
    e.g. the variants of each condition, so every condition mean exists in every resample).
    ``joint``: one draw shared by every stratum, for units the design pairs across strata
    (regression's variants: the same query x in every condition)."""
    sizes = list(sizes)
    if len(set(sizes)) != 1:
        raise ValueError(f"strata of unequal sizes {sorted(set(sizes))}: draws need one size")
    if joint:
        one = rng.integers(0, sizes[0], size=(n_boot, 1, sizes[0]))
        return np.repeat(one, len(sizes), axis=1)
    return rng.integers(0, sizes[0], size=(n_boot, len(sizes), sizes[0]))


def band_correlation_ci(
    delta_measure: np.ndarray,
    delta_behaviour: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    method: str = CORRELATION,
    level: float = LEVEL,
) -> tuple[Interval, int]:
    """Mean over a band's layers of the correlation across conditions of two changes, with
    a bootstrap over conditions that recomputes every layer's correlation and their mean.

    ``delta_measure``: (n_layers, n_cond) per-layer changes; ``delta_behaviour``: (n_cond,).
    Conditions with a NaN anywhere are dropped. Returns (interval, n_conditions); NaN with
    fewer than 3 conditions.
    """
    from scipy.stats import rankdata

    x = np.asarray(delta_measure, dtype=float)
    y = np.asarray(delta_behaviour, dtype=float)
    keep = ~(np.isnan(x).any(axis=0) | np.isnan(y))
    x, y = x[:, keep], y[keep]
    n = int(keep.sum())
    if n < 3:
        return Interval(float("nan"), float("nan"), float("nan")), n

    def band_mean(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        # xs: (..., n_layers, n), ys: (..., n) -> mean over layers of the row correlations
        if method == "spearman":
            xs, ys = rankdata(xs, axis=-1), rankdata(ys, axis=-1)
        r = _rowwise_pearson(xs, np.broadcast_to(ys[..., None, :], xs.shape))
        # an all-NaN resample ("mean of empty slice") is dropped by percentile_interval
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(r, axis=-1)

    point = float(band_mean(x, y))
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = band_mean(x[:, idx].transpose(1, 0, 2), y[idx])
    return percentile_interval(point, boots, level), n
