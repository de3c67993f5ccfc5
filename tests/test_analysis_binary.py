"""Unit tests of the study A analyses: randomness metrics, baselines, model-selection fits."""

from __future__ import annotations

import gzip
import itertools
import math
from dataclasses import asdict
from functools import cache

import numpy as np
import pytest
from iclscope.analysis import baselines as bl
from iclscope.analysis import binary_metrics as bm
from iclscope.analysis import logistic as lg
from iclscope.analysis import model_selection as ms
from scipy.special import expit


def random_strings(rng: np.random.Generator, n: int, max_len: int) -> list[str]:
    return ["".join(rng.choice(["0", "1"], size=rng.integers(0, max_len + 1))) for _ in range(n)]


# ---------------------------------------------------------------------------- binary_metrics


def test_as_flips_accepts_strings_and_arrays_and_rejects_others():
    assert bm.as_flips("0110").tolist() == [0, 1, 1, 0]
    assert bm.as_flips([1, 0, 1]).tolist() == [1, 0, 1]
    assert bm.to_string(np.array([1, 0, 0])) == "100"
    with pytest.raises(ValueError, match="'2'"):
        bm.as_flips("0120")
    with pytest.raises(ValueError, match=r"\[3\]"):
        bm.as_flips(np.array([0, 3]))
    with pytest.raises(ValueError, match="1-D"):
        bm.as_flips(np.zeros((2, 2), dtype=int))


def test_mean_and_alternation_on_hand_made_sequences():
    assert bm.mean("0111") == 0.75
    assert math.isnan(bm.mean(""))
    assert bm.alternation_rate("010101") == 1.0
    assert bm.alternation_rate("0000") == 0.0
    assert bm.alternation_rate("0011") == pytest.approx(1 / 3)
    assert bm.alternation_rate(np.array([1, 0, 0, 1, 1])) == pytest.approx(2 / 4)
    assert math.isnan(bm.alternation_rate("1"))


def test_longest_run_known_and_brute_force():
    assert bm.longest_run("0011101") == 3
    assert bm.longest_run("") == 0
    assert bm.longest_run("1") == 1
    assert bm.longest_run("000000") == 6
    rng = np.random.default_rng(1)
    for s in random_strings(rng, 200, 30):
        expected = max((len(list(g)) for _, g in itertools.groupby(s)), default=0)
        assert bm.longest_run(s) == expected, s


def test_gzip_length_matches_direct_compression_and_is_deterministic():
    s = "0110100110010110" * 4
    expected = len(gzip.compress(s.encode("ascii"), compresslevel=9, mtime=0))
    assert bm.gzip_length(s) == expected
    assert bm.gzip_length(s) == bm.gzip_length(s)
    # a periodic string compresses better than a random one of the same length
    rng = np.random.default_rng(0)
    noisy = "".join(rng.choice(["0", "1"], size=len(s)))
    assert bm.gzip_length(s) < bm.gzip_length(noisy)
    with pytest.raises(TypeError, match="ndarray"):
        bm.gzip_length(np.array([0, 1]))  # a string is required


def test_gzip_net_removes_the_fixed_header():
    assert bm.GZIP_EMPTY == len(gzip.compress(b"", compresslevel=9, mtime=0)) == 20
    assert bm.gzip_net("") == 0  # nothing to compress: no bytes, not 20
    for s in ("0", "01" * 4, "0110100110010110" * 4):
        assert bm.gzip_net(s) == bm.gzip_length(s) - bm.gzip_length("")
    # at the paper's length the net size separates a periodic from a random string by a factor
    rng = np.random.default_rng(1)
    noisy = "".join(rng.choice(["0", "1"], size=50))
    assert bm.gzip_net("01" * 25) < bm.gzip_net(noisy) / 2


def test_running_average_stats_against_python_loop():
    rng = np.random.default_rng(2)
    for s in random_strings(rng, 50, 40):
        if not s:
            assert all(math.isnan(v) for v in bm.running_average_stats(s))
            continue
        running, total = [], 0
        for t, ch in enumerate(s, start=1):
            total += int(ch)
            running.append(total / t)
        mu = sum(running) / len(running)
        std = math.sqrt(sum((r - mu) ** 2 for r in running) / len(running))
        got = bm.running_average_stats(s)
        assert got == pytest.approx((std, min(running), max(running)))


