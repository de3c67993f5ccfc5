"""Bytes of the tables an extraction writes, before it runs.

A Parquet file's size depends on how many of its values repeat: the writer dictionary-
encodes columns with few distinct values and zstd finds repeats within a page. Which
values repeat is known before the run: a value computed from the same tokens (the same
prefix, span and candidate) in the same batch comes out bit-identical, any pooling of a
one-token span equals its ``last``, and a repeated prompt's rows are copies. So each
table is sampled in its real row order with its real keys, every value drawn from the
identity of what computes it, and encoded for real (checked against the default run's
tables: the identities find the same repeated vectors to within 0.5%).
"""

from __future__ import annotations

import io
import json
import itertools
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iclscope import contracts
from iclscope.planning.shape import ModelShape

SAMPLE_ROWS = 20000  # rows of a table encoded for real to measure its width
SAMPLE_VECTOR_BYTES = 32 * 1024 * 1024  # ... fewer where its vectors would exceed this
# Pooled hidden states take this fraction of the bytes of as many independent normal
# vectors (max pooling over nested spans shares components, which zstd finds): measured
# 0.88 on SmolLM2, 0.93 on Gemma 3, 0.84 on the tests' tiny random model
REAL_VECTOR_FACTOR = 0.88
# Lists of per-step log-probabilities and probabilities (the generations table) take this
# fraction of the bytes of as many uniform draws: a model's values repeat their leading
# digits from step to step; measured 0.85 on SmolLM2's constrained generations
REAL_STEP_FACTOR = 0.85


def _written(table: pa.Table) -> int:
    from iclscope.tables import parquet_options

    sink = io.BytesIO()
    pq.write_table(table, sink, **parquet_options(table.schema))
    return sink.tell()


def file_bytes(schema: pa.Schema, metadata: Mapping[str, str]) -> float:
    """Bytes of an empty table with ``metadata``: the footer, schema and provenance (with
    the column checksums every written table records: one sha256 per column)."""
    from iclscope.provenance import PREFIX
    from iclscope.tables import CHECKSUM_KEY

    meta = {k.encode(): v.encode() for k, v in metadata.items()}
    meta[(PREFIX + CHECKSUM_KEY).encode()] = json.dumps({name: "0" * 64 for name in schema.names},
                                                        sort_keys=True).encode()
    return float(_written(schema.empty_table().replace_schema_metadata(meta)))


def data_bytes(schema: pa.Schema, rows: Iterable[Mapping[str, Any]], n_rows: int) -> float:
    """Bytes ``n_rows`` rows add to a table; ``rows`` yields them in table order (a sample
    of the first ones is encoded for real and scaled). Float columns hold hashable
    identities (equal identities get equal random values) and vector columns too (equal
    identities, equal normally distributed vectors: their exponents compress as real
    hidden states do, their mantissas not at all)."""
    width = max((f.type.list_size for f in schema if pa.types.is_fixed_size_list(f.type)), default=0)
    limit = SAMPLE_ROWS if not width else max(1, min(SAMPLE_ROWS, SAMPLE_VECTOR_BYTES // (4 * width)))
    sample = list(itertools.islice(rows, limit))
    if not sample or n_rows == 0:
        return 0.0
    rng = np.random.default_rng(0)
    columns = {}
    for f in schema:
        values = [r[f.name] for r in sample]
        if pa.types.is_floating(f.type):
            drawn: dict[Any, float] = {}
            values = [drawn.setdefault(v, float(rng.uniform(-10, 0))) for v in values]
            columns[f.name] = pa.array(values, f.type)
        elif pa.types.is_fixed_size_list(f.type):
            index: dict[Any, int] = {}
            which = np.array([index.setdefault(v, len(index)) for v in values])
            vectors = rng.standard_normal((len(index), f.type.list_size)).astype(np.float32)[which]
            columns[f.name] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), f.type.list_size)
        else:
            columns[f.name] = pa.array(values, f.type)
    table = pa.table(columns, schema=schema)
    encoded = float(_written(table) - _written(schema.empty_table()))
    vectors = [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]
    steps = [f.name for f in schema if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)]
    for names, factor in ((vectors, REAL_VECTOR_FACTOR), (steps, REAL_STEP_FACTOR)):
        if names:  # real values compress better than independent draws
            alone = table.select(names)
            encoded -= (1.0 - factor) * (_written(alone) - _written(alone.schema.empty_table()))
    return encoded * n_rows / len(sample)


def table_bytes(schema: pa.Schema, rows: Iterable[Mapping[str, Any]], n_rows: int,
                metadata: Mapping[str, str]) -> float:
    """Bytes of a table of ``n_rows`` rows written with ``metadata`` (see :func:`data_bytes`)."""
    return file_bytes(schema, metadata) + data_bytes(schema, rows, n_rows)


def prefix_hashes(ids: Sequence[int]) -> list[int]:
    """``h[i]`` identifies the tokens ``ids[:i + 1]`` (what a causal model's state at
    position i depends on)."""
    out, h = [], 0
    for token in ids:
        h = hash((h, token))
        out.append(h)
    return out


