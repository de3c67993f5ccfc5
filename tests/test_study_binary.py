"""Study A driver: p(random), continuation curves, generation analysis, model selection,
the end-to-end `analyse` on synthetic tables, the figures, and p(random) on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from iclscope import contracts
from iclscope.analysis import baselines as bl
from iclscope.analysis import model_selection as ms
from iclscope.config import with_defaults
from iclscope.studies import binary as sb
from iclscope.tables import read_table, table_metadata, typed_table, write_table
from iclscope.tasks import build_task
from scipy.special import expit

SEED = 7
# the schema's settings, passed explicitly as analyse passes them (the internal functions have no defaults)
BINARY = with_defaults("binary", {})
ANALYSIS = BINARY["analysis"]
GENERATION = {"levenshtein": ANALYSIS["levenshtein"], "parse": BINARY["generation"]["parse"]}
BINARY = {
    "generation": {"p_tails": [20, 50], "n_samples": 5, "n_flips": 30},
    "judgment": {"concepts": ["01", "011"], "lengths": [1, 2, 3, 4, 6, 8, 12, 16, 24], "n_random": 3},
    "continuation": {"concepts": ["011", "01"], "max_length": 24, "max_depth": 3},
    "analysis": {"n_boot": 40},
}
PARAMS = {"seed": SEED, "binary": BINARY}


def readout_frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["prompt_id", "readout", "candidate", "logprob"])
    return df.assign(first_token_logprob=df["logprob"])


def readout_table(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df[contracts.READOUTS.names], schema=contracts.READOUTS, preserve_index=False)


# ---------------------------------------------------------------------------- p_random


def test_p_random_equals_a_hand_computation():
    tasks = pd.DataFrame({"prompt_id": ["a", "b", "c"], "concept": ["01", "01", "random"],
                          "length": [2, 4, 2], "sample": [0, 0, 1]})
    reads = readout_frame([
        ("a", "judgment", "r", math.log(0.2)), ("a", "judgment", "n", math.log(0.6)),
        ("b", "judgment", "n", -1000.0), ("b", "judgment", "r", -1001.0),  # far below float range
        ("c", "judgment", "r", -0.5), ("c", "judgment", "n", -3.0),
        ("c", "other", "r", 5.0),  # ignored: another readout
    ])
    got = sb.p_random(reads, tasks)
    assert list(got.columns) == contracts.JUDGMENT.names
    assert got["p_random"].tolist() == pytest.approx([
        0.2 / (0.2 + 0.6), 1.0 / (1.0 + math.e), math.exp(-0.5) / (math.exp(-0.5) + math.exp(-3.0))])
    assert got[["concept", "length", "sample"]].values.tolist() == [["01", 2, 0], ["01", 4, 0], ["random", 2, 1]]


def test_p_random_drops_unread_prompts_and_rejects_missing_candidates(caplog):
    tasks = pd.DataFrame({"prompt_id": ["a", "b"], "concept": ["01", "01"], "length": [1, 2], "sample": [0, 0]})
    reads = readout_frame([("a", "judgment", "r", -1.0), ("a", "judgment", "n", -1.0)])
    got = sb.p_random(reads, tasks)
    assert got["prompt_id"].tolist() == ["a"] and got["p_random"].iloc[0] == pytest.approx(0.5)
    assert "no readouts" in caplog.text
    with pytest.raises(ValueError, match="candidate 'n'"):
        sb.p_random(readout_frame([("a", "judgment", "r", -1.0)]), tasks)
    empty = sb.p_random(readout_frame([]), tasks)
    assert empty.empty and list(empty.columns) == contracts.JUDGMENT.names


# ---------------------------------------------------------------------------- continuation


def synthetic_continuation(tasks: pd.DataFrame, seed: int = 0, structured: bool = False) -> pd.DataFrame:
    """flip_t readouts: random log-probs, or (structured) P(correct) rising with t."""
    gen = np.random.default_rng(seed)
    rows = []
    for pid, flips in zip(tasks["prompt_id"], tasks["flips"]):
        for t, f in enumerate(flips, start=1):
            if structured:
                q = expit(0.9 * (t - 7)) * 0.98 + 0.01
                lp = {f: math.log(q * 0.4), str(1 - int(f)): math.log((1 - q) * 0.4)}
            else:
                lp = {"0": gen.normal(-2, 1), "1": gen.normal(-2, 1)}
            rows += [(pid, f"flip_{t}", c, float(lp[c])) for c in ("0", "1")]
    return readout_frame(rows)


def test_continuation_products_equal_a_brute_force_loop():
    tasks = pd.DataFrame({"prompt_id": ["p0", "p1"], "concept": ["011", "011"], "rotation": [0, 1],
                          "flips": ["01101101", "11011011"]})
    reads = synthetic_continuation(tasks, seed=3)
    got = sb.continuation_curves(reads, tasks, max_depth=3)
    assert list(got.columns) == ["concept", "rotation", "variant", "length", "depth", "p_continue", "prompt_id"]
    lp = {(r.prompt_id, r.readout, r.candidate): r.logprob for r in reads.itertuples()}
    expected = {}
    for pid, rot, flips in zip(tasks["prompt_id"], tasks["rotation"], tasks["flips"]):
        for d in range(1, 4):
            for n in range(len(flips) - d + 1):
                prod = 1.0
                for t in range(n + 1, n + d + 1):
                    p0, p1 = math.exp(lp[(pid, f"flip_{t}", "0")]), math.exp(lp[(pid, f"flip_{t}", "1")])
                    prod *= (p1 if flips[t - 1] == "1" else p0) / (p0 + p1)
                expected[(rot, n, d)] = prod
    assert len(got) == len(expected)
    for r in got.itertuples():
        assert r.p_continue == pytest.approx(expected[(r.rotation, r.length, r.depth)], rel=1e-9)

    combined = sb.combine_rotations(got)
    assert list(combined.columns) == contracts.CONTINUATION.names
    row = combined[(combined["length"] == 2) & (combined["depth"] == 2)].iloc[0]
    pair = [expected[(0, 2, 2)], expected[(1, 2, 2)]]
    assert row["p_continue"] == pytest.approx(np.mean(pair))
    assert row["p_continue_sum"] == pytest.approx(sum(pair))
    assert (row["p_continue_min"], row["p_continue_max"]) == pytest.approx((min(pair), max(pair)))
    assert row["n_rotations"] == 2 and row["n_units"] == 2


def test_units_are_rotations_times_variants():
    """Two rotations in two variants: four units; the paper's sum is over rotations (per
    variant, then averaged over variants), the mean and range over all four units."""
    tasks = pd.DataFrame({"prompt_id": ["a0", "a1", "b0", "b1"], "concept": ["01"] * 4,
                          "rotation": [0, 1, 0, 1], "variant": [0, 0, 1, 1],
                          "flips": ["0101", "1010", "0101", "1010"]})
    got = sb.continuation_curves(synthetic_continuation(tasks, seed=5), tasks, max_depth=1)
    at = got[(got["length"] == 1)].set_index(["rotation", "variant"])["p_continue"]
    row = sb.combine_rotations(got).query("length == 1").iloc[0]
    assert row["n_units"] == 4 and row["n_rotations"] == 2
    assert row["p_continue"] == pytest.approx(at.mean())
    assert row["p_continue_sum"] == pytest.approx(np.mean([at[0, v] + at[1, v] for v in (0, 1)]))
    assert (row["p_continue_min"], row["p_continue_max"]) == pytest.approx((at.min(), at.max()))
    selection = sb.continuation_selection(got, seed=0, n_boot=20, level=ANALYSIS["ci_level"], min_units=4)
    lm = selection[selection["account"] == "lm"].iloc[0]
    assert lm["n_units"] == 4
    refused = sb.continuation_selection(got, seed=0, n_boot=20, level=ANALYSIS["ci_level"], min_units=8)
    reason = refused[refused["account"] == "lm"].iloc[0]["ci_reason"]
    assert reason.startswith("4 unit(s), fewer than the 8 an interval needs")


def test_continuation_rejects_missing_flips_and_handles_empty():
    tasks = pd.DataFrame({"prompt_id": ["p0"], "concept": ["01"], "rotation": [0], "flips": ["0101"]})
    reads = synthetic_continuation(tasks)
    with pytest.raises(ValueError, match="p0"):
        sb.continuation_curves(reads[reads["readout"] != "flip_3"], tasks, 2)
    empty = sb.continuation_curves(reads.iloc[:0], tasks, 2)
    assert empty.empty
    assert sb.combine_rotations(empty).columns.tolist() == contracts.CONTINUATION.names


# ---------------------------------------------------------------------------- generations


def synthetic_generations(n_flips: int = 30) -> pd.DataFrame:
    gen = np.random.default_rng(1)
    rows = []
    for p in (20.0, 50.0):
        for s in range(5):
            flips = "".join(map(str, (gen.random(n_flips + 10) < p / 100).astype(int)))
            parsed, n_clean = True, len(flips)
            if s == 3:
                flips, parsed, n_clean = flips[:5], False, 5  # too short
            if s == 4 and p == 20.0:
                parsed = False  # list not closed, but long enough: used
            if s == 2:
                n_clean = n_flips - 1  # an item like "tails" before flip n_flips: strict drops it
            rows.append({"prompt_id": f"binary_generation:p_tails={p:g}", "p_tails": p, "sample": s,
                         "raw": "", "flips": flips, "parsed": parsed, "n_tokens": 100, "forced_flips": "0",
                         "n_clean": n_clean, "clean": n_clean == len(flips), "rendered_prompt": "Q: ... [Heads,",
                         "mode": "free", "step_logp_first": [], "step_logp_second": [], "step_p_second": []})
    return pd.DataFrame(rows)


def synthetic_constrained(n_flips: int = 30, n_samples: int = 12) -> pd.DataFrame:
    """Constrained sequences drawn from a gambler's-fallacy process, with its per-step
    probabilities as the model's (the baselines fitted to them must find it)."""
    gen = np.random.default_rng(2)
    rows = []
    for p in (20.0, 50.0):
        process = bl.GamblersFallacy(p / 100)
        for s, x in enumerate(process.sample(n_samples, n_flips, gen)):
            q = process.probs(x)
            flips = "".join(map(str, x))
            rows.append({"prompt_id": f"binary_generation:p_tails={p:g}", "p_tails": p, "sample": s,
                         "raw": "", "flips": flips, "parsed": True, "n_tokens": 2 * n_flips, "forced_flips": "0",
                         "n_clean": n_flips, "clean": True, "rendered_prompt": "Q: ... [Heads,", "mode": "constrained",
                         "step_logp_first": np.log(np.clip(1 - q, 1e-9, 1)).tolist(),
                         "step_logp_second": np.log(np.clip(q, 1e-9, 1)).tolist(), "step_p_second": q.tolist()})
    return pd.DataFrame(rows)


