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


def test_an_unknown_study_is_still_refused(tmp_path, tiny_model_dir):
    """Without the toy installed, `studies: [toy]` is a config error listed by key."""
    cfg = small_config(tiny_model_dir)
    cfg["studies"] = ["toy"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--cores", "1", cwd=tmp_path, check=False)
    assert out.returncode != 0 and "studies[0]" in out.stderr + out.stdout
