"""`iclscope bench device`: does extraction on an accelerator give the tables CPU fp32 gives?

The same prompts (:func:`iclscope.bench.extract.spread_rows`, as `bench extract` picks them) are
extracted once on the CPU in float32 (the reference) and once per dtype on the device, with
the same batch budget, so the batches are the same and any difference comes from the
device's kernels and the dtype. The three tables are joined on their keys and compared:

- readouts: |delta logprob| in nats (max, p99, median; the first-token logprob's max too),
  and the fraction of reads (prompt, readout) with at least two candidates whose top
  candidate (argmax logprob) is the same on both sides;
- embeddings: the relative L2 error ||a - b|| / ||b|| of each pooled vector (b the reference);
- attention: |delta mass| (max, p99).

A key present on one side only (a row lost or added) fails the check outright. Each measure
is held to the tolerance of its dtype (:data:`TOLERANCES`); the check also times both runs
(one untimed single-prompt warm-up before each, so CUDA start-up is not timed) and reports
the speed-up.

Tolerances measured on SmolLM2-135M (2026-11-30, this 2-core AVX-512 CPU with avx512_bf16;
CPU bf16 and fp16 as stand-ins for CUDA's, which also accumulate in fp32), the 4 default
tasks, worst task, 8 prompts per task (the default) / 32 prompts per task:

========================  ===================  =================  ==================  ==========  ==========
measure (worst task)      fp32, batch budget   bf16 vs fp32       fp16 vs fp32        bf16 bound  fp16 bound
                          1 or 512 vs 4096
========================  ===================  =================  ==================  ==========  ==========
logprob max (nats)        1.9e-5 / 3.3e-5      0.343 / 0.330      0.038 / 0.060       0.7         0.12
logprob p99               1.5e-5 / 2.0e-5      0.312 / 0.256      0.034 / 0.056       0.7         0.12
logprob median            0 / 1.9e-6           0.083 / 0.071      0.0087 / 0.0105     0.2         0.03
first-token logprob max   1.1e-5 / 1.3e-5      0.262 / 0.258      0.028 / 0.047       0.6         0.1
top agreement             1 / 1                0.970 / 0.906      1 / 0.999           (reported)  (reported)
flipped reads' margin     0 / 0                <= 0.2 (32)        (near 0)            0.5         0.1
embedding rel. err. max   5.8e-7 / 1.2e-6      0.082 / 0.082      0.0059 / 0.0062     0.2         0.015
embedding rel. err. med.  0 / 0                0.0102 / 0.0098    0.0013 / 0.0013     0.03        0.003
attention |delta| max     9.8e-7 / 1.8e-6      0.044 / 0.042      0.0080 / 0.0048     0.09        0.02
attention |delta| p99     3.9e-7 / 5.5e-7      0.015 / 0.015      0.0019 / 0.0020     0.03        0.004
========================  ===================  =================  ==================  ==========  ==========

No row was lost or added in any run. The bf16 top-candidate flips (labels_sentiment 6 of 200
reads at 8 prompts; regression, whose reads choose among ~100 numbers, 3 of 32 at 32 prompts)
were near-ties: at 32 prompts the reference put the two candidates of every flipped read at
most 0.2 nats apart (``top_flipped_margin_max``). With 8 prompts, reading and regression have
8 reads each, so one near-tie moves their agreement by 1/8: the check judges the margin of
the changed reads, not the agreement.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from iclscope.architectures import input_device
from iclscope.bench.extract import spread_rows, sync
from iclscope.errors import ModelError
from iclscope.extraction.attention import register
from iclscope.extraction.engine import Extracted, extract
from iclscope.extraction.plan import plan_for
from iclscope.models import DTYPES, load_prepared, read_card, resolve_device
from iclscope.tables import read_table

log = logging.getLogger(__name__)

# the join keys of each table (contracts.py): one row per key
KEYS: dict[str, tuple[str, ...]] = {
    "readouts": ("prompt_id", "readout", "candidate"),
    "embeddings": ("prompt_id", "layer", "span", "pooling"),
    "attention": ("prompt_id", "layer", "head", "query", "span"),
}
# which table each measure comes from (failures name it)
MEASURES: dict[str, str] = {
    "logprob_max": "readouts", "logprob_p99": "readouts", "logprob_median": "readouts",
    "first_token_logprob_max": "readouts", "top_agreement": "readouts", "top_flipped_margin_max": "readouts",
    "embedding_rel_max": "embeddings", "embedding_rel_median": "embeddings",
    "attention_max": "attention", "attention_p99": "attention",
}
EXAMPLES = 3  # keys named per missing-row or flipped-read report

# Tolerances per dtype of the device run (the reference is always CPU float32); the measured
# values are in the module docstring.
# float32: the two runs differ only in kernel order (reduction order, tiling, fused kernels).
#   CPU fp32 against itself with another batch budget (other batch shapes, hence other kernel
#   blockings) stays 30-100x below these bounds; a GPU's kernels differ more than one CPU's
#   blockings, so they are not tightened further. The top candidate must never change.
# bfloat16 (8-bit mantissa) and float16 (11-bit mantissa, narrower range) weights and
#   activations, fp32 accumulation: each bound is about twice the worst task's value measured
#   with the CPU in that dtype against CPU fp32 on SmolLM2 (8 or 32 prompts per task, the larger),
#   rounded up to a readable number.
# The top candidate: a read may change its top candidate only where the reference saw a near-tie
#   (``top_flipped_margin_max``: the largest reference margin of a changed read). Agreement itself
#   is reported, not judged: with 8 reads per task one near-tie moves it by 1/8.
TOLERANCES: dict[str, dict[str, float]] = {
    "float32": {
        "logprob_max": 1e-3, "logprob_p99": 1e-3, "logprob_median": 1e-4, "first_token_logprob_max": 1e-3,
        "top_flipped_margin_max": 2e-3,
        "embedding_rel_max": 1e-4, "embedding_rel_median": 1e-5,
        "attention_max": 1e-4, "attention_p99": 1e-4,
    },
    "bfloat16": {
        "logprob_max": 0.7, "logprob_p99": 0.7, "logprob_median": 0.2, "first_token_logprob_max": 0.6,
        "top_flipped_margin_max": 0.5,
        "embedding_rel_max": 0.2, "embedding_rel_median": 0.03,
        "attention_max": 0.09, "attention_p99": 0.03,
    },
    "float16": {
        "logprob_max": 0.12, "logprob_p99": 0.12, "logprob_median": 0.03, "first_token_logprob_max": 0.1,
        "top_flipped_margin_max": 0.1,
        "embedding_rel_max": 0.015, "embedding_rel_median": 0.003,
        "attention_max": 0.02, "attention_p99": 0.004,
    },
}


# --------------------------------------------------------------------------- comparison

def _stats(values: np.ndarray, prefix: str, quantiles: Mapping[str, float]) -> dict[str, float]:
    """``prefix_max`` and the named quantiles of ``values`` (0 for none)."""
    if values.size == 0:
        return {f"{prefix}_{name}": 0.0 for name in ("max", *quantiles)}
    out = {f"{prefix}_max": float(values.max())}
    out.update({f"{prefix}_{name}": float(np.quantile(values, q)) for name, q in quantiles.items()})
    return out


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| with NaN on both sides counting as equal and on one side as infinitely apart."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    both, one = np.isnan(a) & np.isnan(b), np.isnan(a) ^ np.isnan(b)
    return np.where(both, 0.0, np.where(one, np.inf, np.abs(a - b)))


def _join(reference: pa.Table, other: pa.Table, keys: Sequence[str], name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Row indices of the keys both tables hold (``i_ref``, ``i_other`` and the key columns),
    and a report of the keys only one side holds or that repeat."""
    keys = list(keys)
    sides = [table.select(keys).append_column(f"i_{tag}", pa.array(np.arange(table.num_rows), pa.int64()))
             for table, tag in ((reference, "ref"), (other, "other"))]
    merged = sides[0].join(sides[1], keys=keys, join_type="full outer", coalesce_keys=True)
    i_ref, i_other = merged.column("i_ref"), merged.column("i_other")
    report: dict[str, Any] = {"rows_reference": reference.num_rows, "rows_other": other.num_rows}
    for lost, label, index in ((i_other.is_null(), "only_reference", "i_ref"),
                               (i_ref.is_null(), "only_other", "i_other")):
        rows = merged.filter(lost).sort_by(index)
        report[f"n_{label}"] = rows.num_rows
        report[label] = [[r[k] for k in keys] for r in rows.select(keys).slice(0, EXAMPLES).to_pylist()]
    report["n_duplicate_keys"] = sum(t.num_rows - t.group_by(keys).aggregate([]).num_rows for t in sides)
    both = merged.filter(pc.and_(pc.is_valid(i_ref), pc.is_valid(i_other))).sort_by("i_ref").to_pandas()
    report["rows_compared"] = len(both)
    log.debug("%s: %d rows compared", name, len(both))
    return both, report


