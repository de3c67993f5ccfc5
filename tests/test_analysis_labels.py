"""Unit tests of the study C metrics iclscope.analysis.label_metrics (brute force references)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from iclscope.analysis.candidates import restricted_log_softmax
from iclscope.analysis.label_metrics import (
    adjusted_pooled_difference,
    calibrated_logprobs,
    contextual_calibration,
    label_mass,
    moving_average,
    paired_difference,
    pooled_paired_difference,
    pooled_unit_effects,
    pooled_windows,
    position_curves,
    position_metrics,
    summary_positions,
)
from iclscope.analysis.stats import (
    MIN_CONTROL_UNITS, bootstrap_ci, bootstrap_ci_columns, cross_fitted_control_variate, paired_pooled_ci,
)


def random_logprobs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Full-vocabulary-like log-probs of K label words: negative, spread over orders of magnitude."""
    return -rng.exponential(5.0, size=(n, k))


# ---------------------------------------------------------------- restricted softmax


def test_restricted_log_softmax_hand_computation() -> None:
    x = np.log(np.array([0.1, 0.3]))  # label words hold 0.4 of the vocabulary mass
    out = restricted_log_softmax(x)
    np.testing.assert_allclose(np.exp(out), [0.25, 0.75])
    np.testing.assert_allclose(out, [math.log(0.25), math.log(0.75)])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_restricted_log_softmax_sums_to_one_and_is_stable(k: int) -> None:
    rng = np.random.default_rng(0)
    x = random_logprobs(rng, 7, k) - 1000.0  # far below exp's range: needs logsumexp
    out = restricted_log_softmax(x.reshape(7, 1, k))
    assert out.shape == (7, 1, k)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.exp(out).sum(axis=-1), 1.0)
    # Shift invariance: only differences between label words matter.
    np.testing.assert_allclose(out, restricted_log_softmax(x.reshape(7, 1, k) + 1000.0), atol=1e-9)


def test_restricted_log_softmax_edge_cases() -> None:
    out = restricted_log_softmax(np.array([[-np.inf, -1.0], [-np.inf, -np.inf]]))
    np.testing.assert_allclose(out[0], [-np.inf, 0.0])
    assert np.all(np.isnan(out[1]))
    with pytest.raises(ValueError, match="K >= 1"):
        restricted_log_softmax(np.zeros((3, 0)))


# ---------------------------------------------------------------- position metrics


@pytest.mark.parametrize("k", [2, 3])
def test_position_metrics_match_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    n = 50
    lp = random_logprobs(rng, n, k)
    true = rng.integers(0, k, n)
    ctx = (true + rng.integers(0, 2, n)) % k
    got = position_metrics(lp, true, ctx)
    for i in range(n):
        total = sum(math.exp(v) for v in lp[i])
        probs = [math.exp(v) / total for v in lp[i]]
        best = max(range(k), key=lambda j: (probs[j], -j))
        assert got["logp_true"][i] == pytest.approx(math.log(probs[true[i]]))
        assert got["logp_context"][i] == pytest.approx(math.log(probs[ctx[i]]))
        assert got["correct"][i] == (best == true[i])
        assert got["correct_context"][i] == (best == ctx[i])
        assert got["entropy"][i] == pytest.approx(-sum(p * math.log(p) for p in probs))
    assert got["correct"].dtype == bool
    assert set(got) == {"logp_true", "logp_context", "correct", "correct_context", "entropy"}


def test_position_metrics_ties_and_extremes() -> None:
    lp = np.array([[-2.0, -2.0, -2.0], [-np.inf, -1.0, -np.inf]])
    got = position_metrics(lp, np.array([0, 1]), np.array([1, 1]))
    # A three-way tie goes to class 0; entropy is log 3 for uniform and 0 for a point mass.
    np.testing.assert_array_equal(got["correct"], [True, True])
    np.testing.assert_array_equal(got["correct_context"], [False, True])
    np.testing.assert_allclose(got["entropy"], [math.log(3), 0.0])


def test_position_metrics_validates() -> None:
    lp = np.zeros((3, 2))
    with pytest.raises(ValueError, match="true_class: class index 2"):
        position_metrics(lp, np.array([0, 1, 2]), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="context_class: expected shape"):
        position_metrics(lp, np.array([0, 1, 1]), np.array([0, 0]))
    with pytest.raises(ValueError, match="candidate_logprobs"):
        position_metrics(np.zeros(3), np.array([0, 1, 1]), np.array([0, 0, 0]))


