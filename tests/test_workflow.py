"""The Snakemake workflow end to end: DAG shape, config errors, a whole run, lint."""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, small_config, snakemake

BIN = Path(sys.executable).parent


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run."""
    table = output[output.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


DEFAULT_JOBS = {
    "prepare_model": 1, "build_tasks": 7, "extract": 6, "gather_extract": 6, "generate": 1,
    "analyse_binary": 1, "analyse_representations": 1, "analyse_labels": 2, "plot_binary": 1,
    "plot_representations": 1, "plot_labels": 2, "findings": 1, "report": 1, "all": 1,
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
        ({"labels": {"n_examples": 4, "flip_at": 9}}, "`labels.flip_at`: 9 needs n_examples >= 2 * flip_at + 1 = 19"),
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


@contextmanager
def changed_config(run_dir: Path, change):
    """Temporarily edit the run's config (``change`` mutates the dict)."""
    path = run_dir / "config" / "config.yaml"
    original = path.read_text()
    cfg = yaml.safe_load(original)
    change(cfg)
    path.write_text(yaml.safe_dump(cfg))
    try:
        yield
    finally:
        path.write_text(original)


def planned(run_dir: Path) -> dict[str, int]:
    out = snakemake("-n", "--cores", "1", cwd=run_dir).stdout
    return {} if "Nothing to be done" in out else job_counts(out)


@pytest.mark.slow
def test_whole_pipeline_runs_on_the_tiny_model(finished_run):
    run_dir = finished_run
    card = yaml.safe_load((run_dir / "resources/models/tiny/card.json").read_text())
    assert card["n_layers"] == 2 and len(card["weights_sha256"]) == 64
    tasks = sorted(p.name for p in (run_dir / "results/tasks").iterdir())
    assert tasks == [
        "binary_continuation.parquet", "binary_generation.parquet", "binary_judgment.parquet",
        "labels_sentiment.parquet", "reading.parquet", "regression.parquet",
    ]
    from iclscope.tables import read_table, table_metadata

    report = (run_dir / "results/report.html").read_text()
    assert report.count("<img") == 4 + 6 + 3 and "Study C" in report and "bootstrap" in report  # A, B, C figures
    readouts = read_table(run_dir / "results/tiny/extract/labels_sentiment/readouts.parquet")
    # (3 conditions + content-free twins of default and flipped) x 2 repeats x 7 positions x 2 label words
    assert readouts.num_rows == (3 + 2) * 2 * 7 * 2
    positions = read_table(run_dir / "results/tiny/labels/sentiment/positions.parquet")
    assert positions.num_rows == (3 + 2) * 2 * 7
    summary = read_table(run_dir / "results/tiny/labels/sentiment/summary.parquet").to_pandas()
    assert {"pooled_difference_adjusted", "pooled_difference_content_free"} <= set(summary["kind"])
    embeddings = read_table(run_dir / "results/tiny/extract/reading/embeddings.parquet")
    assert set(embeddings.column("layer").to_pylist()) == {0, 1, 2}
    rsa = read_table(run_dir / "results/tiny/representations/rsa.parquet")
    assert rsa.num_rows > 0
    meta = table_metadata(run_dir / "results/tiny/extract/reading/attention.parquet")
    assert meta["weights_sha256"] == card["weights_sha256"] and meta["task"] == "reading"
    # shard tables are temporary: gone once gathered
    assert not list((run_dir / "results/tiny/extract").glob("*/shards/*/*.parquet"))
    # every extraction job logged its throughput, read back with its Snakemake wall time
    from iclscope.bench.jobs import job_rows

    rows = job_rows(run_dir / "results")
    assert sorted(r["task"] for r in rows) == ["binary_continuation", "binary_judgment", "labels_sentiment",
                                               "reading", "regression"]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["bound_ratio"] > 0 and r["job_seconds"] > 0 for r in rows)
    # nothing left to do afterwards
    assert planned(run_dir) == {}