def _compare_readouts(reference: pa.Table, other: pa.Table) -> dict[str, Any]:
    both, out = _join(reference, other, KEYS["readouts"], "readouts")
    i, j = both["i_ref"].to_numpy(), both["i_other"].to_numpy()
    ref_lp = reference.column("logprob").to_numpy(zero_copy_only=False)[i]
    oth_lp = other.column("logprob").to_numpy(zero_copy_only=False)[j]
    out.update(_stats(_abs_diff(oth_lp, ref_lp), "logprob", {"p99": 0.99, "median": 0.5}))
    first = _abs_diff(other.column("first_token_logprob").to_numpy(zero_copy_only=False)[j],
                      reference.column("first_token_logprob").to_numpy(zero_copy_only=False)[i])
    out["first_token_logprob_max"] = float(first.max()) if first.size else 0.0

    # the top candidate of each read on both sides (only reads offering a choice)
    frame = both[["prompt_id", "readout", "candidate"]].assign(ref=ref_lp, other=oth_lp).reset_index(drop=True)
    groups = frame.groupby(["prompt_id", "readout"], sort=False)
    n = groups["candidate"].transform("size").to_numpy()
    frame = frame[n >= 2]
    if frame.empty:
        out.update(top_agreement=None, reads=0, n_top_flipped=0, top_flipped=[], top_flipped_margin_max=0.0)
        return out
    groups = frame.groupby(["prompt_id", "readout"], sort=False)
    top_ref, top_oth = groups["ref"].idxmax(), groups["other"].idxmax()  # row labels, one per read, same order
    same = frame.loc[top_ref, "candidate"].to_numpy() == frame.loc[top_oth, "candidate"].to_numpy()
    # how far apart the reference put the two candidates of a flipped read: near 0 is a near-tie
    margin = frame.loc[top_ref, "ref"].to_numpy() - frame.loc[top_oth, "ref"].to_numpy()
    flipped = top_ref.index[~same]
    out.update(top_agreement=float(same.mean()), reads=int(same.size), n_top_flipped=int((~same).sum()),
               top_flipped=[list(k) for k in flipped[:EXAMPLES]],
               top_flipped_margin_max=float(margin[~same].max()) if (~same).any() else 0.0)
    return out


