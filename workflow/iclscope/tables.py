"""Reading and writing the pipeline's Parquet tables.

Writes are atomic (a temporary file in the same folder, then a rename), so an
interrupted job never leaves a half-written table that Snakemake would take as done.

Every table carries two checksums written with it, so a file damaged on disk is found
instead of read: a CRC of every Parquet data page (checked whenever a page is read), and
the sha256 of every column's data (``column_sha256`` in the provenance, checked by
:func:`read_table` for the columns it reads and by ``iclscope audit`` for all of them). A
mismatch names the file, the command that wrote it and how to rebuild it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from iclscope.provenance import PREFIX, read_metadata

# provenance key of the per-column data checksums
CHECKSUM_KEY = "column_sha256"


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


def _canonical(kind: pa.DataType) -> pa.DataType:
    """``kind`` with list children named as Arrow names them by default (a Parquet round
    trip renames ``item`` to ``element``): what a checksum sees is the values' layout."""
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(_canonical(kind.value_type), kind.list_size)
    if pa.types.is_large_list(kind):
        return pa.large_list(_canonical(kind.value_type))
    if pa.types.is_list(kind):
        return pa.list_(_canonical(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _canonical(f.type), f.nullable) for f in kind])
    return kind


class _DigestSink(io.RawIOBase):
    """A writable file that hashes what is written to it and keeps nothing."""

    def __init__(self, digest: Any) -> None:
        self.digest, self.written = digest, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.digest.update(data)
        self.written += n
        return n

    def tell(self) -> int:
        return self.written


def _ipc_digest(digest: Any, name: str, array: pa.Array) -> None:
    """Feed ``array``'s Arrow IPC stream (one column ``name``) to ``digest`` as it is written:
    never held in memory (growing a buffer for a large column cost seconds of fresh pages)."""
    schema = pa.schema([pa.field(name, array.type)])
    with pa.ipc.new_stream(pa.PythonFile(_DigestSink(digest), mode="w"), schema) as writer:
        writer.write_table(pa.Table.from_arrays([array], schema=schema))


def column_sha256(table: pa.Table) -> dict[str, str]:
    """sha256 of each column's data: its name, type, which rows are null and the values of
    the others (not how it is chunked, nor the bytes under a null, which a Parquet round
    trip zeroes)."""
    import pyarrow.compute as pc

    out = {}
    for field, column in zip(table.schema, table.columns):
        kind = _canonical(field.type)
        values = column.combine_chunks().cast(kind)
        valid = pc.is_valid(values)
        digest = hashlib.sha256()
        _ipc_digest(digest, "valid", valid)
        # without nulls the filter would copy the whole column to the same values
        _ipc_digest(digest, field.name, values.filter(valid) if values.null_count else values)
        out[field.name] = digest.hexdigest()
    return out


def write_table(table: pa.Table, path: str | os.PathLike, meta: Mapping[str, str]) -> Path:
    """Write ``table`` with file-level ``meta`` (and its checksums) to ``path`` atomically;
    returns the path."""
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in meta.items()})
    merged[(PREFIX + CHECKSUM_KEY).encode()] = json.dumps(column_sha256(table), sort_keys=True).encode()
    table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **parquet_options(table.schema))
    return Path(path)


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How every table is encoded (``pyarrow.parquet.write_table``'s keywords; the cost
    plan encodes its samples the same way)."""
    return {"compression": "zstd", "row_group_size": row_group_rows(schema), "write_page_checksum": True,
            "use_dictionary": dictionary_columns(schema)}


# a row group's vectors stay near this size: the writer buffers a whole row group, and a
# new process pays for every fresh page of that buffer (an embeddings table of 64k rows
# buffered 150 MB and took 2.5 s to write instead of 1.5 s)
ROW_GROUP_BYTES = 16 * 1024 * 1024


def row_group_rows(schema: pa.Schema) -> int:
    """Rows per row group: 64k, fewer for tables of wide fixed-size vectors (at least 1024)."""
    width = sum(f.type.list_size * f.type.value_type.bit_width // 8 for f in schema
                if pa.types.is_fixed_size_list(f.type) and pa.types.is_primitive(f.type.value_type))
    return 64 * 1024 if not width else max(1024, min(64 * 1024, ROW_GROUP_BYTES // width))


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth dictionary-encoding: all but floating-point ones (and lists of
    them), whose values rarely repeat; encoding them anyway costs the writer a dictionary it
    throws away and the reader a decoding pass (3x slower reading an embeddings table)."""
    def floating(kind: pa.DataType) -> bool:
        while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            kind = kind.value_type
        return pa.types.is_floating(kind)

    return [f.name for f in schema if not floating(f.type)]


def damaged(path: str | os.PathLike, what: str) -> TableError:
    """The error for a table whose data no longer matches what was written."""
    meta = {}
    try:
        meta = table_metadata(path)
    except TableError:
        pass
    wrote = f" (written by `{meta['command']}`)" if meta.get("command") else ""
    return TableError(f"table {path}{wrote}: {what}: the file was damaged after it was written; "
                      f"{rebuild_hint(path)}")


def verify_checksums(path: str | os.PathLike, table: pa.Table) -> None:
    """Compare ``table`` (read from ``path``, all or some columns) with the column
    checksums recorded when it was written (none recorded: nothing to compare)."""
    recorded = read_metadata(table.schema.metadata).get(CHECKSUM_KEY)
    if not recorded:
        return
    try:
        expected = json.loads(recorded)
    except ValueError as err:
        raise damaged(path, f"its recorded checksums are unreadable ({err})") from err
    for name, digest in column_sha256(table).items():
        if name in expected and expected[name] != digest:
            raise damaged(path, f"column {name!r} does not match its checksum")


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Read a table, turning a missing, corrupt or damaged file into a :class:`TableError`
    naming it (page CRCs and the read columns' checksums are verified)."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"table {path} does not exist")
    try:
        table = pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (pa.ArrowInvalid, OSError) as err:
        raise corrupt(path, err) from err
    verify_checksums(path, table)
    return table


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

