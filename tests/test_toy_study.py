"""A fourth study from outside the package: the toy study of tests/toy_study/.

It is installed (here: the dist-info pip would write, on a path of its own) and named in the
config; nothing else changes. Its package registers its record through an entry point
(``iclscope.studies``): its task builder, extraction plan, analysis, figure and headline, and
its config section. The run goes through the whole DAG on the tiny model (docs/extending.md
is written from this test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO, small_config, snakemake
from test_workflow import job_counts

TOY = Path(__file__).resolve().parent / "toy_study"


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the installed toy study: its package and the metadata that announces
    its entry points (what `pip install tests/toy_study` writes)."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(TOY / "toy_study", site / "toy_study")
    project = tomllib.loads((TOY / "pyproject.toml").read_text())["project"]
    info = site / f"toy_study-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
             for group, eps in project["entry-points"].items()]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return site


def with_toy(site: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO / "workflow")]))


def test_the_registry_finds_the_toy_through_its_entry_point(toy_site):
    code = ("import sys, json; from iclscope.registry import STUDIES, owner; "
            "print(json.dumps([list(STUDIES), owner('toy_parity').name, "
            "sorted(m for m in ('pandas', 'matplotlib', 'torch') if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], env=with_toy(toy_site), capture_output=True, text=True,
                         check=True)
    studies, owner, heavy = json.loads(out.stdout)
    assert studies == ["binary", "representations", "labels", "toy"]  # the built-in ones first
    assert owner == "toy" and heavy == []  # registering imports no analysis library
    cli = subprocess.run([sys.executable, "-m", "iclscope", "analyse", "--help"], env=with_toy(toy_site),
                         capture_output=True, text=True, check=True)
    assert "toy" in cli.stdout


# two models' toy tables and findings (the toy's own headlines hook), then the comparison
COMPARE = """
import json, sys
from pathlib import Path
import pyarrow as pa
from iclscope.compare import write_compare
from iclscope.findings import write_findings
from iclscope.registry import COMPARE_FIGURES
from iclscope.tables import write_table
from toy_study.run import SCORES
root, cards, params = Path(sys.argv[1]), {}, {"seed": 0, "studies": ["toy"], "datasets": []}
for size, model in enumerate(("tiny", "tiny-b"), start=1):
    rows = [{"prompt_id": str(n), "number": n, "even": n % 2 == 0, "p_yes": 0.25 * size, "correct": n == 2}
            for n in (2, 3)]
    write_table(pa.Table.from_pylist(rows, schema=SCORES), root / model / "toy/scores.parquet", {})
    write_findings(root / model, model, params, root / model / "findings.parquet", root / model / "findings.md")
    cards[model] = root / f"{model}.json"
    cards[model].write_text(json.dumps({"n_parameters": 2000 * size, "n_parameters_without_embedding": 1000 * size}))
write_compare(root, sorted(cards), cards, params, root / "compare")
print(json.dumps([COMPARE_FIGURES, json.loads((root / "compare/figures/captions.json").read_text())]))
"""


def test_the_comparison_draws_the_toys_figure(toy_site, tmp_path):
    """With two models the comparison draws the toy's overlay figure (its `compare` hook, a
    registered compare figure: an output of the compare rule) and its size panel."""
    out = subprocess.run([sys.executable, "-c", COMPARE, str(tmp_path)], env=with_toy(toy_site),
                         capture_output=True, text=True, check=True)
    figures, captions = json.loads(out.stdout)
    assert figures[-1] == "toy_parity.png"  # by study name: after the built-in studies'
    assert captions["toy_parity.png"].endswith("one line per model (tiny, tiny-b).")
    assert (tmp_path / "compare/figures/toy_parity.png").stat().st_size > 0
    assert "Quantities: toy: accuracy." in captions["headlines_vs_size.png"]
    assert "## toy" in (tmp_path / "compare/findings.md").read_text()


@pytest.mark.slow
def test_a_toy_study_runs_through_the_whole_dag(toy_site, tmp_path, tiny_model_dir, monkeypatch):
    cfg = small_config(tiny_model_dir)
    cfg["studies"] = ["toy"]  # the one config line the study needs
    cfg["toy"] = {"numbers": [2, 3, 4, 7]}  # its own section (declared by its schema hook)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("PYTHONPATH", with_toy(toy_site)["PYTHONPATH"])

    snakemake("--cores", "2", cwd=tmp_path)
    results = tmp_path / "results"
    from iclscope.tables import read_table

    scores = read_table(results / "tiny/toy/scores.parquet").to_pandas()
    assert list(scores["number"]) == [2, 3, 4, 7] and scores["p_yes"].between(0, 1).all()
    assert (results / "tiny/figures/toy/parity.png").stat().st_size > 0
    assert json.loads((results / "tiny/figures/toy/captions.json").read_text())["parity.png"].startswith("p(yes)")
    findings = (results / "tiny/findings.md").read_text()
    assert "## Toy study: parity" in findings and "`accuracy`" in findings
    assert "Toy study: parity" in (results / "report.html").read_text()
    assert not (results / "tiny/binary").exists()  # only the configured study ran

    # nothing left to do; its analysis settings rerun its analysis only (its params are its slice)
    assert "Nothing to be done" in snakemake("-n", "--cores", "1", cwd=tmp_path).stdout
    cfg["toy"]["analysis"] = {"threshold": 0.4}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert job_counts(snakemake("-n", "--cores", "1", cwd=tmp_path).stdout) == {
        "analyse_toy": 1, "plot_toy": 1, "findings": 1, "report": 1, "all": 1}

    # a second model: the comparison's outputs include the toy's overlay figure
    cfg["models"].append({**cfg["models"][0], "name": "tiny-b"})
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert "results/compare/figures/toy_parity.png" in snakemake("-n", "--cores", "1", cwd=tmp_path).stdout


def test_an_unknown_study_is_still_refused(tmp_path, tiny_model_dir):
    """Without the toy installed, `studies: [toy]` is a config error listed by key."""
    cfg = small_config(tiny_model_dir)
    cfg["studies"] = ["toy"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--cores", "1", cwd=tmp_path, check=False)
    assert out.returncode != 0 and "studies[0]" in out.stderr + out.stdout