def test_repeated_substrings_hand_and_brute_force():
    assert bm.repeated_substrings("00000", 2) == 3  # "00" at starts 1, 2, 3 repeat start 0
    assert bm.repeated_substrings("0101", 2) == 1  # "01" at 2 repeats start 0; "10" is new
    # missing, not 0, where fewer than two windows fit (window >= length): nothing could repeat
    assert bm.repeated_substrings("0110", 5) is None
    assert bm.repeated_substrings("0110", 4) is None
    assert bm.repeated_substrings("0000", 3) == 1
    rng = np.random.default_rng(3)
    for s in random_strings(rng, 100, 25):
        for w in (1, 2, 3, 5):
            brute = sum(
                any(s[j : j + w] == s[i : i + w] for j in range(i)) for i in range(len(s) - w + 1)
            )
            assert bm.repeated_substrings(s, w) == (brute if len(s) - w + 1 >= 2 else None)
    with pytest.raises(ValueError, match="window"):
        bm.repeated_substrings("0101", 0)


def brute_edit_distance(a: str, b: str, sub: int) -> int:
    @cache
    def d(i: int, j: int) -> int:
        if i == 0:
            return j
        if j == 0:
            return i
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (0 if a[i - 1] == b[j - 1] else sub))

    return d(len(a), len(b))


def test_edit_distance_against_memoised_recursion():
    assert bm.edit_distance("kitten", "sitting") == 3
    assert bm.edit_distance("", "0101") == 4
    rng = np.random.default_rng(4)
    strings = random_strings(rng, 40, 7)
    for a, b in itertools.product(strings[:20], strings[20:]):
        for sub in (1, 2):
            assert bm.edit_distance(a, b, sub) == brute_edit_distance(a, b, sub), (a, b, sub)


