"""`iclscope bench generate`: iclscope's sampling loop against plain ``model.generate``.

In one process, on the default generation task's prompts (chat template applied, as the
pipeline does), the same batches and the same sampling settings (temperature, no top-k or
top-p, the same maximum of new tokens, stopping at ``]``), it interleaves repeated runs of

(a) ``plain``: transformers' ``model.generate(do_sample=True, stop_strings="]")`` per batch;
(b) ``iclscope``: :func:`iclscope.extraction.generation.generate`, which computes the logits
    of the last position only and drops every sequence from the batch once it has closed
    its list (``generate`` keeps decoding finished rows until the whole batch is done).

The two sample different tokens (different random streams), so the measure is the wall
time of the whole task and the tokens each generated; ``ratio`` = plain time / iclscope time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from iclscope.architectures import input_device
from iclscope.extraction.generation import GenerationRequest, chat_text, generate
from iclscope.models import load_prepared
from iclscope.tables import read_table

log = logging.getLogger(__name__)


def _requests(task_path: str, tokenizer: Any, n_samples: int, max_prompts: int | None) -> list[GenerationRequest]:
    rows = read_table(task_path).to_pylist()[: max_prompts or None]
    return [GenerationRequest(r["prompt_id"], s, chat_text(tokenizer, r["text"], r.get("system")))
            for r in rows for s in range(n_samples)]


def run_plain(model: Any, tokenizer: Any, requests: list[GenerationRequest], batch_size: int,
              temperature: float, max_new_tokens: int, seed: int) -> int:
    """``model.generate`` over the same batches (longest prompts first); returns the new tokens."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    order = sorted(range(len(requests)), key=lambda i: -len(tokenizer(requests[i].text)["input_ids"]))
    new_tokens = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            texts = [requests[i].text for i in order[start : start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True)
            out = model.generate(**enc, do_sample=temperature > 0, temperature=temperature or None, top_k=None,
                                 top_p=None, max_new_tokens=max_new_tokens, stop_strings="]", tokenizer=tokenizer,
                                 pad_token_id=tokenizer.pad_token_id)
            generated = out[:, enc["input_ids"].shape[1]:]
            new_tokens += int((generated != tokenizer.pad_token_id).sum())
    return new_tokens


def run_iclscope(model: Any, tokenizer: Any, requests: list[GenerationRequest], batch_size: int,
                 temperature: float, max_new_tokens: int, seed: int) -> int:
    done = generate(model, tokenizer, requests, seed=seed, temperature=temperature, max_new_tokens=max_new_tokens,
                    stop="]", batch_size=batch_size)
    return sum(g.n_tokens for g in done)


def bench_generate(model_dir: str, task_path: str, out: str, params: Mapping[str, Any] | None = None,
                   repeats: int = 3, max_prompts: int | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring) and write its JSON summary to ``out``.

    ``params``: ``generation`` (config ``binary.generation``: n_samples, temperature,
    max_new_tokens), ``batch_tokens``, ``dtype``, ``device``, ``seed``."""
    params = dict(params or {})
    gen = {"n_samples": 20, "temperature": 1.0, "max_new_tokens": 60, **params.get("generation", {})}
    model, tokenizer, card = load_prepared(model_dir, dtype=params.get("dtype", "auto"),
                                           device=params.get("device", "auto"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    requests = _requests(task_path, tokenizer, int(gen["n_samples"]), max_prompts)
    batch_size = max(1, int(params.get("batch_tokens", 4096)) // 64)  # as the pipeline's generate step
    settings = (batch_size, float(gen["temperature"]), int(gen["max_new_tokens"]), int(params.get("seed", 0)))
    runners = {"plain": run_plain, "iclscope": run_iclscope}
    times: dict[str, list[float]] = {name: [] for name in runners}
    tokens: dict[str, int] = {}
    run_iclscope(model, tokenizer, requests[: min(4, len(requests))], *settings)  # warm-up
    for r in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            tokens[name] = run(model, tokenizer, requests, *settings)
            times[name].append(time.perf_counter() - start)
            log.info("repeat %d %s: %.1f s, %d new tokens", r + 1, name, times[name][-1], tokens[name])
    best = {k: min(v) for k, v in times.items()}
    summary = {
        "model": card.get("name"), "device": str(input_device(model)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "task": Path(task_path).stem, "sequences": len(requests), "batch_size": batch_size,
        "temperature": settings[1], "max_new_tokens": settings[2], "repeats": repeats,
        "seconds": best, "new_tokens": tokens,
        "tokens_per_s": {k: tokens[k] / best[k] for k in best},
        "sequences_per_s": {k: len(requests) / best[k] for k in best},
        "ratio": best["plain"] / best["iclscope"],
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def format_summary(s: Mapping[str, Any]) -> str:
    return (f"generate {s['task']} on {s['model']} ({s['device']}, {s['dtype']}): {s['sequences']} sequences, "
            f"batch {s['batch_size']}\n"
            f"  plain model.generate: {s['seconds']['plain']:.1f} s, {s['new_tokens']['plain']} new tokens\n"
            f"  iclscope generate:    {s['seconds']['iclscope']:.1f} s, {s['new_tokens']['iclscope']} new tokens\n"
            f"  ratio (plain time / iclscope time): {s['ratio']:.2f}")
