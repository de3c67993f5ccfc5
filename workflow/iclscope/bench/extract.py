"""`iclscope bench extract`: iclscope's extraction against the bare forward and the naive way.

In one process, on the same prompts and the same length-sorted batches, it interleaves
repeated runs of

(a) ``bare``: the model's plain forward ``model(input_ids, attention_mask)`` (with the LM
    head over every position, nothing kept);
(a') ``masked``: the bare forward with the same causal-and-padding mask given as an explicit
    4-D boolean tensor, the form the branch mask takes: ``bare / masked`` is what losing
    SDPA's causal fast path costs on this device;
(a'') ``branched``: the same plain forward over the prompts *with their candidate branch
    tokens* and the branch mask: the floor for exact multi-token scoring, whatever the
    capture costs (``ratio_vs_branched`` near 1 says the gap to ``bare`` is the candidate
    tokens themselves, not the branch mask or the capture);
(b) ``iclscope``: the extraction engine (pooled spans, attention mass, readouts with
    candidate branches) including writing its three Parquet tables;
(b') ``capture``: the same with the plans' readouts left out (pooled spans and attention
    mass only, no candidate branches): what the capture alone costs against ``bare``;
(c) ``naive``: eager attention with ``output_hidden_states=True, output_attentions=True``,
    writing every hidden state and every attention map to Parquet.

Throughput counts the prompts' real tokens (the same for all three), so b/a >= 1 means
the capture costs less than the logits it skips. The overall ratio weighs each task by
its sampled prompts (by default one full batch of a job's plan over the task, at least 8
prompts: :func:`batch_rows`); ``ratio_vs_bare_run_weighted`` weighs each task's times by the
tokens of its whole table's distinct prompts instead, i.e. by the share it has of the
run's extraction. MFU = 2 x non-embedding parameters (the blocks' matrices, which every
token is multiplied by; an embedding table is looked up) x tokens/s over
the fp32 (or bf16) GEMM peak measured in the same process.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from iclscope.architectures import input_device
from iclscope.extraction.attention import register
from iclscope.extraction.batching import collate, plan_batches
from iclscope.extraction.engine import batch_inputs, extract, prepare_prompts
from iclscope.extraction.plan import plan_for
from iclscope.extraction.run import EXTRACT_TABLES
from iclscope.models import load_prepared
from iclscope.planning.shape import ModelShape
from iclscope.planning.peak import gemm_peak, sync  # re-exported: iclscope.bench.gemm_peak, .sync
from iclscope.tables import read_table, write_table

log = logging.getLogger(__name__)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def run_bare(model, batches, device) -> None:
    with torch.inference_mode():
        for b in batches:
            model(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device))
    sync(device)


def explicit_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A (B, T) padding mask as the (B, 1, T, T) boolean causal mask SDPA sees (pad queries
    attend to themselves, as in the branch mask)."""
    n, t = attention_mask.shape
    keys = attention_mask.bool()[:, None, None, :]
    mask = torch.tril(torch.ones((t, t), dtype=torch.bool))[None, None] & keys
    return mask | torch.eye(t, dtype=torch.bool)[None, None]


def run_masked(model, batches, device) -> None:
    """The plain forward over ``(input_ids, 4-D mask)`` pairs (masks built before timing)."""
    with torch.inference_mode():
        for input_ids, mask in batches:
            model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
    sync(device)


def run_branched(model, batches, device) -> None:
    """The plain forward over branched sequences (``batch_inputs`` dicts)."""
    with torch.inference_mode():
        for b in batches:
            model(**{k: v.to(device) for k, v in b.items() if k != "real"})
    sync(device)


def run_iclscope(model, tokenizer, rows, plans, poolings, batch_tokens, out_dir: Path) -> float:
    """The engine's extraction, its three tables written; returns its FLOPs by the plan's count."""
    result = extract(model, tokenizer, rows, plans, poolings, batch_tokens)
    for name in EXTRACT_TABLES:
        write_table(getattr(result, name), out_dir / f"{name}.parquet", {})
    return float(result.work["flops"])


