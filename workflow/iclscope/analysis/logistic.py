"""The logistic in |x| fitted to a curve of study A and its bootstrap intervals (the ``lm``
row of the model selection, :func:`iclscope.analysis.model_selection.curve_selection`).

A curve (p(random) over |x|, or the p(random) implied by a continuation curve) is fitted by
a least-squares logistic (:func:`logistic_fit`); its midpoint is the transition |x|*, where
the fitted curve crosses 0.5 (:func:`transition_point` gives the first crossing of a raw
curve instead). :func:`logistic_bootstrap` adds percentile intervals over the curve's units
(or its residuals), expanded for few units (:func:`expanded_alpha`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from iclscope.analysis.defaults import LEVEL, N_BOOT
from iclscope.analysis.stats import tail_quantiles


def _as_lengths(lengths: np.ndarray) -> np.ndarray:
    x = np.asarray(lengths, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"lengths must be a non-empty 1-D array, got shape {x.shape}")
    if not np.isfinite(x).all() or (x < 0).any():
        raise ValueError(f"lengths must be finite and >= 0, got min {np.nanmin(x)}")
    return x


def _as_curve(lengths: np.ndarray, values: np.ndarray, name: str, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(lengths, values)``: equal 1-D shapes; ``values`` finite unless ``finite=False``."""
    x = _as_lengths(lengths)
    y = np.asarray(values, dtype=float)
    if y.shape != x.shape:
        raise ValueError(f"{name} shape {y.shape} does not match lengths shape {x.shape}")
    if finite and not np.isfinite(y).all():
        raise ValueError(f"{name} contains non-finite values")
    return x, y


def transition_point(lengths: np.ndarray, curve: np.ndarray, level: float = 0.5) -> float:
    """First |x| where ``curve`` reaches or crosses ``level``, linearly interpolated; NaN if never.

    ``lengths`` (m,) strictly increasing, ``curve`` (m,). A point exactly at ``level`` counts;
    otherwise the first pair (i, i+1) with values on opposite sides gives
    x_i + (level - c_i) * (x_{i+1} - x_i) / (c_{i+1} - c_i). Non-finite values never cross.
    """
    x, c = _as_curve(lengths, curve, "curve", finite=False)  # non-finite values never cross
    if (np.diff(x) <= 0).any():
        raise ValueError("lengths must be strictly increasing")
    d = c - level
    for i in range(len(x)):
        if d[i] == 0:
            return float(x[i])
        if i + 1 < len(x) and d[i] * d[i + 1] < 0:
            return float(x[i] + (level - c[i]) * (x[i + 1] - x[i]) / (c[i + 1] - c[i]))
    return float("nan")


def _logistic(x: np.ndarray, midpoint: float, slope: float, sign: float) -> np.ndarray:
    return expit(sign * slope * (x - midpoint))


class LogisticFit(NamedTuple):
    """A least-squares logistic (see :func:`logistic_fit`)."""

    midpoint: float
    slope: float
    # which of the optimiser's bounds the fit rests on: None, "midpoint" (beyond the lengths
    # by a full span: the curve barely bends where observed), "slope_low" (flat) or
    # "slope_high" (a step sharper than the lengths resolve)
    bound: str | None
    midpoint_bounds: tuple[float, float]
    slope_bounds: tuple[float, float]