def _vectors(table: pa.Table) -> np.ndarray:
    """The ``vector`` column as an (n, hidden) float32 array."""
    column = table.column("vector").combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), np.float32)
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)


def _compare_embeddings(reference: pa.Table, other: pa.Table) -> dict[str, Any]:
    both, out = _join(reference, other, KEYS["embeddings"], "embeddings")
    b = _vectors(reference)[both["i_ref"].to_numpy()].astype(np.float64)
    a = _vectors(other)[both["i_other"].to_numpy()].astype(np.float64)
    diff = np.linalg.norm(a - b, axis=1) if len(both) else np.zeros(0)
    norm = np.linalg.norm(b, axis=1) if len(both) else np.zeros(0)
    # a zero reference vector: measured against the other vector (1.0 when it is not zero too)
    denom = np.where(norm > 0, norm, np.linalg.norm(a, axis=1) if len(both) else norm)
    rel = np.divide(diff, denom, out=np.zeros_like(diff), where=denom > 0)
    rel = np.where(np.isnan(diff), np.inf, rel)  # a NaN vector on one side
    out.update(_stats(rel, "embedding_rel", {"median": 0.5}))
    return out


def _compare_attention(reference: pa.Table, other: pa.Table) -> dict[str, Any]:
    both, out = _join(reference, other, KEYS["attention"], "attention")
    delta = _abs_diff(other.column("mass").to_numpy(zero_copy_only=False)[both["i_other"].to_numpy()],
                      reference.column("mass").to_numpy(zero_copy_only=False)[both["i_ref"].to_numpy()])
    out.update(_stats(delta, "attention", {"p99": 0.99}))
    return out


def compare_tables(reference: Extracted, other: Extracted) -> dict[str, dict[str, Any]]:
    """Per table (``readouts``, ``embeddings``, ``attention``): the differences of ``other``
    from ``reference`` over the keys both hold (see the module docstring for the measures),
    and which keys only one side holds (``n_only_reference``, ``n_only_other`` and a few of
    each) or repeat (``n_duplicate_keys``)."""
    return {
        "readouts": _compare_readouts(reference.readouts, other.readouts),
        "embeddings": _compare_embeddings(reference.embeddings, other.embeddings),
        "attention": _compare_attention(reference.attention, other.attention),
    }


