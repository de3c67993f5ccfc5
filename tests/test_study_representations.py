"""Study B driver (iclscope.studies.representations): behaviour, RSA, probes, attention ratio,
B7, validation and figures on synthetic tables with planted structure; the attention ratio
against hand-computed eager attention weights of the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from iclscope import contracts
from iclscope.studies import representations as rep
from iclscope.tables import read_table, table_metadata, write_table
from iclscope.tasks import build_task, task_params

HIDDEN = 16
LAYERS = (0, 1, 2)
POOLINGS = ("max", "mean", "last")
PLANT_LAYER = 2
REG_CFG = {"slopes": [-3, -1, 1, 3], "intercepts": [-10, 0, 10], "n_variants": 3, "n_shots": [0, 4],
           "x_min": -10, "x_max": 10}
READ_CFG = {"names": ["Mary", "John", "Ann", "Bob"], "activities": ["swim", "bake bread", "read books", "sing"],
            "n_names": 4, "n_activities": 4, "n_variants": 2, "n_shots": [0, 1]}
FAST = {"n_permutations": 200, "n_boot": 200, "n_splits": 4, "n_shuffles": 20}
# the schema's analysis settings, as the analysis passes them (the internal functions have no defaults)
SETTINGS = rep.schema_defaults()
RSA_ARGS = {"n_permutations": SETTINGS["n_permutations"], "comparators": SETTINGS["rsa_comparators"]}
PROBE_ARGS = {"n_splits": SETTINGS["n_splits"], "alpha": SETTINGS["ridge_alpha"], "C": SETTINGS["logistic_C"],
              "n_shuffles": SETTINGS["n_shuffles"], "classifier": SETTINGS["classifier"],
              "n_shuffles_max": SETTINGS["n_shuffles_max"]}


def config(**analysis) -> dict:
    return {"seed": 0, "representations": {"pooling": list(POOLINGS), "regression": REG_CFG, "reading": READ_CFG,
                                           "analysis": {**FAST, **analysis}}}


# ----------------------------------------------------------------------------- synthetic inputs


def embeddings_table(tasks: pd.DataFrame, plant: bool, g: np.random.Generator) -> pa.Table:
    """Noise everywhere; with ``plant``, after-ICL regression prompts at PLANT_LAYER carry a
    direction per slope (strong) on every span."""
    directions = {s: g.normal(size=HIDDEN) for s in REG_CFG["slopes"]}
    after = max(tasks["n_shots"])
    rows = {"prompt_id": [], "layer": [], "span": [], "pooling": [], "vector": []}
    for layer in LAYERS:
        for row in tasks.itertuples():
            spans = [s["name"] for s in row.spans if not s["name"].startswith("example_")] + ["end"]
            for span in spans:
                for pooling in POOLINGS:
                    v = g.normal(size=HIDDEN)
                    if plant and layer == PLANT_LAYER and row.n_shots == after:
                        v = 3.0 * directions[row.slope] + 0.3 * v
                    rows["prompt_id"].append(row.prompt_id)
                    rows["layer"].append(layer)
                    rows["span"].append(span)
                    rows["pooling"].append(pooling)
                    rows["vector"].append(v.astype(np.float32))
    flat = pa.array(np.concatenate(rows["vector"]), pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, HIDDEN)
    return pa.table([pa.array(rows["prompt_id"]), pa.array(rows["layer"], pa.int16()), pa.array(rows["span"]),
                     pa.array(rows["pooling"]), vectors], schema=contracts.embeddings_schema(HIDDEN))


def attention_table(tasks: pd.DataFrame, g: np.random.Generator) -> pa.Table:
    """Two heads and their mean; for reading, the relevant span gets more after ICL."""
    after = max(tasks["n_shots"])
    cols = {name: [] for name in contracts.ATTENTION.names}
    for layer in (1, 2):
        for row in tasks.itertuples():
            spans = [s["name"] for s in row.spans if not s["name"].startswith("example_")]
            masses = {}
            for span in spans:
                base = 0.1
                if span == "relevant":
                    base = 0.3 if row.n_shots == after else 0.15
                masses[span] = base + 0.05 * g.random(2)
            for head in (-1, 0, 1):
                for span in spans:
                    cols["prompt_id"].append(row.prompt_id)
                    cols["layer"].append(layer)
                    cols["head"].append(head)
                    cols["query"].append("end")
                    cols["span"].append(span)
                    cols["mass"].append(float(masses[span].mean() if head == -1 else masses[span][head]))
    return pa.table(cols, schema=contracts.ATTENTION)


def readouts_table(tasks: pd.DataFrame, g: np.random.Generator) -> pa.Table:
    """Flat (noisy) candidate log-probs before ICL, peaked on the correct answer after."""
    after = max(tasks["n_shots"])
    cols = {name: [] for name in contracts.READOUTS.names}
    for row in tasks.itertuples():
        for cand in row.candidates:
            logp = -5.0 + g.normal()
            if row.n_shots == after and cand == row.answer:
                logp += 8.0
            cols["prompt_id"].append(row.prompt_id)
            cols["readout"].append("answer")
            cols["candidate"].append(cand)
            cols["logprob"].append(logp)
            cols["first_token_logprob"].append(logp)
    return pa.table(cols, schema=contracts.READOUTS)


def write_inputs(root: Path, repo: Path) -> dict[str, str]:
    cfg = config()
    g = np.random.default_rng(1)
    inputs = {}
    for task in ("regression", "reading"):
        table = build_task(task, task_params(task, cfg), repo)
        frame = table.to_pandas()
        tables = {"tasks": table, "embeddings": embeddings_table(frame, task == "regression", g),
                  "attention": attention_table(frame, g), "readouts": readouts_table(frame, g)}
        for kind, t in tables.items():
            path = root / task / f"{kind}.parquet"
            write_table(t, path, {"iclscope.kind": kind, "iclscope.model": "synthetic"})
            inputs[f"{task}_{kind}"] = str(path)
    return inputs


def outs_in(root: Path) -> dict[str, str]:
    return {name: str(root / "out" / f"{name}.parquet") for name in rep.OUTPUTS}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory, repo: Path):
    root = tmp_path_factory.mktemp("study_b")
    inputs = write_inputs(root, repo)
    outs = outs_in(root)
    rep.analyse(inputs, config(), outs)
    return inputs, outs, {name: read_table(path).to_pandas() for name, path in outs.items()}


# ----------------------------------------------------------------------------- behaviour


def test_behaviour_from_hand_made_readouts():
    tasks = pd.DataFrame({"prompt_id": ["r0"], "condition": ["a=1,b=0"], "n_shots": [0], "variant": [0],
                          "answer": ["5"], "target": [5.0]})
    probs = np.array([0.2, 0.5, 0.3])
    readouts = pd.DataFrame({"prompt_id": ["r0"] * 3, "readout": ["answer"] * 3, "candidate": ["3", "5", "7"],
                             "logprob": np.log(probs) - 4.0})  # unnormalised: renormalised over candidates
    b = rep.prompt_behaviour("regression", tasks, readouts).iloc[0]
    assert b["answer"] == "5" and b["correct"] and b["error"] == 0
    assert b["expected"] == pytest.approx(0.2 * 3 + 0.5 * 5 + 0.3 * 7)
    assert b["expected_error"] == pytest.approx(0.2)
    assert b["logp_correct"] == pytest.approx(math.log(0.5))

    tasks = pd.DataFrame({"prompt_id": ["q0", "q1"], "condition": ["Mary|swim"] * 2, "n_shots": [0, 2],
                          "answer": ["swim"] * 2})
    readouts = pd.DataFrame({"prompt_id": ["q0", "q0", "q1", "q1"], "readout": ["answer"] * 4,
                             "candidate": ["run", "swim"] * 2, "logprob": np.log([0.7, 0.1, 0.2, 0.6])})
    b = rep.prompt_behaviour("reading", tasks, readouts)
    assert list(b["answer"]) == ["run", "swim"]
    assert list(b["correct"]) == [False, True]
    assert list(b["error"]) == [1.0, 0.0]
    np.testing.assert_allclose(b["logp_correct"], np.log([0.1 / 0.8, 0.6 / 0.8]))
    assert b["expected_error"].isna().all()

    summary = rep.summarise_behaviour(b, seed=0, n_boot=50)
    acc = summary[summary["metric"] == "accuracy"].set_index("n_shots")["mean"]
    assert acc.to_dict() == {0: 0.0, 2: 1.0}
    assert "expected_error" not in set(summary["metric"])

    with pytest.raises(ValueError, match="'q1' has no 'answer' readouts"):
        rep.prompt_behaviour("reading", tasks, readouts[readouts["prompt_id"] == "q0"])


def test_condition_alignment_brute_force():
    fields = pd.DataFrame({"slope": [1, 1, 2, 2]}, index=["a", "b", "c", "d"])
    sim = np.random.default_rng(0).normal(size=(4, 4))
    sim = (sim + sim.T) / 2
    got = rep.condition_alignment(sim, ["a", "b", "c", "d"], fields, "slope")
    assert got[0] == pytest.approx(sim[0, 1] - (sim[0, 2] + sim[0, 3]) / 2)
    assert got[3] == pytest.approx(sim[3, 2] - (sim[3, 0] + sim[3, 1]) / 2)


def test_prompt_attention_ratios_by_hand():
    att = pd.DataFrame({"prompt_id": ["p"] * 4, "layer": [1] * 4, "head": [-1, -1, 0, 0], "query": ["end"] * 4,
                        "span": ["relevant", "distractor"] * 2, "mass": [0.4, 0.1, 0.2, 0.4]})
    r = rep.prompt_attention_ratios(att).set_index("head")["ratio"]
    assert r[-1] == pytest.approx(4.0) and r[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no span 'distractor'"):
        rep.prompt_attention_ratios(att[att["span"] == "relevant"])


def test_iter_layers_streams_sorted_and_unsorted_tables(tmp_path, repo):
    frame = build_task("reading", task_params("reading", config()), repo).to_pandas().iloc[:6]
    table = embeddings_table(frame, False, np.random.default_rng(0))
    shuffled = table.take(np.random.default_rng(1).permutation(table.num_rows))
    for name, t in (("sorted", table), ("shuffled", shuffled)):
        path = tmp_path / f"{name}.parquet"
        write_table(t, path, {})
        seen = {}
        for lv in rep.iter_layers(str(path), ["end", "relevant"], ["mean"], batch_size=7):
            assert lv.layer not in seen
            seen[lv.layer] = lv
        assert sorted(seen) == list(LAYERS)
        ref = table.to_pandas()
        for layer, lv in seen.items():
            assert set(lv.span) == {"end", "relevant"} and set(lv.pooling) == {"mean"}
            want = ref[(ref["layer"] == layer) & ref["span"].isin(["end", "relevant"]) & (ref["pooling"] == "mean")]
            assert len(lv.prompt_id) == len(want) == 12
            for pid, span, vec in zip(lv.prompt_id, lv.span, lv.vectors):
                row = want[(want["prompt_id"] == pid) & (want["span"] == span)].iloc[0]
                np.testing.assert_array_equal(vec, row["vector"])


# ----------------------------------------------------------------------------- validation


def test_validation_errors():
    tasks = pd.DataFrame({"prompt_id": list("abcd"), "condition": ["x", "x", "y", "z"], "slope": [1, 1, 2, 3],
                          "variant": [0, 1, 0, 0]})
    with pytest.raises(ValueError, match=r"unknown condition field 'nope'; known fields: \['slope'\]"):
        rep.condition_fields(tasks, ["slope", "nope"])
    with pytest.raises(ValueError, match="'variant' varies within conditions"):
        rep.condition_fields(tasks, ["variant"])
    fields = rep.condition_fields(tasks, ["slope"])
    X = np.random.default_rng(0).normal(size=(4, 5))
    with pytest.raises(ValueError, match="at least 3 conditions"):
        rep.rsa_by_condition(X[:3], ["x", "x", "y"], fields, ["slope"], seed=0, **RSA_ARGS)
    with pytest.raises(ValueError, match="unknown hypothesis field 'intercept'"):
        rep.rsa_by_condition(X, list(tasks["condition"]), fields, ["intercept"], seed=0, **RSA_ARGS)
    with pytest.raises(ValueError, match="at least 3 conditions"):
        rep.probe_fields(X[:3], ["x", "x", "y"], fields, ["slope"], seed=0, **PROBE_ARGS)
    with pytest.raises(ValueError, match="representations.analysis.*'n_perms' was unexpected"):
        rep.analysis_settings({"representations": {"analysis": {"n_perms": 5}}})
    with pytest.raises(ValueError, match="n_boot.*minimum of 100"):  # the schema's range, no second copy
        rep.analysis_settings({"representations": {"analysis": {"n_boot": 5}}})


def test_analyse_rejects_unknown_pooling_and_field(tmp_path, repo):
    inputs = write_inputs(tmp_path, repo)
    reg_only = {k: v for k, v in inputs.items() if k.startswith("regression")}
    with pytest.raises(ValueError, match="rsa_poolings\\[1\\]`: 'median' is not one of"):
        rep.analyse(reg_only, config(rsa_poolings=["max", "median"]), outs_in(tmp_path))
    with pytest.raises(ValueError, match="unknown condition field 'colour'; known fields"):
        rep.analyse(reg_only, config(hypotheses={"regression": ["slope", "colour"]}), outs_in(tmp_path))
    with pytest.raises(ValueError, match="span 'story'"):
        rep.analyse(reg_only, config(rsa_spans=["end", "story"]), outs_in(tmp_path))


# ----------------------------------------------------------------------------- end to end


def test_analyse_finds_the_planted_slope(analysed):
    _, _, t = analysed
    rsa = t["rsa"]
    sel = rsa[(rsa["task"] == "regression") & (rsa["hypothesis"] == "slope") & (rsa["layer"] == PLANT_LAYER)]
    after, before = sel[sel["n_shots"] == 4], sel[sel["n_shots"] == 0]
    assert len(after) == len(POOLINGS) * 2 * 2  # every pooling x span (end, query) x comparator
    assert set(rsa["comparator"]) == {"tau_a", "spearman"}  # the default rsa_comparators
    assert (after["p_value"] < 0.05).all() and (after["spearman"] > 0.3).all()
    assert (after["alignment"] > 0.1).all()
    spear = after[after["comparator"] == "spearman"]
    np.testing.assert_allclose(spear["alignment"], spear["spearman"])
    assert (before["p_value"] >= 0.05).all()
    assert set(rsa["span"]) == {"end", "query", "question_name"}
    assert (rsa["p_value"] >= 1 / 201).all()

    probes = t["probes"]
    slope = probes[(probes["task"] == "regression") & (probes["target"] == "slope")
                   & (probes["layer"] == PLANT_LAYER)].set_index("n_shots")
    assert slope.loc[4, "score"] > 0.8 > slope.loc[0, "score"]
    assert slope.loc[4, "score"] > slope.loc[4, "control_score"] + 3 * slope.loc[4, "control_sd"]
    # it beats all 20 shuffles, so they continue to n_shuffles_max (default 1000): p at 1/1001
    assert slope.loc[4, "n_shuffles"] == 1000 and slope.loc[4, "p_value"] == pytest.approx(1 / 1001)
    assert ((probes["p_value"] > 0) & (probes["p_value"] <= 1)).all()
    assert probes["n_shuffles"].isin([20, 1000]).all() and (probes["control_sd"] > 0).all()
    np.testing.assert_allclose(probes["p_resolution"], 1 / (1 + probes["n_shuffles"]))
    # only where no shuffle reached the score were shuffles added
    assert ((probes["n_shuffles"] == 1000) <= (probes["p_value"] <= 1 / 1001 + 1e-12)).all()
    # chance-floored selectivity: never above the score's own margin over chance
    assert (probes["selectivity"] <= np.maximum(probes["score"], probes["chance"]) - probes["chance"] + 1e-12).all()
    assert (probes.loc[probes["metric"] == "r2", "chance"] == 0).all()
    np.testing.assert_allclose(probes.loc[probes["metric"] == "accuracy", "chance"], 0.25)  # 4 names, balanced
    assert set(probes.loc[probes["task"] == "reading", "metric"]) == {"accuracy"}
    assert set(probes.loc[probes["task"] == "reading", "probe"]) == {"ridge_classifier"}
    assert set(probes.loc[probes["task"] == "regression", "probe"]) == {"ridge"}


def test_analyse_tables_and_contracts(analysed):
    inputs, outs, t = analysed
    for name, path in outs.items():
        meta = table_metadata(path)
        assert meta["kind"] == f"representations_{name}" and meta["model"] == "synthetic"
        assert read_table(path).schema.names == rep.SCHEMAS[name].names
    n_prompts = sum(len(read_table(inputs[f"{task}_tasks"])) for task in ("regression", "reading"))
    assert len(t["behaviour"]) == n_prompts
    summary = t["behaviour_summary"]
    pooled = summary[summary["relevant_first"].isna()]
    acc = pooled.query("metric == 'accuracy'").set_index(["task", "n_shots"])["mean"]
    assert acc[("regression", 4)] > acc[("regression", 0)]
    assert acc[("reading", 1)] > acc[("reading", 0)]

    sim = t["similarity"]
    one = sim[(sim["task"] == "regression") & (sim["layer"] == 2) & (sim["pooling"] == "max")
              & (sim["span"] == "end") & (sim["n_shots"] == 4)]
    assert len(one) == 12 * 12
    diag = one[one["row_condition"] == one["col_condition"]]
    np.testing.assert_allclose(diag["similarity"], 1.0, atol=1e-9)
    pair = one[(one["row_condition"] == "a=1,b=0") & (one["col_condition"] == "a=1,b=10")]
    assert list(pair["shared"].iloc[0]) == ["slope"]

    att = t["attention_ratio"]
    assert set(att["task"]) == {"reading"}  # regression has no distractor span
    mean = att[(att["head"] == -1) & att["relevant_first"].isna()].set_index(["layer", "n_shots"])
    for layer in (1, 2):
        assert mean.loc[(layer, 1), "ratio"] > mean.loc[(layer, 0), "ratio"]
        assert mean.loc[(layer, 1), "ci_low"] <= mean.loc[(layer, 1), "ratio"] <= mean.loc[(layer, 1), "ci_high"]
    assert set(att["head"]) == {-1, 0, 1}
    np.testing.assert_allclose(att["ratio"], np.exp(att["log_ratio"]))
    assert (att["log_ci_low"] <= att["log_ratio"] + 1e-12).all() and (att["log_ratio"] <= att["log_ci_high"] + 1e-12).all()

    # issue 11.7: behaviour and attention ratio split by story order as well as pooled
    beh = t["behaviour"]
    assert beh.loc[beh["task"] == "regression", "relevant_first"].isna().all()
    reading_beh = beh[beh["task"] == "reading"]
    assert reading_beh["relevant_first"].notna().all()
    assert (reading_beh.groupby(["condition", "n_shots"])["relevant_first"].mean() == 0.5).all()
    split = summary[summary["relevant_first"].notna()]
    assert set(split["task"]) == {"reading"} and set(split["relevant_first"]) == {True, False}
    n = summary.set_index(["task", "n_shots", "metric", "relevant_first"], drop=False)
    for k in (0, 1):
        halves = split[(split["n_shots"] == k) & (split["metric"] == "accuracy")]["n_prompts"]
        whole = pooled[(pooled["task"] == "reading") & (pooled["n_shots"] == k) & (pooled["metric"] == "accuracy")]
        assert list(halves) == [int(whole["n_prompts"].iloc[0]) // 2] * 2
    del n
    for (layer, head, k), g in att.groupby(["layer", "head", "n_shots"]):
        by_order = {(None if pd.isna(f) else bool(f)): int(c) for f, c in zip(g["relevant_first"], g["n_prompts"])}
        assert by_order[True] == by_order[False] and by_order[None] == by_order[True] + by_order[False]

    rvb = t["repr_vs_behaviour"]
    assert {"alignment:slope", "alignment:intercept"} <= set(rvb.loc[rvb["task"] == "regression", "measure"])
    reading = rvb[rvb["task"] == "reading"]
    assert set(reading.loc[reading["measure"] == "attention_log_ratio", "layer"]) == {1, 2}
    assert set(rvb["behaviour"]) == {"error", "expected_error", "nll"}
    assert (rvb["n_conditions"] > 0).all()
    ok = rvb["mean"].notna()
    assert ((rvb.loc[ok, "ci_low"] <= rvb.loc[ok, "mean"] + 1e-9)
            & (rvb.loc[ok, "mean"] <= rvb.loc[ok, "ci_high"] + 1e-9)).all()


def test_analyse_is_deterministic_and_handles_one_task(analysed, tmp_path):
    inputs, _, t = analysed
    reading_only = {k: v for k, v in inputs.items() if k.startswith("reading")}
    outs2 = outs_in(tmp_path)
    rep.analyse(reading_only, config(), outs2)
    rsa2 = read_table(outs2["rsa"]).to_pandas()
    rsa1 = t["rsa"][t["rsa"]["task"] == "reading"].reset_index(drop=True)
    pd.testing.assert_frame_equal(rsa1, rsa2)


# ----------------------------------------------------------------------------- figures


def test_plot_writes_figures(analysed, tmp_path):
    _, outs, _ = analysed
    captions = rep.plot(outs, config(), str(tmp_path / "fig"))
    assert set(captions) == set(rep.FIGURES)
    for name, caption in captions.items():
        assert (tmp_path / "fig" / name).stat().st_size > 10_000
        assert "{" not in caption and caption
    assert "layer 1" in captions["rsa_matrices.png"]  # middle of layers 0..2


def test_plot_survives_empty_tables(tmp_path):
    empty = {}
    for name in rep.OUTPUTS:
        path = tmp_path / f"{name}.parquet"
        write_table(rep.SCHEMAS[name].empty_table(), path, {})
        empty[name] = str(path)
    captions = rep.plot(empty, config(), str(tmp_path / "fig"))
    assert all((tmp_path / "fig" / name).exists() for name in captions)
    rep.plot({}, config(), str(tmp_path / "fig2"))
    assert len(list((tmp_path / "fig2").glob("*.png"))) == len(rep.FIGURES)


# ----------------------------------------------------------------------------- tiny model


def test_attention_ratio_equals_eager_weights(prepared_tiny):
    import torch
    from iclscope.extraction.attention import register
    from iclscope.extraction.engine import extract
    from iclscope.extraction.plan import plan_for
    from iclscope.extraction.tokens import tokenize_prompts
    from iclscope.models import load_prepared

    table = build_task("reading", task_params("reading", config()))
    rows = table.to_pylist()[:4]  # one condition's two variants, before and after ICL
    model, tokenizer, _ = load_prepared(prepared_tiny, device="cpu", attn_implementation=register())
    result = extract(model, tokenizer, rows, [plan_for("reading", r) for r in rows], ["mean"], batch_tokens=512)
    ratios = rep.prompt_attention_ratios(result.attention.to_pandas())

    eager, _, _ = load_prepared(prepared_tiny, device="cpu", attn_implementation="eager")
    expected = []
    for row, tp in zip(rows, tokenize_prompts(tokenizer, rows)):
        with torch.no_grad():
            out = eager(input_ids=torch.tensor([tp.input_ids]), output_attentions=True)
        (ra, rb), (da, db) = tp.spans["relevant"], tp.spans["distractor"]
        for layer, weights in enumerate(out.attentions, start=1):
            last = weights[0, :, -1, :].double()  # (H, T): the answer position's row
            rel, dis = last[:, ra:rb].sum(-1), last[:, da:db].sum(-1)
            expected.append({"prompt_id": row["prompt_id"], "layer": layer, "head": -1,
                             "ratio": float(rel.mean() / dis.mean()), "n_shots": row["n_shots"]})
            for h in range(len(rel)):
                expected.append({"prompt_id": row["prompt_id"], "layer": layer, "head": h,
                                 "ratio": float(rel[h] / dis[h]), "n_shots": row["n_shots"]})
    expected = pd.DataFrame(expected)
    got = expected[["prompt_id", "layer", "head"]].merge(ratios, on=["prompt_id", "layer", "head"], how="left")
    np.testing.assert_allclose(got["ratio"], expected["ratio"], rtol=1e-4)

    summary = rep.summarise_attention_ratios(ratios, {r["prompt_id"]: r["n_shots"] for r in rows}, "reading",
                                             seed=0, n_boot=50)
    # the geometric mean over prompts: exp of the mean log ratio
    want = np.exp(np.log(expected[expected["head"] == -1]["ratio"]).groupby(
        [expected["layer"], expected["n_shots"]]).mean())
    got = summary[summary["head"] == -1].set_index(["layer", "n_shots"])["ratio"]
    np.testing.assert_allclose(got.loc[want.index], want, rtol=1e-4)


def test_repr_vs_behaviour_uses_the_configured_correlation_whatever_the_rsa_comparators(analysed, tmp_path):
    """B7's correlation is `correlation`, never a leftover of the RSA comparator loop (a
    shadowed loop variable once made it the last of `rsa_comparators`)."""
    inputs, _, t = analysed
    reading_only = {k: v for k, v in inputs.items() if k.startswith("reading")}
    frames = {}
    for comparators, method in (((["tau_a", "spearman"]), "pearson"), ((["spearman", "tau_a"]), "pearson"),
                                ((["tau_a"]), "spearman")):
        outs = outs_in(tmp_path / f"{method}_{'_'.join(comparators)}")
        rep.analyse(reading_only, config(rsa_comparators=comparators, correlation=method), outs)
        frames[(tuple(comparators), method)] = read_table(outs["repr_vs_behaviour"]).to_pandas()
    pearson = frames[(("tau_a", "spearman"), "pearson")]
    pd.testing.assert_frame_equal(pearson, frames[(("spearman", "tau_a"), "pearson")])
    spearman = frames[(("tau_a",), "spearman")]
    assert pearson["mean"].notna().any()
    assert not np.allclose(pearson["mean"], spearman["mean"], equal_nan=True)
    # the default run's table is Pearson's: the configured default
    assert rep.analysis_settings({})["correlation"] == "pearson"
    reading = t["repr_vs_behaviour"][t["repr_vs_behaviour"]["task"] == "reading"].reset_index(drop=True)
    pd.testing.assert_frame_equal(reading[pearson.columns], pearson)


# ----------------------------------------------------------------------------- effects (issue 23)


def _band_layers(band: str, n_layers: int) -> list[int]:
    from iclscope.analysis.depth import depth_band

    return [x for x in range(n_layers + 1) if depth_band(x, n_layers) == band]


def test_effects_are_band_means_with_unit_intervals(analysed):
    """Every effect's estimate is recomputed from the per-layer tables; intervals come from
    resampled units (never layers); reading reports each story order beside the pool."""
    _, _, t = analysed
    eff, rsa_t, rvb, beh = t["effects"], t["rsa"], t["repr_vs_behaviour"], t["behaviour"]
    n_layers = int(rsa_t["layer"].max())
    # (the synthetic embeddings differ between copies of a prompt, so alignment before ICL is
    # defined here for regression too; on a model, alignment_after replaces it)
    assert set(eff["quantity"]) == {"gain", "alignment_change", "attention_log_ratio_change", "repr_behaviour_r"}
    finite = eff.dropna(subset=["ci_low"])
    assert len(finite) > 0.8 * len(eff)
    assert ((finite["ci_low"] <= finite["estimate"] + 1e-12) & (finite["estimate"] <= finite["ci_high"] + 1e-12)).all()
    # regression's zero-shot prompts are shared by every condition: its gains resample them apart
    gains = eff[eff["quantity"] == "gain"]
    reg = gains[gains["task"] == "regression"]
    assert reg["units"].str.startswith("clusters of prompt pairs sharing a prompt").all() and (reg["n_units"] == 3).all()
    assert (gains.loc[gains["task"] == "reading", "units"] == "prompt pairs").all()
    assert set(gains.loc[gains["task"] == "reading", "relevant_first"].dropna()) == {True, False}
    for r in gains.itertuples():
        b = beh[(beh["task"] == r.task)].assign(correct=lambda f: f["correct"].astype(float))
        if not pd.isna(r.relevant_first):
            b = b[b["relevant_first"] == r.relevant_first]
        pairs = b[b["n_shots"] == r.n_shots_before].merge(b[b["n_shots"] == r.n_shots_after],
                                                          on=["condition", "variant"])
        assert r.estimate == pytest.approx((pairs[f"{r.measure}_y"] - pairs[f"{r.measure}_x"]).mean())
    # alignment: the band mean of the rsa table's normalised alignment of the declared readout
    align = eff[eff["quantity"].str.startswith("alignment")]
    assert (align["pooling"] == "mean").all() and (align["span"] == "end").all() and (align["comparator"] == "tau_a").all()
    assert set(align["quantity"]) == {"alignment_change"}
    assert set(align.loc[align["task"] == "reading", "relevant_first"].dropna()) == {True, False}
    # regression's variants share their query x across conditions: drawn jointly; reading's per condition
    reg_units = align.loc[align["task"] == "regression", "units"]
    assert reg_units.str.startswith("3 variants, drawn jointly for the 12 conditions").all()
    assert (align.loc[align["task"] == "regression", "n_units"] == 3).all()
    assert align.loc[align["task"] == "reading", "units"].str.startswith("variants within each of 16 conditions").all()
    assert align["units"].str.endswith("normal interval from the bootstrap SE").all()
    # centred on the estimate
    np.testing.assert_allclose(align["estimate"] - align["ci_low"], align["ci_high"] - align["estimate"])
    for r in align.itertuples():
        flag = r.relevant_first if r.relevant_first is not None and not pd.isna(r.relevant_first) else None
        sel = rsa_t[(rsa_t["task"] == r.task) & (rsa_t["hypothesis"] == r.measure) & (rsa_t["pooling"] == "mean")
                    & (rsa_t["span"] == "end") & (rsa_t["comparator"] == "tau_a")
                    & (rsa_t["relevant_first"].isna() if flag is None else rsa_t["relevant_first"] == flag)
                    & rsa_t["layer"].isin(_band_layers(r.band, n_layers))]
        wide = sel.pivot_table(index="layer", columns="n_shots", values="alignment_normalised")
        value = wide[r.n_shots_after] if r.quantity == "alignment_after" else wide[r.n_shots_after] - wide[r.n_shots_before]
        assert r.estimate == pytest.approx(value.mean())
    np.testing.assert_allclose(rsa_t["alignment_normalised"], rsa_t["alignment"] / rsa_t["ceiling"])
    # the planted slope direction (regression, after ICL, layer 2) shows in the late band's alignment
    # correlations: one headline readout per task, measure and band; all readouts reported
    corr = eff[eff["quantity"] == "repr_behaviour_r"]
    assert (corr["units"] == "conditions").all()
    heads = corr[corr["headline"]]
    assert not heads.duplicated(["task", "measure", "band", "n_shots_after"]).any()
    assert set(heads.loc[heads["task"] == "regression", "behaviour"]) == {"expected_error"}
    assert set(heads.loc[heads["task"] == "reading", "behaviour"]) == {"nll"}
    assert len(corr) > len(heads)
    for r in corr.sample(10, random_state=0).itertuples():
        sel = rvb[(rvb["task"] == r.task) & (rvb["measure"] == r.measure) & (rvb["behaviour"] == r.behaviour)
                  & (rvb["layer"].isin(_band_layers(r.band, n_layers)))]
        sel = sel[(sel["pooling"].isna() if r.pooling is None else sel["pooling"] == r.pooling)
                  & (sel["span"] == r.span)]
        assert r.estimate == pytest.approx(sel["mean"].mean())
    # position split of RSA rows for reading only
    assert set(rsa_t.loc[rsa_t["task"] == "regression", "relevant_first"].dropna()) == set()
    assert set(rsa_t.loc[rsa_t["task"] == "reading", "relevant_first"].dropna()) == {True, False}


def test_headline_readout_is_validated():
    settings = rep.analysis_settings(config(headline={"span": {"reading": "story"}}))
    with pytest.raises(ValueError, match=r"headline\.span 'story' for task 'reading'"):
        rep.headline_readout(settings, "reading")
    settings = rep.analysis_settings(config(headline={"behaviour": "nll"}))
    assert rep.headline_readout(settings, "regression")["behaviour"] == "nll"  # refused when analysed
    assert rep.headline_readout(rep.analysis_settings(config()), "regression") == {
        "pooling": "mean", "span": "end", "behaviour": "expected_error"}


def test_duplicated_prompts_do_not_narrow_behaviour_intervals():
    """A prompt written once per condition is one unit: the summary's interval is the one of
    the distinct prompts (issue 23.2)."""
    g = np.random.default_rng(0)
    base = pd.DataFrame({"task": "regression", "prompt_id": [f"p{i}" for i in range(6)], "n_shots": 0,
                         "correct": g.random(6) > 0.5, "error": g.random(6), "logp_correct": -g.random(6),
                         "expected_error": g.random(6), "relevant_first": None})
    base["distinct_prompt_id"] = base["prompt_id"]
    copies = pd.concat([base.assign(prompt_id=base["prompt_id"] + f"c{c}") for c in range(12)], ignore_index=True)
    once = rep.summarise_behaviour(base, seed=1, n_boot=500)
    many = rep.summarise_behaviour(copies, seed=1, n_boot=500)
    pd.testing.assert_frame_equal(once, many)
    naive = rep.summarise_behaviour(copies.assign(distinct_prompt_id=copies["prompt_id"]), seed=1, n_boot=500)
    assert (naive["ci_high"] - naive["ci_low"]).sum() < 0.6 * (once["ci_high"] - once["ci_low"]).sum()


def test_representations_settings_are_read_once_typed_and_frozen():
    """RepresentationsSettings: analysis_settings' values typed (poolings defaulted to what
    extraction pooled), the per-task keys resolved per task, provenance = analysis_settings' dict."""
    import dataclasses

    section = {"pooling": ["last", "mean"], "analysis": {"rsa_spans": {"reading": ["end"]}, "n_splits": 3}}
    settings = rep.RepresentationsSettings.from_section(section)
    given = rep.analysis_settings({"representations": section})
    assert settings.record() == given
    assert settings.rsa_poolings == ("last", "mean") and settings.probe_pooling == "last"
    assert settings.n_splits == 3 and settings.rsa_comparators == tuple(given["rsa_comparators"])
    reading = settings.task("reading")
    assert reading == rep.TaskSettings(tuple(rep.task_setting(given, "hypotheses", "reading")), ("end",),
                                       rep.task_setting(given, "probe_span", "reading"))
    assert settings.task("regression").rsa_spans == tuple(rep.task_setting(given, "rsa_spans", "regression"))
    assert settings.readout("regression") == rep.headline_readout(given, "regression")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n_boot = 5