def logistic_fit(lengths: np.ndarray, curve: np.ndarray) -> LogisticFit:
    """Least-squares logistic in |x|, slope >= 0, and whether it rests on a bound.

    The direction comes from the sign of the least-squares line through (lengths, curve):
    a falling curve is fitted by 1 / (1 + exp(slope * (x - midpoint))), a rising one (or a flat
    one, sign 0 treated as rising) by 1 / (1 + exp(-slope * (x - midpoint))). The midpoint is
    bounded to one span of the lengths beyond either end, the slope to [1e-3 / span,
    50 / (smallest gap between lengths)]. A fit resting on a bound is not an estimate: the
    optimum lies beyond it, and its value only says where the search stopped.
    ``lengths`` (m,) with m >= 2 distinct values, ``curve`` (m,) finite.
    """
    x, y = _as_curve(lengths, curve, "curve")
    ux = np.unique(x)
    if ux.size < 2:
        raise ValueError(f"need at least 2 distinct lengths, got {ux.size}")
    trend = np.polyfit(x, y, 1)[0]
    sign = -1.0 if trend < 0 else 1.0
    span = float(ux[-1] - ux[0])
    log_s_lo = math.log(1e-3 / span)
    log_s_hi = math.log(50.0 / float(np.diff(ux).min()))

    # grid start: midpoints across the range, slopes log-spaced
    mids = np.linspace(ux[0], ux[-1], 41)
    log_ss = np.linspace(math.log(0.5 / span), log_s_hi, 25)
    pred = expit(sign * np.exp(log_ss)[None, :, None] * (x[None, None, :] - mids[:, None, None]))
    sse = np.sum((pred - y) ** 2, axis=-1)
    i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)

    res = least_squares(
        lambda p: _logistic(x, p[0], math.exp(p[1]), sign) - y,
        x0=[mids[i], log_ss[j]],
        bounds=([ux[0] - span, log_s_lo], [ux[-1] + span, log_s_hi]),
    )
    active = res.active_mask
    bound = ("midpoint" if active[0] != 0 else "slope_low" if active[1] < 0
             else "slope_high" if active[1] > 0 else None)
    if bound is None:
        # a step the lengths cannot resolve: the optimiser stops on a flat plateau below the
        # bound (the fit no longer improves), where the steepest slope fits at least as well
        sse_fit = float(np.sum(res.fun ** 2))
        sse_step = float(np.sum((_logistic(x, res.x[0], math.exp(log_s_hi), sign) - y) ** 2))
        if sse_step <= sse_fit * (1 + 1e-6) + 1e-12:
            bound = "slope_high"
    return LogisticFit(float(res.x[0]), float(math.exp(res.x[1])), bound,
                       (float(ux[0] - span), float(ux[-1] + span)), (math.exp(log_s_lo), math.exp(log_s_hi)))


def fit_logistic(lengths: np.ndarray, curve: np.ndarray) -> tuple[float, float]:
    """(midpoint, slope) of :func:`logistic_fit`, wherever the optimiser stopped."""
    fit = logistic_fit(lengths, curve)
    return fit.midpoint, fit.slope


def logistic_sign(lengths: np.ndarray, curve: np.ndarray) -> float:
    """Direction :func:`fit_logistic` uses: -1 for a falling least-squares trend, else +1."""
    x, y = _as_curve(lengths, curve, "curve")
    return -1.0 if np.polyfit(x, y, 1)[0] < 0 else 1.0


def logistic_curve(lengths: np.ndarray, curve: np.ndarray, midpoint: float, slope: float) -> np.ndarray:
    """The logistic of :func:`fit_logistic` (direction from ``curve``'s trend) at ``lengths``, shape (m,)."""
    x = _as_lengths(lengths)
    return _logistic(x, midpoint, slope, logistic_sign(x, curve))


def expanded_alpha(level: float, n_units: int) -> float:
    """The tail probability of the expanded percentile interval (Hesterberg 2015, "What
    teachers should know about the bootstrap"): the percentile interval of n resampled
    units is too narrow for small n (the bootstrap's spread is the plug-in one, and it
    ignores that the spread itself is estimated), so the tails are moved to where a normal
    quantile equals sqrt(n / (n - 1)) times Student's t with n - 1 degrees of freedom."""
    alpha = (1.0 - level) / 2.0
    if n_units < 2:
        return alpha
    from scipy.stats import norm, t

    return float(norm.cdf(-math.sqrt(n_units / (n_units - 1)) * t.ppf(1.0 - alpha, n_units - 1)))