def run_naive(model, batches, device, out_dir: Path) -> None:
    """Every hidden state (per token) and every attention map (per query row) to Parquet."""
    with torch.inference_mode():
        for k, b in enumerate(batches):
            out = model(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device),
                        output_hidden_states=True, output_attentions=True)
            mask = b.attention_mask.bool()
            hidden = torch.stack(out.hidden_states)[:, mask].float().cpu().numpy()  # (L+1, N, d)
            n_layers, n_tokens, d = hidden.shape
            pq.write_table(pa.table({
                "layer": np.repeat(np.arange(n_layers, dtype=np.int16), n_tokens),
                "token": np.tile(np.arange(n_tokens, dtype=np.int32), n_layers),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(hidden.reshape(-1)), d),
            }), out_dir / f"hidden_{k}.parquet", compression="zstd")
            for layer, att in enumerate(out.attentions):  # (B, H, T, T)
                rows = att.permute(0, 2, 1, 3)[mask].float().cpu().numpy()  # (N, H, T)
                n, h, t = rows.shape
                pq.write_table(pa.table({
                    "token": np.repeat(np.arange(n, dtype=np.int32), h),
                    "head": np.tile(np.arange(h, dtype=np.int16), n),
                    "weights": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), t),
                }), out_dir / f"attention_{k}_{layer}.parquet", compression="zstd")
            del out
    sync(device)