def test_levenshtein_ratio_definitions():
    assert bm.levenshtein_ratio("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    # python-Levenshtein's ratio("kitten", "sitting"): indel distance 5 over 13 characters
    assert bm.levenshtein_ratio("kitten", "sitting", kind="indel") == pytest.approx(1 - 5 / 13)
    assert bm.levenshtein_ratio("0101", "0101") == 1.0
    assert bm.levenshtein_ratio("", "") == 1.0
    assert bm.levenshtein_ratio("0000", "1111") == 0.0
    with pytest.raises(ValueError, match="kind"):
        bm.levenshtein_ratio("0", "1", kind="jaro")


@pytest.mark.parametrize("kind", ["normalized", "indel"])
def test_mean_pairwise_levenshtein_matches_pairwise_loop(kind):
    rng = np.random.default_rng(5)
    seqs = random_strings(rng, 12, 9) + ["", "0101", "0101", "1"]
    expected = np.mean([bm.levenshtein_ratio(a, b, kind) for a, b in itertools.combinations(seqs, 2)])
    assert bm.mean_pairwise_levenshtein(seqs, kind) == pytest.approx(expected)
    assert bm.mean_pairwise_levenshtein(["0101"] * 3, kind) == 1.0
    assert math.isnan(bm.mean_pairwise_levenshtein(["01"], kind))


def test_sequence_metrics_keys_and_values():
    s = "0011101"
    out = bm.sequence_metrics(s)
    expected_keys = ["mean", "alternation", "longest_run", "gzip_net", "running_std", "running_min",
                     "running_max"] + [f"repeats_w{w}" for w in range(5, 26)]
    assert list(out) == expected_keys
    assert out["mean"] == pytest.approx(4 / 7)
    assert out["alternation"] == pytest.approx(3 / 6)
    assert out["longest_run"] == 3
    assert out["gzip_net"] == bm.gzip_net(s)
    assert out["running_min"] == 0.0 and out["running_max"] == pytest.approx(0.6)
    assert out["repeats_w5"] == 0  # 3 windows of 5 in 7 flips, all distinct
    assert out["repeats_w7"] is None and out["repeats_w25"] is None  # no two windows fit: missing
    assert list(bm.sequence_metrics(s, windows=[1, 2])) == expected_keys[:7] + ["repeats_w1", "repeats_w2"]


# ---------------------------------------------------------------------------- baselines


def test_baselines_recover_their_parameters():
    rng = np.random.default_rng(10)
    fitted = bl.Bernoulli.fit(bl.Bernoulli(0.3).sample(2000, 50, rng))
    assert fitted.p == pytest.approx(0.3, abs=0.02)
    fitted = bl.GamblersFallacy.fit(bl.GamblersFallacy(0.65).sample(2000, 50, rng))
    assert fitted.p == pytest.approx(0.65, abs=0.02) and fitted.window == 5
    fitted = bl.MarkovChain.fit(bl.MarkovChain(0.8, 0.75).sample(5000, 50, rng))
    assert fitted.p0 == pytest.approx(0.8, abs=0.02)
    assert fitted.p_alt == pytest.approx(0.75, abs=0.02)


def test_gamblers_fallacy_fit_is_the_grid_argmax():
    rng = np.random.default_rng(11)
    seqs = bl.GamblersFallacy(0.4, window=3).sample(20, 30, rng)
    fitted = bl.GamblersFallacy.fit(seqs, window=3)
    grid = np.linspace(0.0, 1.0, 401)
    lls = [sum(bl.GamblersFallacy(p, 3).loglik(s) for s in seqs) for p in grid]
    assert sum(fitted.loglik(s) for s in seqs) >= max(lls) - 1e-9
    assert fitted.p == pytest.approx(grid[int(np.argmax(lls))], abs=0.005)


def test_loglik_by_hand():
    assert bl.Bernoulli(0.3).loglik("100") == pytest.approx(math.log(0.3) + 2 * math.log(0.7))
    # window 2: p_0 = 0.6; t=1: mean(1) = 1 -> 0.2; t=2: mean(1, 1) = 1 -> 0.2, x=0 -> 0.8
    assert bl.GamblersFallacy(0.6, window=2).loglik(np.array([1, 1, 0])) == pytest.approx(
        math.log(0.6) + math.log(0.2) + math.log(0.8)
    )
    # short history: window 5 but only x_0..x_{t-1} available
    assert bl.GamblersFallacy(0.5, window=5).probs("101") == pytest.approx([0.5, 0.0, 0.5])
    assert bl.MarkovChain(0.8, 0.25).loglik("1001") == pytest.approx(
        math.log(0.8) + math.log(0.25) + math.log(0.75) + math.log(0.25)
    )
    # a deterministic prediction that fails costs log(EPS), not -inf
    assert bl.Bernoulli(1.0).loglik("0") == pytest.approx(math.log(bl.EPS))
    assert np.isfinite(bl.GamblersFallacy(1.0, window=1).loglik("10"))


def test_sampling_shapes_and_seeding():
    for model in (bl.Bernoulli(0.5), bl.GamblersFallacy(0.5), bl.MarkovChain(0.5, 0.5)):
        a = model.sample(3, 7, np.random.default_rng(0))
        b = model.sample(3, 7, np.random.default_rng(0))
        assert len(a) == 3 and all(s.shape == (7,) and set(s.tolist()) <= {0, 1} for s in a)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    alternating = bl.MarkovChain(1.0, 1.0).sample(1, 6, np.random.default_rng(0))[0]
    assert alternating.tolist() == [1, 0, 1, 0, 1, 0]


def test_baseline_errors_name_the_value():
    with pytest.raises(ValueError, match="1.5"):
        bl.Bernoulli(1.5)
    with pytest.raises(ValueError, match="window"):
        bl.GamblersFallacy(0.5, window=0)
    with pytest.raises(ValueError, match="p_alt"):
        bl.MarkovChain(0.5, -0.1)
    with pytest.raises(ValueError, match="non-empty"):
        bl.Bernoulli.fit([])
    with pytest.raises(ValueError, match="non-empty"):
        bl.MarkovChain.fit([np.array([], dtype=int)])


@pytest.mark.parametrize(
    "name, model",
    [("bernoulli", bl.Bernoulli(0.3)), ("gamblers_fallacy", bl.GamblersFallacy(0.7)),
     ("markov", bl.MarkovChain(0.5, 0.8))],
)
def test_compare_baselines_ranks_the_generator_best(name, model):
    seqs = model.sample(300, 50, np.random.default_rng(12))
    rows = bl.compare_baselines(seqs)
    assert [r["baseline"] for r in rows] == list(bl.BASELINES)
    best = min(rows, key=lambda r: r["bic"])
    assert best["baseline"] == name and best["bic_rank"] == 1
    assert sorted(r["bic_rank"] for r in rows) == [1, 2, 3]
    n_flips = 300 * 50
    for r in rows:
        assert r["loglik_per_flip"] == pytest.approx(r["loglik"] / n_flips)
        assert r["bic"] == pytest.approx(r["n_params"] * math.log(n_flips) - 2 * r["loglik"])
        refit = bl.BASELINES[r["baseline"]](**r["params"])
        assert sum(refit.loglik(s) for s in seqs) == pytest.approx(r["loglik"])


@pytest.mark.parametrize(
    "name, model",
    [("bernoulli", bl.Bernoulli(0.3)), ("gamblers_fallacy", bl.GamblersFallacy(0.7)),
     ("markov", bl.MarkovChain(0.4, 0.8))],
)
def test_baselines_fitted_to_probabilities_recover_the_generator_exactly(name, model):
    """Given a process's own per-step probabilities (not samples), its fit recovers its
    parameters exactly and its KL is zero; the other accounts are worse."""
    seqs = model.sample(40, 30, np.random.default_rng(13))
    probs = [model.probs(s) for s in seqs]
    rows = bl.compare_baselines_on_probs(seqs, probs)
    assert [r["baseline"] for r in rows] == list(bl.BASELINES)
    best = next(r for r in rows if r["kl_rank"] == 1)
    assert best["baseline"] == name and best["kl"] == pytest.approx(0.0, abs=1e-6) and best["mae"] < 1e-4
    for field, value in asdict(model).items():
        assert best["params"][field] == pytest.approx(value, abs=1e-4), field
    assert all(r["kl"] > 1e-3 for r in rows if r["baseline"] != name)


def test_probability_fit_by_hand():
    # Bernoulli: the mean probability; Markov: p0 the first step's, p_alt the expected switches
    seqs, probs = ["10", "01"], [np.array([0.6, 0.2]), np.array([0.4, 0.9])]
    assert bl.Bernoulli.fit_probs(seqs, probs).p == pytest.approx(0.525)
    chain = bl.MarkovChain.fit_probs(seqs, probs)
    # after "1": P(switch) = 1 - 0.2 = 0.8; after "0": P(switch) = 0.9
    assert chain.p0 == pytest.approx(0.5) and chain.p_alt == pytest.approx((0.8 + 0.9) / 2)
    with pytest.raises(ValueError, match="one probability per flip"):
        bl.Bernoulli.fit_probs(["10"], [np.array([0.5])])


# ---------------------------------------------------------------------------- model selection

LENGTHS = np.arange(1, 61)


def test_posterior_random_is_bayes_rule():
    n, k, prior = np.arange(0, 20), 3, 0.01
    random_mass = (1 - prior) * 0.5**n
    expected = random_mass / (random_mass + prior / k)
    assert ms.posterior_random(n, k, prior) == pytest.approx(expected)
    with pytest.raises(ValueError, match="prior_concept"):
        ms.posterior_random(n, k, 0.0)


def test_accounts_relations():
    logit = -8.0
    avg = ms.p_random_curve(LENGTHS, 4, logit, "averaging")
    assert ms.p_random_curve(LENGTHS, 4, logit, "soft", temperature=1.0) == pytest.approx(avg)
    hard = ms.p_random_curve(LENGTHS, 4, logit, "hard")
    assert np.array_equal(hard, (avg > 0.5).astype(float))
    cold = ms.p_random_curve(LENGTHS, 4, logit, "soft", temperature=1e-3)
    assert np.abs(cold - hard).max() < 1e-6
    cont = ms.predict_curve(LENGTHS, 4, logit, "averaging", kind="continuation", depth=3)
    assert cont == pytest.approx(1 - avg + avg * 0.125)
    assert ms.p_continue(np.array([0.0, 1.0]), 2) == pytest.approx([1.0, 0.25])
    with pytest.raises(ValueError, match="account"):
        ms.p_random_curve(LENGTHS, 4, logit, "vote")
    with pytest.raises(ValueError, match="kind"):
        ms.predict_curve(LENGTHS, 4, logit, "hard", kind="guess")
    with pytest.raises(ValueError, match="depth"):
        ms.p_continue(np.array([0.5]), 0)
    with pytest.raises(ValueError, match="k "):
        ms.log_odds_random(LENGTHS, 0, logit)


@pytest.mark.parametrize("kind, depth", [("judgment", 1), ("continuation", 2)])
@pytest.mark.parametrize("account, temperature", [("averaging", 1.0), ("hard", 1.0), ("soft", 2.5)])
def test_fit_account_recovers_parameters(account, temperature, kind, depth):
    k, true_transition = 3, 17.3
    logit = math.log(k) - true_transition * math.log(2)
    rng = np.random.default_rng(20)
    clean = ms.predict_curve(LENGTHS, k, logit, account, kind, depth, temperature)
    observed = clean + rng.normal(0, 0.01, LENGTHS.size)
    fit = ms.fit_account(LENGTHS, observed, k, account, kind, depth)
    assert fit.account == account and fit.kind == kind and fit.predicted.shape == LENGTHS.shape
    if account == "hard":
        assert 17 < fit.transition < 18  # any step between the bracketing lengths fits equally
    else:
        assert fit.transition == pytest.approx(true_transition, abs=0.4)
        assert fit.logit_prior == pytest.approx(logit, abs=0.3)
    if account == "soft":
        assert fit.temperature == pytest.approx(temperature, rel=0.15)
    assert fit.r2 > 0.99
    assert fit.sse == pytest.approx(np.sum((fit.predicted - observed) ** 2))
    assert fit.summary()["prior_concept"] == pytest.approx(expit(fit.logit_prior))


def test_compare_accounts_prefers_sharp_selection_on_step_like_curves():
    k, logit = 2, math.log(2) - 25.5 * math.log(2)
    observed = ms.predict_curve(LENGTHS, k, logit, "soft", temperature=0.2)
    fits = ms.compare_accounts(LENGTHS, observed, k)
    assert set(fits) == set(ms.ACCOUNTS)
    assert fits["soft"].sse < 1e-6
    assert fits["hard"].sse < fits["averaging"].sse
    assert fits["soft"].n_params == 2 and fits["averaging"].n_params == 1
    with pytest.raises(ValueError, match="shape"):
        ms.fit_account(LENGTHS, observed[:-1], k, "soft")


def test_transition_point():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert lg.transition_point(x, np.array([0.9, 0.7, 0.3, 0.1])) == pytest.approx(2.5)
    assert lg.transition_point(x, np.array([0.9, 0.5, 0.3, 0.1])) == 2.0
    assert lg.transition_point(x, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(2.5)
    assert lg.transition_point(x, np.array([0.2, 0.8, 0.2, 0.1]), level=0.5) == pytest.approx(1.5)
    assert math.isnan(lg.transition_point(x, np.array([0.9, 0.8, 0.7, 0.6])))
    curve = ms.posterior_random(LENGTHS, 3, 1e-6)
    exact = (math.log(3) - math.log(1e-6 / (1 - 1e-6))) / math.log(2)
    assert lg.transition_point(LENGTHS, curve) == pytest.approx(exact, abs=0.2)
    with pytest.raises(ValueError, match="increasing"):
        lg.transition_point(x[::-1], np.array([0.9, 0.7, 0.3, 0.1]))


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_fit_logistic_recovers_midpoint_and_slope(direction):
    midpoint, slope = 23.4, 0.6
    curve = expit(direction * slope * (LENGTHS - midpoint))
    got_mid, got_slope = lg.fit_logistic(LENGTHS, curve)
    assert got_mid == pytest.approx(midpoint, abs=1e-3)
    assert got_slope == pytest.approx(slope, rel=1e-3)
    noisy = curve + np.random.default_rng(30).normal(0, 0.02, LENGTHS.size)
    got_mid, got_slope = lg.fit_logistic(LENGTHS, noisy)
    assert got_mid == pytest.approx(midpoint, abs=0.5) and got_slope == pytest.approx(slope, rel=0.2)


def test_a_fit_on_the_optimisers_bound_is_reported_as_such_not_as_an_estimate():
    """A judgment-like curve that barely bends over the lengths: its least-squares midpoint
    (about 400) lies beyond the search's bound (one span past the last length), so neither
    midpoint nor slope is an estimate, and no interval is given for either."""
    lengths = np.arange(1, 101, dtype=float)
    curve = expit(-0.004 * (lengths - 400.0))
    fit = lg.logistic_fit(lengths, curve)
    assert fit.bound == "midpoint" and fit.midpoint == pytest.approx(fit.midpoint_bounds[1])
    units = curve[None, :] + np.random.default_rng(3).normal(0, 0.005, (6, lengths.size))
    out = lg.logistic_bootstrap(lengths, units, np.random.default_rng(4), n_boot=100)
    for key in ("midpoint", "slope", "transition", "ci_low", "ci_high", "slope_low", "slope_high"):
        assert math.isnan(out[key]), key
    assert "optimiser's midpoint bound" in out["ci_reason"] and "is identified" in out["ci_reason"]
    # the same curve seen where it bends is estimated
    wide = np.arange(1, 801, 8, dtype=float)
    inside = lg.logistic_fit(wide, expit(-0.004 * (wide - 400.0)))
    assert inside.bound is None and inside.midpoint == pytest.approx(400.0, abs=0.5)


def test_a_step_keeps_its_midpoint_and_drops_its_slope():
    """A step between two lengths is sharper than any slope the lengths resolve: the slope
    rests on its upper bound and is not reported; the step's position is."""
    curve = (LENGTHS < 20).astype(float)
    fit = lg.logistic_fit(LENGTHS, curve)
    assert fit.bound == "slope_high"
    assert lg.logistic_fit(LENGTHS, curve * 0.98 + 0.01).bound is None  # 0.01 / 0.99: a finite slope
    units = np.repeat(curve[None, :], 5, axis=0)
    out = lg.logistic_bootstrap(LENGTHS, units, np.random.default_rng(6), n_boot=60)
    assert math.isnan(out["slope"]) and math.isnan(out["slope_low"]) and math.isnan(out["slope_high"])
    below, above = LENGTHS[LENGTHS < 20].max(), LENGTHS[LENGTHS >= 20].min()
    assert below <= out["midpoint"] <= above
    assert "upper bound" in out["ci_reason"]


def test_logistic_bootstrap_ci_contains_truth():
    midpoint, slope = 15.0, 0.5
    rng = np.random.default_rng(40)
    curves = expit(-slope * (LENGTHS - midpoint))[None, :] + rng.normal(0, 0.05, (30, LENGTHS.size))
    out = lg.logistic_bootstrap(LENGTHS, curves, np.random.default_rng(41), n_boot=150)
    assert set(out) == {"midpoint", "slope", "transition", "ci_low", "ci_high", "midpoint_low", "midpoint_high",
                        "slope_low", "slope_high", "ci_method", "ci_reason"}
    assert out["ci_method"] == "units" and out["ci_reason"] is None
    assert out["transition"] == out["midpoint"]
    assert (out["ci_low"], out["ci_high"]) == (out["midpoint_low"], out["midpoint_high"])
    assert out["slope_low"] <= slope <= out["slope_high"]
    assert out["ci_low"] <= midpoint <= out["ci_high"]
    assert out["slope_low"] <= out["slope"] <= out["slope_high"]
    again = lg.logistic_bootstrap(LENGTHS, curves, np.random.default_rng(41), n_boot=150)
    assert again == out  # seeded
    with pytest.raises(ValueError, match="n_units"):
        lg.logistic_bootstrap(LENGTHS, curves[:, :-1], rng, n_boot=10)


def test_unit_replicates_equal_fitting_every_resample():
    lengths = np.arange(1, 15, dtype=float)
    gen = np.random.default_rng(5)
    units = np.stack([expit(-(lengths - m)) for m in (5.0, 6.5, 7.0, 9.0)]) + gen.normal(0, 0.01, (4, 14))
    method, fits = lg.bootstrap_replicates(lengths, units, np.random.default_rng(11), n_boot=40)
    assert method == "units" and fits.shape == (40, 2)
    idx = np.random.default_rng(11).integers(0, 4, size=(40, 4))  # the same draws
    brute = np.array([lg.fit_logistic(lengths, units[i].mean(axis=0)) for i in idx])
    np.testing.assert_allclose(fits, brute, rtol=1e-6, atol=1e-8)
    # two units give only 3 distinct resamples: positions (residuals) are resampled instead
    method, fits = lg.bootstrap_replicates(lengths, units[:2], np.random.default_rng(11), n_boot=40)
    assert method == "residuals" and np.ptp(fits[:, 0]) > 0


@pytest.mark.parametrize("n_units", [1, 2, 3, 5, 12])
def test_transition_ci_contains_its_estimate_on_noisy_synthetic_curves(n_units):
    """Property: over seeded noisy curves (with many chance crossings of 0.5 in the raw units)
    the interval either contains the fitted |x|* or is NaN with a reason; most have one."""
    lengths = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 100], dtype=float)
    with_ci = 0
    n_curves = 8
    for seed in range(n_curves):
        gen = np.random.default_rng(100 + seed)
        midpoint = gen.uniform(4, 40)
        slope = gen.uniform(0.1, 2.0)
        noise = gen.uniform(0.02, 0.2)
        units = np.clip(expit(-slope * (lengths - midpoint))[None, :]
                        + gen.normal(0, noise, (n_units, lengths.size)), 0, 1)
        out = lg.logistic_bootstrap(lengths, units, np.random.default_rng(seed), n_boot=60)
        assert out["ci_method"] == ("units" if n_units >= lg.MIN_BOOT_UNITS else "residuals")
        if np.isfinite(out["ci_low"]):
            assert out["ci_reason"] is None
            assert out["ci_low"] <= out["transition"] <= out["ci_high"]
            assert lengths[0] <= out["transition"] <= lengths[-1]
            with_ci += 1
        else:
            assert isinstance(out["ci_reason"], str) and out["ci_reason"]
            assert math.isnan(out["ci_high"])
        if np.isfinite(out["slope_low"]):
            assert out["slope_low"] <= out["slope"] <= out["slope_high"]
    assert with_ci >= n_curves - 2


