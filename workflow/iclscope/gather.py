"""Gathering shard tables into one table per kind (torch-free: runs in the analysis env)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from iclscope import provenance
from iclscope.errors import ExtractionError
from iclscope.tables import CHECKSUM_KEY, read_table, table_metadata, write_table

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


# Per-shard metadata that depends on how the task was split (or batched) or on how fast the
# job ran, not on the results: left out of a gathered table, so that it is byte-identical
# whatever `shards` and whatever the timings (each job's throughput stays in its log).
SPLIT_KEYS = ("shard", "stats", "command", "throughput")
# recorded afresh for the gathered data when it is written
DATA_KEYS = (CHECKSUM_KEY,)
# the shard-independent counts kept from the shards' engine statistics (summed)
SUMMED_STATS = ("prompts", "real_tokens")


def gather_one(inputs: Sequence[str], out: str) -> None:
    """Concatenate shard tables of one kind into ``out``, in the row order of an
    unsharded extraction: by layer where the table has layers, then by prompt (task
    tables are sorted by ``prompt_id``), each shard's own order kept within a prompt.

    Provenance is the first shard's, less what depends on the split (:data:`SPLIT_KEYS`):
    ``shard`` says ``gathered``, ``stats`` keeps the summed prompt and token counts and
    ``command`` is the unsharded command. So the table comes out byte-identical for any
    number of shards, and Snakemake's checksum of it (see docs/reproducibility.md) finds nothing new
    downstream when only `shards` changed.
    """
    tables = [read_table(p) for p in inputs]
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    keys = [(k, "ascending") for k in ("layer", "prompt_id") if k in table.column_names]
    if keys:
        table = table.sort_by(keys)  # a stable sort: a shard's order kept within a prompt
    first = table_metadata(inputs[0])
    meta = {provenance.PREFIX + k: v for k, v in first.items() if k not in SPLIT_KEYS + DATA_KEYS}
    meta[provenance.PREFIX + "shard"] = "gathered"
    meta[provenance.PREFIX + "stats"] = provenance.canonical_json(_summed_stats(inputs))
    meta[provenance.PREFIX + "command"] = unsharded_command(first.get("command", ""))
    write_table(table, out, meta)
    log.info("gathered %d shards, %d rows -> %s", len(inputs), table.num_rows, out)


def _summed_stats(inputs: Sequence[str]) -> dict[str, int]:
    totals = dict.fromkeys(SUMMED_STATS, 0)
    for path in inputs:
        stats = json.loads(table_metadata(path).get("stats") or "{}")
        for key in SUMMED_STATS:
            totals[key] += int(stats.get(key, 0))
    return totals


def unsharded_command(command: str) -> str:
    """A shard's command as the unsharded extraction would read: without ``--shard K
    --shards N`` and with ``shards/K-of-N/`` dropped from the paths.

    >>> unsharded_command("iclscope extract --shard 2 --shards 3 --out r/t/shards/2-of-3/a.parquet")
    'iclscope extract --out r/t/a.parquet'
    """
    command = re.sub(r" --shards? \d+", "", command)
    return re.sub(r"(^|/)shards/\d+-of-\d+/", r"\1", command)