def distinct_texts(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The first row of each prompt text, in table order."""
    first_of_text: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        first_of_text.setdefault(row["text"], row)
    return list(first_of_text.values())  # dicts keep insertion (table) order


def _spread(distinct: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """``n`` of ``distinct`` evenly spread over it (deterministic, in order)."""
    if not distinct:
        return []
    pick = np.linspace(0, len(distinct) - 1, num=min(n, len(distinct))).round().astype(int)
    return [distinct[i] for i in sorted(set(pick.tolist()))]


def spread_rows(rows: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """``n`` rows of distinct prompt text spread evenly over a task table (deterministic, table
    order). Distinct, because the engine computes a repeated prompt once: a repeat would count
    its tokens for every loop but cost iclscope nothing."""
    return _spread(distinct_texts(rows), n)


def batch_rows(distinct: Sequence[Mapping[str, Any]], n_tokens: Sequence[int], batch_tokens: int,
               at_least: int = 8) -> list[Mapping[str, Any]]:
    """The prompts of one full batch of a job's plan over a task table's ``distinct`` texts
    (:func:`distinct_texts`, ``n_tokens`` tokens each, length-sorted into batches of
    ``batch_tokens`` as the engine plans a job): the batch with the most tokens, the one
    nearest the plan's middle among equals, with the batches next to it until there are
    ``at_least`` prompts; in table order.

    The jobs run full, length-sorted batches. A spread of 8 prompts is a fraction of one (8 of
    reading's prompts are 600 tokens against the job's batches of 4096) of mixed lengths: it
    multiplies smaller matrices and spreads an extraction call's fixed costs over fewer
    tokens, so it does not measure the speed of a job's batches."""
    plan = plan_batches(list(n_tokens), batch_tokens)
    if not plan:
        return []
    middle = len(plan) // 2
    fullest = max(range(len(plan)), key=lambda b: (sum(n_tokens[i] for i in plan[b]), -abs(b - middle), -b))
    picked: list[int] = []
    for b in sorted(range(len(plan)), key=lambda b: (abs(b - fullest), b)):
        if len(picked) >= at_least:
            break
        picked += plan[b]
    return [distinct[i] for i in sorted(picked)]


def bench_extract(model_dir: str, task_paths: Sequence[str], out: str, repeats: int = 3,
                  max_prompts: int | None = None, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and write its JSON summary to ``out``.

    Each task's prompts: ``max_prompts`` spread over its table where given, else one full
    batch of a job's plan (at least 8 prompts; :func:`batch_rows`)."""
    params = dict(params or {})
    poolings = params.get("pooling", ["max", "mean", "last"])
    batch_tokens = int(params.get("batch_tokens", 4096))
    model, tokenizer, card = load_prepared(model_dir, dtype=params.get("dtype", "auto"),
                                           device=params.get("device", "auto"), attn_implementation=register())
    naive_model, _, _ = load_prepared(model_dir, dtype=params.get("dtype", "auto"),
                                      device=params.get("device", "auto"), attn_implementation="eager")
    device = input_device(model)
    dtype = next(model.parameters()).dtype

    # per task: its prompts (an even spread over the table, deterministic) and its own batches,
    # so each task's ratio is measured too
    per_task: dict[str, dict[str, Any]] = {}
    for path in task_paths:
        table = read_table(path).to_pylist()
        whole = distinct_texts(table)  # what the run extracts
        whole_tokens = [len(x) for x in tokenizer([r["text"] for r in whole])["input_ids"]]
        rows_t = (spread_rows(table, max_prompts) if max_prompts
                  else batch_rows(whole, whole_tokens, batch_tokens))
        ids = [tokenizer(r["text"])["input_ids"] for r in rows_t]
        lengths = [len(x) for x in ids]
        plans = [plan_for(r["task"], r) for r in rows_t]
        sequences = [p.sequence for p in prepare_prompts(rows_t, plans, tokenizer, None)]
        branched = [len(q.ids) for q in sequences]
        pad = tokenizer.pad_token_id or 0
        batches_t = [collate([ids[i] for i in index], index, pad, side="right")
                     for index in plan_batches(lengths, batch_tokens)]
        per_task[Path(path).stem] = {
            "rows": rows_t, "plans": plans, "tokens": sum(lengths), "branch_tokens": sum(branched) - sum(lengths),
            "table_tokens": sum(whole_tokens),
            "batches": batches_t,
            "masked": [(b.input_ids, explicit_mask(b.attention_mask)) for b in batches_t],
            "branched": [batch_inputs([sequences[i] for i in index], pad)
                         for index in plan_batches(branched, batch_tokens)],
        }
    rows = [r for t in per_task.values() for r in t["rows"]]
    batches = [b for t in per_task.values() for b in t["batches"]]
    real = sum(t["tokens"] for t in per_task.values())
    padded = sum(b.padded_tokens for b in batches)
    log.info("%d prompts, %d tokens in %d batches (padding efficiency %.3f)", len(rows), real, len(batches),
             real / padded)

    work = Path(tempfile.mkdtemp(prefix="iclscope-bench-"))
    names = ("bare", "masked", "branched", "iclscope", "capture", "naive")
    times: dict[str, list[float]] = {name: [] for name in names}
    task_times: dict[str, dict[str, list[float]]] = {t: {name: [] for name in names} for t in per_task}
    sizes: dict[str, int] = {}
    branch_tokens = sum(t["branch_tokens"] for t in per_task.values())
    flops: dict[str, float] = {}  # the iclscope loop's FLOPs per task (the same every repeat)
    rss_extraction = 0.0
    try:
        run_bare(model, batches[:1], device)  # warm-up
        for r in range(repeats):
            for name in names:
                target = work / f"{name}_{r}"
                target.mkdir()
                total = 0.0
                for task, t in per_task.items():
                    (target / task).mkdir()
                    start = time.perf_counter()
                    if name == "bare":
                        run_bare(model, t["batches"], device)
                    elif name == "masked":
                        run_masked(model, t["masked"], device)
                    elif name == "branched":
                        run_branched(model, t["branched"], device)
                    elif name == "iclscope":
                        flops[task] = run_iclscope(model, tokenizer, t["rows"], t["plans"], poolings, batch_tokens, target / task)
                    elif name == "capture":
                        run_iclscope(model, tokenizer, t["rows"], [replace(p, reads=()) for p in t["plans"]],
                                     poolings, batch_tokens, target / task)
                    else:
                        run_naive(naive_model, t["batches"], device, target / task)
                    elapsed = time.perf_counter() - start
                    task_times[task][name].append(elapsed)
                    total += elapsed
                times[name].append(total)
                sizes[name] = _dir_bytes(target)
                shutil.rmtree(target)
                if r == 0 and name == "iclscope":
                    rss_extraction = _rss_mb()  # before the naive run's maps inflate the peak
                log.info("repeat %d %s: %.2f s", r + 1, name, times[name][-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(v) for k, v in times.items()}
    weight = {task: t["table_tokens"] / t["tokens"] for task, t in per_task.items()}
    run_weighted = {name: sum(weight[task] * min(tt[name]) for task, tt in task_times.items())
                    for name in ("bare", "iclscope")}
    tps = {k: real / v for k, v in best.items()}
    peak = gemm_peak(dtype, device)
    n_params = ModelShape.from_config(model.config.to_dict()).body_params
    summary = {
        "model": card.get("name"), "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "tasks": [Path(p).stem for p in task_paths], "prompts": len(rows), "tokens": real,
        "candidate_branch_tokens": branch_tokens, "batches": len(batches),
        "repeats": repeats, "seconds": best, "tokens_per_s": tps,
        "ratio_vs_bare": tps["iclscope"] / tps["bare"], "ratio_vs_naive": tps["iclscope"] / tps["naive"],
        "ratio_vs_bare_run_weighted": run_weighted["bare"] / run_weighted["iclscope"],
        "ratio_vs_branched": tps["iclscope"] / tps["branched"],
        "bare_vs_masked": tps["bare"] / tps["masked"],
        "bytes_iclscope": sizes["iclscope"], "bytes_naive": sizes["naive"],
        "bytes_ratio": sizes["naive"] / max(sizes["iclscope"], 1),
        "padding_efficiency": real / padded,
        "peak_rss_mb": rss_extraction, "peak_rss_mb_with_naive": _rss_mb(),
        "gemm_peak_gflops": peak / 1e9, "parameters": n_params,
        "mfu": 2 * n_params * tps["iclscope"] / peak, "mfu_bare": 2 * n_params * tps["bare"] / peak,
        # per task: best-of-repeats seconds and iclscope / bare (the same task's tokens)
        "per_task": {task: {"tokens": per_task[task]["tokens"], "table_tokens": per_task[task]["table_tokens"],
                            "candidate_branch_tokens": per_task[task]["branch_tokens"],
                            "seconds": {n: min(v) for n, v in tt.items()},
                            "ratio_vs_bare": min(tt["bare"]) / min(tt["iclscope"]),
                            "capture_vs_bare": min(tt["bare"]) / min(tt["capture"]),
                            "ratio_vs_branched": min(tt["branched"]) / min(tt["iclscope"]),
                            "bare_vs_masked": min(tt["masked"]) / min(tt["bare"]),
                            "ratio_vs_naive": min(tt["naive"]) / min(tt["iclscope"]),
                            # the iclscope loop against its compute bound (the FLOPs the engine
                            # counts for a job, at the peak): a job's own bound ratio compares to
                            # this one whatever the mix of its prompts
                            "flops": flops[task], "bound_ratio": min(tt["iclscope"]) / (flops[task] / peak)}
                     for task, tt in task_times.items()},
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def format_summary(s: Mapping[str, Any]) -> str:
    t = s["tokens_per_s"]
    return "\n".join([
        f"extraction benchmark: {s['model']} on {s['device']} ({s['dtype']}), {s['prompts']} prompts, "
        f"{s['tokens']} tokens, best of {s['repeats']}",
        f"  tokens/s   bare {t['bare']:.0f}   iclscope {t['iclscope']:.0f}   naive {t['naive']:.0f}",
        f"  iclscope / bare  {s['ratio_vs_bare']:.2f} (weighted by the tasks' tokens in the run: "
        f"{s['ratio_vs_bare_run_weighted']:.2f})   iclscope / naive  {s['ratio_vs_naive']:.2f}   "
        f"iclscope / branched  {s['ratio_vs_branched']:.2f}   bare / masked  {s['bare_vs_masked']:.2f}",
        f"  bytes      iclscope {s['bytes_iclscope']:,}   naive {s['bytes_naive']:,}   ratio {s['bytes_ratio']:.0f}",
        f"  padding efficiency {s['padding_efficiency']:.3f}   peak RSS {s['peak_rss_mb']:.0f} MB   "
        f"MFU {s['mfu']:.1%} (GEMM peak {s['gemm_peak_gflops']:.0f} GFLOP/s)",
        *[f"  {task}: iclscope / bare {t['ratio_vs_bare']:.2f}, capture / bare {t['capture_vs_bare']:.2f}, "
          f"iclscope / branched {t['ratio_vs_branched']:.2f}, "
          f"iclscope / naive {t['ratio_vs_naive']:.2f} ({t['tokens']} tokens + {t['candidate_branch_tokens']} in "
          f"candidate branches)" for task, t in s.get("per_task", {}).items()],
    ])


# the targets for the extraction benchmark: (summary key, bound, "min" or "max")
TARGETS = {"ratio_vs_bare": (1.15, "min"), "ratio_vs_naive": (3.0, "min"), "bytes_ratio": (20.0, "min"),
           "padding_efficiency": (0.9, "min"), "peak_rss_mb": (3072.0, "max")}


def _target(s: Mapping[str, Any], key: str, shown: str) -> str:
    bound, kind = TARGETS[key]
    met = s[key] >= bound if kind == "min" else s[key] <= bound
    return f"{'≥' if kind == 'min' else '≤'} {shown} ({'met' if met else 'missed'})"


def markdown_table(s: Mapping[str, Any]) -> str:
    """The docs' table (docs/performance.md) of an extraction benchmark summary (every number read from it)."""
    t = s["tokens_per_s"]
    per = {task: s["per_task"][task] for task in s["tasks"]}  # the order the tasks were given in

    def each(key: str, fmt: str = "{:.2f}") -> str:
        return ", ".join(f"{task} {fmt.format(v[key])}" for task, v in per.items())

    rows = [
        ("bare forward `model(input_ids, attention_mask)`", f"{t['bare']:.0f} tokens/s", ""),
        ("iclscope extraction, Parquet writing included", f"{t['iclscope']:.0f} tokens/s", ""),
        ("naive: eager attention, every hidden state and attention map to Parquet", f"{t['naive']:.0f} tokens/s", ""),
        (f"iclscope / bare, the {len(per)} tasks' sampled prompts", f"{s['ratio_vs_bare']:.2f}",
         _target(s, "ratio_vs_bare", "1.15")),
        ("iclscope / bare, each task weighted by its tokens in the whole run",
         f"{s['ratio_vs_bare_run_weighted']:.2f}", ""),
        ("iclscope / bare per task", each("ratio_vs_bare"), ""),
        ("capture / bare per task (the plans without their readouts: pooled spans and attention mass only)",
         each("capture_vs_bare"), ""),
        ("iclscope / naive per task", each("ratio_vs_naive"), ""),
        ("iclscope time / compute bound per task (its FLOPs by the engine's count at the GEMM peak; what a "
         "job's `/ bound` compares with)", each("bound_ratio"), ""),
        ("prompt tokens + candidate branch tokens per task",
         ", ".join(f"{task} {v['tokens']} + {v['candidate_branch_tokens']}" for task, v in per.items()), ""),
        ("iclscope / branched (the plain forward over prompts *and* branch tokens, branch mask)",
         f"all {s['ratio_vs_branched']:.2f}; {each('ratio_vs_branched')}", ""),
        ("bare / masked (the bare forward with its mask as an explicit 4-D boolean tensor)",
         f"all {s['bare_vs_masked']:.2f}; {each('bare_vs_masked')}", ""),
        ("iclscope / naive", f"{s['ratio_vs_naive']:.2f}", _target(s, "ratio_vs_naive", "3")),
        ("bytes naive / iclscope",
         f"{s['bytes_naive'] / 1e9:.2f} GB / {s['bytes_iclscope'] / 1e6:.1f} MB = {s['bytes_ratio']:.0f}",
         _target(s, "bytes_ratio", "20")),
        ("padding efficiency", f"{s['padding_efficiency']:.3f}", _target(s, "padding_efficiency", "0.9")),
        ("peak RSS (model, extraction, tables)", f"{s['peak_rss_mb'] / 1024:.1f} GB", _target(s, "peak_rss_mb", "3 GB")),
        (f"MFU (2 × {s['parameters'] / 1e6:.1f}M non-embedding parameters × tokens/s over a measured "
         f"{s['dtype']} GEMM peak "
         f"of {s['gemm_peak_gflops']:.0f} GFLOP/s)", f"{s['mfu']:.2f}", ""),
    ]
    return "\n".join(["| measure | value | target |", "|---|---|---|",
                      *(f"| {m} | {v} | {g} |" for m, v, g in rows)])