def test_transition_is_nan_with_a_reason_when_the_fit_does_not_cross():
    flat = 0.8 + np.random.default_rng(3).normal(0, 0.02, (5, LENGTHS.size))  # random controls
    out = lg.logistic_bootstrap(LENGTHS, flat, np.random.default_rng(0), n_boot=30)
    assert math.isnan(out["transition"]) and math.isnan(out["ci_low"]) and math.isnan(out["ci_high"])
    assert "optimiser's midpoint bound" in out["ci_reason"]  # flat: the fit runs to its bound
    # a curve that bends inside the search range but crosses 0.5 only beyond the last length
    late = expit(-0.15 * (LENGTHS - 75.0))[None, :] + np.random.default_rng(4).normal(0, 0.01, (5, LENGTHS.size))
    out = lg.logistic_bootstrap(LENGTHS, late, np.random.default_rng(0), n_boot=30)
    assert math.isnan(out["transition"]) and math.isnan(out["ci_low"]) and math.isnan(out["ci_high"])
    assert out["midpoint"] == pytest.approx(75.0, abs=3) and "does not cross 0.5" in out["ci_reason"]
    one = lg.logistic_bootstrap(np.array([4.0]), np.array([[0.3]]), np.random.default_rng(0), n_boot=30)
    assert math.isnan(one["transition"]) and one["ci_method"] == "none"
    assert "fewer than 2 distinct lengths" in one["ci_reason"]


