"""`iclscope bench jobs`: a finished run's extraction jobs, each against its compute bound and
the benchmark.

Reads what every extraction job logged (:mod:`iclscope.extraction.throughput`, under
``<results>/logs/<model>/extract/``), Snakemake's benchmark file of each job (its wall
time, the command's start-up included) and, where ``iclscope bench extract`` has been run
for the model (``<results>/bench/<model>/extract.json``, the rule ``bench_extract``), the
benchmark's own tokens/s on the same task. Per job: tokens/s, MFU (the job's counted FLOPs
over its seconds at the peak), the compute bound, the ratio to the benchmark's iclscope
loop by tokens/s and per FLOP (the two loops' times over their compute bounds: the
benchmark's sample of a task, one batch, need not have the whole table's mix of lengths,
branches and readouts, so tokens/s alone can differ where the engine does not); per
model: the sums.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from iclscope.extraction.throughput import read_logs


def _snakemake_seconds(results: Path, model: str, log: Path) -> float | None:
    """Wall seconds of the job whose log is ``log``, from its Snakemake benchmark file."""
    path = results / "benchmarks" / model / "extract" / (log.name.removesuffix(".log") + ".tsv")
    if not path.is_file():
        return None
    with path.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return float(rows[-1]["s"]) if rows else None


def _bench_tasks(results: Path, model: str) -> dict[str, tuple[float, float | None]]:
    """Per task, the benchmark's iclscope tokens/s and its time over its compute bound (``None``
    in a summary written before it was recorded) for ``model`` (empty where it was not run)."""
    path = results / "bench" / model / "extract.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    return {task: (t["tokens"] / t["seconds"]["iclscope"], t.get("bound_ratio"))
            for task, t in summary.get("per_task", {}).items()}


def job_rows(results: str | Path) -> list[dict[str, Any]]:
    """One row per extraction job that logged its throughput, by model then task."""
    results = Path(results)
    logs = sorted((results / "logs").glob("*/extract/*.log"))
    rows = []
    benches: dict[str, dict[str, tuple[float, float | None]]] = {}
    for record in read_logs(logs):
        log = Path(record["log"])
        model = log.parent.parent.name  # the config's model name (the results folder)
        benches.setdefault(model, _bench_tasks(results, model))
        # the job's wall time: Snakemake's (the whole command), else the job's own from its start
        wall = _snakemake_seconds(results, model, log) or record.get("job_seconds")
        seconds = record["seconds"] + (record.get("write_seconds") or 0.0)
        bench, bench_bound = benches[model].get(record["task"], (None, None))
        bound_ratio = seconds / record["compute_bound_s"]
        rows.append({
            "model": model, "task": record["task"], "shard": record["shard"], "cpu": record["cpu"],
            "threads": record["threads"], "device": record["device"], "dtype": record["dtype"],
            "prompt_tokens": record["prompt_tokens"], "branch_tokens": record["branch_tokens"],
            "seconds": seconds, "job_seconds": wall,
            "tokens_per_s": record["tokens_per_s"],
            "job_tokens_per_s": record["prompt_tokens"] / wall if wall else None,
            # from the record's counts (the same in every version of the record)
            "mfu": record["flops"] / record["gemm_peak"] / seconds, "gemm_peak_gflops": record["gemm_peak"] / 1e9,
            "compute_bound_s": record["compute_bound_s"], "bound_ratio": bound_ratio,
            "bench_tokens_per_s": bench, "ratio_to_bench": record["tokens_per_s"] / bench if bench else None,
            # per FLOP: the benchmark's time over its bound against the job's (>= 1: the job runs
            # its FLOPs as fast as the benchmark, whatever its prompts' lengths and readouts)
            "bench_bound_ratio": bench_bound,
            "flop_ratio_to_bench": bench_bound / bound_ratio if bench_bound else None,
            "job_ratio_to_bench": record["prompt_tokens"] / wall / bench if bench and wall else None,
        })
    return rows


def totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model: the jobs' extraction seconds, wall seconds and compute bound, summed."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        t = out.setdefault(r["model"], {"seconds": 0.0, "job_seconds": 0.0, "compute_bound_s": 0.0})
        t["seconds"] += r["seconds"]
        t["job_seconds"] += r["job_seconds"] or 0.0
        t["compute_bound_s"] += r["compute_bound_s"]
    return out


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


COLUMNS = (  # header, key, format
    ("model", "model", "{}"), ("task", "task", "{}"), ("shard", "shard", "{}"),
    ("prompt tok", "prompt_tokens", "{}"), ("branch tok", "branch_tokens", "{}"),
    ("extract s", "seconds", "{:.1f}"), ("job s", "job_seconds", "{:.1f}"), ("tok/s", "tokens_per_s", "{:.0f}"),
    ("MFU", "mfu", "{:.3f}"), ("bound s", "compute_bound_s", "{:.1f}"), ("/ bound", "bound_ratio", "{:.2f}"),
    ("bench tok/s", "bench_tokens_per_s", "{:.0f}"), ("/ bench", "ratio_to_bench", "{:.2f}"),
    ("job / bench", "job_ratio_to_bench", "{:.2f}"), ("bench / bound", "bench_bound_ratio", "{:.2f}"),
    ("per FLOP / bench", "flop_ratio_to_bench", "{:.2f}"),
)


def _machine(rows: Sequence[Mapping[str, Any]]) -> str:
    """Each kind of device the jobs ran on, with the range of the GEMM peaks they measured."""
    peaks: dict[tuple[str, str, int, str], list[float]] = {}
    for r in rows:
        peaks.setdefault((r["device"], r["cpu"], r["threads"], r["dtype"]), []).append(r["gemm_peak_gflops"])
    return "; ".join(f"{d} ({c}, {t} threads), {dt}, GEMM peak {min(p):.0f}-{max(p):.0f} GFLOP/s measured in the jobs"
                     for (d, c, t, dt), p in sorted(peaks.items()))


def format_jobs(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no extraction job logged its throughput (run the pipeline first)"
    table = [[h for h, _, _ in COLUMNS]] + [[_f(r[k], fmt) for _, k, fmt in COLUMNS] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(COLUMNS))]
    lines = [f"extraction jobs on {_machine(rows)}:"]
    lines += ["  " + "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths)))
              for t in table]
    for model, t in totals(rows).items():
        lines.append(f"  {model}: {t['seconds']:.0f} s of extraction, {t['job_seconds']:.0f} s of jobs, compute bound "
                     f"{t['compute_bound_s']:.0f} s ({t['seconds'] / max(t['compute_bound_s'], 1e-9):.2f}x)")
    return "\n".join(lines)


def markdown_jobs(rows: Sequence[Mapping[str, Any]]) -> str:
    """The docs' table (docs/performance.md) of :func:`job_rows`."""
    out = [f"Machine: {_machine(rows)}.", "",
           "| " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(_f(r[k], fmt) for _, k, fmt in COLUMNS) + " |" for r in rows]
    return "\n".join(out)