@pytest.mark.slow
def test_analysis_parameter_reruns_only_that_analysis(finished_run):
    def smoother(cfg):
        cfg["labels"]["analysis"]["smooth"] = 3

    with changed_config(finished_run, smoother):
        assert planned(finished_run) == {
            "analyse_labels": 1, "plot_labels": 1, "findings": 1, "report": 1, "all": 1}

    def more_permutations(cfg):
        cfg["representations"]["analysis"]["n_permutations"] = 300

    with changed_config(finished_run, more_permutations):
        assert planned(finished_run) == {
            "analyse_representations": 1, "plot_representations": 1, "findings": 1, "report": 1, "all": 1}


@pytest.mark.slow
def test_pooling_change_reruns_only_study_b_extraction(finished_run):
    def pooling(cfg):
        cfg["representations"]["pooling"] = ["mean", "max"]

    with changed_config(finished_run, pooling):
        counts = planned(finished_run)
    assert counts["extract"] == 2 and counts["gather_extract"] == 2  # regression and reading only
    assert "build_tasks" not in counts and "analyse_labels" not in counts and "generate" not in counts


@pytest.mark.slow
def test_new_model_or_dataset_runs_only_new_jobs(finished_run, tiny_model_dir):
    def second_model(cfg):
        cfg["models"].append({"name": "tiny-b", "path": str(tiny_model_dir)})

    with changed_config(finished_run, second_model):
        counts = planned(finished_run)
    assert "build_tasks" not in counts
    assert counts["prepare_model"] == 1 and counts["extract"] == 5 and counts["analyse_labels"] == 1

    def second_dataset(cfg):
        cfg["labels"]["datasets"].append({"name": "novel", "source": "novel", "label_words": ["dax", "wug"]})

    with changed_config(finished_run, second_dataset):
        counts = planned(finished_run)
    assert counts == {"build_tasks": 1, "extract": 1, "gather_extract": 1, "analyse_labels": 1,
                      "plot_labels": 1, "findings": 1, "report": 1, "all": 1}


@pytest.mark.slow
def test_unrelated_changes_rerun_nothing(finished_run):
    (finished_run / "notes.txt").write_text("unrelated\n")
    os.utime(finished_run / "config" / "config.yaml")  # a touched but unchanged config
    assert planned(finished_run) == {}


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


def test_slurm_profile_plans_sharded_multi_model_gpu_jobs(tmp_path, default_config):
    """The SLURM profile gives a valid DAG for two models with sharded extraction: every
    shard is its own GPU job on the GPU partition; tiny CPU jobs are grouped."""
    cfg = copy.deepcopy(default_config)
    cfg["models"] = [
        dict(cfg["models"][0], shards=2),
        {"name": "llama-70b", "hf_id": "meta-llama/Llama-3.1-70B-Instruct", "dtype": "bfloat16",
         "device_map": "auto", "shards": 4},
    ]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    unfilled = snakemake("-n", "--profile", str(REPO / "profiles" / "slurm"), cwd=tmp_path, check=False)
    assert unfilled.returncode != 0 and "config key `plan.device`: unknown device '<gpu-type>'" in unfilled.stderr
    out = snakemake("-n", "--profile", str(REPO / "profiles" / "slurm"), "--config", "plan={device: a100-80gb}",
                    cwd=tmp_path).stdout
    counts = job_counts(out)
    assert counts["extract"] == 6 * (2 + 4) and counts["gather_extract"] == 2 * 6
    assert counts["prepare_model"] == 2 and counts["generate"] == 2
    extract_jobs = [block for block in out.split("rule ")[1:] if block.startswith("extract:")]
    assert len(extract_jobs) == 36
    for block in extract_jobs:
        assert "gpu=1" in block and "slurm_partition=<gpu-partition>" in block and "threads: 8" in block
        # before its inputs exist a job shows the coarse request (the plan's comes when it is scheduled)
        assert "runtime=60" in block
    assert "shards/4-of-4/" in out and "shards/2-of-2/" in out
    assert "Group job tasks" in out and "Group job analyses" in out


