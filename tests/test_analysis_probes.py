"""Unit tests of study B's probes (B5), attention ratio (B6) and change correlation (B7)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from iclscope.analysis.attention_ratio import (
    MASS_FLOOR,
    attention_ratio,
    change_correlation,
    geometric_mean_ratio,
    log_attention_ratio,
    ratio_summary,
)
from iclscope.analysis.probes import (
    grouped_folds,
    logistic_probe,
    permutation_p_value,
    probe_permutation_control,
    ridge_classifier_accuracy,
    ridge_predictions,
    ridge_probe,
    shuffle_by_group,
)
from scipy.stats import pearsonr, spearmanr


def planted_regression(seed: int, n_groups: int = 40, per_group: int = 5, d: int = 24):
    """Each group (condition) has a parameter theta; X = theta * w + noise: (n, d), (n,), (n,)."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-3, 3, size=n_groups)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = theta[groups]
    X = np.outer(y, rng.normal(size=d)) + 0.5 * rng.normal(size=(len(y), d))
    return X, y, groups


def planted_classes(
    seed: int, n_classes: int = 4, groups_per_class: int = 6, per_group: int = 4, d: int = 16
):
    """Each group has one of ``n_classes`` labels; X = class centroid + noise."""
    rng = np.random.default_rng(seed)
    centroids = 2.0 * rng.normal(size=(n_classes, d))
    group_class = np.repeat(np.arange(n_classes), groups_per_class)
    groups = np.repeat(np.arange(len(group_class)), per_group)
    labels = np.array([f"class{c}" for c in group_class[groups]])
    X = centroids[group_class[groups]] + rng.normal(size=(len(groups), d))
    return X, labels, groups


# --- folds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rng", [None, np.random.default_rng(0)])
def test_grouped_folds_never_share_a_group(rng) -> None:
    groups = np.array(list("aabbbcddddeeffg"))
    folds = grouped_folds(groups, 4, rng)
    assert len(folds) == 4
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(groups)))  # a partition of the rows
    for train, test in folds:
        assert set(groups[train]).isdisjoint(groups[test])
        assert len(train) + len(test) == len(groups)


def test_grouped_folds_deterministic_and_clamped() -> None:
    groups = ["x", "x", "y", "z", "z"]
    a, b = grouped_folds(groups, 5), grouped_folds(groups, 5)
    assert len(a) == 3  # fewer groups than splits: one fold per group
    for (tr1, te1), (tr2, te2) in zip(a, b, strict=True):
        np.testing.assert_array_equal(tr1, tr2)
        np.testing.assert_array_equal(te1, te2)
    with pytest.raises(ValueError, match="2 distinct groups"):
        grouped_folds(["only", "only"], 5)
    with pytest.raises(ValueError, match="n_splits"):
        grouped_folds(groups, 1)


def test_shuffle_by_group_keeps_one_value_per_group() -> None:
    y = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 4.0])
    groups = np.array([0, 0, 1, 2, 2, 2, 3])
    shuffled = shuffle_by_group(y, groups, np.random.default_rng(0))
    for g in np.unique(groups):
        assert len(set(shuffled[groups == g])) == 1
    assert sorted(set(shuffled)) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="group 0"):
        shuffle_by_group([1.0, 2.0, 3.0], [0, 0, 1], np.random.default_rng(0))


# --- probes ----------------------------------------------------------------------------------


def test_ridge_probe_recovers_planted_parameter() -> None:
    X, y, groups = planted_regression(seed=0)
    assert ridge_probe(X, y, groups) > 0.8
    res = probe_permutation_control("ridge", X, y, groups, np.random.default_rng(1), n_shuffles=20)
    assert res.score == pytest.approx(ridge_probe(X, y, groups))
    assert res.control_mean < 0.1  # near or below 0 (fixed seeds, deterministic)


def test_ridge_probe_matches_manual_out_of_fold_r2() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    X, y, groups = planted_regression(seed=2, n_groups=10, per_group=3, d=5)
    pred = np.empty_like(y)
    for train, test in grouped_folds(groups, 5):
        scaler = StandardScaler().fit(X[train])
        model = Ridge(alpha=3.0).fit(scaler.transform(X[train]), y[train])
        pred[test] = model.predict(scaler.transform(X[test]))
    assert ridge_probe(X, y, groups, alpha=3.0) == pytest.approx(r2_score(y, pred))