# ---------------------------------------------------------------- moving average


@pytest.mark.parametrize("window", [1, 2, 3, 7, 50])
def test_moving_average_matches_loop(window: int) -> None:
    rng = np.random.default_rng(window)
    x = rng.normal(size=20)
    expected = [float(np.mean(x[max(0, i - window + 1) : i + 1])) for i in range(len(x))]
    np.testing.assert_allclose(moving_average(x, window), expected)
    assert moving_average(x, window)[0] == x[0]


def test_moving_average_identity_nans_and_validation() -> None:
    x = np.array([1.0, np.nan, 3.0, np.nan, np.nan, 6.0])
    np.testing.assert_array_equal(moving_average(x, 1), x)
    np.testing.assert_allclose(moving_average(x, 2), [1.0, 1.0, 3.0, 3.0, np.nan, 6.0])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="window"):
            moving_average(x, bad)


# ---------------------------------------------------------------- curves


def labels_frame(rng: np.random.Generator, n_repeats: int = 6, n_positions: int = 5) -> pd.DataFrame:
    rows = []
    for cond, shift in (("default", 0.0), ("flipped", -1.0)):
        for r in range(n_repeats):
            for pos in range(1, n_positions + 1):
                rows.append(
                    {
                        "dataset": "toy",
                        "condition": cond,
                        "repeat": r,
                        "position": pos,
                        "logp_true": shift - rng.exponential(1.0),
                        "correct": bool(rng.random() < 0.7),
                    }
                )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter


def test_position_curves_equal_groupby_means() -> None:
    frame = labels_frame(np.random.default_rng(0))
    out = position_curves(frame, ["logp_true", "correct"], np.random.default_rng(1), n_boot=200)
    assert list(out.columns) == ["condition", "position", "metric", "mean", "ci_low", "ci_high", "n"]
    assert len(out) == 2 * 2 * 5
    expected = (
        frame.assign(correct=frame["correct"].astype(float))
        .melt(id_vars=["condition", "position"], value_vars=["logp_true", "correct"], var_name="metric")
        .groupby(["condition", "metric", "position"])["value"]
        .agg(["mean", "size"])
        .reset_index()
    )
    merged = out.merge(expected, on=["condition", "metric", "position"], suffixes=("", "_ref"))
    assert len(merged) == len(out)
    np.testing.assert_allclose(merged["mean"], merged["mean_ref"])
    np.testing.assert_array_equal(merged["n"], merged["size"])
    assert np.all(out["ci_low"] <= out["mean"]) and np.all(out["mean"] <= out["ci_high"])
    assert np.all(out["ci_low"] < out["ci_high"])  # non-degenerate data
    # Sorted by group, metric, position.
    keys = list(zip(out["condition"], out["metric"], out["position"], strict=True))
    assert keys == sorted(keys)


def test_position_curves_seeded_smoothing_and_groups() -> None:
    frame = labels_frame(np.random.default_rng(2))
    a = position_curves(frame, ["logp_true"], np.random.default_rng(5), n_boot=100, smooth=3)
    b = position_curves(frame, ["logp_true"], np.random.default_rng(5), n_boot=100, smooth=3)
    pd.testing.assert_frame_equal(a, b)
    # Smoothing per repeat then averaging = averaging then smoothing (both linear, no gaps).
    for cond, sub in frame.groupby("condition"):
        raw = sub.groupby("position")["logp_true"].mean().sort_index().to_numpy()
        got = a[a["condition"] == cond].sort_values("position")["mean"].to_numpy()
        np.testing.assert_allclose(got, moving_average(raw, 3))
    two = position_curves(
        frame, ["correct"], np.random.default_rng(0), n_boot=50, group_cols=("dataset", "condition")
    )
    assert list(two.columns[:2]) == ["dataset", "condition"]
    assert set(two["dataset"]) == {"toy"}