def _quantiles(values: np.ndarray, level: float, n_units: int = 0) -> tuple[float, float]:
    """Percentile interval of ``values``; expanded for ``n_units`` resampled units."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    return tail_quantiles(values, expanded_alpha(level, n_units) if n_units else (1.0 - level) / 2.0)


# with n units there are C(2n - 1, n) distinct resamples: 3 for n = 2, 10 for n = 3
MIN_BOOT_UNITS = 3
# fewest units an interval is computed from: the caller's min_units (binary.analysis.min_units,
# default MIN_INTERVAL_UNITS of iclscope.analysis.defaults; why 8: see there)
CI_METHODS = ("units", "residuals", "none")
# replicate midpoints spread less than this fraction of the length range count as not varying
REPLICATE_TOLERANCE = 1e-6


def bootstrap_replicates(
    lengths: np.ndarray,
    curves_by_unit: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
) -> tuple[str, np.ndarray]:
    """Logistic fits ``(midpoint, slope)`` of ``n_boot`` bootstrap replicates of the unit-mean curve.

    ``curves_by_unit``: shape (n_units, m), one curve per unit (phase rotation, random-control
    sample) over ``lengths`` (m,), at least 2 distinct lengths. Returns ``(method, fits)`` with
    ``fits`` of shape (n_boot, 2):

    * ``"units"`` (n_units >= :data:`MIN_BOOT_UNITS`): units resampled with replacement, each
      replicate's mean curve fitted by :func:`fit_logistic`. A replicate depends only on the
      multiset of units drawn, so every distinct multiset is fitted once (identical to fitting
      every replicate).
    * ``"residuals"`` (fewer units, e.g. a judgment concept's single sequence per |x| or a
      period-2 concept's two rotations): the residuals of the logistic fitted to the mean curve
      are resampled over positions, added to the fitted curve and refitted.
    """
    x = _as_lengths(lengths)
    units = np.asarray(curves_by_unit, dtype=float)
    if units.ndim != 2 or units.shape[1] != x.size or units.shape[0] == 0:
        raise ValueError(f"curves_by_unit must have shape (n_units, {x.size}), got {units.shape}")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    n = units.shape[0]
    if n >= MIN_BOOT_UNITS:
        idx = rng.integers(0, n, size=(n_boot, n))
        distinct, inverse = np.unique(np.sort(idx, axis=1), axis=0, return_inverse=True)
        means = units[distinct].mean(axis=1)  # (n_distinct, m)
        fits = np.array([fit_logistic(x, m) for m in means])
        return "units", fits[np.asarray(inverse).reshape(-1)]
    y = units.mean(axis=0)
    fitted = logistic_curve(x, y, *fit_logistic(x, y))
    resid = y - fitted
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    return "residuals", np.array([fit_logistic(x, fitted + resid[i]) for i in idx])


def logistic_bootstrap(
    lengths: np.ndarray,
    curves_by_unit: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    min_units: int = 1,
) -> dict[str, float | str | None]:
    """|x|* on the fitted curve: logistic fit of the unit-mean curve with bootstrap intervals.

    The transition |x|* is the midpoint of the logistic fitted (:func:`fit_logistic`) to the
    mean over units of ``curves_by_unit`` (n_units, m), i.e. where the fitted curve crosses 0.5;
    unlike the first crossing of a raw curve it uses every point and cannot jump between
    chance crossings. Replicates come from :func:`bootstrap_replicates` (units or residuals).

    Returns a dict with ``midpoint``, ``slope`` (the fit), ``transition`` (= midpoint when it lies
    within [min(lengths), max(lengths)], else NaN: the fitted curve does not cross 0.5 where
    observed), ``ci_low``/``ci_high`` (percentile interval of the replicates' midpoints,
    expanded for the number of units resampled: :func:`expanded_alpha`),
    ``midpoint_low``/``midpoint_high`` (the same interval), ``slope_low``/``slope_high``,
    ``ci_method`` (``units``, ``residuals`` or ``none``) and ``ci_reason`` (None when the transition
    interval exists and the slope is estimated, else why not). A fit resting on the optimiser's
    midpoint bound or lower slope bound (:func:`logistic_fit`) reports nothing but the reason;
    one at the upper slope bound (a step) keeps its midpoint, not its slope. An interval is
    reported only when at least ``min_units`` units stand behind it (fewer: the fit alone, with
    the reason), contains its estimate and stays clear of the optimiser's bounds:
    the transition interval is NaN (with a reason) when there is no transition, when the
    replicates do not vary (spread below :data:`REPLICATE_TOLERANCE` of the length range), or when the estimate falls outside the percentile interval (a biased
    bootstrap); the slope interval is NaN when it does not contain the slope.
    """
    x = _as_lengths(lengths)
    units = np.atleast_2d(np.asarray(curves_by_unit, dtype=float))
    nan = float("nan")
    out: dict[str, float | str | None] = {
        "midpoint": nan, "slope": nan, "transition": nan, "ci_low": nan, "ci_high": nan,
        "midpoint_low": nan, "midpoint_high": nan, "slope_low": nan, "slope_high": nan,
        "ci_method": "none", "ci_reason": None,
    }
    if units.ndim != 2 or units.shape[1] != x.size or units.shape[0] == 0:
        raise ValueError(f"curves_by_unit must have shape (n_units, {x.size}), got {units.shape}")
    if np.unique(x).size < 2:
        out["ci_reason"] = f"fewer than 2 distinct lengths ({np.unique(x).size})"
        return out
    fit = logistic_fit(x, units.mean(axis=0))
    mid, slope = fit.midpoint, fit.slope
    lo_x, hi_x = float(x.min()), float(x.max())
    if fit.bound in ("midpoint", "slope_low"):
        # the optimum lies beyond the search's bounds: neither number is an estimate
        where = ("midpoint" if fit.bound == "midpoint" else "slope")
        out["ci_reason"] = (f"logistic fit rests on the optimiser's {where} bound (midpoint {mid:.3g}, slope "
                            f"{slope:.3g}; the curve barely bends within the lengths [{lo_x:g}, {hi_x:g}]): "
                            "neither midpoint nor slope is identified")
        return out
    out["midpoint"], out["slope"] = mid, slope
    inside = lo_x <= mid <= hi_x
    if inside:
        out["transition"] = mid
    if units.shape[0] < min_units:
        out["ci_reason"] = (f"{units.shape[0]} unit(s), fewer than the {min_units} an interval needs"
                            + ("" if inside else f"; fitted curve does not cross 0.5 within the lengths "
                               f"[{lo_x:g}, {hi_x:g}] (logistic midpoint {mid:.3g})"))
        if fit.bound == "slope_high":
            out["slope"] = float("nan")
            out["ci_reason"] += f"; slope at the optimiser's upper bound {slope:.3g} (a step): not estimated"
        return out
    method, fits = bootstrap_replicates(x, units, rng, n_boot)
    out["ci_method"] = method
    n_resampled = units.shape[0] if method == "units" else 0
    m_low, m_high = _quantiles(fits[:, 0], level, n_resampled)
    s_low, s_high = _quantiles(fits[:, 1], level, n_resampled)
    if fit.bound == "slope_high":  # a step: where it is is estimated, how sharp only bounded below
        out["slope"] = float("nan")
        slope_note = (f"; slope at the optimiser's upper bound {slope:.3g} (a step sharper than the lengths "
                      "resolve): not estimated")
    else:
        slope_note = ""
        # an interval reaching a bound is cut by the search, not by the data
        if s_low <= slope <= s_high and fit.slope_bounds[0] < s_low and s_high < fit.slope_bounds[1]:
            out["slope_low"], out["slope_high"] = s_low, s_high
    reaches = not (fit.midpoint_bounds[0] < m_low and m_high < fit.midpoint_bounds[1])
    if not inside:
        out["ci_reason"] = (f"fitted curve does not cross 0.5 within the lengths [{lo_x:g}, {hi_x:g}] "
                            f"(logistic midpoint {mid:.3g})")
    elif np.ptp(fits[:, 0]) <= REPLICATE_TOLERANCE * (hi_x - lo_x):
        out["ci_reason"] = f"bootstrap replicates ({method}) do not vary (a curve without noise)"
    elif not m_low <= mid <= m_high:
        out["ci_reason"] = (f"estimate {mid:.3g} outside the bootstrap percentile interval "
                            f"[{m_low:.3g}, {m_high:.3g}] ({method}; biased bootstrap)")
    elif reaches:
        out["ci_reason"] = (f"bootstrap percentile interval [{m_low:.3g}, {m_high:.3g}] reaches the optimiser's "
                            f"midpoint bound ({method}): open-ended")
    else:
        out["ci_low"], out["ci_high"] = m_low, m_high
        out["midpoint_low"], out["midpoint_high"] = m_low, m_high
    if slope_note:
        out["ci_reason"] = (out["ci_reason"] or "transition interval reported") + slope_note
    return out