def test_logistic_probe_on_planted_classes_without_warnings() -> None:
    X, labels, groups = planted_classes(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. ConvergenceWarning would fail the test
        assert logistic_probe(X, labels, groups) > 0.9
        res = probe_permutation_control("classifier", X, labels, groups, np.random.default_rng(3), n_shuffles=5,
                                        classifier="logistic")
    assert res.score > 0.9
    assert res.control_mean < 0.5  # chance is 0.25 for 4 classes (fixed seeds, deterministic)


def test_probe_control_is_seeded_and_validates() -> None:
    X, y, groups = planted_regression(seed=4, n_groups=12, per_group=2, d=6)
    a = probe_permutation_control("ridge", X, y, groups, np.random.default_rng(9), n_shuffles=10)
    b = probe_permutation_control("ridge", X, y, groups, np.random.default_rng(9), n_shuffles=10)
    assert a.score == b.score and a.p_value == b.p_value
    np.testing.assert_array_equal(a.controls, b.controls)
    with pytest.raises(ValueError, match="'lasso'"):
        probe_permutation_control("lasso", X, y, groups, np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows"):
        ridge_probe(X[:-1], y, groups)


# --- attention ratio (B6) and change correlation (B7) ----------------------------------------


def test_attention_ratio_hand_values() -> None:
    rel = np.array([[0.2, 0.3], [0.05, 0.0]])
    dis = np.array([[0.1, 0.6], [0.05, 0.4]])
    np.testing.assert_allclose(attention_ratio(rel, dis), [[2.0, 0.5], [1.0, 0.0]])
    assert attention_ratio(0.3, 0.0, eps=1e-3) == pytest.approx(300.0)  # eps guards a zero mass
    with pytest.raises(ValueError, match="non-negative"):
        attention_ratio(np.array([-0.1]), np.array([0.2]))


def test_ratio_summary_plain_and_log() -> None:
    ratios = np.array([0.5, 2.0, 1.0, 4.0, 0.25])
    plain = ratio_summary(ratios, np.random.default_rng(0), n_boot=500)
    assert plain.mean == pytest.approx(ratios.mean())
    assert plain.low <= plain.mean <= plain.high
    logged = ratio_summary(ratios, np.random.default_rng(0), n_boot=500, log_ratio=True)
    assert logged.mean == pytest.approx(np.log(ratios).mean())  # 2 and 1/2 cancel on this scale
    with pytest.raises(ValueError, match="positive"):
        ratio_summary(np.array([1.0, 0.0]), np.random.default_rng(0), log_ratio=True)


def test_change_correlation_perfect_and_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    r, low, high = change_correlation(x, 3 * x - 1, np.random.default_rng(1))
    assert r == pytest.approx(1.0)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    r, _, _ = change_correlation(x, -x, np.random.default_rng(1))
    assert r == pytest.approx(-1.0)
    y = x + rng.normal(size=20)
    r, low, high = change_correlation(x, y, np.random.default_rng(1))
    assert r == pytest.approx(pearsonr(x, y).statistic)
    assert low < r < high
    r_s, _, _ = change_correlation(x, np.exp(y), np.random.default_rng(1), method="spearman")
    assert r_s == pytest.approx(spearmanr(x, y).statistic)


def test_change_correlation_degenerate_inputs() -> None:
    rng = np.random.default_rng(0)
    assert all(np.isnan(change_correlation([1.0, 2.0], [3.0, 4.0], rng)))
    assert all(np.isnan(change_correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], rng)))
    r, _, _ = change_correlation([1.0, 2.0, np.nan, 3.0], [2.0, 4.0, 0.0, 6.0], rng)
    assert r == pytest.approx(1.0)  # the NaN pair is dropped
    with pytest.raises(ValueError, match="method"):
        change_correlation([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], rng, method="kendall")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="equal length"):
        change_correlation([1.0, 2.0, 3.0], [1.0, 2.0], rng)


# --- permutation control (issue 11.10) -------------------------------------------------------


def test_ridge_predictions_equal_sklearn_pipeline() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, groups = planted_regression(3, n_groups=12, per_group=3, d=40)  # d > n: the dual form
    X[:, 0] = 1.0  # a zero-variance feature
    Y = np.stack([y, np.random.default_rng(0).normal(size=len(y))], axis=1)
    folds = grouped_folds(groups, 4)
    fast = ridge_predictions(X, Y, folds, alpha=2.5)
    for col in range(Y.shape[1]):
        slow = np.empty(len(y))
        for train, test in folds:
            model = make_pipeline(StandardScaler(), Ridge(alpha=2.5)).fit(X[train], Y[train, col])
            slow[test] = model.predict(X[test])
        np.testing.assert_allclose(fast[:, col], slow, rtol=1e-8, atol=1e-8)
    assert ridge_probe(X, y, groups, n_splits=4, alpha=2.5) == pytest.approx(
        1 - ((y - fast[:, 0]) ** 2).sum() / ((y - y.mean()) ** 2).sum())


