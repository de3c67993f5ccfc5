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
from typing import Literal, NamedTuple

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from iclscope.analysis.defaults import CLASSIFIER, LOGISTIC_C, N_SHUFFLES, N_SPLITS, RIDGE_ALPHA

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
    n_splits: int = N_SPLITS,
    alpha: float = RIDGE_ALPHA,
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
    n_splits: int = N_SPLITS,
    C: float = LOGISTIC_C,
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


# ----------------------------------------------------------------------------- permutation control
#
# The control of B5 repeats the probe on many group-level shuffles of the targets. Fitting a
# model per shuffle would cost n_shuffles x n_splits fits per probe; the ridge probes below are
# closed form in their dual (kernel) form instead, so one solve per fold serves the real targets
# and every shuffle at once (a matrix of right-hand sides).

CLASSIFIERS = ("ridge", "logistic")


class PermutationProbe(NamedTuple):
    """A probe score with its permutation control.

    ``score``: the probe on the real targets; ``control_mean`` / ``control_sd``: mean and
    standard deviation (ddof=1) of the same probe over ``n_shuffles`` group-level shuffles;
    ``p_value``: ``(1 + #{control >= score}) / (1 + n_shuffles)`` (one-sided, in (0, 1]; NaN
    when the score is NaN), whose resolution (smallest possible value) is
    ``1 / (1 + n_shuffles)``; ``controls``: the (n_shuffles,) control scores. ``chance``: the
    score of a probe that knows nothing (R^2 0; accuracy: the largest class's share), and
    ``selectivity``: the score above chance less the controls' mean score above chance
    (:func:`chance_selectivity`).
    """

    score: float
    control_mean: float
    control_sd: float
    p_value: float
    n_shuffles: int
    controls: np.ndarray
    chance: float = float("nan")
    selectivity: float = float("nan")


def chance_level(kind: str, y: np.ndarray) -> float:
    """What a probe that knows nothing scores: R^2 0 (predicting the mean), accuracy the share
    of the most frequent class (always predicting it)."""
    if kind == "ridge":
        return 0.0
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum())


def chance_selectivity(score: float, controls: np.ndarray, chance: float) -> float:
    """Score above chance less the shuffled controls' mean score above chance.

    Scores below chance are floored at it: held-out conditions make shuffled-target probes score
    far *below* chance (R^2 of -1.5, accuracy 0.2 of 4 classes), and subtracting such a control
    would credit a probe with more than it decodes. On this scale a probe that knows nothing has
    selectivity 0 and the value never exceeds the score's own margin over chance.
    """
    if np.isnan(score):
        return float("nan")
    floored = np.maximum(np.asarray(controls, dtype=float), chance)
    floored = floored[~np.isnan(floored)]
    control = float(floored.mean()) if floored.size else chance
    return max(float(score), chance) - control