def test_constrained_sequences_are_all_kept_and_fitted_to_their_probabilities():
    gens = pd.concat([synthetic_generations(), synthetic_constrained()], ignore_index=True)
    metrics, base = sb.analyse_generations(gens, 30, SEED, windows=(5,), **GENERATION)
    assert set(metrics["mode"]) == {"free", "constrained"} and set(base["mode"]) == {"free", "constrained"}
    constrained = base[base["mode"] == "constrained"].set_index(["p_tails", "source"])
    assert (constrained.xs("model", level="source")["n_used"] == 12).all()  # nothing dropped
    fitted = constrained.drop(index="model", level="source")
    best = fitted[fitted["prob_kl_rank"] == 1]
    assert set(best.index.get_level_values("source")) == {"gamblers_fallacy"}
    assert (best["prob_kl"] < 1e-6).all() and (fitted["prob_kl"] >= 0).all()
    for p in (20.0, 50.0):
        assert json.loads(best.loc[(p, "gamblers_fallacy"), "prob_params"])["p"] == pytest.approx(p / 100, abs=1e-4)
    free = base[base["mode"] == "free"]
    assert free["prob_kl"].isna().all() and free["prob_params"].isna().all()
    # the free mode's numbers are what they were without the other mode
    alone = sb.analyse_generations(synthetic_generations(), 30, SEED, windows=(5,), **GENERATION)[1]
    typed = lambda df: typed_table(df.reset_index(drop=True), contracts.BINARY_BASELINES)  # noqa: E731
    assert typed(free).equals(typed(alone))


