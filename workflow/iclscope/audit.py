"""Reproducibility audit: a manifest of every table of a run, and a comparison of two runs.

The manifest lists each Parquet file under a results folder with its sha256, the sha256
of its data alone (``data_sha256``: schema and rows, provenance left out), its row count
and provenance (contract, config hash, seed, model weights, package version, git
commit). Two runs of the same config on the same machine must give identical data hashes;
the file hashes also differ where only the provenance does (e.g. another git commit).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from iclscope.provenance import file_sha256
from iclscope.tables import TableError, column_sha256, corrupt, read_table, table_metadata

PROVENANCE_KEYS = ("kind", "config_hash", "seed", "model", "weights_sha256", "version", "git_commit")


def data_sha256(path: Path) -> str:
    """sha256 of a table's schema and rows without its metadata: equal for two files that
    hold the same data under different provenance (e.g. written at another git commit)."""
    table = read_table(path).replace_schema_metadata(None)  # verified against its checksums
    # the columns' checksums (iclscope.tables.column_sha256) see the values, which rows are
    # null and the types, not how a file encoded them (dictionaries, row groups, or the
    # bytes a decoder leaves under a null), so a change of encoding is not a change of data
    digest = hashlib.sha256(table.schema.to_string(show_field_metadata=False).encode())
    digest.update(json.dumps(column_sha256(table), sort_keys=True).encode())
    return digest.hexdigest()


def scan(root: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every Parquet file under ``root`` (sorted by path): the manifest entries of the
    readable ones (path relative to ``root``, sha256, rows, the provenance keys) and one
    message per corrupt one (naming it and how to rebuild it). A damaged table does not
    stop the scan: all of them are reported, and the rest still listed."""
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"audit: {root} is not a folder")
    entries, problems = [], []
    for path in sorted(root.rglob("*.parquet")):
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
            meta = table_metadata(path)
            data = data_sha256(path)
        except TableError as err:
            problems.append(str(err))
            continue
        except Exception as err:  # pyarrow raises several types for damaged files
            problems.append(str(corrupt(path, err)))
            continue
        entries.append({"path": str(path.relative_to(root)), "sha256": file_sha256(path),
                        "data_sha256": data, "rows": rows,
                        **{k: meta.get(k, "") for k in PROVENANCE_KEYS}})
    return entries, problems


def manifest(root: str | Path) -> list[dict[str, Any]]:
    """The manifest of :func:`scan`; a corrupt table raises :class:`TableError` naming
    every corrupt table under ``root``."""
    entries, problems = scan(root)
    if problems:
        raise TableError("\n".join(problems))
    return entries


def compare(first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]]) -> list[str]:
    """Differences between two manifests: missing tables and differing data."""
    a = {e["path"]: e for e in first}
    b = {e["path"]: e for e in second}
    problems = [f"only in the first run: {p}" for p in sorted(set(a) - set(b))]
    problems += [f"only in the second run: {p}" for p in sorted(set(b) - set(a))]
    for path in sorted(set(a) & set(b)):
        if a[path].get("data_sha256", a[path]["sha256"]) != b[path].get("data_sha256", b[path]["sha256"]):
            what = "rows differ" if a[path]["rows"] != b[path]["rows"] else "contents differ"
            problems.append(f"{path}: {what} ({a[path]['sha256'][:12]} vs {b[path]['sha256'][:12]})")
    return problems


def provenance_differences(first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]]) -> list[str]:
    """Tables whose data are equal but whose provenance differs, naming the keys."""
    a = {e["path"]: e for e in first}
    b = {e["path"]: e for e in second}
    out = []
    for path in sorted(set(a) & set(b)):
        same_data = a[path].get("data_sha256") == b[path].get("data_sha256") is not None
        if same_data and a[path]["sha256"] != b[path]["sha256"]:
            keys = [k for k in PROVENANCE_KEYS if a[path].get(k) != b[path].get(k)]
            out.append(f"{path}: same data, provenance differs ({', '.join(keys) or 'other metadata'})")
    return out


def format_manifest(entries: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'table':<60} {'rows':>8}  {'sha256':<12}  {'kind':<22} {'config':<12} weights"]
    for e in entries:
        lines.append(f"{e['path']:<60} {e['rows']:>8}  {e['sha256'][:12]}  {e['kind']:<22} "
                     f"{e['config_hash'][:12]:<12} {e['weights_sha256'][:12]}")
    return "\n".join(lines)


def write_manifest(entries: Sequence[dict[str, Any]], out: str | Path) -> None:
    Path(out).write_text(json.dumps(list(entries), indent=2, sort_keys=True) + "\n")