def judge(comparison: Mapping[str, Mapping[str, Any]], tolerance: Mapping[str, float]) -> dict[str, Any]:
    """Hold a :func:`compare_tables` result to ``tolerance``: per measure its value, limit
    and verdict (``checks``), and every failure as a sentence naming table and measure."""
    checks: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for table, c in comparison.items():
        for label in ("only_reference", "only_other"):
            if c[f"n_{label}"]:
                side = "reference" if label == "only_reference" else "device run"
                failures.append(f"{table}: {c[f'n_{label}']} row(s) only in the {side}, e.g. {c[label]}")
        if c["n_duplicate_keys"]:
            failures.append(f"{table}: {c['n_duplicate_keys']} repeated key(s)")
    for measure, limit in tolerance.items():
        table = MEASURES[measure]
        value = comparison[table][measure]
        ok = value is None or value <= limit  # None: nothing to compare
        checks[measure] = {"value": value, "limit": limit, "ok": ok}
        if not ok:
            failures.append(f"{table}: {measure} = {value:.3g} exceeds {limit:g}")
    return {"checks": checks, "failures": failures, "ok": not failures}


# --------------------------------------------------------------------------- the check

def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(model_dir: str, dtype: str, device: str, tasks: Mapping[str, Mapping[str, Any]],
         poolings: Sequence[str], batch_tokens: int) -> dict[str, dict[str, Any]]:
    """Load the model in ``dtype`` on ``device``, warm it up on one prompt (untimed), then
    extract each task, timed: per task its tables, seconds and tokens."""
    model, tokenizer, _ = load_prepared(model_dir, dtype=dtype, device=device, attn_implementation=register())
    dev = input_device(model)
    max_length = getattr(model.config, "max_position_embeddings", None)
    try:
        first = next(iter(tasks.values()))
        extract(model, tokenizer, first["rows"][:1], first["plans"][:1], poolings, batch_tokens, max_length)
        sync(dev)
        out = {}
        for name, t in tasks.items():
            start = time.perf_counter()
            tables = extract(model, tokenizer, t["rows"], t["plans"], poolings, batch_tokens, max_length)
            sync(dev)
            seconds = time.perf_counter() - start
            tokens = int(tables.stats["real_tokens"])
            out[name] = {"tables": tables, "seconds": seconds, "tokens": tokens}
            log.info("%s %s on %s: %d tokens in %.2f s (%.0f tokens/s)", name, dtype, dev, tokens, seconds,
                     tokens / seconds)
        return out
    finally:
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def _timing(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    seconds = sum(r["seconds"] for r in runs.values())
    tokens = sum(r["tokens"] for r in runs.values())
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def check_device(model_dir: str, task_paths: Sequence[str], out: str, device: str = "cuda",
                 dtypes: Sequence[str] = ("float32", "bfloat16"), max_prompts: int = 8,
                 params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Extract the spread prompts of each task on the CPU in float32 and on ``device`` in each
    of ``dtypes``; compare, judge against :data:`TOLERANCES`, time; write the JSON summary
    to ``out`` and return it (``ok``: every dtype within tolerance on every task).

    ``params``: ``batch_tokens`` (default 4096) and ``pooling`` (default max, mean, last),
    the same for both sides. Raises :class:`ModelError` when ``device`` is not available or
    a dtype is unknown, before any model is loaded.
    """
    params = dict(params or {})
    unknown = [d for d in dtypes if d not in TOLERANCES or d not in DTYPES]
    if unknown or not dtypes:
        raise ModelError(f"dtypes {list(dtypes)}: expected some of {sorted(TOLERANCES)}")
    dev = resolve_device(device)  # refuses cuda without CUDA, naming it
    poolings = list(params.get("pooling", ["max", "mean", "last"]))
    batch_tokens = int(params.get("batch_tokens", 4096))

    tasks: dict[str, dict[str, Any]] = {}
    for path in task_paths:
        rows = spread_rows(read_table(path).to_pylist(), max_prompts)
        tasks[Path(path).stem] = {"rows": rows, "plans": [plan_for(r["task"], r) for r in rows]}
    if not any(t["rows"] for t in tasks.values()):
        raise ModelError(f"no prompts in {list(task_paths)}")
    tasks = {name: t for name, t in tasks.items() if t["rows"]}
    log.info("device check: %d tasks, %d prompts; reference cpu float32, then %s on %s",
             len(tasks), sum(len(t["rows"]) for t in tasks.values()), ", ".join(dtypes), dev)

    reference = _run(model_dir, "float32", "cpu", tasks, poolings, batch_tokens)
    ref_time = _timing(reference)
    per_dtype: dict[str, Any] = {}
    for dtype in dtypes:
        runs = _run(model_dir, dtype, str(dev), tasks, poolings, batch_tokens)
        per_task = {}
        for name in tasks:
            comparison = compare_tables(reference[name]["tables"], runs[name]["tables"])
            verdict = judge(comparison, TOLERANCES[dtype])
            ref_t, dev_t = reference[name], runs[name]
            per_task[name] = {
                **verdict, "comparison": comparison,
                "reference": {"seconds": ref_t["seconds"], "tokens": ref_t["tokens"],
                              "tokens_per_s": ref_t["tokens"] / ref_t["seconds"]},
                "device": {"seconds": dev_t["seconds"], "tokens": dev_t["tokens"],
                           "tokens_per_s": dev_t["tokens"] / dev_t["seconds"]},
                "speedup": ref_t["seconds"] / dev_t["seconds"],
            }
            for failure in verdict["failures"]:
                log.warning("%s %s: %s", dtype, name, failure)
        dev_time = _timing(runs)
        per_dtype[dtype] = {
            "ok": all(t["ok"] for t in per_task.values()), "tolerance": TOLERANCES[dtype],
            "device": dev_time, "speedup": ref_time["seconds"] / dev_time["seconds"], "tasks": per_task,
        }

    summary = {
        "model": read_card(model_dir).get("name"), "model_dir": str(model_dir),
        "device": str(dev), "device_name": _device_name(dev),
        "reference": {"device": "cpu", "dtype": "float32", "device_name": _device_name(torch.device("cpu")),
                      **ref_time},
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),  # "high" would let CUDA use TF32
        "tasks": list(tasks), "prompts": sum(len(t["rows"]) for t in tasks.values()), "max_prompts": max_prompts,
        "batch_tokens": batch_tokens, "poolings": poolings,
        "dtypes": per_dtype, "ok": all(d["ok"] for d in per_dtype.values()),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _num(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec`` (width.precision type), or a dash as wide."""
    return format(value, spec) if value is not None else "-".rjust(int(spec.partition(".")[0]))


def format_summary(s: Mapping[str, Any]) -> str:
    """Per dtype and task: max |delta logprob|, top agreement, max embedding relative error,
    max attention delta, speed-up and the verdict; then every failure."""
    lines = [f"device check: {s['model']} on {s['device']} ({s['device_name']}) against cpu float32, "
             f"{s['prompts']} prompts of {len(s['tasks'])} tasks",
             f"  {'dtype':<9} {'task':<20} {'max|dlogp|':>10} {'top agree':>9} {'emb rel':>9} {'attn d':>9} "
             f"{'speed-up':>8}  verdict"]
    failures = []
    for dtype, d in s["dtypes"].items():
        for task in s["tasks"]:
            t = d["tasks"][task]
            c = t["comparison"]
            worst = {name: c[table][name] if c[table]["rows_compared"] else None  # "-": the task has no such rows
                     for name, table in (("logprob_max", "readouts"), ("embedding_rel_max", "embeddings"),
                                         ("attention_max", "attention"))}
            lines.append(f"  {dtype:<9} {task:<20} {_num(worst['logprob_max'], '10.2e')} "
                         f"{_num(c['readouts']['top_agreement'], '9.3f')} "
                         f"{_num(worst['embedding_rel_max'], '9.2e')} "
                         f"{_num(worst['attention_max'], '9.2e')} {t['speedup']:7.2f}x  "
                         f"{'PASS' if t['ok'] else 'FAIL'}")
            failures += [f"  {dtype} {task}: {f}" for f in t["failures"]]
        lines.append(f"  {dtype:<9} {'all':<20} {'':>10} {'':>9} {'':>9} {'':>9} {d['speedup']:7.2f}x  "
                     f"{'PASS' if d['ok'] else 'FAIL'}")
    lines += failures
    lines.append("PASS: within tolerance" if s["ok"] else f"FAIL: {len(failures)} failure(s) beyond tolerance")
    return "\n".join(lines)