def test_generation_steps_follow_the_history_the_model_saw():
    row = synthetic_constrained(n_flips=4, n_samples=1).iloc[[0]].assign(
        forced_flips="0", flips="0110", step_p_second=[[0.2, 0.3, 0.6, 0.9]])
    steps = sb.generation_steps(row, 4)
    assert list(steps.columns) == contracts.GENERATION_STEPS.names
    # history before each step: "0", "00", "001", "0011" (the prompt's flip first)
    assert steps["run_symbol"].tolist() == [0, 0, 1, 1] and steps["run_length"].tolist() == [1, 2, 1, 2]
    assert steps["running_mean"].tolist() == pytest.approx([0, 0, 1 / 3, 0.5])
    assert steps["p_same"].tolist() == pytest.approx([0.8, 0.7, 0.6, 0.9])
    assert steps["flip"].tolist() == [0, 1, 1, 0] and steps["step"].tolist() == [1, 2, 3, 4]
    assert sb.generation_steps(synthetic_generations(), 30).empty  # free sequences have no probabilities


def test_crop_generations_counts_short_and_unparsed():
    kept, counts = sb.crop_generations(synthetic_generations(), 30, GENERATION["parse"])
    assert kept["flips"].str.len().eq(30).all() and len(kept) == 8
    assert (kept["forced_flips"] == "0").all()  # kept apart, never part of flips
    both = {"n_total": 5, "n_clean": 4, "n_used_strict": 3, "n_used_first_letter": 4}  # sample 3: clean but short
    assert counts.to_dict("records") == [
        {"p_tails": 20.0, "n_short": 1, "n_unparsed": 2, "n_used": 4, **both},
        {"p_tails": 50.0, "n_short": 1, "n_unparsed": 1, "n_used": 4, **both},
    ]
    strict_kept, strict = sb.crop_generations(synthetic_generations(), 30, parse="strict")
    assert len(strict_kept) == 6 and 2 not in set(strict_kept["sample"])
    assert strict["n_used"].tolist() == [3, 3] and strict["n_short"].tolist() == [2, 2]
    assert strict[["n_used_strict", "n_used_first_letter"]].equals(counts[["n_used_strict", "n_used_first_letter"]])
    with pytest.raises(ValueError, match="binary.generation.parse"):
        sb.crop_generations(synthetic_generations(), 30, parse="loose")