@pytest.mark.slow
def test_two_clean_runs_give_byte_identical_tables(finished_run, tmp_path, tiny_model_dir):
    from iclscope.audit import compare, manifest

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((finished_run / "config" / "config.yaml").read_text())
    snakemake("--cores", "2", cwd=tmp_path)
    first, second = manifest(finished_run / "results"), manifest(tmp_path / "results")
    assert len(first) >= 20 and all(e["kind"] for e in first)
    assert compare(first, second) == []
    # the CLI says so too, and flags a difference
    proc = subprocess.run([sys.executable, "-m", "iclscope", "audit", str(finished_run / "results"),
                           "--against", str(tmp_path / "results")], capture_output=True, text=True)
    assert proc.returncode == 0 and "identical" in proc.stdout, proc.stdout + proc.stderr
    victim = tmp_path / "results/tiny/labels/sentiment/curves.parquet"
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated
    proc = subprocess.run([sys.executable, "-m", "iclscope", "audit", str(tmp_path / "results")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "curves.parquet is corrupt or truncated" in proc.stderr


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing_finished_shards(workdir, tiny_model_dir):
    import signal
    import time

    cfg = small_config(tiny_model_dir)
    cfg["models"][0]["shards"] = 2
    cfg["studies"] = ["labels"]
    run_dir = workdir(cfg)
    shards = run_dir / "results/tiny/extract/labels_sentiment/shards"
    logs = [run_dir / f"results/logs/tiny/extract/labels_sentiment.{i}-of-2.log" for i in (1, 2)]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(run_dir),
         "--cores", "1", "--keep-going"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    # with one core, jobs run one after the other: once both shards have started,
    # Snakemake has recorded the first one as finished
    deadline = time.time() + 300
    while not all(log.exists() for log in logs) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert all(log.exists() for log in logs), "the shards never both started"
    os.killpg(proc.pid, signal.SIGTERM)  # interrupt the run during the second shard's extraction
    proc.wait(timeout=120)
    kept = sorted(p.parent.name for p in shards.glob("*/readouts.parquet"))
    assert len(kept) == 1, kept  # the finished shard stays; the interrupted one is removed
    finished = run_dir / f"results/logs/tiny/extract/labels_sentiment.{kept[0]}.log"
    finished_at = finished.stat().st_mtime
    counts = job_counts(snakemake("-n", "--cores", "1", "--rerun-incomplete", cwd=run_dir).stdout)
    assert counts["extract"] == 1  # only the interrupted shard
    snakemake("--cores", "1", "--rerun-incomplete", cwd=run_dir)
    assert finished.stat().st_mtime == finished_at  # the finished shard was not run again
    assert (run_dir / "results/tiny/labels/sentiment/curves.parquet").exists()


def _films(run_dir: Path, text: str | None, name: str = "films.csv") -> None:
    if text is not None:
        (run_dir / name).write_text(text)


FILMS_DATASET = {"name": "films", "source": "file", "path": "films.csv", "label_words": ["bad", "good"]}
GOOD_FILMS = "text,label\ngood film,pos\nbad film,neg\ngreat,pos\nawful,neg\n"


@pytest.mark.parametrize(
    "data, dataset, change, message",
    [
        ("", {}, None, "`labels.datasets[1]` (dataset 'films', file films.csv): dataset 'films': file films.csv is "
                       "empty (no header, no rows)"),
        ("text,label\n", {}, None, "dataset 'films': file films.csv has no data rows: only a header (label, text)"),
        ("sentence,gold\nnice,pos\nbad,neg\n", {}, None,
         "dataset 'films': file films.csv has no text column 'text'; columns found: ['gold', 'sentence']"),
        ("text,label\ngood,pos\n,neg\nawful,neg\n", {}, None,
         "dataset 'films': file films.csv has 1 empty text rows in column 'text' (first rows, 0-based: [1])"),
        ("text,label\ngood,pos\nfine,pos\n", {}, None, "dataset 'films': label set has only one class"),
        (GOOD_FILMS + "meh,mid\n", {}, None,
         "`labels.datasets[1]` (dataset 'films').label_words: 2 label words ['bad', 'good'] for 3 classes"),
        (None, {"name": "novel", "source": "novel", "label_words": ["dax", "wug", "blick"]}, None,
         "`labels.datasets[1]` (dataset 'novel').label_words: 3 label words ['dax', 'wug', 'blick'] for 2 classes"),
        (None, None, {"binary": {"continuation": {"concepts": []}}}, "`binary.continuation.concepts`: empty"),
        (None, None, {"device": "cuda"}, "`models[0].device` (model 'tiny'): cuda, but this machine has no CUDA"),
    ],
    ids=["empty", "header-only", "no-columns", "empty-text", "one-class", "words-vs-classes",
         "builtin-words", "no-concepts", "cuda"],
)
def test_bad_data_stops_before_any_job(workdir, tiny_model_dir, monkeypatch, capsys, data, dataset, change,
                                      message):
    """Bad data is refused by validate-config and by the Snakefile, naming the key, the
    dataset and the file, with nothing written under results/."""
    import torch

    from iclscope.cli import main

    if change and change.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = small_config(tiny_model_dir)
    if dataset is not None:
        cfg["labels"]["datasets"].append({**FILMS_DATASET, **dataset})
    for key, value in (change or {}).items():
        if key == "device":
            cfg["models"][0]["device"] = value
        else:
            cfg[key]["continuation"] = {**cfg[key]["continuation"], **value["continuation"]}
    run_dir = workdir(cfg)
    _films(run_dir, data)
    monkeypatch.chdir(run_dir)
    monkeypatch.delenv("ICLSCOPE_SKIP_DEVICE_CHECK", raising=False)
    assert main(["validate-config", "--config", "config/config.yaml"]) == 2
    assert message in capsys.readouterr().err
    proc = snakemake("-n", "--cores", "1", cwd=run_dir, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (run_dir / "results").exists() and not (run_dir / "resources").exists()


def test_good_data_file_passes_validation(workdir, tiny_model_dir, monkeypatch, capsys):
    from iclscope.cli import main

    cfg = small_config(tiny_model_dir)
    cfg["labels"]["datasets"].append(FILMS_DATASET)
    run_dir = workdir(cfg)
    _films(run_dir, GOOD_FILMS)
    monkeypatch.chdir(run_dir)
    assert main(["validate-config", "--config", "config/config.yaml"]) == 0
    assert "labels_films" in capsys.readouterr().out


@pytest.mark.slow
def test_snakemake_report_holds_every_figure_with_its_caption(finished_run, tmp_path):
    """`snakemake --report`: every figure and findings file, captioned from the captions.json
    its plot step wrote (the one source of captions), grouped by study and model."""
    from iclscope.registry import STUDIES

    out = tmp_path / "report.html"
    proc = snakemake("--cores", "1", "--report", str(out), cwd=finished_run)
    assert "ERROR" not in proc.stderr, proc.stderr  # e.g. rst that does not parse
    html = out.read_text()
    checked = 0
    for captions in sorted((finished_run / "results" / "tiny" / "figures").rglob("captions.json")):
        study = captions.relative_to(finished_run / "results" / "tiny" / "figures").parts[0]
        for name, caption in json.loads(captions.read_text()).items():
            path = str(captions.parent.relative_to(finished_run) / name)
            assert f'"{path}"' in html, path  # the figure is in the report
            first_words = caption.split("(")[0].split("|")[0][:40].replace("'", "&#x27;")
            assert first_words in html or caption[:40] in html, (name, first_words)
            assert STUDIES[study].title in html
            checked += 1
    n_datasets = len(list((finished_run / "results/tiny/figures/labels").iterdir()))
    assert n_datasets >= 1 and checked == sum(
        len(s.figures) * (n_datasets if s.per_dataset else 1) for s in STUDIES.values())
    assert '"results/tiny/findings.md"' in html and "iclscope: inside in-context learning" in html
    for name, study in STUDIES.items():  # the key tables, offered as downloads
        folders = (sorted((finished_run / "results/tiny" / name).iterdir()) if study.per_dataset
                   else [finished_run / "results/tiny" / name])
        for folder in folders:
            for table in study.key_tables:
                assert f'"{(folder / table).relative_to(finished_run)}.parquet"' in html, (name, table)
    assert "Key tables" in html