@pytest.mark.parametrize("sign", [-1.0, 1.0], ids=["judgment-like falling", "continuation-like rising"])
def test_the_transition_interval_over_eight_units_covers_near_its_nominal_level(sign):
    """Synthetic studies with a known |x|*: 8 units (rotations x variants), each crossing 0.5
    at its own point drawn symmetrically around 30 (so the mean curve crosses at 30), plus
    noise. The expanded percentile interval at 90% covers 30 near 90% of the time (the
    plain percentile interval of 8 units covered about 84%)."""
    lengths = np.arange(1, 61, dtype=float)
    n_studies, covered = 50, 0
    for study in range(n_studies):
        g = np.random.default_rng(1000 + study)
        mids = 30.0 + g.normal(0, 3.0, 8)
        units = expit(sign * 0.3 * (lengths[None, :] - mids[:, None])) + g.normal(0, 0.03, (8, lengths.size))
        out = lg.logistic_bootstrap(lengths, units, np.random.default_rng(study), n_boot=150, level=0.9,
                                    min_units=8)
        assert out["ci_method"] == "units"
        covered += out["ci_low"] <= 30.0 <= out["ci_high"]
    assert 0.8 <= covered / n_studies <= 0.98


def test_an_interval_from_fewer_units_than_asked_is_refused():
    lengths = np.arange(1, 61, dtype=float)
    units = expit(0.3 * (lengths[None, :] - 30.0)) + np.random.default_rng(0).normal(0, 0.03, (5, lengths.size))
    out = lg.logistic_bootstrap(lengths, units, np.random.default_rng(1), n_boot=50, min_units=8)
    assert out["transition"] == pytest.approx(30.0, abs=1.0)  # the fit is reported ...
    assert math.isnan(out["ci_low"]) and math.isnan(out["slope_low"]) and out["ci_method"] == "none"
    assert out["ci_reason"] == "5 unit(s), fewer than the 8 an interval needs"  # ... its interval refused
    assert lg.expanded_alpha(0.9, 8) < 0.05 and lg.expanded_alpha(0.9, 10_000) == pytest.approx(0.05, abs=1e-3)