def test_generation_metrics_exclude_the_forced_flip_and_mark_short_windows_missing():
    gens = synthetic_generations().assign(forced_flips="1")
    metrics, _ = sb.analyse_generations(gens, 30, SEED, windows=(5, 29, 30, 31), **GENERATION)
    model = metrics[metrics["source"] == "model"]
    kept, _ = sb.crop_generations(gens, 30, GENERATION["parse"])
    assert model["flips"].tolist() == kept["flips"].tolist()
    assert model["mean"].tolist() == pytest.approx([f.count("1") / 30 for f in kept["flips"]])
    assert (model["forced_flips"] == "1").all() and metrics.loc[metrics["source"] != "model", "forced_flips"].isna().all()
    assert model["repeats_w29"].notna().all()  # two windows of 29 in 30 flips
    assert metrics["repeats_w30"].isna().all() and metrics["repeats_w31"].isna().all()
    assert metrics["repeats_w5"].notna().all()


def test_analyse_generations_fits_and_samples_baselines():
    gens = synthetic_generations()
    metrics, base = sb.analyse_generations(gens, 30, SEED, windows=(5, 6), **GENERATION)
    assert list(metrics.columns) == contracts.binary_generation_metrics_schema((5, 6)).names
    counts = metrics.groupby(["source", "p_tails"]).size()
    assert set(counts.to_numpy()) == {4} and len(counts) == 8  # model + 3 baselines, 2 p values
    assert list(base.columns) == contracts.BINARY_BASELINES.names
    b20 = base[base["p_tails"] == 20.0].set_index("source")
    assert b20.loc["model", "n_used"] == 4 and math.isnan(b20.loc["model", "loglik"])
    assert sorted(b20.loc[["bernoulli", "gamblers_fallacy", "markov"], "bic_rank"]) == [1, 2, 3]
    assert b20["delta_bic"].min() == 0.0
    # the Bernoulli fit is the fraction of ones of the used sequences
    kept = metrics[(metrics["source"] == "model") & (metrics["p_tails"] == 20.0)]
    assert json.loads(b20.loc["bernoulli", "params"])["p"] == pytest.approx(kept["mean"].mean())
    # seeded: a second run draws the same baseline samples
    again, _ = sb.analyse_generations(gens, 30, SEED, windows=(5, 6), **GENERATION)
    pd.testing.assert_frame_equal(metrics, again)


