"""Findings are generated from the tables: every number they state is a table cell,
and every cell is recomputed here from the table it names."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iclscope.findings import (
    DEPTH_BANDS, FINDINGS, Headline, label_effect_form, bullet_groups, depth_band, fmt, render_markdown,
)
from iclscope.report import markdown_to_html

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def numbers_outside_code(line: str) -> list[str]:
    """Number tokens of a markdown line outside `code` spans (units and quantity names)."""
    plain = "".join(part for i, part in enumerate(line.split("`")) if i % 2 == 0)
    return NUMBER.findall(plain)


def bullets_match_rows(markdown: str, frame: pd.DataFrame) -> None:
    """Each bullet of findings.md reads a group of rows; its numbers are those rows' cells,
    and every row's estimate is stated."""
    frame = frame.reset_index(drop=True)
    findings_part = markdown.split("## Warnings from the analyses")[0]  # warnings are quoted, not findings
    bullets = [line[2:] for line in findings_part.splitlines() if line.startswith("- ")]
    groups = bullet_groups(frame)
    assert len(bullets) == len(groups) and sorted(i for g in groups for i in g) == list(range(len(frame)))
    for text, group in zip(bullets, groups):
        rows = frame.loc[group]
        cells = {fmt(v) for col in ("estimate", "ci_low", "ci_high", "n") for v in rows[col]}
        stated = numbers_outside_code(text)
        stray = [n for n in stated if n not in cells]
        assert not stray, f"{text!r} states {stray}, not cells of its rows {rows.to_dict('records')}"
        for est in rows["estimate"]:
            assert fmt(est) in stated or not math.isfinite(est), (text, est)


def test_fmt_and_depth_bands():
    assert fmt(3.0) == "3" and fmt(0.12345) == "0.123" and fmt(-1234.5) == "-1234" and fmt(math.nan) == "n/a"
    assert fmt(math.inf) == "infinite" and fmt(-math.inf) == "minus infinite"
    n_layers = 30
    bands = [depth_band(layer, n_layers) for layer in range(n_layers + 1)]
    assert bands[0] == "early" and bands[15] == "middle" and bands[30] == "late"
    # every layer lands in exactly one band, in depth order
    order = [name for name, _, _ in DEPTH_BANDS]
    assert [order.index(b) for b in bands] == sorted(order.index(b) for b in bands)
    with pytest.raises(ValueError):
        depth_band(31, n_layers)


def test_rendered_text_states_only_row_cells():
    rows = [
        Headline("binary", "transition", "continuation 0011 d=2", 7.25, 5.5, 9.75, 0, "binary/model_selection.parquet",
                 note="best account: soft"),
        Headline("binary", "sharpness", "continuation 0011 d=2", 0.75, 0.5, 1.25, 0, "binary/model_selection.parquet",
                 note="best account: soft"),
        Headline("binary", "baseline_bic_wins", "markov", 9.0, n=13, source="binary/baselines.parquet"),
        Headline("labels", "default - random", "sentiment positions_2_to_last", 0.41, 0.2, 0.63, 40,
                 "labels/sentiment/summary.parquet", note="nats"),
        Headline("labels", "follows_flipped_late", "novel", 0.125, math.nan, math.nan, 1,
                 "labels/novel/positions.parquet", note="share of predictions"),
    ]
    frame = pd.DataFrame([r.__dict__ for r in rows])
    frame.insert(0, "model", "m")
    text = render_markdown(frame, "m", {"config_hash": "abc123"})
    bullets_match_rows(text, frame)
    assert "no interval" in text and "## Study A" in text and "## Study C" in text
    page = markdown_to_html(text)
    assert "<li>" in page and "<code>continuation 0011 d=2</code>" in page and "<h3>" in page


def test_a_stray_number_is_caught():
    frame = pd.DataFrame([{**Headline("labels", "x", "u", 1.5, 1.0, 2.0, 3, "s").__dict__, "model": "m"}])
    bad = "- `u`: `x` 1.5 (CI [1, 2]; n = 3) and 0.7 from nowhere.\n"
    with pytest.raises(AssertionError, match="0.7"):
        bullets_match_rows(bad, frame)


def test_quote_into_replaces_only_the_marked_block():
    from iclscope.findings import quote_into

    doc = "intro 1.5\n<!-- findings:m -->\nold 0.3\n<!-- /findings:m -->\noutro 2\n"
    once = quote_into(doc, "m", "# Findings: m\n\n- `u`: 0.42\n", "results/m/findings.md")
    assert "old 0.3" not in once and "- `u`: 0.42" in once and "### Findings: m" in once
    assert once.startswith("intro 1.5\n") and once.endswith("outro 2\n") and "results/m/findings.md" in once
    assert quote_into(once, "m", "# Findings: m\n\n- `u`: 0.42\n", "results/m/findings.md") == once
    with pytest.raises(ValueError, match="findings:other"):
        quote_into(doc, "other", "x", "y")


