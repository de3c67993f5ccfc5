"""The compare stage: with two models, results/compare/ holds every model's headline
quantities (from the same code as the per-model findings) with its card fields, the
cross-model text and the overlay figures; adding a model reruns only its own jobs and the
comparison (docs/comparing.md)."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pyarrow as pa
import pytest

from conftest import snakemake
from test_workflow import changed_config, job_counts, planned

from iclscope.compare import CARD_FIELDS, cross_model_markdown, model_tables, size_panels, write_compare
from iclscope.findings import FINDINGS, fmt
from iclscope.registry import SIZE_FIGURE, STUDIES, SizePanel, Study
from iclscope.tables import table_metadata, write_table


def _two_models(cfg):
    cfg["models"].append({**cfg["models"][0], "name": "tiny-b"})


def test_cross_model_text_quotes_every_model_in_size_order():
    rows = []
    for model, size, estimate in (("big", 2e8, 0.5), ("small", 1e8, 0.25)):
        rows.append({"model": model, "study": "labels", "quantity": "default - random", "unit": "novel last",
                     "estimate": estimate, "ci_low": estimate - 0.125, "ci_high": estimate + 0.125, "n": 12,
                     "relative_depth": float("nan"), "source": "labels/novel/summary.parquet", "note": "",
                     "n_parameters_without_embedding": size})
    text = cross_model_markdown(pd.DataFrame(rows))
    line = next(x for x in text.splitlines() if x.startswith("- `default - random`"))
    assert line.index("`small`") < line.index("`big`")  # ordered by size, not by name
    assert "`small` 0.25 [0.125, 0.375]" in line and "`big` 0.5 [0.375, 0.625]" in line
    assert f"`small` ({fmt(1e8)})" in text


def test_the_size_figure_shows_study_c_first_then_a_then_b():
    """Its panels: each study's own, the studies by `size_rank` (not in registry order)."""
    assert [(s, p.quantity) for s, p in size_panels()] == [
        ("labels", "default - random"), ("labels", "default - flipped"), ("labels", "follows_flipped_late"),
        ("binary", "transition"), ("representations", "gain_correct"), ("representations", "gain_expected_error")]
    transition = size_panels()[3][1]  # one flip of continuation, and judgment: the comparable units
    assert transition.shows("continuation 01 d=1") and transition.shows("judgment 011")
    assert not transition.shows("continuation 01 d=2") and SizePanel("q", "words").shows("anything")


def _fake_compare(results, models, params, figures_dir):
    """A registered study's compare hook: one overlay figure from each model's table."""
    from iclscope.figures import pyplot, save_figure

    scores = model_tables(results, models, "fake/scores.parquet")
    fig, ax = pyplot().subplots(figsize=(3, 2))
    for model, frame in sorted(scores.items()):
        ax.plot(frame["x"], frame["y"], label=model)
    save_figure(fig, figures_dir / "fake_overlay.png")
    return {"fake_overlay.png": f"fake scores of {', '.join(sorted(scores))}"}


def _fake_inputs(root):
    """Two models' findings (one headline of the fake study each), cards and, for `a` only,
    the fake study's table."""
    cards = {}
    for model, size in (("a", 2_000_000), ("b", 1_000_000)):
        row = {"model": model, "study": "fake", "quantity": "accuracy", "unit": "all", "estimate": 0.5,
               "ci_low": 0.25, "ci_high": 0.75, "n": 4, "relative_depth": float("nan"), "source": "", "note": ""}
        write_table(pa.Table.from_pylist([row], schema=FINDINGS), root / "results" / model / "findings.parquet", {})
        cards[model] = root / f"{model}.json"
        cards[model].write_text(json.dumps({"n_parameters": 2 * size, "n_parameters_without_embedding": size}))
    write_table(pa.table({"x": [1.0, 2.0], "y": [0.5, 0.75]}), root / "results/a/fake/scores.parquet", {})
    return cards