# ---------------------------------------------------------------------------- model selection


def test_curve_selection_recovers_a_soft_account_curve():
    lengths = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20], dtype=float)
    k, n_star, temp = 2, 6.0, 0.4
    logit = math.log(k) - n_star * math.log(2)
    curve = ms.p_random_curve(lengths, k, logit, "soft", temp)
    rows = sb.curve_selection("judgment", "01", lengths, curve[None, :], k, 0, np.random.default_rng(0), n_boot=30)
    by = {r["account"]: r for r in rows}
    assert set(by) == {"lm", "averaging", "hard", "soft"}
    assert by["soft"]["transition"] == pytest.approx(n_star, abs=1e-3)
    assert by["soft"]["temperature"] == pytest.approx(temp, rel=1e-3)
    assert by["soft"]["slope"] == pytest.approx(math.log(2) / temp, rel=1e-3)
    # |x|* on the fitted curve: the logistic's midpoint (a soft curve is a logistic crossing at n*)
    assert by["lm"]["transition"] == by["lm"]["midpoint"] == pytest.approx(n_star, abs=1e-3)
    assert by["lm"]["ci_method"] == "residuals"
    # an exact curve leaves ~0 residuals: nothing varies, so no interval, and the row says why
    assert math.isnan(by["lm"]["ci_low"]) and "do not vary" in by["lm"]["ci_reason"]
    noisy = np.clip(curve + np.random.default_rng(1).normal(0, 0.05, curve.size), 0, 1)
    lm = sb.curve_selection("judgment", "01", lengths, noisy[None, :], k, 0, np.random.default_rng(0), n_boot=30)[0]
    assert lm["ci_reason"] is None and lm["ci_low"] <= lm["transition"] <= lm["ci_high"]
    assert all(by[a]["ci_reason"] == sb.ACCOUNT_CI_REASON and math.isnan(by[a]["ci_low"]) for a in ms.ACCOUNTS)
    assert sum(r["best"] for r in rows) == 1


def test_continuation_selection_uses_the_implied_p_random():
    lengths = np.arange(0, 20, dtype=float)
    k, depth = 3, 2
    logit = math.log(k) - 5.0 * math.log(2)
    pr = ms.p_random_curve(lengths, k, logit, "soft", 0.5)
    units = np.stack([ms.p_continue(pr, depth) + e for e in (-0.01, 0.0, 0.01)])
    rows = sb.curve_selection("continuation", "011", lengths, units, k, depth, np.random.default_rng(0), n_boot=30)
    lm = rows[0]
    assert lm["account"] == "lm" and lm["ci_method"] == "units" and lm["n_units"] == 3
    assert lm["transition"] == pytest.approx(5.0, abs=0.1)
    assert lm["ci_low"] <= lm["transition"] <= lm["ci_high"]
    assert rows[3]["account"] == "soft" and rows[3]["transition"] == pytest.approx(5.0, abs=0.1)


