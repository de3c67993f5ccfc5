"""Provenance metadata carried by every table the pipeline writes.

All values are strings (Parquet key-value metadata). Nothing time-dependent goes in,
so two runs of the same config on the same machine write byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

from iclscope import __version__

PREFIX = "iclscope."
# model card fields recorded with every table written from a model (key ``model_card``):
# what a fair comparison between models must state (see iclscope.models.model_card)
CARD_PROVENANCE = (
    "family", "architecture", "model_type", "n_parameters", "n_parameters_without_embedding", "n_layers",
    "hidden_size", "instruct", "has_chat_template", "gguf_quantization", "context_length", "sliding_window",
    "n_sliding_layers", "dtype",
)


def card_summary(model: Mapping[str, Any]) -> str:
    """The :data:`CARD_PROVENANCE` fields of a model card as canonical JSON (fields the card
    lacks are left out). A ``model`` read back from a table's provenance (which carries
    ``model_card`` already) passes it on unchanged."""
    if isinstance(model.get("model_card"), str):
        return model["model_card"]
    return canonical_json({k: model[k] for k in CARD_PROVENANCE if k in model})


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in blocks (data files, GGUF files, tables)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(params: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the config keys that produced a table."""
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()


def git_commit(repo: Path | None = None) -> str:
    """The current commit of the source tree (with ``-dirty``), or ``unknown``."""
    where = repo or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape results (imported lazily, only if present)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "numpy", "pandas", "pyarrow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


class _WarningCollector(logging.Handler):
    """Keeps the scientific warnings a step logs (e.g. a p(Tails) with no usable sequence),
    so the tables it writes afterwards carry them and the findings and report show them."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


_collector: _WarningCollector | None = None


@contextmanager
def collecting_warnings() -> Iterator[list[str]]:
    """While active, warnings logged under ``iclscope`` are recorded (as ``warnings``) in the
    metadata of every table written afterwards in this process (the CLI runs each step in it)."""
    global _collector
    handler = _WarningCollector()
    logger = logging.getLogger("iclscope")
    previous, _collector = _collector, handler
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        _collector = previous


def metadata(
    kind: str,
    params: Mapping[str, Any],
    seed: int | None = None,
    model: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """File-level metadata for a table.

    ``kind`` names the table's contract (``tasks``, ``embeddings`` ...), ``params`` are the
    config keys that produced it (hashed, and stored in full), ``model`` is a model card
    (its ``name`` and ``weights_sha256`` are recorded, and the comparison fields of
    :data:`CARD_PROVENANCE` as ``model_card``), ``extra`` holds anything else.
    """
    meta: dict[str, Any] = {
        "kind": kind,
        "version": __version__,
        "config_hash": config_hash(params),
        "params": canonical_json(params),
        "seed": "" if seed is None else str(seed),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": git_commit(),
        "libraries": canonical_json(library_versions()),
    }
    if model is not None:
        meta["model"] = str(model.get("name", ""))
        meta["weights_sha256"] = str(model.get("weights_sha256", ""))
        summary = card_summary(model)
        if summary != "{}":  # a bare {name, weights_sha256} (tables.recorded_model) has none
            meta["model_card"] = summary
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else canonical_json(value)
    if _collector is not None and _collector.messages:
        meta["warnings"] = canonical_json(list(_collector.messages))
    return {PREFIX + k: str(v) for k, v in meta.items()}


def read_metadata(schema_metadata: Mapping[bytes, bytes] | None) -> dict[str, str]:
    """The iclscope entries of a Parquet schema's metadata, without the prefix."""
    out = {}
    for k, v in (schema_metadata or {}).items():
        key = k.decode()
        if key.startswith(PREFIX):
            out[key[len(PREFIX):]] = v.decode()
    return out
