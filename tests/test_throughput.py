"""Each extraction job's throughput record: its figures, its log line, and `iclscope bench jobs`."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from iclscope.bench import jobs
from iclscope.extraction.throughput import LOG_PREFIX, Throughput, log_record, parse_log, read_logs

RECORD = Throughput(
    model="m", task="labels_novel", shard="1/1", device="cpu", dtype="float32", cpu="AVX2", threads=2,
    prompt_tokens=1000, branch_tokens=50, padded_tokens=1100, parameters=10_000_000, flops=4e12, gemm_peak=2e11,
    seconds=8.0, forward_seconds=7.0,
)


def test_derived_figures_follow_their_definitions():
    assert RECORD.tokens_per_s == 125.0  # before the tables are written: the extraction alone
    assert RECORD.compute_bound_s == 20.0 and RECORD.bound_ratio == 0.4
    assert RECORD.mfu == pytest.approx(4e12 / 8.0 / 2e11)  # counted FLOPs over the seconds, of the peak
    written = replace(RECORD, write_seconds=2.0, job_seconds=15.0)
    assert written.tokens_per_s == 100.0 and written.bound_ratio == 0.5  # the writing counts once known
    assert "100 tokens/s" in written.summary() and "job 15.0 s" in written.summary()


def test_the_log_line_round_trips(caplog):
    written = replace(RECORD, write_seconds=2.0, job_seconds=15.0)
    with caplog.at_level(logging.INFO):
        log_record(written)
    text = "progress\r" + "\n".join(r.getMessage() for r in caplog.records)
    assert sum(LOG_PREFIX in r.getMessage() for r in caplog.records) == 1
    assert parse_log(text) == json.loads(json.dumps(written.record()))
    assert parse_log("no record here") is None


def _run(tmp_path, records, bench=None, tsv_seconds=None):
    """A results folder with the jobs' logs, Snakemake benchmark files and a bench summary."""
    for r in records:
        k, n = r.shard.split("/")
        log = tmp_path / "logs" / r.model / "extract" / f"{r.task}.{k}-of-{n}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"2026 INFO loading\nextract: 50%\r{LOG_PREFIX}{json.dumps(r.record())}\n")
        if tsv_seconds is not None:
            tsv = tmp_path / "benchmarks" / r.model / "extract" / f"{r.task}.{k}-of-{n}.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            tsv.write_text(f"s\th:m:s\tmax_rss\n{tsv_seconds}\t0:00:10\t100\n")
    if bench is not None:
        path = tmp_path / "bench" / records[0].model / "extract.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(bench))
    return tmp_path


def test_jobs_against_the_benchmark_and_the_bound(tmp_path):
    done = replace(RECORD, write_seconds=2.0, job_seconds=15.0)
    other = replace(done, task="reading", prompt_tokens=500)
    bench = {"per_task": {"labels_novel": {"tokens": 300, "seconds": {"iclscope": 2.5}}}}  # 120 tokens/s
    results = _run(tmp_path, [done, other], bench=bench, tsv_seconds=12.5)
    rows = jobs.job_rows(results)
    assert [r["task"] for r in rows] == ["labels_novel", "reading"]
    novel, reading = rows
    assert novel["tokens_per_s"] == 100.0 and novel["ratio_to_bench"] == pytest.approx(100 / 120)
    assert novel["job_seconds"] == 12.5 and novel["job_tokens_per_s"] == 80.0  # Snakemake's wall time
    assert novel["job_ratio_to_bench"] == pytest.approx(80 / 120)
    assert novel["bound_ratio"] == 0.5 and novel["mfu"] == 2.0 and novel["cpu"] == "AVX2"
    assert reading["bench_tokens_per_s"] is None and reading["ratio_to_bench"] is None  # the bench skipped it
    assert novel["flop_ratio_to_bench"] is None  # a summary written before the bench recorded its bound
    total = jobs.totals(rows)["m"]
    assert total["seconds"] == 20.0 and total["job_seconds"] == 25.0 and total["compute_bound_s"] == 40.0
    text = jobs.format_jobs(rows)
    assert "AVX2" in text and "0.83" in text and "m: 20 s of extraction" in text
    table = jobs.markdown_jobs(rows)
    assert table.count("\n| m |") == 2 and "| 0.83 |" in table


def test_jobs_per_flop_against_the_benchmark(tmp_path):
    """Per FLOP: the benchmark's time over its bound against the job's, so that a benchmark whose
    8 prompts are cheaper per token than the job's table does not make the job look slow."""
    done = replace(RECORD, write_seconds=2.0, job_seconds=15.0)  # 20 s over a 40 s bound: 0.5
    bench = {"per_task": {"labels_novel": {"tokens": 300, "seconds": {"iclscope": 2.5}, "bound_ratio": 0.6}}}
    (row,) = jobs.job_rows(_run(tmp_path, [done], bench=bench))
    assert row["bench_bound_ratio"] == 0.6 and row["flop_ratio_to_bench"] == pytest.approx(1.2)
    assert row["ratio_to_bench"] == pytest.approx(100 / 120)  # slower by tokens/s, faster per FLOP
    assert "| 0.60 | 1.20 |" in jobs.markdown_jobs([row])


def test_jobs_without_snakemake_files_use_the_jobs_own_time(tmp_path):
    results = _run(tmp_path, [replace(RECORD, write_seconds=2.0, job_seconds=15.0)])
    (row,) = jobs.job_rows(results)
    assert row["job_seconds"] == 15.0 and row["job_tokens_per_s"] == pytest.approx(1000 / 15)
    assert row["ratio_to_bench"] is None
    assert read_logs([]) == [] and jobs.job_rows(tmp_path / "nothing") == []
    assert "no extraction job" in jobs.format_jobs([])