# ---------------------------------------------------------------------------- end to end


def write_inputs(tmp_path: Path, generations: pd.DataFrame, with_readouts: bool = True) -> dict[str, str]:
    meta = {"iclscope.model": "synthetic", "iclscope.weights_sha256": "abc"}
    paths = {}
    tables = {}
    for task in ("binary_judgment", "binary_continuation"):
        part = task.removeprefix("binary_")
        params = {"seed": SEED, "binary": {part: BINARY[part]}}
        tables[task] = build_task(task, params)
        paths[f"{part}_tasks"] = str(write_table(tables[task], tmp_path / f"{task}.parquet", {}))
    jt = tables["binary_judgment"].to_pandas()
    j_rows = []
    for pid, concept, length in zip(jt["prompt_id"], jt["concept"], jt["length"]):
        p = 0.8 if concept == "random" else float(expit(-(length - 2.0 * len(concept))))
        p = min(max(p, 1e-6), 1 - 1e-6)
        j_rows += [(pid, "judgment", "r", math.log(p * 0.3)), (pid, "judgment", "n", math.log((1 - p) * 0.3))]
    jr = readout_frame(j_rows)
    cr = synthetic_continuation(tables["binary_continuation"].to_pandas(), structured=True)
    if not with_readouts:
        jr, cr = jr.iloc[:0], cr.iloc[:0]
    paths["judgment_readouts"] = str(write_table(readout_table(jr), tmp_path / "jr.parquet", meta))
    paths["continuation_readouts"] = str(write_table(readout_table(cr), tmp_path / "cr.parquet", meta))
    gen_table = pa.Table.from_pandas(generations[contracts.GENERATIONS.names], schema=contracts.GENERATIONS,
                                     preserve_index=False)
    paths["generations"] = str(write_table(gen_table, tmp_path / "generations.parquet", meta))
    return paths


def outs_in(tmp_path: Path) -> dict[str, str]:
    return {name: str(tmp_path / "out" / f"{name}.parquet") for name in sb.OUTPUTS}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> dict[str, str]:
    """The outs of one `analyse` run on the synthetic inputs."""
    tmp_path = tmp_path_factory.mktemp("analysed")
    outs = outs_in(tmp_path)
    sb.analyse(write_inputs(tmp_path, synthetic_generations()), PARAMS, outs)
    return outs


