"""The Snakemake workflow end to end: DAG shape, config errors, a whole run, lint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, small_config

BIN = Path(sys.executable).parent


def snakemake(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd), *args],
        capture_output=True, text=True, env=env, timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run."""
    table = output[output.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


DEFAULT_JOBS = {
    "prepare_model": 1, "build_tasks": 7, "extract": 6, "gather_extract": 6, "generate": 1,
    "analyse_binary": 1, "analyse_representations": 1, "analyse_labels": 2, "plot_binary": 1,
    "plot_representations": 1, "plot_labels": 2, "report": 1, "all": 1,
}


def test_default_dry_run_lists_every_step(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    out = snakemake("-n", "--cores", "1", cwd=tmp_path).stdout
    assert job_counts(out) == DEFAULT_JOBS
    for target in [
        "resources/models/smollm2-135m/card.json",
        "results/tasks/labels_novel.parquet",
        "results/smollm2-135m/extract/reading/attention.parquet",
        "results/smollm2-135m/extract/binary_generation/generations.parquet",
        "results/smollm2-135m/binary/model_selection.parquet",
        "results/smollm2-135m/representations/rsa.parquet",
        "results/smollm2-135m/labels/sentiment/positions.parquet",
        "results/smollm2-135m/figures/labels/sentiment/curves.png",
        "results/smollm2-135m/figures/representations/rsa_matrices.png",
        "results/smollm2-135m/figures/binary/continuation.png",
        "results/report.html",
    ]:
        assert target in out, target


def test_second_model_adds_its_own_jobs_only(workdir, tiny_model_dir):
    cfg = small_config(tiny_model_dir)
    cfg["models"].append({"name": "tiny-b", "path": str(tiny_model_dir)})
    counts = job_counts(snakemake("-n", "--cores", "1", cwd=workdir(cfg)).stdout)
    assert counts["prepare_model"] == 2 and counts["extract"] == 2 * 5 and counts["gather_extract"] == 2 * 5
    assert counts["plot_binary"] == counts["plot_representations"] == counts["plot_labels"] == 2
    assert counts["build_tasks"] == 6  # tasks do not depend on the model


@pytest.mark.parametrize(
    "change, message",
    [
        ({"studies": ["binary", "vision"]}, "`studies[1]`: 'vision' is not one of"),
        ({"representations": {"pooling": ["median"]}}, "`representations.pooling[0]`: 'median' is not one of"),
        ({"binary": {"generation": {"p_tails": [150]}}}, "`binary.generation.p_tails[0]`: 150 is greater than the maximum of 100"),
        ({"labels": {"n_examples": 4, "flip_at": 9}}, "`labels.flip_at`: 9 must be below n_examples = 4"),
    ],
)
def test_bad_config_stops_before_any_job(workdir, tiny_model_dir, change, message):
    cfg = small_config(tiny_model_dir)
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    run_dir = workdir(cfg)
    proc = snakemake("--cores", "1", cwd=run_dir, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (run_dir / "results").exists() and not (run_dir / "resources").exists()


def test_duplicate_model_names_stop_before_any_job(workdir, tiny_model_dir):
    cfg = small_config(tiny_model_dir)
    cfg["models"] = cfg["models"] * 2
    proc = snakemake("-n", "--cores", "1", cwd=workdir(cfg), check=False)
    assert proc.returncode != 0 and "duplicate model name 'tiny'" in proc.stderr


@pytest.mark.slow
def test_whole_pipeline_runs_on_the_tiny_model(workdir):
    run_dir = workdir()
    snakemake("--cores", "2", cwd=run_dir)
    card = yaml.safe_load((run_dir / "resources/models/tiny/card.json").read_text())
    assert card["n_layers"] == 2 and len(card["weights_sha256"]) == 64
    tasks = sorted(p.name for p in (run_dir / "results/tasks").iterdir())
    assert tasks == [
        "binary_continuation.parquet", "binary_generation.parquet", "binary_judgment.parquet",
        "labels_sentiment.parquet", "reading.parquet", "regression.parquet",
    ]
    from iclscope.tables import read_table, table_metadata

    report = (run_dir / "results/report.html").read_text()
    assert report.count("<img") == 3 + 5 + 2 and "Study C" in report and "bootstrap" in report
    readouts = read_table(run_dir / "results/tiny/extract/labels_sentiment/readouts.parquet")
    # 3 conditions x 2 repeats x 6 positions x 2 label words
    assert readouts.num_rows == 3 * 2 * 6 * 2
    positions = read_table(run_dir / "results/tiny/labels/sentiment/positions.parquet")
    assert positions.num_rows == 3 * 2 * 6
    embeddings = read_table(run_dir / "results/tiny/extract/reading/embeddings.parquet")
    assert set(embeddings.column("layer").to_pylist()) == {0, 1, 2}
    rsa = read_table(run_dir / "results/tiny/representations/rsa.parquet")
    assert rsa.num_rows > 0
    meta = table_metadata(run_dir / "results/tiny/extract/reading/attention.parquet")
    assert meta["weights_sha256"] == card["weights_sha256"] and meta["task"] == "reading"
    # shard tables are temporary: gone once gathered
    assert not list((run_dir / "results/tiny/extract").glob("*/shards/*/*.parquet"))
    # nothing left to do afterwards
    assert "Nothing to be done" in snakemake("-n", "--cores", "1", cwd=run_dir).stdout


def test_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--cores", "1"], cwd=REPO,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    files = [str(REPO / "Snakefile"), *sorted(str(p) for p in (REPO / "rules").glob("*.smk"))]
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
