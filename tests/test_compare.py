"""The compare stage: with two models, results/compare/ holds every model's headline
quantities (from the same code as the per-model findings) with its card fields, the
cross-model text and the overlay figures; adding a model reruns only its own jobs and the
comparison (docs/comparing.md)."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from conftest import snakemake
from test_workflow import changed_config, job_counts, planned

from iclscope.compare import CARD_FIELDS, cross_model_markdown
from iclscope.findings import fmt
from iclscope.tables import table_metadata


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