@pytest.mark.parametrize("n_classes", [2, 4])
def test_ridge_classifier_equals_sklearn(n_classes) -> None:
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, labels, groups = planted_classes(5, n_classes=n_classes, groups_per_class=3, per_group=3, d=30)
    X = X + 3.0 * np.random.default_rng(1).normal(size=X.shape)  # not perfectly separable
    folds = grouped_folds(groups, 5)
    shuffled = shuffle_by_group(labels, groups, np.random.default_rng(2))
    fast = ridge_classifier_accuracy(X, np.stack([labels, shuffled], axis=1), folds, alpha=1.5)
    for col, lab in enumerate([labels, shuffled]):
        pred = np.empty(len(lab), dtype=lab.dtype)
        for train, test in folds:
            model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.5)).fit(X[train], lab[train])
            pred[test] = model.predict(X[test])
        assert fast[col] == pytest.approx(np.mean(pred == lab))


def test_permutation_p_value_bounds() -> None:
    assert permutation_p_value(0.9, np.array([0.1, 0.2, 0.3])) == pytest.approx(1 / 4)
    assert permutation_p_value(0.2, np.array([0.1, 0.2, 0.3])) == pytest.approx(3 / 4)
    assert permutation_p_value(-1.0, np.array([0.1, 0.2, 0.3])) == 1.0
    assert np.isnan(permutation_p_value(float("nan"), np.array([0.1])))


@pytest.mark.parametrize("kind", ["ridge", "classifier"])
def test_permutation_control_detects_signal_and_reports_spread(kind) -> None:
    if kind == "ridge":
        X, y, groups = planted_regression(0, n_groups=20, per_group=3)
    else:
        X, y, groups = planted_classes(0)
    res = probe_permutation_control(kind, X, y, groups, np.random.default_rng(0), n_shuffles=60)
    assert res.n_shuffles == 60 and res.controls.shape == (60,)
    assert 0 < res.p_value <= 1 and res.p_value == pytest.approx(1 / 61)
    assert res.control_sd > 0 and np.isfinite(res.control_mean)
    assert res.control_mean == pytest.approx(np.nanmean(res.controls))
    assert res.control_sd == pytest.approx(np.nanstd(res.controls, ddof=1))
    assert res.score > res.control_mean + 3 * res.control_sd
    # pure noise: the real score is one more draw from the null, so p is not small
    noise = np.random.default_rng(9).normal(size=X.shape)
    null = probe_permutation_control(kind, noise, y, groups, np.random.default_rng(0), n_shuffles=60)
    assert 0.05 < null.p_value <= 1
    again = probe_permutation_control(kind, noise, y, groups, np.random.default_rng(0), n_shuffles=60)
    np.testing.assert_array_equal(again.controls, null.controls)  # seeded


def test_permutation_control_logistic_matches_single_probe() -> None:
    X, labels, groups = planted_classes(2, groups_per_class=3)
    res = probe_permutation_control("classifier", X, labels, groups, np.random.default_rng(0), n_shuffles=3,
                                    classifier="logistic")
    assert res.score == pytest.approx(logistic_probe(X, labels, groups))
    with pytest.raises(ValueError, match="n_shuffles"):
        probe_permutation_control("ridge", X, np.zeros(len(X)), groups, np.random.default_rng(0), n_shuffles=0)
    with pytest.raises(ValueError, match="classifier"):
        probe_permutation_control("classifier", X, labels, groups, np.random.default_rng(0), classifier="svm")


# --- geometric-mean attention ratio (issue 11.9) ---------------------------------------------


