"""Loud placeholders for pipeline steps that later issues implement.

They keep the DAG whole so that every rule can be wired, dry-run and run end to end
now. Each one logs a WARNING that starts with ``PLACEHOLDER``, writes zero-row tables in
the final schema, and marks them with ``iclscope.placeholder`` metadata naming what
replaces it. Nothing downstream may read a placeholder table as a result.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import pyarrow as pa

from iclscope import provenance
from iclscope.tables import write_table

log = logging.getLogger(__name__)


def write_placeholder_tables(
    outputs: Mapping[str, pa.Schema], step: str, replaced_by: str, params: Mapping | None = None
) -> None:
    """Write an empty table of each schema to each path and warn loudly."""
    log.warning("PLACEHOLDER: %s is not implemented yet (%s); writing empty tables", step, replaced_by)
    for path, schema in outputs.items():
        meta = provenance.metadata(f"placeholder:{step}", dict(params or {}), extra={"placeholder": replaced_by})
        write_table(schema.empty_table(), path, meta)
        log.warning("PLACEHOLDER: wrote empty %s", path)


def placeholder_figure(path: str | Path, title: str, replaced_by: str) -> None:
    """A figure that says, in large letters, that it is a placeholder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log.warning("PLACEHOLDER: figure %s (%s)", path, replaced_by)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.axis("off")
    ax.text(0.5, 0.6, "PLACEHOLDER", ha="center", va="center", fontsize=28, color="crimson", weight="bold")
    ax.text(0.5, 0.3, f"{title}\narrives with {replaced_by}", ha="center", va="center", fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def is_placeholder(meta: Mapping[str, str]) -> bool:
    """Whether table metadata (see :func:`iclscope.tables.table_metadata`) marks a placeholder."""
    return "placeholder" in meta
