"""A plan as a table to read, as JSON, and against a finished run.

``--against results/`` reads what each model job really took from Snakemake's benchmark
files (wall seconds, peak resident memory) and the sizes of the tables it left, and
prints the plan's ratio to each: the check that the plan can be trusted on the machine
it describes.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from iclscope.planning.estimate import Assumptions, JobPlan
from iclscope.planning.devices import Device

GIB = 1024**3
MB = 1e6
# how close a plan must come to a finished run on the machine it describes
TOLERANCE = {"seconds": 0.30, "memory": 0.30, "bytes": 0.10}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _job_name(p: JobPlan) -> str:
    if p.job == "generate":
        return "generate"
    return p.task + ("" if p.shard == "1/1" else f" [{p.shard}]")


def format_plan(plans: Sequence[JobPlan], device: Device, assume: Assumptions) -> str:
    """One table per model, then its totals: what a run costs on ``device``."""
    lines = [f"device: {device.name} ({device.note}); dense peak "
             + ", ".join(f"{k} {v / 1e12:.1f} TFLOP/s" for k, v in device.peak_flops.items())
             + f"; assumed MFU {assume.mfu:.2f} (generation steps {assume.decode_mfu:.2f}), "
             f"start-up {assume.startup_seconds:.0f} s, weights loaded at {assume.load_bandwidth / 1e9:.1f} GB/s"]
    by_model: dict[str, list[JobPlan]] = defaultdict(list)
    for p in plans:
        by_model[p.model].append(p)
    header = ("job", "prompts", "prompt tok", "branch tok", "TFLOP", "device GiB", "GPUs", "host GiB",
              "output MB", "time")
    for model, jobs in by_model.items():
        lines += ["", f"{model} ({jobs[0].dtype}):"]
        rows = [header] + [(
            _job_name(p), f"{p.prompts}", f"{p.prompt_tokens}", f"{p.branch_tokens}", f"{p.flops / 1e12:.1f}",
            f"{p.device_bytes / GIB:.2f}", f"{p.gpus}", f"{p.host_bytes / GIB:.2f}",
            f"{p.total_output_bytes / MB:.1f}", _duration(p.seconds)) for p in jobs]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        gpu_hours = sum(p.seconds * p.gpus for p in jobs) / 3600
        peak = max(jobs, key=lambda p: p.device_bytes)
        lines.append(f"  total: {sum(p.flops for p in jobs) / 1e15:.2f} PFLOP, {_duration(sum(p.seconds for p in jobs))} "
                     f"of jobs ({gpu_hours:.2f} {'GPU' if device.kind == 'gpu' else 'CPU'}-hours), peak device "
                     f"memory {peak.device_bytes / GIB:.1f} GiB per job on {peak.gpus} device(s) "
                     f"({peak.device_bytes / peak.gpus / GIB:.1f} GiB each), "
                     f"{sum(p.total_output_bytes for p in jobs) / 1e9:.2f} GB of extracted tables")
        if max(p.gpus for p in jobs) > 1:
            lines.append(f"  the model does not fit one {device.name}: set `device_map: auto` for it "
                         "(its jobs then ask for that many GPUs)")
        for note in sorted({n for p in jobs for n in p.notes}):
            lines.append(f"  note: {note}")
    return "\n".join(lines)


def _benchmark(results: Path, p: JobPlan) -> dict[str, float] | None:
    """Wall seconds and peak resident memory (bytes) of a finished job, from its benchmark file."""
    k, n = p.shard.split("/")
    path = (results / "benchmarks" / p.model / "generate.tsv" if p.job == "generate"
            else results / "benchmarks" / p.model / "extract" / f"{p.task}.{k}-of-{n}.tsv")
    if not path.is_file():
        return None
    with path.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        return None
    return {"seconds": float(rows[-1]["s"]), "memory": float(rows[-1]["max_rss"]) * 1024**2}


def _written(results: Path, p: JobPlan) -> float | None:
    """Bytes of the tables a job's task left (gathered over shards: compared with the
    sum of the shards' plans)."""
    folder = results / p.model / "extract" / p.task
    paths = [folder / f"{t}.parquet" for t in p.output_bytes]
    if not paths or not all(path.is_file() for path in paths):
        return None
    return float(sum(path.stat().st_size for path in paths))