def test_position_curves_missing_cells_and_errors() -> None:
    frame = labels_frame(np.random.default_rng(3))
    holey = frame.drop(frame[(frame["repeat"] == 0) & (frame["position"] == 2)].index)
    out = position_curves(holey, ["logp_true"], np.random.default_rng(0), n_boot=50)
    n = out.set_index(["condition", "position"])["n"]
    assert n[("default", 2)] == 5 and n[("default", 3)] == 6
    with pytest.raises(ValueError, match="duplicate rows"):
        position_curves(pd.concat([frame, frame]), ["logp_true"], np.random.default_rng(0), n_boot=10)
    with pytest.raises(ValueError, match="missing column"):
        position_curves(frame, ["nope"], np.random.default_rng(0), n_boot=10)


def test_bootstrap_ci_columns_coverage() -> None:
    """Percentile bootstrap 95% intervals of a normal mean cover it roughly 95% of the time."""
    rng = np.random.default_rng(12345)
    true_mean, n_sets, n = 1.5, 300, 40
    data = rng.normal(true_mean, 2.0, size=(n, n_sets))  # each column one synthetic dataset
    _, low, high = bootstrap_ci_columns(data, rng, n_boot=400)
    # Columns share resampled row indices but hold independent data, so coverage is per set.
    coverage = float(np.mean((low <= true_mean) & (true_mean <= high)))
    assert 0.88 <= coverage <= 0.99, coverage


# ---------------------------------------------------------------- paired difference


def test_paired_difference_identical_and_shifted() -> None:
    frame = labels_frame(np.random.default_rng(4))
    base = frame[frame["condition"] == "default"]
    shifted = base.assign(condition="shifted", logp_true=base["logp_true"] + 0.75)
    both = pd.concat([frame, shifted])
    same = paired_difference(both, "logp_true", 3, "default", "default", np.random.default_rng(0), 200)
    assert same == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 6}
    diff = paired_difference(both, "logp_true", 3, "shifted", "default", np.random.default_rng(0), 200)
    assert diff["mean"] == pytest.approx(0.75)
    assert diff["ci_low"] == pytest.approx(0.75) and diff["ci_high"] == pytest.approx(0.75)
    # Unpaired noise gives a real interval around the paired mean; booleans work.
    real = paired_difference(both, "correct", 2, "default", "flipped", np.random.default_rng(0), 200)
    assert real["ci_low"] <= real["mean"] <= real["ci_high"]


def test_paired_difference_pairs_only_shared_repeats() -> None:
    frame = pd.DataFrame(
        {
            "condition": ["a", "a", "a", "b", "b"],
            "repeat": [0, 1, 2, 1, 2],
            "position": [1, 1, 1, 1, 1],
            "m": [100.0, 2.0, 5.0, 1.0, 1.0],
        }
    )
    got = paired_difference(frame, "m", 1, "a", "b", np.random.default_rng(0), 100)
    assert got["n"] == 2 and got["mean"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="condition 'c'"):
        paired_difference(frame, "m", 1, "a", "c", np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match="repeat 1 appears twice"):
        paired_difference(pd.concat([frame, frame.iloc[[1]]]), "m", 1, "a", "b", np.random.default_rng(0))


# ---------------------------------------------------------------- calibration and summaries


def test_contextual_calibration_removes_constant_bias() -> None:
    bias = np.log(np.array([0.7, 0.2, 0.1])) - 3.0  # unnormalised, as from the full vocabulary
    cf = np.tile(bias, (4, 1))
    calibrated = contextual_calibration(cf, cf)
    np.testing.assert_allclose(np.exp(calibrated), np.full((4, 3), 1 / 3))
    # A query's evidence on top of the bias survives: ratios to the bias are kept.
    query = bias + np.log(np.array([[2.0, 1.0, 1.0]]))
    np.testing.assert_allclose(np.exp(contextual_calibration(query, cf)), [[0.5, 0.25, 0.25]])
    # p_cf averages probabilities over content-free inputs (hand computation).
    cf2 = np.log(np.array([[0.8, 0.2], [0.4, 0.6]]))
    q = np.log(np.array([[0.5, 0.5]]))
    np.testing.assert_allclose(np.exp(contextual_calibration(q, cf2)), [[0.4 / 1.0, 0.6 / 1.0]])
    with pytest.raises(ValueError, match="K=2"):
        contextual_calibration(np.zeros((1, 3)), cf2)


