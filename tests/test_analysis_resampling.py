"""Intervals over experimental units (issue 23.1, 23.2, 23.5): repeated rows and correlated
layers never narrow an interval; comparators normalised by their ceilings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iclscope.analysis import rsa
from iclscope.analysis.resampling import (
    band_correlation_ci, difference_ci, distinct_values, normal_interval, stratified_draws,
)


def test_distinct_values_average_each_unit_once():
    values = np.array([1.0, 3.0, 5.0, np.nan, 7.0])
    units = ["a", "a", "b", "b", "c"]
    np.testing.assert_allclose(distinct_values(values, units), [2.0, 5.0, 7.0])


def test_duplicated_rows_do_not_narrow_a_difference_interval():
    g = np.random.default_rng(0)
    before, after = g.normal(size=8), g.normal(1.0, size=8)
    units_b = [f"b{i}" for i in range(8)]
    units_a = [f"a{i}" for i in range(8)]
    once = difference_ci(before, units_b, after, units_a, np.random.default_rng(1), 2000)
    # every pair written 12 times (as 12 conditions sharing one prompt pair would be)
    twelve = difference_ci(np.repeat(before, 12), np.repeat(units_b, 12), np.repeat(after, 12),
                           np.repeat(units_a, 12), np.random.default_rng(1), 2000)
    assert once.units == twelve.units == "prompt pairs" and once.n_units == twelve.n_units == 8
    assert twelve.interval == pytest.approx(once.interval)


def test_a_shared_before_prompt_is_one_unit_not_many():
    """Regression's design: 4 zero-shot prompts, each shared by 12 conditions, against 48
    distinct after prompts. Resampling the 48 pairs would treat the 4 before values as 48;
    the pairs sharing a before prompt are one cluster instead."""
    g = np.random.default_rng(2)
    before_prompt = g.normal(size=4)
    conditions, variants = np.meshgrid(np.arange(12), np.arange(4), indexing="ij")
    before = before_prompt[variants.ravel()]
    after = g.normal(2.0, 1.0, size=48)
    units_b = [f"v{v}" for v in variants.ravel()]
    units_a = [f"c{c}v{v}" for c, v in zip(conditions.ravel(), variants.ravel())]
    res = difference_ci(before, units_b, after, units_a, np.random.default_rng(3), 4000)
    assert res.n_units == 4 and res.units == "clusters of prompt pairs sharing a prompt (48 pairs)"
    assert res.interval.mean == pytest.approx(after.mean() - before_prompt.mean())
    naive = np.random.default_rng(3)
    diffs = after - before
    boots = diffs[naive.integers(0, 48, size=(4000, 48))].mean(axis=1)
    naive_width = np.subtract(*np.quantile(boots, [0.975, 0.025]))
    assert res.interval.high - res.interval.low > 1.3 * naive_width
    # a before prompt repeated only within one pair of variants links just those pairs
    res = difference_ci([1.0, 1.0, 2.0, 3.0], ["x", "x", "y", "z"], [2.0, 4.0, 2.5, 3.5], ["a", "b", "c", "d"],
                        np.random.default_rng(0), 200)
    assert res.n_units == 3 and res.interval.mean == pytest.approx(np.mean([1.0, 3.0, 0.5, 0.5]))


def test_band_interval_resamples_conditions_not_layers():
    """Identical layers: an interval over layers would have width 0; over conditions it does not."""
    g = np.random.default_rng(4)
    y = g.normal(size=16)
    x_one = 0.5 * y + g.normal(size=16)
    ci, n = band_correlation_ci(np.tile(x_one, (10, 1)), y, np.random.default_rng(5), 2000)
    assert n == 16
    assert ci.mean == pytest.approx(np.corrcoef(x_one, y)[0, 1])
    assert ci.high - ci.low > 0.3 and ci.low < ci.mean < ci.high
    # the band mean of per-layer correlations, recomputed per resample
    layers = np.stack([0.5 * y + g.normal(size=16) for _ in range(6)])
    ci, _ = band_correlation_ci(layers, y, np.random.default_rng(5), 500)
    assert ci.mean == pytest.approx(np.mean([np.corrcoef(row, y)[0, 1] for row in layers]))


def test_stratified_draws_keep_every_stratum():
    draws = stratified_draws(np.random.default_rng(0), [4] * 16, 100)
    assert draws.shape == (100, 16, 4) and draws.min() >= 0 and draws.max() <= 3
    with pytest.raises(ValueError, match="unequal"):
        stratified_draws(np.random.default_rng(0), [4, 2], 10)
    joint = stratified_draws(np.random.default_rng(0), [4] * 12, 50, joint=True)
    assert (joint == joint[:, :1, :]).all() and len(np.unique(joint[:, 0, :], axis=0)) > 10


def test_normal_interval_is_centred_on_the_estimate_even_when_the_bootstraps_are_not():
    boots = np.random.default_rng(0).normal(-0.3, 0.1, size=4000)  # shifted below the estimate
    ci = normal_interval(0.0, boots, 0.95)
    assert ci.low == pytest.approx(-1.96 * boots.std(ddof=1), rel=1e-3) and ci.high == pytest.approx(-ci.low)
    assert np.isnan(normal_interval(0.0, np.array([1.0]), 0.95).low)


# ----------------------------------------------------------------------------- comparators (23.5)


def _conditions(n_a: int, n_b: int) -> list[dict]:
    return [{"a": i, "b": j} for i in range(n_a) for j in range(n_b)]


@pytest.mark.parametrize("field", ["a", "b"])
def test_ceiling_of_tau_a_is_the_share_of_untied_pairs(field):
    hyp = rsa.hypothesis_matrix(_conditions(4, 3), field)
    tri = rsa.upper_triangle(hyp)
    m, shared = len(tri), int(tri.sum())
    assert rsa.comparator_ceiling(hyp, "tau_a") == pytest.approx(2 * shared * (m - shared) / (m * (m - 1)))
    assert rsa.comparator_ceiling(hyp, "pearson") == pytest.approx(1.0, abs=1e-6)
    best = rsa.ceiling_similarity(hyp)
    for method in rsa.COMPARATORS:  # nothing beats the ceiling
        sims = [rsa.similarity_matrix(np.random.default_rng(s).normal(size=(12, 30))) for s in range(20)]
        assert max(rsa.alignment(s, hyp, method) for s in sims) <= rsa.alignment(best, hyp, method) + 1e-12


def test_tau_a_is_proportional_to_spearman_with_a_binary_hypothesis():
    """So the two give identical permutation p-values; only their scale (ceiling) differs."""
    hyp = rsa.hypothesis_matrix(_conditions(4, 4), "a")
    ratios, ps = [], []
    for seed in range(5):
        sim = rsa.similarity_matrix(np.random.default_rng(seed).normal(size=(16, 20)))
        ratios.append(rsa.alignment(sim, hyp, "tau_a") / rsa.alignment(sim, hyp, "spearman"))
        ps.append([rsa.permutation_test(sim, hyp, np.random.default_rng(9), 300, m)[1] for m in ("tau_a", "spearman")])
    assert np.ptp(ratios) < 1e-9
    assert all(a == pytest.approx(b) for a, b in ps)
    # normalised by their ceilings the two agree
    sim = rsa.similarity_matrix(np.random.default_rng(0).normal(size=(16, 20)))
    norm = [rsa.alignment(sim, hyp, m) / rsa.comparator_ceiling(hyp, m) for m in ("tau_a", "rho_a")]
    assert norm[0] == pytest.approx(norm[1], rel=0.2)


@pytest.mark.parametrize("method", list(rsa.COMPARATORS))
def test_batched_alignment_matches_the_loop(method):
    hyp = rsa.hypothesis_matrix(_conditions(4, 3), "a")
    means = np.random.default_rng(1).normal(size=(6, 12, 9))
    sims = rsa.batched_similarity(means)
    for i in range(6):
        np.testing.assert_allclose(sims[i], rsa.similarity_matrix(means[i]), atol=1e-12)
    np.testing.assert_allclose(rsa.batched_alignment(sims, hyp, method),
                               [rsa.alignment(s, hyp, method) for s in sims], atol=1e-12)
    flat = np.zeros((1, 12, 12))
    assert np.isnan(rsa.batched_alignment(flat, hyp, method)).all()