def against(plans: Sequence[JobPlan], results: str | Path) -> list[dict[str, Any]]:
    """Each job's estimate next to what the finished run in ``results`` measured, with the
    ratio estimate / measured and whether it lies within :data:`TOLERANCE`."""
    results = Path(results)
    planned_bytes: dict[tuple[str, str], float] = defaultdict(float)
    for p in plans:
        planned_bytes[(p.model, p.task)] += p.total_output_bytes
    rows = []
    for p in plans:
        measured = _benchmark(results, p)
        written = _written(results, p) if p.shard.startswith("1/") else None
        row: dict[str, Any] = {"model": p.model, "job": _job_name(p)}
        for key, estimate, value in (
            ("seconds", p.seconds, measured and measured["seconds"]),
            ("memory", p.host_bytes, measured and measured["memory"]),
            ("bytes", planned_bytes[(p.model, p.task)] if written is not None else None, written),
        ):
            ratio = estimate / value if estimate is not None and value else None
            within = None if ratio is None else abs(ratio - 1) <= TOLERANCE[key]
            floor = {"seconds": p.seconds_floor, "bytes": p.output_bytes_floor}.get(key)
            if ratio is not None and floor is not None:
                # an upper bound holds when the run took no longer, nor less than its exact part
                within = floor / (1 + TOLERANCE[key]) <= value <= estimate * (1 + TOLERANCE[key])
            row[key] = {"estimate": estimate, "measured": value, "ratio": ratio, "within": within,
                        "bound": floor is not None}
        rows.append(row)
    return rows


def format_against(rows: Sequence[Mapping[str, Any]], results: str | Path) -> str:
    tol = ", ".join(f"{k} {v:.0%}" for k, v in TOLERANCE.items())
    lines = [f"plan / measured in {results} (tolerance: {tol}):"]
    header = ("model", "job", "time est/meas", "ratio", "memory est/meas MiB", "ratio", "bytes est/meas MB", "ratio")
    table = [header]

    def pair(cell: Mapping[str, Any], scale: float, fmt: str) -> tuple[str, str]:
        if cell["ratio"] is None:
            return "-", "-"
        mark = ("" if cell["within"] else " !") + (" (bound)" if cell.get("bound") else "")
        return (f"{fmt.format(cell['estimate'] / scale)}/{fmt.format(cell['measured'] / scale)}",
                f"{cell['ratio']:.2f}{mark}")

    for r in rows:
        table.append((r["model"], r["job"], *pair(r["seconds"], 1, "{:.0f}"), *pair(r["memory"], 1024**2, "{:.0f}"),
                      *pair(r["bytes"], MB, "{:.2f}")))
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    lines += ["  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths)))
              for t in table]
    misses = sum(1 for r in rows for k in TOLERANCE if r[k]["within"] is False)
    lines.append(f"{misses} estimate(s) outside tolerance (marked !)" if misses else "every estimate within tolerance")
    return "\n".join(lines)


def markdown_against(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`against`'s rows as a Markdown table (what docs/performance.md quotes)."""
    out = ["| job | time estimate / measured | memory estimate / measured | bytes estimate / measured |",
           "|---|---|---|---|"]

    def cell(c: Mapping[str, Any], scale: float, unit: str, fmt: str) -> str:
        if c["ratio"] is None:
            return "-"
        mark = ("" if c["within"] else " (outside)") + (" (an upper bound)" if c.get("bound") else "")
        return (f"{fmt.format(c['estimate'] / scale)} / {fmt.format(c['measured'] / scale)} {unit}: "
                f"{c['ratio']:.2f}{mark}")

    for r in rows:
        out.append(f"| {r['model']} {r['job']} | {cell(r['seconds'], 1, 's', '{:.0f}')} | "
                   f"{cell(r['memory'], 1024**2, 'MiB', '{:.0f}')} | {cell(r['bytes'], 1e6, 'MB', '{:.2f}')} |")
    return "\n".join(out)