def table_order(prepared: Sequence[Any], copies: Mapping[str, Sequence[tuple[int, str]]]) -> list[tuple[str, int]]:
    """``(prompt id, index into prepared)`` of every row's prompt in table order (a
    repeated prompt's copies at their own table positions)."""
    at = sorted((rank, pid, k) for k, p in enumerate(prepared) for rank, pid in copies[p.prompt.prompt_id])
    return [(pid, k) for _, pid, k in at]


class ExtractionLayout:
    """The identities behind the three tables of one extraction."""

    def __init__(self, shape: ModelShape, prepared: Sequence[Any], copies: Mapping[str, Sequence[tuple[int, str]]],
                 batch_of: Sequence[int], poolings: Sequence[str]) -> None:
        self.shape, self.prepared, self.poolings = shape, prepared, list(poolings)
        self.order = table_order(prepared, copies)
        self.batch_of = batch_of  # batch index of each prepared prompt
        self.hashes = [prefix_hashes(p.sequence.ids[: p.sequence.n_prompt]) for p in prepared]

    def _ranges(self, k: int) -> list[tuple[str, int, int]]:
        p = self.prepared[k]
        n = len(p.prompt)
        return [(s, *((n - 1, n) if s == "end" else p.prompt.spans[s])) for s in p.plan.pool]

    def vector_identity(self, layer: int, k: int, start: int, end: int, pooling: str) -> Any:
        """What a pooled vector depends on: the batch and the tokens up to the span's end
        (layer 0: the span's tokens, and their positions in a model with absolute ones).
        ``last`` reads one token, and so does any pooling of a one-token span."""
        ids = self.prepared[k].sequence.ids
        one = pooling == "last" or end - start == 1
        first, method = (end - 1, "one") if one else (start, pooling)
        if layer == 0:
            return (0, tuple(ids[first:end]), method, first if self.shape.model_type == "gpt2" else None)
        return (layer, self.batch_of[k], self.hashes[k][end - 1], first, method)

    def embedding_rows(self, layers: Iterable[int]) -> Iterator[dict[str, Any]]:
        """Rows of the embeddings table at ``layers``, in table order."""
        for layer in layers:
            for pid, k in self.order:
                for span, start, end in self._ranges(k):
                    for pooling in self.poolings:
                        yield {"prompt_id": pid, "layer": layer, "span": span, "pooling": pooling,
                               "vector": self.vector_identity(layer, k, start, end, pooling)}

    def n_embedding_rows(self) -> int:
        """Rows per layer times layers (0 = the embeddings, then every block)."""
        return (self.shape.n_layers + 1) * self.rows_per_layer()

    def rows_per_layer(self) -> int:
        return len(self.poolings) * sum(len(self.prepared[k].plan.pool) for _, k in self.order)

    def attention_rows(self) -> Iterator[dict[str, Any]]:
        heads = range(-1, self.shape.n_heads)
        for layer in range(1, self.shape.n_layers + 1):
            for pid, k in self.order:
                p = self.prepared[k]
                query = self.hashes[k][p.sequence.n_prompt - 1]
                for head in heads:
                    for span in p.plan.attend:
                        yield {"prompt_id": pid, "layer": layer, "head": head, "query": "end", "span": span,
                               "mass": (layer, self.batch_of[k], query, head, span)}

    def n_attention_rows(self) -> int:
        return self.shape.n_layers * (self.shape.n_heads + 1) * sum(len(self.prepared[k].plan.attend)
                                                                    for _, k in self.order)

    def readout_rows(self) -> Iterator[dict[str, Any]]:
        for pid, k in self.order:
            p, h, b = self.prepared[k], self.hashes[k], self.batch_of[k]
            for read in p.reads:
                prefix = h[read.position]
                if read.initial_sets is not None:
                    for label in read.point.labels:
                        same = (b, prefix, "initial", label)
                        yield {"prompt_id": pid, "readout": read.point.name, "candidate": label,
                               "logprob": same, "first_token_logprob": same}
                    continue
                for label, steps in zip(read.point.labels, read.steps):
                    tokens = tuple(t for _, t in steps)
                    yield {"prompt_id": pid, "readout": read.point.name, "candidate": label,
                           "logprob": (b, prefix, tokens), "first_token_logprob": (b, prefix, tokens[:1])}

    def n_readout_rows(self) -> int:
        return sum(len(r.point.labels) for _, k in self.order for r in self.prepared[k].reads)


def extraction_bytes(layout: ExtractionLayout, metadata: Mapping[str, Mapping[str, str]]) -> dict[str, float]:
    """Bytes of the ``embeddings``, ``attention`` and ``readouts`` tables of an extraction
    (``metadata``: each table's provenance). The embeddings' layer 0 (token embeddings,
    shared by every prompt holding the same tokens) is sampled apart from the blocks'."""
    schema = contracts.embeddings_schema(layout.shape.hidden)
    per_layer = layout.rows_per_layer()
    blocks = range(1, layout.shape.n_layers + 1)
    return {
        "embeddings": file_bytes(schema, metadata["embeddings"])
        + data_bytes(schema, layout.embedding_rows([0]), per_layer)
        + data_bytes(schema, layout.embedding_rows(blocks), per_layer * len(blocks)),
        "attention": table_bytes(contracts.ATTENTION, layout.attention_rows(), layout.n_attention_rows(),
                                 metadata["attention"]),
        "readouts": table_bytes(contracts.READOUTS, layout.readout_rows(), layout.n_readout_rows(),
                                metadata["readouts"]),
    }
