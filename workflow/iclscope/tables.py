"""Reading and writing the pipeline's Parquet tables.

Writes are atomic (a temporary file in the same folder, then a rename), so an
interrupted job never leaves a half-written table that Snakemake would take as done.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from iclscope.provenance import read_metadata


class TableError(RuntimeError):
    """A table is missing, unreadable or does not follow its contract."""


def rebuild_hint(path: str | os.PathLike) -> str:
    """How to rebuild a damaged table: every table is a Snakemake output, so deleting it
    makes the next run rebuild it (and what depends on it, unless it comes out identical)."""
    return f"delete it (rm {path}) and run snakemake again to rebuild it"


def corrupt(path: str | os.PathLike, err: BaseException) -> TableError:
    """The error for a table that exists but cannot be read, saying how to rebuild it."""
    return TableError(f"table {path} is corrupt or truncated ({err}); {rebuild_hint(path)}")


def usual_mode(full: int) -> int:
    """``full`` (0o666 for files, 0o777 for folders) less the process umask: the mode a
    plain ``open`` or ``mkdir`` would give (``mkstemp``/``mkdtemp`` give 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``
    (with the usual permissions), on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, usual_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(table: pa.Table, path: str | os.PathLike, meta: Mapping[str, str]) -> Path:
    """Write ``table`` with file-level ``meta`` to ``path`` atomically; returns the path."""
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in meta.items()})
    table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=64 * 1024)
    return Path(path)


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Read a table, turning a missing or corrupt file into a :class:`TableError` naming it."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"table {path} does not exist")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise corrupt(path, err) from err


def recorded_model(paths: Sequence[str | os.PathLike]) -> dict[str, str] | None:
    """Model name, weights sha256 and card summary (``model_card``, where recorded) from the
    first table in ``paths`` whose provenance records a model (for
    :func:`iclscope.provenance.metadata`'s ``model``, so an analysis table says which model
    made it as fully as the extraction did), else ``None``."""
    for path in paths:
        meta = table_metadata(path)
        if meta.get("model"):
            model = {"name": meta["model"], "weights_sha256": meta.get("weights_sha256", "")}
            if meta.get("model_card"):
                model["model_card"] = meta["model_card"]
            return model
    return None


def table_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The provenance metadata of a Parquet file (see :mod:`iclscope.provenance`)."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise corrupt(path, err) from err
    return read_metadata(schema.metadata)


def typed_table(rows: Any, schema: pa.Schema) -> pa.Table:
    """Rows as a table of exactly ``schema``'s columns and types, typed even when empty.

    ``rows``: a DataFrame, a list of DataFrames (stacked) or a list of dicts. The one way the
    studies turn their results into tables (columns in schema order, no index)."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        frame = rows
    elif len(rows) and isinstance(rows[0], pd.DataFrame):
        frame = pd.concat(rows, ignore_index=True)
    else:
        frame = pd.DataFrame(rows)
    if frame.empty:
        return schema.empty_table()
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)