def test_analyse_end_to_end_writes_every_table_with_provenance(analysed):
    outs = analysed
    schemas = {"generation_metrics": contracts.BINARY_GENERATION_METRICS, "baselines": contracts.BINARY_BASELINES,
               "generation_steps": contracts.GENERATION_STEPS,
               "judgment": contracts.JUDGMENT, "judgment_summary": contracts.JUDGMENT_SUMMARY,
               "continuation": contracts.CONTINUATION,
               "model_selection": contracts.MODEL_SELECTION}
    frames = {}
    for name, path in outs.items():
        table = read_table(path)
        assert table.schema.remove_metadata().equals(schemas[name]), name
        meta = table_metadata(path)
        assert meta["kind"] == f"binary_{name}" and meta["seed"] == str(SEED)
        assert meta["model"] == "synthetic" and meta["weights_sha256"] == "abc"
        assert json.loads(meta["params"]) == PARAMS
        assert json.loads(meta["analysis"])["n_boot"] == 40
        frames[name] = table.to_pandas()
    assert table.num_rows > 0
    assert set(frames["generation_metrics"]["source"]) == {"model", "bernoulli", "gamblers_fallacy", "markov"}
    assert len(frames["judgment"]) == 2 * 9 * 8 + 3 * 9  # a concept in 8 replicate variants; 3 controls
    cont = frames["continuation"]
    assert set(cont["depth"]) == {1, 2, 3} and cont["n_rotations"].max() == 3
    assert cont.groupby("concept")["n_units"].max().to_dict() == {"01": 2 * 8, "011": 3 * 8}
    assert cont.groupby("concept")["length"].max().to_dict() == {"01": 23, "011": 23}
    sel = frames["model_selection"]
    jsel = sel[sel["curve"] == "judgment"]
    assert set(jsel["concept"]) == {"01", "011", "random"}
    assert jsel[jsel["concept"] == "random"]["account"].tolist() == ["lm"]
    csel = sel[sel["curve"] == "continuation"]
    assert len(csel) == 2 * 3 * 4  # concepts x depths x (lm + 3 accounts)
    assert (csel.groupby(["concept", "depth"])["best"].sum() == 1).all()
    # the synthetic judgment curve crosses 0.5 at |x| = 2 k
    lm = jsel[jsel["account"] == "lm"].set_index("concept")
    assert lm.loc["01", "transition"] == pytest.approx(4.0, abs=0.5)
    assert lm.loc["011", "transition"] == pytest.approx(6.0, abs=0.5)
    assert math.isnan(lm.loc["random", "transition"])  # the controls never cross
    # flat: the fit runs to the optimiser's bound, and says so
    assert "optimiser's midpoint bound" in lm.loc["random", "ci_reason"]
    assert math.isnan(lm.loc["random", "slope"]) and math.isnan(lm.loc["random", "midpoint"])
    # every interval holds its estimate; a missing one says why (these noiseless synthetic curves
    # leave the bootstrap nothing to vary, so most have none: "do not vary")
    with_ci = sel[sel["ci_low"].notna()]
    assert ((with_ci["ci_low"] <= with_ci["transition"]) & (with_ci["transition"] <= with_ci["ci_high"])).all()
    assert with_ci["ci_reason"].isna().all() and sel.loc[sel["ci_low"].isna(), "ci_reason"].notna().all()
    assert "do not vary" in lm.loc["01", "ci_reason"]
    base = frames["baselines"]
    assert (base["parse"] == "first_letter").all()
    assert (base["n_used"] == base["n_used_first_letter"]).all() and (base["n_used_strict"] == 3).all()


def test_analyse_and_plot_survive_no_parsed_generations_and_no_readouts(tmp_path, caplog):
    gens = synthetic_generations().assign(flips="", parsed=False)
    inputs = write_inputs(tmp_path, gens, with_readouts=False)
    outs = outs_in(tmp_path)
    sb.analyse(inputs, PARAMS, outs)
    assert read_table(outs["generation_metrics"]).num_rows == 0
    base = read_table(outs["baselines"]).to_pandas()
    assert len(base) == 2 * 4 and (base["n_used"] == 0).all() and (base["n_short"] == 5).all()
    assert base["loglik"].isna().all()
    for name in ("judgment", "continuation", "model_selection"):
        assert read_table(outs[name]).num_rows == 0
    assert "no sequence" in caplog.text
    captions = sb.plot(outs, PARAMS, str(tmp_path / "figures"))
    assert set(captions) == set(sb.FIGURES)
    for name in sb.FIGURES:
        assert (tmp_path / "figures" / name).stat().st_size > 1000