def test_log_attention_ratio_floor_and_values() -> None:
    np.testing.assert_allclose(log_attention_ratio([0.2, 0.1], [0.1, 0.4]), np.log([2.0, 0.25]))
    assert log_attention_ratio(0.3, 0.0) == pytest.approx(np.log(0.3 / MASS_FLOOR))
    assert log_attention_ratio(0.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        log_attention_ratio(-0.1, 0.2)


def test_geometric_mean_not_dominated_by_a_near_zero_denominator() -> None:
    rel = np.full(50, 0.2)
    dis = np.full(50, 0.1)  # every prompt: ratio 2
    dis[0] = 1e-7  # one prompt's distractor gets almost nothing: per-prompt ratio 2e6
    arithmetic = np.mean(rel / dis)
    assert arithmetic > 1e4  # the old summary: dominated by one prompt
    logs, ratio = geometric_mean_ratio(log_attention_ratio(rel, dis), np.random.default_rng(0), n_boot=500)
    assert logs.mean == pytest.approx(np.mean(np.log(rel / dis)))
    assert 2.0 < ratio.mean < 3.0  # close to the typical prompt's 2 (2 * 1e6 ** (1 / 50) = 2.64)
    assert ratio.low <= ratio.mean <= ratio.high
    assert ratio.mean == pytest.approx(np.exp(logs.mean)) and ratio.low == pytest.approx(np.exp(logs.low))
    # symmetric: ratios 2 and 1/2 cancel
    sym, _ = geometric_mean_ratio(np.log([2.0, 0.5]), np.random.default_rng(0), n_boot=100)
    assert sym.mean == pytest.approx(0.0)
    with pytest.raises(ValueError, match="finite"):
        geometric_mean_ratio(np.array([np.inf, 0.0]), np.random.default_rng(0))


# ----------------------------------------------------------------------------- issue 23.6


def test_chance_selectivity_puts_a_control_below_chance_at_chance() -> None:
    """Shuffled targets on held-out conditions score far below chance (R^2 << 0); the old
    score - control would credit a noise probe with a large 'selectivity', the chance-floored
    one gives it about nothing."""
    from iclscope.analysis.probes import chance_selectivity

    X, y, groups = planted_regression(3, n_groups=8, per_group=4)
    noise = np.random.default_rng(5).normal(size=X.shape)
    null = probe_permutation_control("ridge", noise, y, groups, np.random.default_rng(0), n_shuffles=100)
    assert null.control_mean < -0.5  # the control sits far below chance (R^2 0)
    assert null.chance == 0.0
    assert null.selectivity == pytest.approx(chance_selectivity(null.score, null.controls, 0.0))
    assert null.selectivity <= max(null.score, 0.0)
    assert abs(null.selectivity) < 0.2 < null.score - null.control_mean
    # a planted signal keeps a clear selectivity, below its own score
    res = probe_permutation_control("ridge", X, y, groups, np.random.default_rng(0), n_shuffles=100)
    assert 0.5 < res.selectivity <= res.score
    # accuracy: chance is the largest class's share, and the floor applies to the control only
    assert chance_selectivity(0.4, np.array([0.1, 0.2]), 0.25) == pytest.approx(0.4 - 0.25)
    assert chance_selectivity(0.1, np.array([0.1, 0.5]), 0.25) == pytest.approx(0.25 - 0.375)


def test_classifier_chance_is_the_majority_share() -> None:
    from iclscope.analysis.probes import chance_level

    assert chance_level("classifier", np.array(["a", "a", "b", "c"])) == 0.5
    assert chance_level("ridge", np.array([1.0, 2.0])) == 0.0


@pytest.mark.parametrize("kind", ["ridge", "classifier"])
def test_shuffles_continue_where_p_sits_at_its_resolution(kind) -> None:
    if kind == "ridge":
        X, y, groups = planted_regression(0, n_groups=20, per_group=3)
    else:
        X, y, groups = planted_classes(0)
    base = probe_permutation_control(kind, X, y, groups, np.random.default_rng(0), n_shuffles=20)
    assert base.p_value == pytest.approx(1 / 21)  # at the floor of 20 shuffles
    more = probe_permutation_control(kind, X, y, groups, np.random.default_rng(0), n_shuffles=20,
                                     n_shuffles_max=300)
    assert more.n_shuffles == 300 and more.controls.shape == (300,)
    np.testing.assert_array_equal(more.controls[:20], base.controls)  # the first shuffles unchanged
    assert more.p_value == pytest.approx(1 / 301) and more.score == base.score
    # a probe whose p is above the floor keeps its shuffles
    noise = np.random.default_rng(9).normal(size=X.shape)
    null = probe_permutation_control(kind, noise, y, groups, np.random.default_rng(0), n_shuffles=20,
                                     n_shuffles_max=300)
    assert null.n_shuffles == 20 and null.p_value > 1 / 21
