"""The extraction steps as the rules call them: read a task table, load the prepared
model, run the engine (or the sampler) and write the tables with provenance.

Outputs are written only once everything is computed, each atomically, so a failure
leaves no partial Parquet file behind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa
import torch

from iclscope import contracts, provenance
from iclscope.architectures import input_device
from iclscope.extraction.engine import ExtractionError, extract
from iclscope.extraction.generation import (GenerationRequest, chat_text, constrained_record, generate,
                                           generation_record)
from iclscope.extraction.plan import plan_for
from iclscope.extraction.throughput import Throughput, cpu_capability, log_record
from iclscope.planning.peak import gemm_peak
from iclscope.tables import read_table, table_metadata, write_table

log = logging.getLogger(__name__)

EXTRACT_TABLES = ("embeddings", "attention", "readouts")
def _load(model_dir: str, params: Mapping[str, Any], attention: bool):
    from iclscope.extraction.attention import register
    from iclscope.models import load_prepared

    from iclscope.architectures import check_loaded

    implementation = register() if attention else params.get("attn_implementation", "sdpa")
    model, tokenizer, card = load_prepared(model_dir, dtype=params.get("dtype", "auto"),
                                           device=params.get("device", "auto"),
                                           attn_implementation=implementation, device_map=params.get("device_map"))
    try:
        check_loaded(model)  # models from hf_id or GGUF are first seen here
    except ValueError as err:
        raise ExtractionError(f"{model_dir}: {err}") from err
    return model, tokenizer, card


def _outputs_by_stem(outs: Sequence[str], expected: Sequence[str]) -> dict[str, str]:
    by_stem = {Path(o).stem: o for o in outs}
    if sorted(by_stem) != sorted(expected):
        raise ExtractionError(f"outputs must be one each of {list(expected)}.parquet, got {list(outs)}")
    return by_stem


def run_extract(model_dir: str, tasks_path: str, params: Mapping[str, Any], outs: Sequence[str],
                shard: int = 0, n_shards: int = 1, started: float | None = None) -> dict[str, Any]:
    """Extract one task (or one shard of it) into ``embeddings``, ``attention`` and
    ``readouts`` tables; returns the engine's statistics. The job's throughput
    (:mod:`~iclscope.extraction.throughput`) goes to the log and the tables' provenance;
    ``started`` (a ``time.perf_counter()`` reading) is when the command started."""
    started = time.perf_counter() if started is None else started
    paths = _outputs_by_stem(outs, EXTRACT_TABLES)
    rows = read_table(tasks_path).to_pylist()
    if not rows:
        raise ExtractionError(f"task table {tasks_path} has no prompts")
    task = rows[0]["task"]
    if not 0 <= shard < n_shards:
        raise ExtractionError(f"shard {shard} is not in 0..{n_shards - 1}")
    model, tokenizer, card = _load(model_dir, params, attention=True)
    max_length = getattr(model.config, "max_position_embeddings", None)
    device, dtype = input_device(model), next(model.parameters()).dtype
    log.info("%s: shard %d of %d of %d prompts on %s", task, shard + 1, n_shards, len(rows), device)
    plans = [plan_for(task, row) for row in rows]
    peak = gemm_peak(dtype, device)  # before the work, as the benchmark does
    begun = time.perf_counter()
    # a shard runs every n-th batch of the whole task's plan: results never depend on `shards`
    result = extract(model, tokenizer, rows, plans, params.get("pooling", ["max", "mean", "last"]),
                     int(params.get("batch_tokens", 4096)), max_length, shard=shard, n_shards=n_shards)
    tables = {"embeddings": result.embeddings, "attention": result.attention, "readouts": result.readouts}
    record = Throughput(
        model=card.get("name", Path(model_dir).name), task=task, shard=f"{shard + 1}/{n_shards}",
        device=str(device), dtype=str(dtype).removeprefix("torch."),
        cpu=cpu_capability(), threads=torch.get_num_threads(), prompt_tokens=int(result.work["prompt_tokens"]),
        branch_tokens=int(result.work["branch_tokens"]), padded_tokens=int(result.stats["padded_tokens"]),
        parameters=sum(p.numel() for p in model.parameters()), flops=float(result.work["flops"]), gemm_peak=peak,
        seconds=time.perf_counter() - begun, forward_seconds=float(result.work["forward_s"]))
    # the provenance holds the record as it stands before the tables are written; the log's,
    # written after them, adds the writing and the job's time from its start
    extra = {"task": task, "shard": f"{shard + 1}/{n_shards}", "tasks_config_hash": table_metadata(tasks_path).get(
        "config_hash", ""), "stats": result.stats, "throughput": record.record()}
    written = time.perf_counter()
    for name, table in tables.items():
        meta = provenance.metadata(name, params, seed=params.get("seed"), model=card, extra=extra)
        write_table(table, paths[name], meta)
        log.info("%s: %d rows -> %s", name, table.num_rows, paths[name])
    now = time.perf_counter()
    log_record(replace(record, write_seconds=now - written, job_seconds=now - started))
    return result.stats


def run_generate(model_dir: str, tasks_path: str, params: Mapping[str, Any], out: str) -> None:
    """Sample ``n_samples`` sequences per generation prompt in each of the configured modes
    (``binary.generation.modes``: ``constrained``, ``free``); write raw text, flips and, for
    constrained sequences, the per-step probabilities.

    ``params``: ``runtime`` (the model's runtime keys), ``generation`` (config
    ``binary.generation``), ``symbols`` (how 0 and 1 are written) and ``separator``.
    """
    from iclscope.extraction.constrained import generate_constrained

    gen = params["generation"]
    symbols = params.get("symbols", ["Heads", "Tails"])
    runtime = params["runtime"]
    rows = read_table(tasks_path).to_pylist()
    if not rows:
        raise ExtractionError(f"task table {tasks_path} has no prompts")
    model, tokenizer, card = _load(model_dir, runtime, attention=False)
    requests, meta_rows = [], []
    for row in rows:
        text = chat_text(tokenizer, row["text"], row.get("system"))
        for sample in range(int(gen["n_samples"])):
            requests.append(GenerationRequest(row["prompt_id"], sample, text))
            meta_rows.append((row, text))
    seed = int(runtime.get("seed", 0))
    batch_size = max(1, int(runtime.get("batch_tokens", 4096)) // 64)
    records: dict[str, list] = {name: [] for name in contracts.GENERATIONS.names}

    def add(record: Mapping[str, Any]) -> None:
        for name, value in record.items():
            records[name].append(value)

    for mode in gen.get("modes", ["free"]):
        if mode == "constrained":
            done = generate_constrained(model, tokenizer, requests, seed=seed, temperature=float(gen["temperature"]),
                                        n_flips=int(gen["n_flips"]), symbols=symbols,
                                        separator=params.get("separator", ", "), batch_size=batch_size)
            for (row, text), sequence in zip(meta_rows, done):
                add(constrained_record(row, text, sequence, symbols))
        else:
            done = generate(model, tokenizer, requests, seed=seed, temperature=float(gen["temperature"]),
                            max_new_tokens=int(gen["max_new_tokens"]), stop="]", batch_size=batch_size)
            # the prompt opens the list and may hold its first flips ("[Heads,"): kept apart as forced_flips
            for (row, text), g in zip(meta_rows, done):
                add(generation_record(row, text, g, symbols))
    table = pa.table(records, schema=contracts.GENERATIONS)
    meta = provenance.metadata("generations", params, seed=seed, model=card,
                               extra={"symbols": list(symbols), "inputs": sorted({t for _, t in meta_rows})})
    write_table(table, out, meta)
    for mode in gen.get("modes", ["free"]):
        kept = sum(p for m, p in zip(records["mode"], records["parsed"]) if m == mode)
        log.info("generations (%s): %d sequences (%d parsed) -> %s", mode, records["mode"].count(mode), kept, out)
