"""Task construction for the three studies.

A *task* is one prompt table (the `tasks` contract in :mod:`iclscope.tasks.common`),
named by the ``{task}`` wildcard:

=====================  ======================================================
task                   built by
=====================  ======================================================
binary_generation      :func:`iclscope.tasks.binary.build_generation`
binary_judgment        :func:`iclscope.tasks.binary.build_judgment`
binary_continuation    :func:`iclscope.tasks.binary.build_continuation`
regression             :func:`iclscope.tasks.representations.build_regression`
reading                :func:`iclscope.tasks.representations.build_reading`
labels_<dataset>       :func:`iclscope.tasks.labels.build_labels`
=====================  ======================================================

Tables do not depend on the model: adding a model never rebuilds a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from iclscope.tasks.common import TaskError

BINARY_TASKS = ("binary_generation", "binary_judgment", "binary_continuation")
REPRESENTATION_TASKS = ("regression", "reading")
LABELS_PREFIX = "labels_"


def task_names(config: Mapping[str, Any]) -> list[str]:
    """All task names a validated config asks for, in a stable order."""
    names: list[str] = []
    if "binary" in config["studies"]:
        names += BINARY_TASKS
    if "representations" in config["studies"]:
        names += REPRESENTATION_TASKS
    if "labels" in config["studies"]:
        names += [LABELS_PREFIX + ds["name"] for ds in config["labels"]["datasets"]]
    return names


def task_params(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config keys that determine task ``name`` (and nothing else): they are passed to
    the builder, hashed into the table's provenance, and are the rule's params, so a
    change elsewhere in the config never rebuilds this task."""
    seed = config["seed"]
    if name in BINARY_TASKS:
        part = name.removeprefix("binary_")
        b = config["binary"]
        return {"seed": seed, "binary": {"symbols": b["symbols"], "separator": b["separator"], part: b[part]}}
    if name in REPRESENTATION_TASKS:
        return {"seed": seed, "representations": {name: config["representations"][name]}}
    if name.startswith(LABELS_PREFIX):
        wanted = name.removeprefix(LABELS_PREFIX)
        for ds in config["labels"]["datasets"]:
            if ds["name"] == wanted:
                # analysis settings are not the task's: changing them must not rebuild it
                rest = {k: v for k, v in config["labels"].items() if k not in ("datasets", "analysis")}
                return {"seed": seed, "dataset": ds, "labels": rest}
        raise TaskError(f"task {name!r}: no dataset named {wanted!r} under labels.datasets")
    raise TaskError(f"unknown task {name!r}; known: {', '.join(task_names(config))}")


def task_data_files(name: str, config: Mapping[str, Any], root: Path) -> list[Path]:
    """Local files a task reads (so that Snakemake rebuilds it when they change)."""
    from iclscope.config import resolve_path

    if name == "reading":
        rc = config["representations"]["reading"]
        return [resolve_path(rc[f"{k}_file"], root) for k in ("names", "activities") if rc[k] is None]
    if name.startswith(LABELS_PREFIX):
        ds = task_params(name, config)["dataset"]
        if ds["source"] == "file":
            return [resolve_path(ds["path"], root)]
    return []


def build_task(name: str, params: Mapping[str, Any], root: Path | None = None) -> pa.Table:
    """Build task ``name`` from its :func:`task_params`; ``root`` resolves relative paths."""
    root = Path.cwd() if root is None else root
    seed = params["seed"]
    if name in BINARY_TASKS:
        from iclscope.tasks import binary

        builder = {
            "binary_generation": binary.build_generation,
            "binary_judgment": binary.build_judgment,
            "binary_continuation": binary.build_continuation,
        }[name]
        return builder(params["binary"], seed)
    if name == "regression":
        from iclscope.tasks.representations import build_regression

        return build_regression(params["representations"], seed)
    if name == "reading":
        from iclscope.tasks.representations import build_reading

        return build_reading(params["representations"], seed, root)
    if name.startswith(LABELS_PREFIX):
        from iclscope.tasks.labels import build_labels

        return build_labels(params["dataset"], params["labels"], seed, root)
    raise TaskError(f"unknown task {name!r}")
