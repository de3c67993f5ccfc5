"""Gathering shard tables into one table per kind (torch-free: runs in the analysis env)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from iclscope import provenance
from iclscope.errors import ExtractionError
from iclscope.tables import read_table, table_metadata, write_table

log = logging.getLogger(__name__)


def gather(inputs: Sequence[str], outs: Sequence[str]) -> None:
    """Gather shard tables into ``outs``: each output takes the inputs with its file name
    (``embeddings.parquet`` ...), in the order given (shard order)."""
    for out in outs:
        name = Path(out).name
        parts = [p for p in inputs if Path(p).name == name]
        if not parts:
            raise ExtractionError(f"no shard table named {name} among the inputs")
        gather_one(parts, out)


def gather_one(inputs: Sequence[str], out: str) -> None:
    """Concatenate shard tables of one kind (in shard order) into ``out``, keeping the
    rows sorted by layer where the table has layers; provenance of the first shard,
    with the number of shards recorded."""
    tables = [read_table(p) for p in inputs]
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    if "layer" in table.column_names:
        table = table.sort_by([("layer", "ascending")])  # stable: shard order kept within a layer
    meta = {provenance.PREFIX + k: v for k, v in table_metadata(inputs[0]).items()}
    meta[provenance.PREFIX + "shard"] = f"gathered {len(inputs)}"
    write_table(table, out, meta)
    log.info("gathered %d shards, %d rows -> %s", len(inputs), table.num_rows, out)