# ----------------------------------------------------------------------------- on a real (tiny) run

def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _band_of(layer: int, n_layers: int) -> str:
    rel = layer / n_layers
    return "early" if rel < 1 / 3 else ("middle" if rel < 2 / 3 else "late")


def recompute(root: Path, row) -> float:
    """The estimate of one findings row, recomputed with plain pandas from its source table
    (written without iclscope.findings, from the table contracts)."""
    table = pd.read_parquet(root / row.source)
    q, unit = row.quantity, row.unit
    if q.startswith("p_random_drop_"):
        lo, hi = (int(x) for x in q.removeprefix("p_random_drop_").split("_to_"))
        wide = table.pivot_table(index=["concept", "sample"], columns="length", values="p_random")
        drop = (wide[lo] - wide[hi]).dropna()
        is_random = drop.index.get_level_values("concept") == "random"
        concepts, controls = drop[~is_random].mean(), drop[is_random].mean()
        return {"concepts": concepts, "controls": controls, "concepts - controls": concepts - controls}[unit]
    if q in ("transition", "sharpness"):
        curve, concept, *depth = unit.split()
        rows = table[(table["curve"] == curve) & (table["concept"] == concept) & (table["account"] == "lm")]
        if depth:
            rows = rows[rows["depth"] == int(depth[0].removeprefix("d="))]
        assert len(rows) == 1
        r = rows.iloc[0]
        value, low, high = ((r.transition, r.ci_low, r.ci_high) if q == "transition"
                            else (r.slope, r.slope_low, r.slope_high))
        assert _close(row.ci_low, float(low)) and _close(row.ci_high, float(high))
        return float(value)
    if q == "sequences_kept":
        mode = unit.split()[0]
        model = table[(table["source"] == "model") & (table["mode"] == mode)]
        assert row.n == int(model["n_total"].sum())
        assert unit == ("constrained sampling" if mode == "constrained"
                        else f"free sampling, {model['parse'].iloc[0]} parse")
        return float(model["n_used"].sum())
    if q in ("baseline_bic_wins", "baseline_summed_bic"):
        source, mode = unit.removesuffix(" samples").split(", ")
        base = table[(table["source"] == source) & (table["mode"] == mode)].dropna(subset=["bic"])
        return float((base["bic_rank"] == 1).sum()) if q == "baseline_bic_wins" else float(base["bic"].sum())
    if q in ("baseline_kl_wins", "baseline_mean_kl"):
        source, mode = unit.removesuffix(" probabilities").split(", ")
        base = table[(table["source"] == source) & (table["mode"] == mode)].dropna(subset=["prob_kl"])
        return float((base["prob_kl_rank"] == 1).sum()) if q == "baseline_kl_wins" else float(base["prob_kl"].mean())
    if q == "run_continuation_change":
        seen = table[table["run_length"] > 0]
        long = seen.assign(long=seen["run_length"] >= 3).pivot_table(
            index=["p_tails", "sample"], columns="long", values="p_same", aggfunc="mean")
        return float((long[True] - long[False]).dropna().mean())
    if q == "follows_flipped_late":
        flipped = table[table["condition"] == "flipped"]
        n_pos = int(table["position"].max())
        late = flipped[flipped["position"] > n_pos - max(n_pos // 4, 1)]
        return float(late.groupby("repeat")["correct_context"].mean().mean())
    if q.startswith("repeats_for_ci_width_"):
        dataset, position_name, pair = unit.split(" ", 2)
        a, b, kind, metric = label_effect_form(pair)
        hit = table[(table["condition"] == a) & (table["condition_b"] == b) & (table["metric"] == metric)
                    & (table["position_name"] == position_name) & (table["kind"] == kind)]
        assert len(hit) == 1 and int(hit["n"].iloc[0]) == row.n
        width = float(hit["ci_high"].iloc[0] - hit["ci_low"].iloc[0])
        if not math.isfinite(width):  # no interval (too few repeats): nothing to scale
            return 0.0
        return float(max(row.n, math.ceil(row.n * (width / float(q.rsplit("_", 1)[1])) ** 2)))
    if q in ("control_variance_ratio", "control_beta"):  # the adjusted effect's control variate
        dataset, position_name, pair = unit.split(" ", 2)
        a, b, kind, metric = label_effect_form(pair)
        hit = table[(table["condition"] == a) & (table["condition_b"] == b) & (table["metric"] == metric)
                    & (table["position_name"] == position_name) & (table["kind"] == kind)]
        assert len(hit) == 1 and kind == "pooled_difference_adjusted" and int(hit["n"].iloc[0]) == row.n
        return float(hit["variance_ratio" if q == "control_variance_ratio" else "beta"].iloc[0])
    if row.study == "labels":  # effects copied from the summary table
        dataset, position_name = unit.split(" ", 1)
        if "-" not in q:
            raise AssertionError(f"unknown study C quantity {q!r}")
        a, b, kind, metric = label_effect_form(q)
        if q == "flip_df - flip_fd" and position_name == "after_2N":
            kind = "difference"
        hit = table[(table["condition"] == a) & (table["condition_b"] == b) & (table["metric"] == metric)
                    & (table["position_name"] == position_name) & (table["kind"] == kind)]
        assert len(hit) == 1 and (hit["dataset"] == dataset).all()
        assert _close(row.ci_low, float(hit["ci_low"].iloc[0])) and _close(row.ci_high, float(hit["ci_high"].iloc[0]))
        return float(hit["mean"].iloc[0])
    if row.study == "representations":
        return recompute_study_b(root, row)
    raise AssertionError(f"unknown quantity {q!r}")


ORDER = {"": None, " (relevant first)": True, " (relevant second)": False}


def recompute_study_b(root: Path, row) -> float:
    """Study B's effects from the per-layer and per-prompt tables (not the effects table):
    gains from the behaviour table (distinct prompts), band means of normalised alignment,
    head-mean log attention ratio and repr-behaviour correlations. The interval is checked
    to be the effects table's (its units are tested in tests/test_study_representations.py)."""
    base = root / "representations"
    q, unit = row.quantity, row.unit
    flag = None
    for suffix, value in ORDER.items():
        if suffix and unit.endswith(suffix):
            unit, flag = unit.removesuffix(suffix), value
    eff = pd.read_parquet(root / row.source)
    eff = eff[eff["headline"]]
    if q.startswith("gain_"):
        metric = q.removeprefix("gain_")
        task, shots = unit.split(" k=")
        before, after = (int(x) for x in shots.split("->"))
        b = pd.read_parquet(base / "behaviour.parquet")
        b = b[b["task"] == task]
        if flag is not None:
            b = b[b["relevant_first"] == flag]
        b = b.assign(v=b[metric].astype(float))
        pairs = b[b["n_shots"] == before].merge(b[b["n_shots"] == after], on=["condition", "variant"])
        hit = eff[(eff["task"] == task) & (eff["quantity"] == "gain") & (eff["measure"] == metric)]
        estimate = (pairs["v_y"] - pairs["v_x"]).mean()
    else:
        parts = unit.split()
        task, band = parts[0], parts[-1]
        measure = " ".join(parts[1:-1])
        hit = eff[(eff["task"] == task) & (eff["quantity"] == q) & (eff["band"] == band)]
        if measure:
            hit = hit[hit["measure"] == measure]
        layers = range(int(hit["layer_low"].iloc[0]), int(hit["layer_high"].iloc[0]) + 1)
        if q == "repr_behaviour_r":
            r = hit.iloc[0]
            t = pd.read_parquet(base / "repr_vs_behaviour.parquet")
            t = t[(t["task"] == task) & (t["measure"] == measure) & (t["behaviour"] == r.behaviour)
                  & t["layer"].isin(layers) & (t["n_shots_after"] == r.n_shots_after)]
            t = t[(t["pooling"].isna() if pd.isna(r.pooling) else t["pooling"] == r.pooling) & (t["span"] == r.span)]
            estimate = t["mean"].mean()
        else:
            if q.startswith("alignment"):
                r = hit.iloc[0]
                t = pd.read_parquet(base / "rsa.parquet")
                t = t[(t["task"] == task) & (t["hypothesis"] == measure) & (t["comparator"] == r.comparator)
                      & (t["pooling"] == r.pooling) & (t["span"] == r.span)]
                value = "alignment_normalised"
            else:
                t = pd.read_parquet(base / "attention_ratio.parquet")
                t = t[(t["task"] == task) & (t["head"] == -1)]
                value = "log_ratio"
            t = t[(t["relevant_first"].isna() if flag is None else t["relevant_first"] == flag) & t["layer"].isin(layers)]
            shots = sorted(t["n_shots"].unique())
            wide = t.pivot_table(index="layer", columns="n_shots", values=value, dropna=False)
            per_layer = wide[shots[-1]] if q == "alignment_after" else wide[shots[-1]] - wide[shots[0]]
            if q == "alignment_after":  # reported only where nothing is defined before ICL
                assert wide[shots[0]].isna().all()
            estimate = per_layer.dropna().mean()
    hit = hit[hit["relevant_first"].isna()] if flag is None else hit[hit["relevant_first"] == flag]
    assert len(hit) == 1, (row.quantity, row.unit)
    assert _close(row.ci_low, float(hit["ci_low"].iloc[0])) and _close(row.ci_high, float(hit["ci_high"].iloc[0]))
    assert row.n == int(hit["n_units"].iloc[0])
    return float(estimate)


@pytest.mark.slow
def test_every_number_in_the_findings_is_recomputed_from_its_table(finished_run):
    root = finished_run / "results" / "tiny"
    frame = pd.read_parquet(root / "findings.parquet")
    markdown = (root / "findings.md").read_text()
    assert set(frame["study"]) == {"binary", "representations", "labels"}
    bullets_match_rows(markdown, frame)
    for row in frame.itertuples(index=False):
        assert _close(row.estimate, recompute(root, row)), row
        if not (math.isnan(row.ci_low) or math.isnan(row.ci_high)):
            assert row.ci_low <= row.estimate + 1e-12 and row.estimate <= row.ci_high + 1e-12, row
    report = (finished_run / "results" / "report.html").read_text()
    assert "Findings: tiny" in report


@pytest.mark.slow
def test_findings_name_a_hash_of_the_configs_of_the_tables_they_read(finished_run, tmp_path):
    """The header's hash covers the config keys of every table read, not only the findings
    step's own parameters: changing a source table's config changes it."""
    import shutil

    from iclscope import provenance
    from iclscope.findings import tables_config_hash
    from iclscope.tables import read_table, table_metadata, write_table

    root = finished_run / "results" / "tiny"
    frame = pd.read_parquet(root / "findings.parquet")
    sources = sorted({root / s for s in frame["source"]})
    expected = tables_config_hash(root, sources)
    assert f"tables_config_hash `{expected}`" in (root / "findings.md").read_text()
    copy = tmp_path / "tiny"
    shutil.copytree(root, copy)
    changed = copy / "labels" / "sentiment" / "summary.parquet"
    write_table(read_table(changed), changed, {provenance.PREFIX + "config_hash": provenance.config_hash({"other": 1})})
    assert table_metadata(changed)["config_hash"] == provenance.config_hash({"other": 1})
    assert tables_config_hash(copy, [copy / s.relative_to(root) for s in sources]) != expected


def test_repeats_for_width_scales_with_the_square_of_the_width():
    from iclscope.findings import repeats_for_width

    assert repeats_for_width(0.4, 12, 0.2) == 48  # twice as wide: four times the repeats
    assert repeats_for_width(0.1, 12, 0.2) == 12  # already narrow enough: what was run
    assert repeats_for_width(0.21, 10, 0.2) == 12  # rounded up
    assert repeats_for_width(math.nan, 12, 0.2) == 0


def test_warnings_a_step_logs_reach_its_tables_and_the_findings(tmp_path):
    import logging

    import pyarrow as pa

    from iclscope import provenance
    from iclscope.findings import recorded_warnings, render_markdown
    from iclscope.tables import table_metadata, write_table

    log = logging.getLogger("iclscope.studies.binary")
    table = pa.table({"x": [1]})
    with provenance.collecting_warnings():
        write_table(table, tmp_path / "before.parquet", provenance.metadata("t", {}))
        log.warning("generation p_tails=%g: no sequence with %d flips; baselines not fitted", 80, 8)
        log.warning("generation p_tails=%g: no sequence with %d flips; baselines not fitted", 80, 8)  # once
        write_table(table, tmp_path / "a.parquet", provenance.metadata("t", {}))
        write_table(table, tmp_path / "b.parquet", provenance.metadata("t", {}))
    write_table(table, tmp_path / "after.parquet", provenance.metadata("t", {}))
    assert "warnings" not in table_metadata(tmp_path / "before.parquet")
    assert "warnings" not in table_metadata(tmp_path / "after.parquet")
    message = "generation p_tails=80: no sequence with 8 flips; baselines not fitted"
    assert json.loads(table_metadata(tmp_path / "a.parquet")["warnings"]) == [message]
    warnings = recorded_warnings(tmp_path, [tmp_path / n for n in ("before.parquet", "a.parquet", "b.parquet")])
    assert warnings == {"a.parquet": [message]}  # listed once, with the first table that has it
    frame = pd.DataFrame(columns=[f for f in FINDINGS.names])
    text = render_markdown(frame, "m", warnings=warnings)
    assert f"- `a.parquet`: `{message}`" in text
    bullets_match_rows(text, frame)  # quoted warnings are not findings bullets


def test_a_headline_from_one_unit_has_no_interval():
    one = Headline("labels", "follows_flipped_late", "d", 0.0419, 0.0419, 0.0419, 1, "x")
    assert math.isnan(one.ci_low) and math.isnan(one.ci_high) and one.estimate == 0.0419
    two = Headline("labels", "follows_flipped_late", "d", 0.5, 0.2, 0.8, 2, "x")
    assert (two.ci_low, two.ci_high) == (0.2, 0.8)
    from dataclasses import asdict

    assert "no interval" in render_markdown(pd.DataFrame([{**asdict(one), "model": "m"}]), "m")
