"""Study C glue: per-position table, curves, summary and figures (iclscope.studies.labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest
from scipy.special import logsumexp

from iclscope.config import with_defaults
from iclscope.extraction.attention import register
from iclscope.extraction.engine import extract
from iclscope.extraction.plan import plan_for
from iclscope.models import load_prepared
from iclscope.studies import labels as study
from iclscope.tables import read_table, table_metadata, write_table
from iclscope.tasks.labels import build_labels

# the schema's analysis settings, passed as the analysis passes them (positions_table has no defaults)
SETTINGS = with_defaults("labels", {})["analysis"]
SCORING = {"scoring": SETTINGS["scoring"], "calibrate": SETTINGS["calibrate"]}

LABELS = {"n_examples": 7, "flip_at": 3, "repeats": 4, "arbitrary_labels": [["A", "B", "C"]],
          "conditions": ["default", "random", "flipped", "arbitrary", "flip_df", "flip_fd", "alternating"],
          "content_free": ["default", "random"]}


@pytest.fixture(scope="module")
def three_class(tmp_path_factory) -> tuple[Path, dict]:
    """A 3-class file dataset (multiclass: flipped = rotation) and its task table."""
    root = tmp_path_factory.mktemp("three")
    frame = pd.DataFrame({"text": [f"item number {i}" for i in range(12)], "label": ["red", "green", "blue"] * 4})
    frame.to_csv(root / "three.csv", index=False)
    dataset = {"name": "three", "source": "file", "path": str(root / "three.csv"),
               "label_words": ["red", "green", "blue"]}
    table = build_labels(dataset, LABELS, 0, root)
    write_table(table, root / "tasks.parquet", {})
    return root, dataset


@pytest.fixture(scope="module")
def extracted(three_class, prepared_tiny) -> Path:
    root, _ = three_class
    rows = read_table(root / "tasks.parquet").to_pylist()
    model, tokenizer, _ = load_prepared(prepared_tiny, device="cpu", attn_implementation=register())
    result = extract(model, tokenizer, rows, [plan_for(r["task"], r) for r in rows], ["max"], 2048)
    write_table(result.readouts, root / "readouts.parquet", {})
    return root


def params(dataset: str = "three", **analysis) -> dict:
    return {"seed": 0, "dataset": dataset, "labels": {**LABELS, "analysis": analysis}}


def analyse(extracted: Path, out_dir: Path, tasks: Path | None = None, prefix: str = "",
            **analysis) -> dict[str, str]:
    """Run the study's analysis on the extracted readouts (and ``tasks``, default the
    extracted task table); returns the output paths by table name."""
    inputs = {"tasks": str(tasks or extracted / "tasks.parquet"), "readouts": str(extracted / "readouts.parquet")}
    outs = {name: str(out_dir / f"{prefix}{name}.parquet") for name in ("positions", "curves", "summary")}
    study.analyse(inputs, params(**analysis), outs)
    return outs


def test_positions_equal_a_direct_computation(extracted):
    tasks = read_table(extracted / "tasks.parquet").to_pandas()
    readouts = read_table(extracted / "readouts.parquet").to_pandas()
    positions = study.positions_table(tasks, readouts, **SCORING)
    assert len(positions) == len(tasks) * LABELS["n_examples"]
    row = tasks.iloc[5]
    words = list(row.label_words)
    mine = positions[(positions["condition"] == row["condition"]) & (positions["repeat"] == row["repeat"])]
    reads = readouts[readouts.prompt_id == row.prompt_id]
    for i in range(1, LABELS["n_examples"] + 1):
        logp = np.array([reads[(reads.readout == f"answer_{i}") & (reads.candidate == w)].logprob.item()
                         for w in words])
        restricted = logp - logsumexp(logp)
        got = mine[mine.position == i].iloc[0]
        true, context = row.true_class[i - 1], row.context_class[i - 1]
        assert got.logp_true == pytest.approx(restricted[true], abs=1e-5)
        assert got.logp_context == pytest.approx(restricted[context], abs=1e-5)
        assert got.correct == (int(np.argmax(restricted)) == true)
        assert got.entropy == pytest.approx(-(np.exp(restricted) * restricted).sum(), abs=1e-5)
        # un-renormalised: the label words' share of the full vocabulary, always <= 1
        assert got.logp_label_mass == pytest.approx(logsumexp(logp), abs=1e-4)
        assert got.logp_label_mass <= 1e-6
        assert got.true_label == words[true] and got.context_label == words[context]


def test_first_token_scoring_uses_first_tokens(extracted):
    tasks = read_table(extracted / "tasks.parquet").to_pandas()
    readouts = read_table(extracted / "readouts.parquet").to_pandas()
    first = study.positions_table(tasks, readouts, scoring="first_token", calibrate=SETTINGS["calibrate"])
    swapped = readouts.assign(logprob=readouts.first_token_logprob)
    assert np.allclose(first.logp_true, study.positions_table(tasks, swapped, **SCORING).logp_true)
    assert set(first.scoring) == {"first_token"}
    with pytest.raises(ValueError, match="scoring"):
        study.positions_table(tasks, readouts, scoring="last", calibrate=SETTINGS["calibrate"])


def test_missing_readouts_name_the_prompt(extracted):
    tasks = read_table(extracted / "tasks.parquet").to_pandas()
    readouts = read_table(extracted / "readouts.parquet").to_pandas()
    cut = readouts[readouts.prompt_id != tasks.prompt_id.iloc[0]]
    with pytest.raises(ValueError, match=tasks.prompt_id.iloc[0]):
        study.positions_table(tasks, cut, **SCORING)


def test_analyse_and_plot_end_to_end(extracted, tmp_path):
    outs = analyse(extracted, tmp_path, n_boot=200)
    curves = read_table(outs["curves"]).to_pandas()
    positions = read_table(outs["positions"]).to_pandas()
    # curve means equal plain means over repeats
    means = positions.groupby(["condition", "position"]).correct.mean()
    got = curves[curves.metric == "correct"].set_index(["condition", "position"])["mean"]
    assert np.allclose(got.sort_index(), means.sort_index())
    assert (curves.ci_low <= curves["mean"] + 1e-12).all() and (curves["mean"] <= curves.ci_high + 1e-12).all()
    summary = read_table(outs["summary"]).to_pandas()
    diffs = summary[summary.kind == "difference"]
    assert {("default", "random"), ("default", "flipped"), ("flip_df", "flip_fd")} <= set(
        zip(diffs.condition, diffs.condition_b))
    meta = table_metadata(outs["curves"])
    assert meta["kind"] == "labels_curves" and json.loads(meta["params"])["dataset"] == "three"
    # the same inputs and seed give byte-identical tables
    again = analyse(extracted, tmp_path, prefix="again_", n_boot=200)
    for name in outs:
        assert read_table(outs[name]).equals(read_table(again[name]))
    captions = study.plot({"curves": outs["curves"]}, params(), str(tmp_path / "fig"))
    assert sorted(captions) == sorted(study.FIGURES)
    for name in study.FIGURES:
        assert (tmp_path / "fig" / name).stat().st_size > 10_000
    assert "three" in captions["curves.png"]


def test_smoothing_is_recorded_and_applied(extracted, tmp_path):
    outs = analyse(extracted, tmp_path, smooth=3, n_boot=100)
    assert table_metadata(outs["curves"])["smooth"] == "3"
    curves = read_table(outs["curves"]).to_pandas()
    positions = read_table(outs["positions"]).to_pandas()
    one = positions[positions.condition == "default"].pivot(index="repeat", columns="position", values="entropy")
    smoothed = one.T.rolling(3, min_periods=1).mean().T.mean(axis=0)
    got = curves[(curves.condition == "default") & (curves.metric == "entropy")].sort_values("position")["mean"]
    assert np.allclose(got.to_numpy(), smoothed.to_numpy())


def test_plot_without_data_still_draws(tmp_path):
    from iclscope import contracts

    write_table(contracts.CURVE.empty_table(), tmp_path / "curves.parquet", {})
    captions = study.plot({"curves": str(tmp_path / "curves.parquet")}, params(), str(tmp_path / "fig"))
    assert all((tmp_path / "fig" / name).exists() for name in captions)
    assert "the conditions none." in captions["curves.png"]  # nothing ran: the caption names nothing


def test_captions_name_only_the_conditions_that_ran(extracted, tmp_path):
    outs = analyse(extracted, tmp_path, n_boot=100)
    curves = read_table(outs["curves"])
    kept = pa.compute.is_in(curves.column("condition"), value_set=pa.array(["default", "random", "flip_df"]))
    write_table(curves.filter(kept), tmp_path / "some.parquet", {})
    captions = study.plot({"curves": str(tmp_path / "some.parquet")}, params(), str(tmp_path / "fig"))
    assert "the conditions default, random." in captions["curves.png"]
    assert "flipped" not in captions["curves.png"] and "arbitrary" not in captions["curves.png"]
    assert "conditions of this run: default, flip_df." in captions["halfway.png"]
    assert "alternating." not in captions["halfway.png"]


def test_summary_positions_match_the_flip(extracted, tmp_path):
    outs = analyse(extracted, tmp_path, n_boot=100)
    summary = read_table(outs["summary"]).to_pandas()
    values = summary[summary.kind == "value"]
    named = dict(zip(values.position_name, values.position))
    # position i predicts example i from examples 1..i-1: after 2N = 6 examples is position 7
    assert named == {"first": 1, "after_N": 4, "after_2N": 7, "last": 7}
    recency = summary[(summary.kind == "difference") & (summary.condition == "flip_df")]
    assert set(recency.position) == {7} and set(recency.position_name) == {"after_2N"}
    assert pa.types.is_int32(read_table(outs["summary"]).schema.field("position").type)


def test_pooled_rows_equal_a_direct_computation(extracted, tmp_path):
    outs = analyse(extracted, tmp_path, n_boot=200)
    summary = read_table(outs["summary"]).to_pandas()
    positions = read_table(outs["positions"]).to_pandas()
    pooled = summary[summary.kind == "pooled_difference"]
    assert set(zip(pooled.condition, pooled.condition_b, pooled.position_name)) == {
        ("default", "random", "positions_2_to_last"), ("default", "random", "last_quarter"),
        ("default", "flipped", "positions_2_to_last"), ("default", "flipped", "last_quarter"),
        ("flip_df", "flip_fd", "second_mapping")}
    assert (pooled.n == LABELS["repeats"]).all()
    for (a, b), metrics in pooled.groupby(["condition", "condition_b"]).metric:
        twinned = (a, b) == ("default", "random")  # calibrated scores where both have a twin
        assert set(metrics) == set(study.METRICS) | (set(study.CALIBRATED_METRICS) if twinned else set())
    windows = {"positions_2_to_last": range(2, 8), "last_quarter": range(7, 8), "second_mapping": range(5, 8)}
    for r in pooled.itertuples(index=False):
        inside = positions[positions.position.isin(list(windows[r.position_name]))]
        a = inside[inside.condition == r.condition].set_index(["repeat", "position"])[r.metric].astype(float)
        b = inside[inside.condition == r.condition_b].set_index(["repeat", "position"])[r.metric].astype(float)
        per_repeat = (a - b).groupby(level="repeat").mean()
        assert r.mean == pytest.approx(per_repeat.mean(), abs=1e-5)
        assert r.ci_low - 1e-9 <= r.mean <= r.ci_high + 1e-9
        assert r.position == max(windows[r.position_name])
    values = summary[(summary.kind == "pooled_value") & (summary.metric == "logp_label_mass")]
    assert set(values.condition) == set(positions.condition)
    one = values[(values.condition == "default") & (values.position_name == "positions_2_to_last")].iloc[0]
    sub = positions[(positions.condition == "default") & (positions.position >= 2)]
    assert one["mean"] == pytest.approx(sub.groupby("repeat").logp_label_mass.mean().mean(), abs=1e-5)
    curves = read_table(outs["curves"]).to_pandas()
    assert "logp_label_mass" in set(curves.metric)


def test_conditions_with_fewer_repeats_pair_on_the_repeats_they_share(extracted, tmp_path):
    """labels.repeats_by_condition: the compared conditions keep all repeats, the others fewer."""
    tasks = read_table(extracted / "tasks.parquet")
    frame = tasks.to_pandas()
    few = frame.condition.isin(["flip_df", "flip_fd", "alternating"]) & (frame.repeat >= 2)
    write_table(tasks.filter(pa.array(~few.to_numpy())), tmp_path / "tasks.parquet", {})
    outs = analyse(extracted, tmp_path, tasks=tmp_path / "tasks.parquet", n_boot=200)
    summary = read_table(outs["summary"]).to_pandas()
    n = summary.groupby(["kind", "condition", "condition_b"]).n.max()
    assert n["pooled_difference", "default", "random"] == 4
    assert n["pooled_difference", "flip_df", "flip_fd"] == 2
    curves = read_table(outs["curves"]).to_pandas()
    assert set(curves[curves.condition == "alternating"].n) == {2}
    assert set(curves[curves.condition == "default"].n) == {4}
    captions = study.plot({"curves": outs["curves"]}, params(), str(tmp_path / "fig"))
    assert sorted(captions) == sorted(study.FIGURES)
    assert "mean over 4 (alternating: 2, flip_df: 2, flip_fd: 2) repeats" in captions["curves.png"]


def test_adjusted_rows_equal_a_direct_cross_fitted_computation(extracted, tmp_path):
    outs = analyse(extracted, tmp_path, n_boot=200)
    summary = read_table(outs["summary"]).to_pandas()
    # the analysis works on float64 positions (the table stores float32)
    positions = study.positions_table(read_table(extracted / "tasks.parquet").to_pandas(),
                                      read_table(extracted / "readouts.parquet").to_pandas(), **SCORING)
    adjusted = summary[summary.kind == "pooled_difference_adjusted"]
    control = summary[summary.kind == "pooled_difference_content_free"]
    # only default - random has both twins (flipped has none here)
    assert set(zip(adjusted.condition, adjusted.condition_b)) == {("default", "random")}
    assert set(adjusted.position_name) == {"positions_2_to_last", "last_quarter"}
    assert set(adjusted.metric) == set(study.METRICS)
    assert set(control.metric) == set(study.METRICS)
    windows = {"positions_2_to_last": range(2, 8), "last_quarter": range(7, 8)}
    for r in adjusted.itertuples(index=False):
        inside = positions[positions.position.isin(list(windows[r.position_name]))]

        def pooled(a, b):
            def side(cond):
                return inside[inside.condition == cond].set_index(["repeat", "position"])[r.metric].astype(float)
            return (side(a) - side(b)).groupby(level="repeat").mean().to_numpy()

        y, c = pooled("default", "random"), pooled("default_cf", "random_cf")
        folds = np.arange(len(y)) % 2  # 4 repeats: two folds of two
        expected = np.empty(len(y))
        for f in (0, 1):
            other = folds != f
            slope = np.polyfit(c[other], y[other], 1)[0] if np.ptp(c[other]) > 0 else 0.0
            expected[folds == f] = y[folds == f] - slope * c[folds == f]
        assert r.mean == pytest.approx(expected.mean(), abs=1e-9)
        full = np.polyfit(c, y, 1)[0] if np.ptp(c) > 0 else 0.0
        assert r.beta == pytest.approx(full, abs=1e-9)
        assert r.variance_ratio == pytest.approx(np.var(expected, ddof=1) / np.var(y, ddof=1), rel=1e-9, nan_ok=True)
        assert r.ci_low - 1e-9 <= r.mean <= r.ci_high + 1e-9 and r.n == LABELS["repeats"]
    others = summary[summary.kind != "pooled_difference_adjusted"]
    assert others.beta.isna().all() and others.variance_ratio.isna().all()


def test_calibrated_scores_use_the_twin_at_the_same_repeat_and_position(extracted, tmp_path):
    from iclscope.analysis.label_metrics import contextual_calibration

    outs = analyse(extracted, tmp_path, n_boot=200)
    positions = read_table(outs["positions"]).to_pandas()
    tasks = read_table(extracted / "tasks.parquet").to_pandas()
    readouts = read_table(extracted / "readouts.parquet").to_pandas()
    has = positions.groupby("condition").logp_true_calibrated.apply(lambda v: v.notna().all())
    assert {c for c, ok in has.items() if ok} == {"default", "random"}  # the conditions with twins
    assert positions[~positions.condition.isin(["default", "random"])].logp_true_calibrated.isna().all()
    assert positions[~positions.condition.isin(["default", "random"])].correct_calibrated.isna().all()

    def logps(condition, repeat, i):
        row = tasks[(tasks.condition == condition) & (tasks.repeat == repeat)].iloc[0]
        reads = readouts[(readouts.prompt_id == row.prompt_id) & (readouts.readout == f"answer_{i}")]
        return np.array([[reads[reads.candidate == w].logprob.item() for w in row.label_words]]), row

    for repeat, i in ((0, 1), (2, 5), (3, 7)):
        q, row = logps("random", repeat, i)
        t, _ = logps("random_cf", repeat, i)
        calibrated = contextual_calibration(q, t)[0]
        got = positions[(positions.condition == "random") & (positions.repeat == repeat)
                        & (positions.position == i)].iloc[0]
        true = row.true_class[i - 1]
        assert got.logp_true_calibrated == pytest.approx(calibrated[true], abs=1e-5)
        assert bool(got.correct_calibrated) == (int(np.argmax(calibrated)) == true)
    curves = read_table(outs["curves"]).to_pandas()
    calibrated_curves = curves[curves.metric.isin(study.CALIBRATED_METRICS)]
    assert set(calibrated_curves.condition) == {"default", "random"}
    summary = read_table(outs["summary"]).to_pandas()
    pooled = summary[(summary.kind == "pooled_difference") & summary.metric.isin(study.CALIBRATED_METRICS)]
    assert set(zip(pooled.condition, pooled.condition_b)) == {("default", "random")}
    off = analyse(extracted, tmp_path, prefix="off_", n_boot=200, calibrate=False)
    off_positions = read_table(off["positions"]).to_pandas()
    assert off_positions.logp_true_calibrated.isna().all()
    assert not set(read_table(off["curves"]).to_pandas().metric) & set(study.CALIBRATED_METRICS)


def test_labels_settings_are_read_once_typed_and_frozen():
    """LabelsSettings: labels.analysis with the schema's defaults, and the summary's task keys, typed."""
    import dataclasses

    section = with_defaults("labels", {"analysis": {"smooth": 3, "calibrate": False}})
    settings = study.LabelsSettings.from_section(section)
    analysis = study.analysis_settings(section)
    assert {k: getattr(settings, k) for k in analysis} == analysis
    assert (settings.smooth, settings.calibrate, settings.n_boot) == (3, False, 1000)
    assert (settings.n_examples, settings.flip_at) == (section["n_examples"], section["flip_at"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.level = 0.5