def test_summary_positions() -> None:
    # position i predicts example i from examples 1..i-1: "after k examples" is position k + 1
    assert summary_positions(33, 16) == {"first": 1, "after_N": 17, "after_2N": 33, "last": 33}
    assert summary_positions(40, 8) == {"first": 1, "after_N": 9, "after_2N": 17, "last": 40}
    assert summary_positions(6, 4)["after_2N"] == 6
    assert summary_positions(4, 16)["after_N"] == 4  # flip_at of a run without flip conditions
    with pytest.raises(ValueError, match="flip_at"):
        summary_positions(10, 0)
    with pytest.raises(ValueError, match="n_examples"):
        summary_positions(0, 1)


def test_pooled_windows() -> None:
    w = pooled_windows(17, 8)
    assert w["positions_2_to_last"] == list(range(2, 18))
    assert w["last_quarter"] == [14, 15, 16, 17]
    # context of position 10 holds example 9, the first of the second mapping; 17 = 2N + 1
    assert w["second_mapping"] == list(range(10, 18))
    assert pooled_windows(3, 1) == {"positions_2_to_last": [2, 3], "last_quarter": [3], "second_mapping": [3]}
    assert pooled_windows(4, 5)["second_mapping"] == []
    with pytest.raises(ValueError, match="n_examples"):
        pooled_windows(0, 1)


# ---------------------------------------------------------------- label mass


def test_label_mass_is_logsumexp_of_raw_logprobs() -> None:
    rng = np.random.default_rng(9)
    lp = random_logprobs(rng, 6, 3) - 10.0
    got = label_mass(lp)
    for i in range(6):
        assert got[i] == pytest.approx(math.log(sum(math.exp(v) for v in lp[i])))
    # hand computation: two words with 0.1 and 0.3 of the vocabulary mass hold 0.4
    assert label_mass(np.log([0.1, 0.3])) == pytest.approx(math.log(0.4))
    assert label_mass(np.array([-np.inf, -np.inf])) == -np.inf
    # the renormalised metrics do not see the mass: a shift changes it and nothing else
    shifted = position_metrics(lp - 7.0, np.zeros(6, int), np.zeros(6, int))
    plain = position_metrics(lp, np.zeros(6, int), np.zeros(6, int))
    np.testing.assert_allclose(shifted["logp_true"], plain["logp_true"])
    np.testing.assert_allclose(label_mass(lp - 7.0), got - 7.0)
    with pytest.raises(ValueError, match="K >= 1"):
        label_mass(np.zeros((2, 0)))


# ---------------------------------------------------------------- pooled, paired effects


