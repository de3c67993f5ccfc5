"""Study C metrics: label relationships in in-context learning (Kossen, Gal & Rainforth, ICLR 2024).

Pure functions, arrays in and arrays (or tidy frames) out. The extraction step gives, for every
``answer_i`` position of one teacher-forced pass, the model's log-probability of each of the K
candidate label words (each the exact sum of its tokens' log-probs, or the first token only, as
recorded by the caller). From these:

* :func:`~iclscope.analysis.candidates.restricted_log_softmax` renormalises over the label set,
* :func:`position_metrics` scores each position against the true and the in-context class,
* :func:`position_curves` averages metrics over repeats per position with bootstrap intervals,
* :func:`label_mass` is the un-renormalised log-probability mass of the label words,
* :func:`paired_difference` compares two conditions at one position, paired by repeat,
* :func:`pooled_paired_difference` compares them pooled over a window of positions,
* :func:`adjusted_pooled_difference` adjusts a pooled effect by its content-free twins'
  difference, a control variate with a cross-fitted coefficient,
* :func:`summary_positions` / :func:`pooled_windows` name the positions summaries report,
* :func:`contextual_calibration` applies Zhao et al. (2021) with content-free inputs, and
  :func:`calibrated_logprobs` applies it position by position with each position's twin.

Class indices always refer to the label words *of the prompt at hand*, in class order: in an
arbitrary-label condition index i is the replacement word for class i, so "true class" means
"the word this prompt's verbalisation uses for the example's true class".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from iclscope.analysis.candidates import restricted_log_softmax
from iclscope.analysis.defaults import LEVEL, N_BOOT
from iclscope.contracts import CONTENT_FREE_SUFFIX
from iclscope.analysis.stats import (
    bootstrap_ci, bootstrap_ci_columns, cross_fitted_control_variate, paired_pooled_ci, paired_unit_means,
)

__all__ = [
    "adjusted_pooled_difference",
    "calibrated_logprobs",
    "contextual_calibration",
    "label_mass",
    "moving_average",
    "paired_difference",
    "pooled_paired_difference",
    "pooled_unit_effects",
    "pooled_windows",
    "position_curves",
    "position_metrics",
    "summary_positions",
]


def _entropy(log_p: np.ndarray) -> np.ndarray:
    """Entropy in nats along the last axis; 0 * log 0 counts as 0."""
    p = np.exp(log_p)
    terms = np.where(p > 0, p * np.where(p > 0, log_p, 0.0), 0.0)
    return -terms.sum(axis=-1)


def label_mass(candidate_logprobs: np.ndarray) -> np.ndarray:
    """Log of the total full-vocabulary probability of the K label words, shape (...,).

    ``candidate_logprobs``: shape (..., K), the model's *raw* (not renormalised) log-prob of
    each label word. Returns ``logsumexp`` over the last axis: 0 when the label words take all
    the probability, very negative when the model expects something else (e.g. about -16
    nats at the first position of a novel task with nonce labels). The renormalised metrics
    of :func:`position_metrics` are ratios within this mass, so a tiny mass flags positions
    where they describe a choice the model would hardly make. All ``-inf`` gives ``-inf``.
    """
    x = np.asarray(candidate_logprobs, dtype=float)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"candidate_logprobs: expected shape (..., K) with K >= 1, got {x.shape}")
    with np.errstate(divide="ignore"):
        return np.asarray(logsumexp(x, axis=-1), dtype=float)


def _class_indices(values: np.ndarray, name: str, n: int, k: int) -> np.ndarray:
    """Validate a (n,) vector of class indices in 0..k-1 and return it as int64."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match candidate_logprobs, got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
        raise ValueError(f"{name}: expected integer class indices, got {arr[:5]}...")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= k)
    if bad.any():
        raise ValueError(f"{name}: class index {int(arr[bad][0])} outside 0..{k - 1} (K={k})")
    return arr


