"""The three tables of an extraction, assembled from its batches' reduced values.

Rows come out in the order of an unsharded run whatever the batches (length-sorted) were:
by layer where the table has layers, then by the prompt's position in the task table (a
repeated prompt's rows copied under each of its ids), then by what the row holds. The
attention table, the longest (a row per layer, prompt, head and span), is built as columns
from one block per layer and prompt; the embeddings table sorts its row keys once and
gathers each layer's vectors in that order; the readouts table lists its rows one by one.
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
    """Rows sorted by layer, then prompt (table order), span, pooling: readers skip layers.

    The row keys (prompt, span, pooling) do not depend on the layer, so they are listed and
    sorted once per set of batches that pooled a layer (every batch pools the same layers in
    practice, so once), and each layer's vectors are gathered in that order in one step."""
    # per batch: its pooled vectors flattened to (K * P, d), K = (prompt, span) items
    sources: list[tuple[list[tuple[int, str, str, str, int]], dict[int, np.ndarray]]] = []
    for batch, res in results:
        items = [(p.prompt.prompt_id, s) for p in batch for s in p.plan.pool]
        keys = [(rank, pid, span, method, k * len(poolings) + j)
                for k, (computed, span) in enumerate(items)
                for rank, pid in copies[computed]
                for j, method in enumerate(poolings)]
        vectors = {layer: pooled.numpy().reshape(-1, hidden) for layer, pooled in res.pooled.items()}
        sources.append((keys, vectors))
    layers = sorted({layer for _, vectors in sources for layer in vectors})
    schema = contracts.embeddings_schema(hidden)
    orders: dict[tuple[int, ...], tuple[list[tuple[int, str, str, str, int]], np.ndarray]] = {}
    by_layer = []  # per layer: the batches that pooled it, their sorted keys, each key's row
    for layer in layers:
        having = tuple(b for b, (_, vectors) in enumerate(sources) if layer in vectors)
        if having not in orders:  # rows index the batches' vectors stacked in batch order
            offsets = np.cumsum([0] + [len(sources[b][1][layer]) for b in having])
            listed = [(*key[:4], int(offsets[i]) + key[4]) for i, b in enumerate(having) for key in sources[b][0]]
            listed.sort(key=lambda r: r[:4])  # stable, as the rows were sorted one by one
            orders[having] = (listed, np.array([r[4] for r in listed], np.int64))
        by_layer.append((layer, having, *orders[having]))
    n_rows = sum(len(listed) for _, _, listed, _ in by_layer)
    if not n_rows:
        return schema.empty_table()
    # one float32 block filled in place, layer by layer (Arrow wraps it without a copy)
    flat = np.empty((n_rows, hidden), np.float32)
    at = 0
    for layer, having, listed, rows in by_layer:
        stacked = np.concatenate([sources[b][1][layer] for b in having]).astype(np.float32, copy=False)
        np.take(stacked, rows, axis=0, out=flat[at:at + len(rows)], mode="clip")  # "raise" copies `out`
        at += len(rows)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float32()), hidden)

    def column(i: int) -> pa.Array:
        return pa.array([r[i] for _, _, listed, _ in by_layer for r in listed])

    layer_column = np.repeat(np.array(layers, np.int16), [len(listed) for _, _, listed, _ in by_layer])
    return pa.table([column(1), pa.array(layer_column), column(2), column(3), vectors], schema=schema)


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