def test_write_compare_draws_each_registered_studys_overlay_figures(tmp_path, monkeypatch):
    """A study's overlay figures and its size panels come from its record: its `compare` hook
    draws them, beside the built-in studies' (which find none of their tables here)."""
    monkeypatch.setitem(STUDIES, "fake", Study(
        "fake", "Fake study", tables=("scores",), figures=(), compare_figures=("fake_overlay.png",),
        size_panels=(SizePanel("accuracy", "share correct"),), hooks={"compare": f"{__name__}:_fake_compare"}))
    cards = _fake_inputs(tmp_path)
    params = {"seed": 0, "studies": ["fake"], "datasets": []}
    write_compare(tmp_path / "results", ["a", "b"], cards, params, tmp_path / "out")
    figures = tmp_path / "out" / "figures"
    captions = json.loads((figures / "captions.json").read_text())
    assert captions["fake_overlay.png"] == "fake scores of a"  # b has no table: left out
    assert (figures / "fake_overlay.png").stat().st_size > 0
    assert captions[SIZE_FIGURE].endswith("Quantities: fake: accuracy.")
    assert set(captions) == {SIZE_FIGURE, "judgment_curves.png", "label_curves.png", "depth_profiles.png",
                             "fake_overlay.png"}
    assert all((figures / name).is_file() for name in captions)

    # a hook that draws other figures than its record registers (the DAG's outputs) is refused
    monkeypatch.setitem(STUDIES, "fake", Study("fake", "Fake study", tables=(), figures=(),
                                               compare_figures=("other.png",),
                                               hooks={"compare": f"{__name__}:_fake_compare"}))
    with pytest.raises(ValueError, match="compare hook drew"):
        write_compare(tmp_path / "results", ["a", "b"], cards, params, tmp_path / "out2")


@pytest.mark.slow
def test_adding_a_model_reruns_its_jobs_and_the_comparison_only(finished_run, tmp_path):
    run_dir = tmp_path / "project"
    shutil.copytree(finished_run, run_dir, symlinks=True)  # keeps modification times
    with changed_config(run_dir, _two_models):
        out = snakemake("-n", "--cores", "1", cwd=run_dir).stdout
        counts = job_counts(out)
        assert counts["compare"] == 1 and counts["prepare_model"] == 1 and counts["findings"] == 1
        assert "build_tasks" not in counts  # tasks do not depend on the model
        models = set(re.findall(r"model=([\w-]+)", out))
        assert models == {"tiny-b"}, models  # nothing of the first model reruns

        snakemake("--cores", "2", cwd=run_dir)
        compare = run_dir / "results" / "compare"
        headlines = pd.read_parquet(compare / "headlines.parquet")
        assert set(headlines["model"]) == {"tiny", "tiny-b"}
        for model in ("tiny", "tiny-b"):
            # the same rows as that model's own findings: one code path for both
            own = pd.read_parquet(run_dir / "results" / model / "findings.parquet")
            mine = headlines[headlines["model"] == model].reset_index(drop=True)
            pd.testing.assert_frame_equal(mine[own.columns], own, check_dtype=False)
            card = json.loads((run_dir / "resources/models" / model / "card.json").read_text())
            for name, _ in CARD_FIELDS:
                assert (mine[name] == card.get(name)).all() or card.get(name) is None, name
        text = (compare / "findings.md").read_text()
        assert "`tiny`" in text and "`tiny-b`" in text
        captions = json.loads((compare / "figures" / "captions.json").read_text())
        for name in ("headlines_vs_size.png", "judgment_curves.png", "label_curves.png", "depth_profiles.png"):
            assert (compare / "figures" / name).stat().st_size > 10_000 and captions[name]
        assert json.loads(table_metadata(compare / "headlines.parquet")["models"]) == ["tiny", "tiny-b"]
        report = (run_dir / "results" / "report.html").read_text()
        assert report.index("Models compared") < report.index("Findings: tiny")  # the report opens with it
        assert planned(run_dir) == {}
