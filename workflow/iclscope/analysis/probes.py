"""Parameterised probing for study B (B5): cross-validated linear probes with a shuffled control.

Ridge regression decodes continuous task parameters (slope, intercept; R^2), logistic regression
decodes categorical ones (name, activity; accuracy). Folds are grouped so that all prompts of one
group (typically one condition) are held out together: the probe must generalise to unseen
conditions instead of recognising a condition's prompts. Scores are computed once on the
concatenated out-of-fold predictions rather than averaged over folds, which keeps small or uneven
folds from dominating.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

Folds = list[tuple[np.ndarray, np.ndarray]]


def _group_codes(groups: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes (n,) for the group labels (in order of first appearance) and their count."""
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(g, len(index)) for g in groups), dtype=int)
    return codes, len(index)


def grouped_folds(
    groups: Sequence[Hashable] | np.ndarray,
    n_splits: int,
    rng: np.random.Generator | None = None,
) -> Folds:
    """K folds over rows such that no group is in both the train and the test part of a fold.

    ``groups``: n labels, one per row. Groups are dealt, largest first, to the fold with the fewest
    rows so far (as sklearn's GroupKFold); ties between equal-sized groups keep first-appearance
    order, or a random order when ``rng`` is given. With fewer groups than ``n_splits`` each group
    is its own fold; fewer than two groups raise ValueError. Returns a list of (train_idx, test_idx)
    integer arrays; every row is in exactly one test part.
    """
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    codes, n_groups = _group_codes(groups)
    if n_groups < 2:
        raise ValueError(f"need at least 2 distinct groups for grouped folds, got {n_groups}")
    k = min(n_splits, n_groups)
    sizes = np.bincount(codes, minlength=n_groups)
    order = np.arange(n_groups) if rng is None else rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group = np.empty(n_groups, dtype=int)
    fold_rows = np.zeros(k, dtype=int)
    for g in order:
        f = int(np.argmin(fold_rows))  # first of the lightest folds: deterministic
        fold_of_group[g] = f
        fold_rows[f] += sizes[g]
    fold_of_row = fold_of_group[codes]
    rows = np.arange(len(codes))
    return [(rows[fold_of_row != f], rows[fold_of_row == f]) for f in range(k)]


def _check_xy(X: np.ndarray, y: np.ndarray, groups: Sequence[Hashable] | np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
    if len(y) != X.shape[0] or len(groups) != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} and groups {len(groups)}")
    return X


def _ridge_oof(X: np.ndarray, y: np.ndarray, folds: Folds, alpha: float) -> float:
    pred = np.empty(len(y))
    for train, test in folds:
        # scaling is fitted on the training part only, so no test statistics leak in
        model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
        model.fit(X[train], y[train])
        pred[test] = model.predict(X[test])
    if np.ptp(y) == 0:
        return float("nan")  # R^2 is undefined for a constant target
    return float(r2_score(y, pred))


def _logistic_oof(X: np.ndarray, labels: np.ndarray, folds: Folds, C: float) -> float:
    pred = np.empty(len(labels), dtype=labels.dtype)
    for train, test in folds:
        classes = np.unique(labels[train])
        if len(classes) < 2:
            # a fold that sees one class can only ever predict it
            pred[test] = classes[0]
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=10_000))
        model.fit(X[train], labels[train])
        pred[test] = model.predict(X[test])
    return float(np.mean(pred == labels))


def ridge_probe(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[Hashable] | np.ndarray,
    n_splits: int = 5,
    alpha: float = 1.0,
) -> float:
    """Cross-validated R^2 of a standardise + ridge probe predicting ``y`` from ``X``.

    ``X``: (n, d); ``y``: (n,) floats; ``groups``: n labels for :func:`grouped_folds`. R^2 is taken
    on the concatenated out-of-fold predictions; it can be negative (worse than the mean) and is
    NaN for a constant ``y``.
    """
    X = _check_xy(X, y, groups)
    y = np.asarray(y, dtype=float)
    return _ridge_oof(X, y, grouped_folds(groups, n_splits), alpha)


def logistic_probe(
    X: np.ndarray,
    labels: np.ndarray | Sequence[Hashable],
    groups: Sequence[Hashable] | np.ndarray,
    n_splits: int = 5,
    C: float = 1.0,
) -> float:
    """Cross-validated accuracy of a standardise + logistic-regression probe.

    ``X``: (n, d); ``labels``: n class labels (any type numpy can compare); ``groups``: n labels
    for :func:`grouped_folds`. Accuracy is over all out-of-fold predictions.
    """
    X = _check_xy(X, labels, groups)
    return _logistic_oof(X, np.asarray(labels), grouped_folds(groups, n_splits), C)


def shuffle_by_group(
    y: np.ndarray | Sequence[Hashable],
    groups: Sequence[Hashable] | np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Permute the group-level values of ``y``: every group gets the value of another group.

    ``y`` must be constant within each group (ValueError naming the first group that is not).
    Returns an array shaped like ``y``.
    """
    y = np.asarray(y)
    codes, n_groups = _group_codes(groups)
    group_values = []
    group_list = list(dict.fromkeys(groups))
    for g in range(n_groups):
        vals = y[codes == g]
        if not np.all(vals == vals[0]):
            raise ValueError(
                f"group {group_list[g]!r} has several target values {np.unique(vals)[:5]}; "
                "a group-level shuffle needs one target per group"
            )
        group_values.append(vals[0])
    shuffled = np.asarray(group_values)[rng.permutation(n_groups)]
    return shuffled[codes]


def probe_with_control(
    kind: Literal["ridge", "logistic"],
    X: np.ndarray,
    y: np.ndarray | Sequence[Hashable],
    groups: Sequence[Hashable] | np.ndarray,
    rng: np.random.Generator,
    n_splits: int = 5,
    alpha: float = 1.0,
    C: float = 1.0,
) -> tuple[float, float]:
    """Probe score and the score of the same probe on group-shuffled targets, with the same folds.

    ``kind``: "ridge" (R^2, ``alpha``) or "logistic" (accuracy, ``C``). The control permutes the
    targets across groups (:func:`shuffle_by_group`), so each group still carries a single value.
    Why group level: a per-row shuffle would also be leak-free, but it changes the task's
    structure (targets would vary inside a group, so the control fits noise the real task never
    has). Shuffling whole groups keeps that structure (one target per group, same groups, same
    folds) and only breaks the link between representation and parameter, so score - control
    measures selectivity.
    Returns (score, control_score).
    """
    if kind not in ("ridge", "logistic"):
        raise ValueError(f"kind must be 'ridge' or 'logistic', got {kind!r}")
    X = _check_xy(X, y, groups)
    folds = grouped_folds(groups, n_splits)
    control_y = shuffle_by_group(y, groups, rng)
    if kind == "ridge":
        y_arr = np.asarray(y, dtype=float)
        return _ridge_oof(X, y_arr, folds, alpha), _ridge_oof(X, control_y.astype(float), folds, alpha)
    labels = np.asarray(y)
    return _logistic_oof(X, labels, folds, C), _logistic_oof(X, control_y, folds, C)
