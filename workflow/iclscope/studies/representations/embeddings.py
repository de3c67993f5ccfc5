"""Study B's embeddings, streamed one layer at a time from a table sorted by layer."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iclscope.tables import TableError, read_table


log = logging.getLogger(__name__)


@dataclass
class LayerVectors:
    """The pooled vectors of one layer: parallel arrays of rows and (n_rows, hidden) vectors."""

    layer: int
    prompt_id: np.ndarray
    span: np.ndarray
    pooling: np.ndarray
    vectors: np.ndarray

    def select(self, span: str, pooling: str) -> tuple[np.ndarray, np.ndarray]:
        """(prompt_ids, vectors) of one span and pooling."""
        mask = (self.span == span) & (self.pooling == pooling)
        return self.prompt_id[mask], self.vectors[mask]


def _layer_vectors(layer: int, batches: list[pa.RecordBatch]) -> LayerVectors:
    table = pa.Table.from_batches(batches)
    column = table.column("vector").combine_chunks()
    hidden = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, hidden)
    return LayerVectors(
        layer,
        np.asarray(table.column("prompt_id").to_pylist(), dtype=object),
        np.asarray(table.column("span").to_pylist(), dtype=object),
        np.asarray(table.column("pooling").to_pylist(), dtype=object),
        vectors,
    )


def embedding_index(path: str) -> pd.DataFrame:
    """The ``layer, span, pooling`` columns of an embeddings table (no vectors)."""
    return read_table(path, columns=["layer", "span", "pooling"]).to_pandas()


def iter_layers(path: str, spans: Iterable[str], poolings: Iterable[str], batch_size: int = 4096) -> Iterator[LayerVectors]:
    """Stream an embeddings table one layer at a time, keeping only ``spans`` x ``poolings``.

    Rows sorted by layer (as extraction writes them) are streamed batch by batch, so memory
    holds one layer plus one batch; unsorted tables are read whole (filtered) and sorted.
    """
    spans = pa.array(sorted(set(spans)), pa.string())
    poolings = pa.array(sorted(set(poolings)), pa.string())
    columns = ["prompt_id", "layer", "span", "pooling", "vector"]
    try:
        layers = read_table(path, columns=["layer"]).column("layer").to_numpy()
        if np.all(np.diff(layers) >= 0):
            # streamed: each page's CRC is checked as it is read (the column checksums need
            # the whole column, which streaming never holds)
            batches: Iterable[pa.RecordBatch] = pq.ParquetFile(path, page_checksum_verification=True).iter_batches(
                batch_size=batch_size, columns=columns)
        else:
            log.warning("%s is not sorted by layer: reading it whole", path)
            batches = read_table(path, columns=columns).sort_by("layer").to_batches(batch_size)
    except (pa.ArrowInvalid, OSError) as err:
        raise TableError(f"table {path} is corrupt or truncated: {err}") from err
    pending: dict[int, list[pa.RecordBatch]] = {}
    for batch in batches:
        keep = pc.and_(pc.is_in(batch.column("span").cast(pa.string()), value_set=spans),
                       pc.is_in(batch.column("pooling").cast(pa.string()), value_set=poolings))
        batch = batch.filter(keep)
        if batch.num_rows == 0:
            continue
        layer_of = batch.column("layer").to_numpy()
        for layer in np.unique(layer_of):
            pending.setdefault(int(layer), []).append(batch.filter(pa.array(layer_of == layer)))
        top = int(layer_of.max())
        for layer in sorted(k for k in pending if k < top):
            yield _layer_vectors(layer, pending.pop(layer))
    for layer in sorted(pending):
        yield _layer_vectors(layer, pending.pop(layer))