def position_metrics(
    candidate_logprobs: np.ndarray, true_class: np.ndarray, context_class: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-position metrics of one forward pass (C3 of the study).

    ``candidate_logprobs``: (n_positions, K), log-probs of the prompt's K label words at each
    ``answer_i`` position. ``true_class``: (n_positions,), the true (default-mapping) class of
    example i. ``context_class``: (n_positions,), the class shown in the prompt for example i.

    Returns arrays of shape (n_positions,):

    * ``logp_true`` / ``logp_context``: restricted log-prob of the true / in-context class,
    * ``correct`` / ``correct_context`` (bool): argmax equals the true / in-context class,
    * ``entropy``: entropy (nats) of the restricted distribution.

    Ties in the argmax go to the lowest class index (``np.argmax``), a deterministic choice
    that only matters for exactly equal scores, e.g. an untrained model.
    """
    lp = np.asarray(candidate_logprobs, dtype=float)
    if lp.ndim != 2 or lp.shape[1] < 1:
        raise ValueError(f"candidate_logprobs: expected shape (n_positions, K), got {lp.shape}")
    n, k = lp.shape
    true_idx = _class_indices(true_class, "true_class", n, k)
    ctx_idx = _class_indices(context_class, "context_class", n, k)
    log_p = restricted_log_softmax(lp)
    rows = np.arange(n)
    pred = np.argmax(log_p, axis=1) if n else np.zeros(0, dtype=np.int64)
    return {
        "logp_true": log_p[rows, true_idx],
        "logp_context": log_p[rows, ctx_idx],
        "correct": pred == true_idx,
        "correct_context": pred == ctx_idx,
        "entropy": _entropy(log_p),
    }


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: out[i] = mean(values[max(0, i - window + 1) : i + 1]).

    ``values``: (n,). Returns (n,). Early positions average what is available, so out[0] is
    values[0]; ``window=1`` is the identity. NaNs are skipped (a window holding only NaNs gives
    NaN). Trailing rather than centred so position i only mixes in earlier positions, never
    the future of the context. :func:`position_curves` applies it per repeat *before*
    averaging over repeats, so bootstrap intervals reflect the smoothed per-repeat curves.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values: expected shape (n,), got {x.shape}")
    if isinstance(window, bool) or int(window) != window or window < 1:
        raise ValueError(f"window: expected an integer >= 1, got {window!r}")
    window = int(window)
    if window == 1:
        return x.copy()
    ok = ~np.isnan(x)
    # Cumulative sums of values and of counts give every window's sum and size in O(n).
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(ok)])
    end = np.arange(1, len(x) + 1)
    start = np.maximum(0, end - window)
    total = csum[end] - csum[start]
    count = ccount[end] - ccount[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing column(s) {missing}; has {list(frame.columns)}")


def _numeric(series: pd.Series, name: str) -> pd.Series:
    """Metric values as float (booleans become 0/1)."""
    try:
        return series.astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metric {name!r}: expected numeric or boolean values ({err})") from err


def position_curves(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    smooth: int = 1,
    group_cols: Sequence[str] = ("condition",),
    level: float = LEVEL,
) -> pd.DataFrame:
    """Mean curves over in-context positions with bootstrap CIs over repeats.

    ``frame``: long table with ``group_cols``, ``repeat``, ``position`` and the ``metrics``
    columns (e.g. the label positions table). Per group and metric the values form a
    (n_repeats, n_positions) matrix; each repeat's row is smoothed with a trailing
    :func:`moving_average` of ``smooth`` positions (over the positions present, in order),
    then :func:`~iclscope.analysis.stats.bootstrap_ci_columns` resamples repeats jointly over
    all positions. Booleans count as 0/1; missing (repeat, position) cells and NaNs are ignored.

    Returns a long frame with columns ``[*group_cols, position, metric, mean, ci_low, ci_high,
    n]`` (``n``: repeats with a value at that position), sorted by groups, metric, position.
    Groups are visited in sorted order, so a seeded ``rng`` gives reproducible intervals.
    A (group, repeat, position) appearing twice raises: add the distinguishing column (e.g.
    ``dataset`` or ``model``) to ``group_cols`` instead of silently averaging.
    """
    group_cols = list(group_cols)
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics: expected at least one metric column, got []")
    _require_columns(frame, [*group_cols, "repeat", "position", *metrics])
    keys = [*group_cols, "repeat", "position"]
    dup = frame.duplicated(subset=keys)
    if dup.any():
        first = frame.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(
            f"frame: duplicate rows for {first}; add the column that tells them apart to group_cols"
        )
    out_cols = [*group_cols, "position", "metric", "mean", "ci_low", "ci_high", "n"]
    pieces: list[pd.DataFrame] = []
    grouped = frame.groupby(group_cols, sort=True, dropna=False) if group_cols else [((), frame)]
    for key, sub in grouped:
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            values = sub.assign(_v=_numeric(sub[metric], metric))
            matrix = values.pivot(index="repeat", columns="position", values="_v").sort_index(axis=1)
            data = matrix.to_numpy(dtype=float)  # (n_repeats, n_positions)
            if smooth != 1:
                data = np.vstack([moving_average(row, smooth) for row in data]) if len(data) else data
            with warnings.catch_warnings():  # all-NaN columns give a NaN mean: intended
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = bootstrap_ci_columns(data, rng, n_boot=n_boot, level=level)
            piece = pd.DataFrame(
                {
                    "position": matrix.columns.to_numpy(),
                    "metric": metric,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n": (~np.isnan(data)).sum(axis=0).astype(np.int64),
                }
            )
            for col, val in zip(group_cols, key, strict=True):
                piece.insert(group_cols.index(col), col, val)
            pieces.append(piece)
    if not pieces:
        return pd.DataFrame(columns=out_cols)
    result = pd.concat(pieces, ignore_index=True)[out_cols]
    return result.sort_values([*group_cols, "metric", "position"], kind="stable").reset_index(drop=True)


def paired_difference(
    frame: pd.DataFrame,
    metric: str,
    position: int,
    condition_a: str,
    condition_b: str,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
) -> dict[str, float]:
    """Mean difference ``a - b`` of ``metric`` at one position, paired by repeat.

    ``frame``: long table with ``condition``, ``repeat``, ``position`` and ``metric`` for one
    dataset and model (filter first). Repeat r of ``condition_a`` is paired with repeat r of
    ``condition_b``: the task builder draws the same inputs for both, so pairing removes the
    between-draw variance. Only repeats present in both (with non-NaN values) count; the
    percentile bootstrap resamples those pairs.

    Returns ``{"mean", "ci_low", "ci_high", "n"}`` (``n``: number of pairs, int).
    """
    _require_columns(frame, ["condition", "repeat", "position", metric])
    at = frame[frame["position"] == position]
    sides = []
    for cond in (condition_a, condition_b):
        sub = at[at["condition"] == cond]
        if sub.empty:
            raise ValueError(
                f"condition {cond!r}: no rows at position {position} "
                f"(conditions present: {sorted(frame['condition'].unique().tolist())})"
            )
        if sub["repeat"].duplicated().any():
            rep = sub.loc[sub["repeat"].duplicated(), "repeat"].iloc[0]
            raise ValueError(
                f"condition {cond!r}: repeat {rep} appears twice at position {position}; "
                "filter the frame to one dataset and model first"
            )
        sides.append(_numeric(sub.set_index("repeat")[metric], metric))
    pairs = pd.concat(sides, axis=1, join="inner", keys=["a", "b"]).dropna()
    diffs = (pairs["a"] - pairs["b"]).to_numpy(dtype=float)
    interval = bootstrap_ci(diffs, rng, n_boot=n_boot, level=level)
    return {
        "mean": interval.mean,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "n": len(diffs),
    }


def summary_positions(n_examples: int, flip_at: int) -> dict[str, int]:
    """The 1-based positions that summary tables report.

    Convention: position i is the prediction for example i from examples 1..i-1, so the
    prediction made *after k examples* is position k + 1. Returns ``{"first": 1,
    "after_N": flip_at + 1, "after_2N": 2 * flip_at + 1, "last": n_examples}``, every value
    clipped to ``n_examples`` (so a ``flip_at`` configured for runs without flip conditions
    stays a valid position; with flip conditions the task builder requires
    ``n_examples >= 2 * flip_at + 1``, so nothing is clipped).

    For ``flip_df`` (``flip_fd`` mirrors it) examples 1..flip_at show the default mapping and
    example ``flip_at + 1`` is the first flipped label. ``after_N`` (position N + 1) is the
    last prediction whose context holds the first mapping only; position N + 2 is the first
    whose context holds a flipped label; ``after_2N`` (position 2N + 1) is the prediction made
    from exactly N examples of each mapping, where the paper compares D->F with F->D (recency
    vs. pre-training preference).
    """
    for name, value in (("n_examples", n_examples), ("flip_at", flip_at)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    n_examples, flip_at = int(n_examples), int(flip_at)
    return {
        "first": 1,
        "after_N": min(flip_at + 1, n_examples),
        "after_2N": min(2 * flip_at + 1, n_examples),
        "last": n_examples,
    }


def pooled_windows(n_examples: int, flip_at: int) -> dict[str, list[int]]:
    """Windows of 1-based positions over which summaries pool effects.

    * ``positions_2_to_last``: 2..n_examples, every position with at least one example in context
      (position 1 predicts from an empty context, identical across label conditions);
    * ``last_quarter``: the last ``max(n_examples // 4, 1)`` positions, where learning from
      the context has had the most examples;
    * ``second_mapping``: flip_at + 2 .. 2 * flip_at + 1 (clipped to n_examples), the
      positions whose context holds labels of the second mapping of flip_df / flip_fd, up to
      the prediction after 2N examples (empty when flip_at + 2 > n_examples).
    """
    for name, value in (("n_examples", n_examples), ("flip_at", flip_at)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    n, flip_at = int(n_examples), int(flip_at)
    quarter = max(n // 4, 1)
    return {
        "positions_2_to_last": list(range(2, n + 1)),
        "last_quarter": list(range(n - quarter + 1, n + 1)),
        "second_mapping": list(range(flip_at + 2, min(2 * flip_at + 1, n) + 1)),
    }


def _paired_windows(frame: pd.DataFrame, metric: str, positions: Sequence[int], condition_a: str,
                    condition_b: str) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """The repeats present in both conditions (ascending) and their (repeats, window) values
    of ``metric`` in a and in b, aligned by repeat and position (missing cells NaN)."""
    _require_columns(frame, ["condition", "repeat", "position", metric])
    window = sorted({int(p) for p in positions})
    if not window:
        raise ValueError(f"positions: expected at least one position, got {list(positions)}")
    at = frame[frame["position"].isin(window)]
    sides = []
    for cond in (condition_a, condition_b):
        sub = at[at["condition"] == cond]
        if sub.empty:
            raise ValueError(
                f"condition {cond!r}: no rows at positions {window[0]}..{window[-1]} "
                f"(conditions present: {sorted(frame['condition'].unique().tolist())})"
            )
        if sub.duplicated(subset=["repeat", "position"]).any():
            first = sub.loc[sub.duplicated(subset=["repeat", "position"]), ["repeat", "position"]].iloc[0]
            raise ValueError(
                f"condition {cond!r}: repeat {int(first['repeat'])} appears twice at position "
                f"{int(first['position'])}; filter the frame to one dataset and model first"
            )
        values = sub.assign(_v=_numeric(sub[metric], metric))
        sides.append(values.pivot(index="repeat", columns="position", values="_v").reindex(columns=window))
    repeats = sides[0].index.intersection(sides[1].index).sort_values()
    return repeats, sides[0].loc[repeats].to_numpy(dtype=float), sides[1].loc[repeats].to_numpy(dtype=float)


def pooled_unit_effects(frame: pd.DataFrame, metric: str, positions: Sequence[int], condition_a: str,
                        condition_b: str) -> pd.Series:
    """Per repeat, the mean over the window's ``positions`` of ``a[r, i] - b[r, i]`` (cells
    missing or NaN on either side skipped), for the repeats present in both conditions
    with at least one such cell; indexed by repeat, ascending.

    ``frame``: long table with ``condition``, ``repeat``, ``position`` and ``metric`` for one
    dataset and model. Repeat r of both conditions shows the same example draws, so each
    position is paired too.
    """
    repeats, a, b = _paired_windows(frame, metric, positions, condition_a, condition_b)
    return pd.Series(paired_unit_means(a, b), index=repeats).dropna()


def pooled_paired_difference(
    frame: pd.DataFrame,
    metric: str,
    positions: Sequence[int],
    condition_a: str,
    condition_b: str,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
) -> dict[str, float]:
    """Mean difference ``a - b`` of ``metric`` pooled over ``positions``, paired by repeat.

    Per repeat the effect is :func:`pooled_unit_effects`; the estimate is their mean, the
    CI a percentile bootstrap over repeats (:func:`~iclscope.analysis.stats.paired_pooled_ci`):
    repeats are the independent units, positions of one repeat share one context and are not.

    Returns ``{"mean", "ci_low", "ci_high", "n"}`` (``n``: repeats paired, int).
    """
    _, a, b = _paired_windows(frame, metric, positions, condition_a, condition_b)
    interval, n = paired_pooled_ci(a, b, rng, n_boot=n_boot, level=level)
    return {"mean": interval.mean, "ci_low": interval.low, "ci_high": interval.high, "n": n}


def adjusted_pooled_difference(
    frame: pd.DataFrame,
    metric: str,
    positions: Sequence[int],
    condition_a: str,
    condition_b: str,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    suffix: str = CONTENT_FREE_SUFFIX,
    folds: int = 5,
) -> dict[str, float]:
    """The pooled ``a - b`` effect adjusted by its content-free twins' difference, a control
    variate of mean zero by design, with a cross-fitted coefficient
    (:func:`~iclscope.analysis.stats.cross_fitted_control_variate`).

    Per repeat y = the pooled a - b, c = the pooled ``a + suffix`` - ``b + suffix`` (repeats
    having both); the estimate is the mean of ``y - beta * c`` with a percentile bootstrap
    over repeats. Returns ``{"mean", "ci_low", "ci_high", "n", "beta", "variance_ratio"}``:
    ``beta`` estimated on all repeats, ``variance_ratio`` = var(adjusted) / var(y) as
    measured (below 1: the control removed spread).
    """
    y = pooled_unit_effects(frame, metric, positions, condition_a, condition_b)
    c = pooled_unit_effects(frame, metric, positions, condition_a + suffix, condition_b + suffix)
    both = y.index.intersection(c.index).sort_values()
    control = cross_fitted_control_variate(y.loc[both].to_numpy(), c.loc[both].to_numpy(), folds=folds)
    interval = bootstrap_ci(control.adjusted, rng, n_boot=n_boot, level=level)
    return {"mean": interval.mean, "ci_low": interval.low, "ci_high": interval.high,
            "n": int((~np.isnan(control.adjusted)).sum()), "beta": control.beta,
            "variance_ratio": control.variance_ratio}


def contextual_calibration(query_logprobs: np.ndarray, content_free_logprobs: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al. 2021, "Calibrate before use") over the label set.

    ``query_logprobs``: (n, K) label-word log-probs for the queries; ``content_free_logprobs``:
    (m, K) the same for content-free inputs (e.g. "N/A", "", "[MASK]") in the same context.
    ``p_cf`` is the mean over the m inputs of the restricted softmax probabilities; the
    calibrated distribution is ``restricted_log_softmax(log p - log p_cf)``, i.e. Zhao's
    ``W = diag(p_cf)^-1, b = 0`` followed by renormalisation. It removes the bias the context
    induces toward some label words: a predictor whose only signal is that bias becomes
    uniform. Returns (n, K) calibrated log-probabilities.
    """
    q = np.asarray(query_logprobs, dtype=float)
    cf = np.asarray(content_free_logprobs, dtype=float)
    if q.ndim != 2:
        raise ValueError(f"query_logprobs: expected shape (n, K), got {q.shape}")
    if cf.ndim != 2 or cf.shape[0] < 1:
        raise ValueError(f"content_free_logprobs: expected shape (m >= 1, K), got {cf.shape}")
    if cf.shape[1] != q.shape[1]:
        raise ValueError(
            f"content_free_logprobs: K={cf.shape[1]} label words, query_logprobs has K={q.shape[1]}"
        )
    p_cf = np.exp(restricted_log_softmax(cf)).mean(axis=0)  # (K,)
    # A word the content-free inputs never predict (p_cf = 0) leaves no finite correction:
    # its rows come out NaN rather than a silently arbitrary distribution.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p_cf = np.log(p_cf)
        return restricted_log_softmax(restricted_log_softmax(q) - log_p_cf)


def calibrated_logprobs(query_logprobs: np.ndarray, twin_logprobs: np.ndarray) -> np.ndarray:
    """Contextual calibration position by position: row i of ``query_logprobs`` (n, K)
    calibrated with row i of ``twin_logprobs`` (n, K), the content-free twin's label-word
    log-probabilities at the same position, i.e. after the same shown labels. Returns (n, K)
    calibrated log-probabilities over the label set."""
    q = np.asarray(query_logprobs, dtype=float)
    t = np.asarray(twin_logprobs, dtype=float)
    if q.shape != t.shape or q.ndim != 2:
        raise ValueError(f"query_logprobs, twin_logprobs: expected two (n, K) arrays of one shape, "
                         f"got {q.shape} and {t.shape}")
    if not len(q):
        return q.copy()
    return np.concatenate([contextual_calibration(q[i:i + 1], t[i:i + 1]) for i in range(len(q))])