def test_plot_writes_the_figures_with_filled_captions(analysed, tmp_path):
    captions = sb.plot(analysed, PARAMS, str(tmp_path / "figures"))
    assert set(captions) == {"generation.png", "generation_steps.png", "judgment.png", "continuation.png"}
    for name, text in captions.items():
        assert "{" not in text and text
        assert (tmp_path / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(01), (011)" in captions["judgment.png"] and "d = 1..3" in captions["continuation.png"]
    assert "30 flips" in captions["generation.png"]


# ---------------------------------------------------------------------------- tiny model


def test_p_random_on_the_tiny_model_matches_the_logits(prepared_tiny):
    from iclscope.extraction import attention
    from iclscope.extraction.engine import extract
    from iclscope.extraction.plan import plan_for
    from iclscope.models import load_prepared

    model, tokenizer, _ = load_prepared(prepared_tiny, device="cpu", attn_implementation=attention.register())
    params = {"seed": 0, "binary": {"judgment": {"concepts": ["01"], "lengths": [1, 5], "n_random": 1}}}
    tasks = build_task("binary_judgment", params)
    rows = tasks.to_pylist()
    extracted = extract(model, tokenizer, rows, [plan_for("binary_judgment", r) for r in rows], ["mean"], 512)
    got = sb.p_random(extracted.readouts.to_pandas(), tasks.to_pandas()).set_index("prompt_id")
    assert len(got) == len(rows) == 2 * 8 + 2  # two lengths in 8 replicate variants, one control per length

    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    initial = {c: [i for i, t in enumerate(texts) if t.lstrip()[:1].lower() == c] for c in "rn"}
    for row in rows:
        ids = tokenizer(row["text"])["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
        lr, ln = (float(torch.logsumexp(logp[initial[c]], 0)) for c in "rn")
        assert got.loc[row["prompt_id"], "p_random"] == pytest.approx(math.exp(lr) / (math.exp(lr) + math.exp(ln)),
                                                                    abs=1e-4)
        assert got.loc[row["prompt_id"], "logp_r"] == pytest.approx(lr, abs=1e-4)


def test_generation_figure_keeps_every_requested_p_and_counts_the_model_sequences(tmp_path):
    import pandas as pd

    from iclscope.studies.binary import generation_columns, plot

    metrics = pd.DataFrame({"source": ["model", "model", "bernoulli", "model"], "p_tails": [10.0, 10.0, 10.0, 90.0]})
    # 50 was requested but no sequence reached the length: a column with n = 0, not dropped
    assert generation_columns(metrics, [10, 50, 90]) == {10.0: 2, 50.0: 0, 90.0: 1}
    assert generation_columns(metrics.iloc[:0], [5, 95]) == {5.0: 0, 95.0: 0}
    # and the figure draws with no table at all (every requested p marked "no sequences")
    captions = plot({}, {"seed": 0}, str(tmp_path))
    assert (tmp_path / "generation.png").stat().st_size > 5000 and "generation.png" in captions


def test_judgment_summary_holds_what_the_figure_draws(analysed):
    """Means per concept and |x| equal plain means; the controls' CI contains its mean and
    comes from the table, so the figure computes nothing."""
    judgment = read_table(analysed["judgment"]).to_pandas()
    summary = read_table(analysed["judgment_summary"]).to_pandas()
    plain = judgment.groupby(["concept", "length"])["p_random"].agg(["mean", "size"])
    got = summary.set_index(["concept", "length"])
    assert np.allclose(got["mean"], plain.loc[got.index, "mean"]) and (got["n"] == plain.loc[got.index, "size"]).all()
    controls = summary[summary["concept"] == sb.RANDOM]
    assert len(controls) and (controls["ci_low"] <= controls["mean"] + 1e-12).all()
    assert (controls["mean"] <= controls["ci_high"] + 1e-12).all()
    single = summary[summary["n"] == 1]
    assert single["ci_low"].isna().all() and single["ci_high"].isna().all()


def test_binary_settings_are_read_once_typed_and_frozen():
    """BinarySettings: the analysis settings (the schema's defaults filled in) and the task keys
    the analysis reads, typed; what provenance records is analysis_settings' dict."""
    import dataclasses

    section = with_defaults("binary", {"analysis": {"windows": [7, 5]}, "generation": {"parse": "strict"}})
    settings = sb.BinarySettings.from_section(section)
    assert settings.windows == (7, 5) and settings.parse == "strict" and settings.n_boot == 1000
    assert (settings.n_flips, settings.max_depth) == (section["generation"]["n_flips"],
                                                      section["continuation"]["max_depth"])
    assert settings.analysis() == sb.analysis_settings(section)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n_boot = 5
