"""Task construction: each study's task builders, dispatched through the registry.

A *task* is one prompt table (the `tasks` contract in :mod:`iclscope.tasks.common`),
named by the ``{task}`` wildcard; the study that owns it (:func:`iclscope.registry.owner`)
names its params, data files and builder (its ``task_params``, ``task_data_files`` and
``build_task`` hooks). The built-in studies' tasks:

=====================  ==================================================================
task                   built by
=====================  ==================================================================
binary_generation      :func:`iclscope.tasks.binary.build_generation`
binary_judgment        :func:`iclscope.tasks.binary.build_judgment`
binary_continuation    :func:`iclscope.tasks.binary.build_continuation`
regression             :func:`iclscope.tasks.representations.regression.build_regression`
reading                :func:`iclscope.tasks.representations.reading.build_reading`
labels_<dataset>       :func:`iclscope.tasks.labels.build_labels`
=====================  ==================================================================

Tables do not depend on the model: adding a model never rebuilds a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from iclscope.tasks.common import TaskError



def task_names(config: Mapping[str, Any]) -> list[str]:
    """All task names a validated config asks for, in a stable order (the studies' order in
    the registry, each study's own order)."""
    return [name for study in _studies(config) for name in study.task_names(config)]


def _studies(config: Mapping[str, Any]) -> list[Any]:
    from iclscope.registry import STUDIES

    return [s for s in STUDIES.values() if s.name in config["studies"]]


def _owner(name: str, config: Mapping[str, Any] | None = None) -> Any:
    from iclscope.registry import owner

    try:
        return owner(name)
    except KeyError:
        known = f"; known: {', '.join(task_names(config))}" if config is not None else ""
        raise TaskError(f"unknown task {name!r}{known}") from None


def task_params(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config keys that determine task ``name`` (and nothing else): they are passed to
    the builder, hashed into the table's provenance, and are the rule's params, so a
    change elsewhere in the config never rebuilds this task."""
    return _owner(name, config).call("task_params", name, config)


def task_data_files(name: str, config: Mapping[str, Any], root: Path) -> list[Path]:
    """Local files a task reads (so that Snakemake rebuilds it when they change)."""
    return _owner(name, config).task_data_files(name, config, root)


def build_task(name: str, params: Mapping[str, Any], root: Path | None = None) -> pa.Table:
    """Build task ``name`` from its :func:`task_params`; ``root`` resolves relative paths."""
    root = Path.cwd() if root is None else root
    return _owner(name).call("build_task", name, params, root)