def _standardise_fold(X: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """StandardScaler fitted on the training rows (a zero-variance feature keeps scale 1)."""
    mean = X[train].mean(axis=0)
    std = X[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (X[train] - mean) / std, (X[test] - mean) / std


def ridge_predictions(X: np.ndarray, Y: np.ndarray, folds: Folds, alpha: float) -> np.ndarray:
    """Out-of-fold predictions of standardise + ridge (with intercept) for many targets at once.

    ``X``: (n, d); ``Y``: (n, t), t target columns (e.g. the real target and its shuffles);
    ``folds``: (train, test) index pairs covering every row once. Per fold the features are
    standardised on the training rows and the ridge solution is taken in dual form,
    ``pred = mean(Y_tr) + Z_te Z_tr^T (Z_tr Z_tr^T + alpha I)^-1 (Y_tr - mean(Y_tr))``, which
    equals ``make_pipeline(StandardScaler(), Ridge(alpha))`` column by column (tested) at the
    cost of one (n_train x n_train) solve per fold for all t columns. Returns (n, t).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must be (n, t) with n = {X.shape[0]} rows, got shape {Y.shape}")
    pred = np.empty_like(Y)
    for train, test in folds:
        z_tr, z_te = _standardise_fold(X, train, test)
        y_tr = Y[train]
        centre = y_tr.mean(axis=0)
        gram = z_tr @ z_tr.T
        gram[np.diag_indices_from(gram)] += alpha
        dual = np.linalg.solve(gram, y_tr - centre)
        pred[test] = centre + (z_te @ z_tr.T) @ dual
    return pred


def r2_columns(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R^2 of each column of ``pred`` (n, t) against the matching column of ``y`` (n, t);
    NaN for a constant column of ``y`` (as :func:`ridge_probe`)."""
    y = np.asarray(y, dtype=float)
    resid = ((y - pred) ** 2).sum(axis=0)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - resid / total, np.nan)


def ridge_classifier_accuracy(X: np.ndarray, labels: np.ndarray, folds: Folds, alpha: float) -> np.ndarray:
    """Out-of-fold accuracy of a standardise + ridge classifier for many labelings at once.

    ``labels``: (n, t), t labelings of the n rows (e.g. the real labels and their shuffles).
    Each labeling is one-vs-all coded as +1 / -1 over the classes seen in the fold's training
    rows and fitted by ridge (:func:`ridge_predictions`); the prediction is the class with the
    largest score, as ``make_pipeline(StandardScaler(), RidgeClassifier(alpha))`` (tested;
    with one training class the fold predicts it). Returns (t,) accuracies.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (n, t), got shape {labels.shape}")
    classes, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(labels.shape)
    n, t = codes.shape
    k = len(classes)
    hits = np.zeros(t)
    for train, test in folds:
        onehot = np.zeros((len(train), t, k))
        np.put_along_axis(onehot, codes[train][:, :, None], 1.0, axis=2)
        seen = onehot.any(axis=0)  # (t, k): classes present in this fold's training rows
        z_tr, z_te = _standardise_fold(np.asarray(X, dtype=float), train, test)
        target = (2.0 * onehot - 1.0).reshape(len(train), t * k)
        centre = target.mean(axis=0)
        gram = z_tr @ z_tr.T
        gram[np.diag_indices_from(gram)] += alpha
        dual = np.linalg.solve(gram, target - centre)
        scores = (centre + (z_te @ z_tr.T) @ dual).reshape(len(test), t, k)
        scores = np.where(seen[None], scores, -np.inf)
        pred = scores.argmax(axis=2)
        hits += (pred == codes[test]).sum(axis=0)
    return hits / n


def permutation_p_value(score: float, controls: np.ndarray) -> float:
    """One-sided permutation p-value ``(1 + #{controls >= score}) / (1 + len(controls))``.

    In (0, 1]; NaN when ``score`` is NaN. NaN controls count as not exceeding.
    """
    controls = np.asarray(controls, dtype=float)
    if np.isnan(score):
        return float("nan")
    exceed = int(np.count_nonzero(controls >= score - 1e-12))
    return (1 + exceed) / (1 + controls.size)


def probe_permutation_control(
    kind: Literal["ridge", "classifier"],
    X: np.ndarray,
    y: np.ndarray | Sequence[Hashable],
    groups: Sequence[Hashable] | np.ndarray,
    rng: np.random.Generator,
    n_shuffles: int = N_SHUFFLES,
    n_splits: int = N_SPLITS,
    alpha: float = RIDGE_ALPHA,
    C: float = LOGISTIC_C,
    classifier: str = CLASSIFIER,
    n_shuffles_max: int | None = None,
) -> PermutationProbe:
    """A probe and its permutation control over ``n_shuffles`` group-level shuffles.

    ``kind``: "ridge" (numeric ``y``, R^2) or "classifier" (class labels, accuracy, by
    ``classifier``: "ridge", a closed-form ridge classifier with penalty ``alpha``, or
    "logistic", :func:`logistic_probe`'s model with ``C``, refitted per shuffle and so about
    ``n_shuffles`` times slower). Each shuffle permutes the targets across groups
    (:func:`shuffle_by_group`, drawn in order from ``rng``); all use the same grouped folds as
    the real probe. When no shuffle reaches the score (p at its resolution) and
    ``n_shuffles_max`` is larger, shuffles continue from the same ``rng`` up to
    ``n_shuffles_max`` (the first ``n_shuffles`` unchanged), so a strong probe's p is not
    reported at a floor set by the shuffle count. Returns :class:`PermutationProbe`.
    """
    if kind not in ("ridge", "classifier"):
        raise ValueError(f"kind must be 'ridge' or 'classifier', got {kind!r}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    if isinstance(n_shuffles, bool) or not isinstance(n_shuffles, int) or n_shuffles < 1:
        raise ValueError(f"n_shuffles must be an integer >= 1, got {n_shuffles!r}")
    X = _check_xy(X, y, groups)
    folds = grouped_folds(groups, n_splits)
    y_arr = np.asarray(y)

    def scores_of(columns: list[np.ndarray]) -> np.ndarray:
        if kind == "ridge":
            Y = np.stack(columns, axis=1).astype(float)
            return r2_columns(Y, ridge_predictions(X, Y, folds, alpha))
        if classifier == "ridge":
            return ridge_classifier_accuracy(X, np.stack(columns, axis=1), folds, alpha)
        return np.array([_logistic_oof(X, c, folds, C) for c in columns])

    scores = scores_of([y_arr] + [shuffle_by_group(y_arr, groups, rng) for _ in range(n_shuffles)])
    score, controls = float(scores[0]), scores[1:]
    if n_shuffles_max is not None and n_shuffles_max > n_shuffles and not np.isnan(score) \
            and permutation_p_value(score, controls) == 1.0 / (1 + n_shuffles):
        more = [shuffle_by_group(y_arr, groups, rng) for _ in range(n_shuffles_max - n_shuffles)]
        controls = np.concatenate([controls, scores_of(more)])
    finite = controls[~np.isnan(controls)]
    chance = chance_level(kind, y_arr)
    return PermutationProbe(
        score,
        float(finite.mean()) if finite.size else float("nan"),
        float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        permutation_p_value(score, controls),
        int(controls.size),
        controls,
        chance,
        chance_selectivity(score, controls, chance),
    )
