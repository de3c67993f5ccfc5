"""Attention ratio (B6) and representation-behaviour correlation (B7) for study B.

The attention ratio of a prompt is the attention mass from the query position (where the answer
is produced) to the relevant span, divided by the mass to the distractor span; each mass is the
sum of the query row's attention weights over the span's tokens. B7 correlates, across conditions,
the change after ICL in such a measure (or in RSA alignment) with the change in behavioural error.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.stats import rankdata

from iclscope.analysis.defaults import CORRELATION, LEVEL, N_BOOT
from iclscope.analysis.stats import Interval, bootstrap_ci, percentile_ends


def attention_ratio(
    mass_relevant: np.ndarray | float, mass_distractor: np.ndarray | float, eps: float = 1e-12
) -> np.ndarray:
    """Elementwise ``mass_relevant / max(mass_distractor, eps)``.

    Inputs: attention masses (non-negative) of any broadcastable shapes, e.g. (n_prompts,),
    (n_prompts, n_layers) or (n_prompts, n_layers, n_heads) for per-head ratios. For a head
    average, either pass masses already averaged over heads (ratio of mean masses) or average the
    per-head ratios afterwards (mean of ratios); this function does not choose. ``eps`` only
    guards against a distractor span receiving no attention at all. Returns the broadcast shape.
    """
    rel = np.asarray(mass_relevant, dtype=float)
    dis = np.asarray(mass_distractor, dtype=float)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if np.any(rel < 0) or np.any(dis < 0):
        raise ValueError(
            f"attention masses must be non-negative; min relevant {np.nanmin(rel)}, "
            f"min distractor {np.nanmin(dis)}"
        )
    return rel / np.maximum(dis, eps)


def ratio_summary(
    ratios: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    log_ratio: bool = False,
    level: float = LEVEL,
) -> Interval:
    """Mean over prompts of the attention ratios with a percentile bootstrap CI over prompts.

    ``ratios``: (n_prompts,); NaNs are dropped. With ``log_ratio`` the summary is the mean of
    ``log(ratio)`` (CI on the log scale; ``exp`` gives the geometric mean): ratios are skewed and
    a relevant/distractor ratio of 2 and of 1/2 should cancel, which only the log scale does. The
    default is the plain mean ratio, the quantity B6 describes. Returns Interval(mean, low, high).
    """
    ratios = np.asarray(ratios, dtype=float)
    if ratios.ndim != 1:
        raise ValueError(f"ratios must be 1-D (n_prompts,), got shape {ratios.shape}")
    if log_ratio:
        finite = ratios[~np.isnan(ratios)]
        if np.any(finite <= 0):
            raise ValueError(f"log_ratio needs positive ratios, got minimum {finite.min()}")
        ratios = np.log(ratios)
    return bootstrap_ci(ratios, rng, n_boot=n_boot, level=level)


# Both masses are floored here before the log: a span with (numerically) no attention gives a
# log ratio of at most log(1 / MASS_FLOOR) ~ 27.6 instead of an infinity, and one such prompt
# moves a mean over n prompts by at most 27.6 / n on the log scale.
MASS_FLOOR = 1e-12


def log_attention_ratio(
    mass_relevant: np.ndarray | float, mass_distractor: np.ndarray | float, floor: float = MASS_FLOOR
) -> np.ndarray:
    """Elementwise ``log(max(mass_relevant, floor)) - log(max(mass_distractor, floor))``.

    Masses: non-negative, broadcastable (e.g. (n_prompts,) or (n_prompts, n_heads)). The log
    scale makes a relevant/distractor ratio of 2 and of 1/2 cancel and bounds what one
    near-zero denominator can contribute (see :data:`MASS_FLOOR`). Returns the broadcast shape.
    """
    if floor <= 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    rel = np.asarray(mass_relevant, dtype=float)
    dis = np.asarray(mass_distractor, dtype=float)
    if np.any(rel < 0) or np.any(dis < 0):
        raise ValueError(
            f"attention masses must be non-negative; min relevant {np.nanmin(rel)}, "
            f"min distractor {np.nanmin(dis)}"
        )
    return np.log(np.maximum(rel, floor)) - np.log(np.maximum(dis, floor))


def geometric_mean_ratio(
    log_ratios: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT, level: float = LEVEL
) -> tuple[Interval, Interval]:
    """Mean log ratio over prompts and the geometric-mean ratio, with percentile bootstrap CIs.

    ``log_ratios``: (n_prompts,) from :func:`log_attention_ratio`; NaNs are dropped. Prompts
    are resampled with replacement. Returns ``(log_scale, ratio_scale)``: the mean log ratio
    with its CI, and ``exp`` of all three (the geometric mean ratio and its CI; exp is monotone,
    so the percentile interval maps exactly). Unlike the arithmetic mean of per-prompt ratios,
    one prompt whose distractor gets almost no attention cannot dominate it.
    """
    log_ratios = np.asarray(log_ratios, dtype=float)
    if log_ratios.ndim != 1:
        raise ValueError(f"log_ratios must be 1-D (n_prompts,), got shape {log_ratios.shape}")
    if np.isinf(log_ratios).any():
        raise ValueError("log_ratios must be finite (floor the masses with log_attention_ratio)")
    logs = bootstrap_ci(log_ratios, rng, n_boot=n_boot, level=level)
    return logs, Interval(*(float(np.exp(v)) for v in logs))


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair of (m, n) arrays; NaN where a row is constant."""
    ac = a - a.mean(axis=-1, keepdims=True)
    bc = b - b.mean(axis=-1, keepdims=True)
    denom = np.sqrt((ac**2).sum(axis=-1) * (bc**2).sum(axis=-1))
    num = (ac * bc).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / denom
    # rounding can push |r| a hair over 1 and a constant row gives 0/0
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def change_correlation(
    delta_x: np.ndarray,
    delta_y: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    method: Literal["pearson", "spearman"] = CORRELATION,  # type: ignore[assignment]
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Correlation across conditions of two per-condition changes, with a bootstrap CI.

    ``delta_x``, ``delta_y``: (n_cond,), e.g. change in alignment or attention ratio and change in
    behavioural error after ICL. Pairs with a NaN are dropped. Conditions are resampled with
    replacement (pairs kept together); resamples where either side is constant are ignored.
    ``method``: "pearson" or "spearman" (Pearson of average ranks, re-ranked in every resample).
    Returns (r, low, high); all NaN with fewer than 3 pairs or a constant side.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    x = np.asarray(delta_x, dtype=float)
    y = np.asarray(delta_y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"delta_x and delta_y must be 1-D of equal length, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    nan3 = (float("nan"),) * 3
    if len(x) < 3:
        return nan3

    def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if method == "spearman":
            a, b = rankdata(a, axis=-1), rankdata(b, axis=-1)
        return _rowwise_pearson(a, b)

    r = float(corr(x[None, :], y[None, :])[0])
    if np.isnan(r):
        return nan3
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = corr(x[idx], y[idx])
    boots = boots[~np.isnan(boots)]
    if boots.size == 0:
        return r, float("nan"), float("nan")
    return (r, *percentile_ends(boots, level))
