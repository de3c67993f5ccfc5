"""The three tables of an extraction, assembled from its batches' reduced values.

Rows come out in the order of an unsharded run whatever the batches (length-sorted) were:
by layer where the table has layers, then by the prompt's position in the task table (a
repeated prompt's rows copied under each of its ids), then by what the row holds. The
attention table, the longest (a row per layer, prompt, head and span), is built as columns
from one block per layer and prompt; the other two list their rows one by one.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from iclscope import contracts
from iclscope.extraction.plan import END

# batches and their results, as the engine keeps them: (prepared prompts, _BatchResult)
Results = Sequence[tuple[Sequence[Any], Any]]
Copies = Mapping[str, Sequence[tuple[int, str]]]


def _strings(names: list[str], index: np.ndarray) -> pa.Array:
    """The strings ``names[index[i]]``, one per row."""
    return pa.array(names, pa.string()).take(pa.array(index, pa.int64()))


def embedding_table(results: Results, poolings: Sequence[str], hidden: int, copies: Copies) -> pa.Table:
    """Rows sorted by layer, then prompt (table order), span, pooling: readers skip layers."""
    records: dict[int, list[tuple[int, str, str, str, np.ndarray]]] = {}
    for batch, res in results:
        items = [(p.prompt.prompt_id, s) for p in batch for s in p.plan.pool]
        for layer, pooled in res.pooled.items():
            out = records.setdefault(layer, [])
            arr = pooled.numpy()
            for k, (computed, span) in enumerate(items):
                for rank, pid in copies[computed]:
                    for j, method in enumerate(poolings):
                        out.append((rank, pid, span, method, arr[k, j]))
    rows = [r for layer in sorted(records) for r in sorted(records[layer], key=lambda r: r[:4])]
    layers = [layer for layer in sorted(records) for _ in records[layer]]
    schema = contracts.embeddings_schema(hidden)
    if not rows:
        return schema.empty_table()
    # one float32 block filled in place (Arrow wraps it without a copy): the vectors exist
    # twice at most, in the batches' pooled tensors and here
    flat = np.empty((len(rows), hidden), np.float32)
    for i, r in enumerate(rows):
        flat[i] = r[4]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float32()), hidden)
    return pa.table(
        [pa.array([r[1] for r in rows]), pa.array(layers, pa.int16()), pa.array([r[2] for r in rows]),
         pa.array([r[3] for r in rows]), vectors],
        schema=schema,
    )


def attention_table(results: Results, copies: Copies) -> pa.Table:
    """One row per (layer, prompt, head, span), head -1 the mean over heads (first), sorted so."""
    pids: list[str] = []
    spans: list[str] = []
    span_at: dict[str, int] = {}
    blocks: list[tuple[np.ndarray, ...]] = []  # (layer, rank, head, span order, pid index, span index, mass)

    def span_index(name: str) -> int:
        if name not in span_at:
            span_at[name] = len(spans)
            spans.append(name)
        return span_at[name]

    for batch, res in results:
        attending = [p for p in batch if p.plan.attend]
        for layer, masses in res.masses.items():
            m = masses.numpy()  # (K, H, S)
            per_head = np.concatenate([m.mean(axis=1, keepdims=True), m], axis=1)  # head -1 = mean first
            heads = np.arange(-1, m.shape[1])
            for k, p in enumerate(attending):
                n_spans = len(p.plan.attend)
                names = np.array([span_index(s) for s in p.plan.attend])
                values = per_head[k, :, :n_spans].reshape(-1)
                head = np.repeat(heads, n_spans)
                order = np.tile(np.arange(n_spans), len(heads))
                for rank, pid in copies[p.prompt.prompt_id]:
                    pids.append(pid)
                    n = len(values)
                    blocks.append((np.full(n, layer), np.full(n, rank), head, order, np.full(n, len(pids) - 1),
                                   names[order], values))
    if not blocks:
        return contracts.ATTENTION.empty_table()
    layer, rank, head, order, pid, span, mass = (np.concatenate(c) for c in zip(*blocks))
    keep = np.lexsort((order, head, rank, layer))  # by layer, then prompt, head, span
    return pa.table({
        "prompt_id": _strings(pids, pid[keep]), "layer": pa.array(layer[keep], pa.int16()),
        "head": pa.array(head[keep], pa.int16()), "query": pa.array([END] * len(keep), pa.string()),
        "span": _strings(spans, span[keep]), "mass": pa.array(mass[keep], pa.float32()),
    }, schema=contracts.ATTENTION)


def readout_table(results: Results, copies: Copies) -> pa.Table:
    """Rows by prompt (table order), each prompt's readouts in their declared order."""
    keyed = []
    for batch, res in results:
        for b, readout, candidate, logp, first in res.reads:
            for rank, pid in copies[batch[b].prompt.prompt_id]:
                keyed.append((rank, pid, readout, candidate, logp, first))
    keyed.sort(key=lambda r: r[0])  # stable: readouts keep their declared order within a prompt
    return pa.table(
        {
            "prompt_id": [r[1] for r in keyed],
            "readout": [r[2] for r in keyed],
            "candidate": [r[3] for r in keyed],
            "logprob": pa.array([r[4] for r in keyed], pa.float32()),
            "first_token_logprob": pa.array([r[5] for r in keyed], pa.float32()),
        },
        schema=contracts.READOUTS,
    )