def test_paired_pooled_ci_matches_a_loop() -> None:
    """Same draws as a plain loop: per unit the mean over cells of a - b, then resample units."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    a[2, 1] = np.nan  # one missing cell: that unit averages its other 4 differences
    b[4, :] = np.nan  # a unit with no pair at all is dropped
    interval, n = paired_pooled_ci(a, b, np.random.default_rng(11), n_boot=500)
    units = []
    for u in range(7):
        cells = [a[u, j] - b[u, j] for j in range(5) if not (np.isnan(a[u, j]) or np.isnan(b[u, j]))]
        if cells:
            units.append(sum(cells) / len(cells))
    assert n == 6 and interval.mean == pytest.approx(sum(units) / 6)
    draws = np.random.default_rng(11).integers(0, 6, size=(500, 6))
    boots = sorted(sum(units[i] for i in row) / 6 for row in draws)
    assert interval.low == pytest.approx(np.quantile(boots, 0.025))
    assert interval.high == pytest.approx(np.quantile(boots, 0.975))
    with pytest.raises(ValueError, match="one shape"):
        paired_pooled_ci(a, b[:, :3], np.random.default_rng(0))


def test_paired_pooled_ci_approaches_the_exact_bootstrap() -> None:
    """With 4 units the bootstrap distribution has 4**4 equally likely resamples: enumerate them."""
    import itertools

    a = np.array([[1.0, 2.0], [0.5, 0.5], [3.0, 1.0], [0.0, -1.0]])
    b = np.zeros_like(a)
    units = a.mean(axis=1)
    exact = np.sort([np.mean(units[list(idx)]) for idx in itertools.product(range(4), repeat=4)])
    interval, n = paired_pooled_ci(a, b, np.random.default_rng(0), n_boot=20000)
    cdf = lambda x: np.mean(exact <= x + 1e-12)  # noqa: E731
    # the percentile bounds sit at the exact distribution's 2.5% / 97.5% points (within MC error)
    assert n == 4 and 0.01 <= cdf(interval.low) <= 0.06 and 0.95 <= cdf(interval.high) <= 0.995
    assert interval.mean == pytest.approx(units.mean())


def test_pooled_paired_difference_pairs_repeats_and_positions() -> None:
    rows = []
    for cond, shift in (("a", 0.5), ("b", 0.0)):
        for r in range(5):
            for pos in range(1, 5):
                rows.append({"condition": cond, "repeat": r, "position": pos,
                             "m": shift + 10.0 * r + pos})  # repeat effect cancels when paired
    frame = pd.DataFrame(rows)
    got = pooled_paired_difference(frame, "m", [2, 3, 4], "a", "b", np.random.default_rng(0), 200)
    assert got == {"mean": pytest.approx(0.5), "ci_low": pytest.approx(0.5), "ci_high": pytest.approx(0.5),
                   "n": 5}
    # brute force on noisy data: per repeat the window mean of a - b, then the mean over repeats
    noisy = frame.assign(m=frame["m"] + np.random.default_rng(1).normal(size=len(frame)))
    noisy = noisy.drop(noisy[(noisy.condition == "b") & (noisy.repeat == 4)].index)  # repeat 4 unpaired
    got = pooled_paired_difference(noisy, "m", [3, 4], "a", "b", np.random.default_rng(0), 300)
    per_repeat = []
    for r in range(4):
        cell = lambda c, p: noisy[(noisy.condition == c) & (noisy.repeat == r) & (noisy.position == p)].m.item()  # noqa: E731
        per_repeat.append(np.mean([cell("a", p) - cell("b", p) for p in (3, 4)]))
    assert got["n"] == 4 and got["mean"] == pytest.approx(np.mean(per_repeat))
    assert got["ci_low"] <= got["mean"] <= got["ci_high"]
    with pytest.raises(ValueError, match="condition 'c'"):
        pooled_paired_difference(frame, "m", [2], "a", "c", np.random.default_rng(0))
    with pytest.raises(ValueError, match="repeat 1 appears twice at position 2"):
        doubled = pd.concat([frame, frame.iloc[[5]]])
        pooled_paired_difference(doubled, "m", [2], "a", "b", np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least one position"):
        pooled_paired_difference(frame, "m", [], "a", "b", np.random.default_rng(0))


def twin_frame(g: np.random.Generator, n_repeats: int, effect: float, shared_sd: float, own_sd: float,
               twin_weight: float = 1.0, twin_sd: float | None = None, n_positions: int = 10) -> pd.DataFrame:
    """Conditions default / random and their twins: a label-sequence component ``shared``
    enters the real prompt and (times ``twin_weight``) its twin; the twins' difference has
    mean zero by construction."""
    rows = []
    for r in range(n_repeats):
        for cond, value in (("default", effect), ("random", 0.0)):
            shared = g.normal(0, shared_sd, size=n_positions)
            for i in range(n_positions):
                rows.append((cond, r, i + 1, value + shared[i] + g.normal(0, own_sd)))
                rows.append((cond + "_cf", r, i + 1,
                             twin_weight * shared[i] + g.normal(0, own_sd if twin_sd is None else twin_sd)))
    return pd.DataFrame(rows, columns=["condition", "repeat", "position", "x"])


def test_a_twin_that_shares_the_noise_narrows_the_adjusted_ci() -> None:
    """The control variate's point: a label-sequence component common to a prompt and its
    content-free twin cancels, the effect stays."""
    frame = twin_frame(np.random.default_rng(0), 40, 0.3, 3.0, 0.1)
    window = list(range(1, 11))
    plain = pooled_paired_difference(frame, "x", window, "default", "random", np.random.default_rng(1))
    adjusted = adjusted_pooled_difference(frame, "x", window, "default", "random", np.random.default_rng(1))
    assert adjusted["ci_high"] - adjusted["ci_low"] < 0.2 * (plain["ci_high"] - plain["ci_low"])
    assert adjusted["ci_low"] < 0.3 < adjusted["ci_high"]
    assert adjusted["beta"] == pytest.approx(1.0, abs=0.05) and adjusted["variance_ratio"] < 0.05
    assert adjusted["n"] == 40


def test_the_cross_fitted_coefficient_recovers_the_optimal_beta() -> None:
    """y = mu + 0.4 c + noise: the variance-minimising coefficient is 0.4, and the adjusted
    variance is var(y) (1 - rho^2)."""
    g = np.random.default_rng(3)
    c = g.normal(0, 2.0, size=4000)
    y = 1.5 + 0.4 * c + g.normal(0, 1.0, size=4000)
    cv = cross_fitted_control_variate(y, c)
    assert cv.beta == pytest.approx(0.4, abs=0.02)
    rho2 = (0.4 * 2.0) ** 2 / ((0.4 * 2.0) ** 2 + 1.0)
    assert cv.variance_ratio == pytest.approx(1 - rho2, abs=0.03)
    assert cv.adjusted.mean() == pytest.approx(1.5, abs=0.05)


def test_a_fixed_coefficient_of_one_adds_variance_where_the_fitted_one_does_not() -> None:
    """The twin that shares little with the prompt (2 cov < var(twin)): subtracting it
    widens the interval; the cross-fitted coefficient stays near 0 and near ratio 1."""
    frame = twin_frame(np.random.default_rng(5), 40, 0.3, 1.0, 0.5, twin_weight=0.1, twin_sd=1.5)
    window = list(range(1, 11))
    plain = pooled_paired_difference(frame, "x", window, "default", "random", np.random.default_rng(1))
    y = pooled_unit_effects(frame, "x", window, "default", "random")
    c = pooled_unit_effects(frame, "x", window, "default_cf", "random_cf")
    assert np.var(y - c) > 1.2 * np.var(y)  # the old fixed-coefficient form
    adjusted = adjusted_pooled_difference(frame, "x", window, "default", "random", np.random.default_rng(1))
    assert adjusted["variance_ratio"] < 1.1
    assert (adjusted["ci_high"] - adjusted["ci_low"]) < 1.1 * (plain["ci_high"] - plain["ci_low"])


def test_the_adjusted_mean_is_unbiased_and_its_interval_covers() -> None:
    """Over many synthetic studies with a known effect, the cross-fitted adjusted mean
    averages to the effect (a coefficient fitted on the same units would be biased by
    the sample's own control) and its 90% interval covers it near 90% of the time."""
    g = np.random.default_rng(11)
    estimates, covered = [], 0
    n_studies = 400
    for study in range(n_studies):
        c = g.normal(0, 1.0, size=40)
        y = 0.25 + 0.7 * c + g.normal(0, 0.5, size=40)
        cv = cross_fitted_control_variate(y, c)
        interval = bootstrap_ci(cv.adjusted, np.random.default_rng(study), n_boot=400, level=0.9)
        estimates.append(interval.mean)
        covered += interval.low <= 0.25 <= interval.high
    se = np.std(estimates) / math.sqrt(n_studies)
    assert abs(np.mean(estimates) - 0.25) < 3 * se
    assert 0.84 <= covered / n_studies <= 0.95


def test_a_control_from_too_few_units_gives_nan() -> None:
    cv = cross_fitted_control_variate(np.arange(MIN_CONTROL_UNITS - 1.0), np.ones(MIN_CONTROL_UNITS - 1))
    assert np.isnan(cv.beta) and np.isnan(cv.adjusted).all()
    flat = cross_fitted_control_variate(np.arange(6.0), np.zeros(6))  # a constant control: beta 0
    assert flat.beta == 0.0 and list(flat.adjusted) == list(np.arange(6.0)) and flat.variance_ratio == 1.0
    with pytest.raises(ValueError, match="NaN"):
        cross_fitted_control_variate(np.array([1.0, np.nan, 2, 3]), np.ones(4))


def test_calibration_position_by_position_uses_each_positions_twin() -> None:
    g = np.random.default_rng(2)
    q, t = random_logprobs(g, 6, 3), random_logprobs(g, 6, 3)
    got = calibrated_logprobs(q, t)
    for i in range(6):
        np.testing.assert_allclose(got[i], contextual_calibration(q[i:i + 1], t[i:i + 1])[0])
    # a prompt whose only signal is its twin's bias comes out uniform
    np.testing.assert_allclose(calibrated_logprobs(t, t), np.full((6, 3), -math.log(3)), atol=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        calibrated_logprobs(q, t[:5])
