"""Study C's registration: what the rest of iclscope asks of the study (iclscope.registry).

Light on purpose: the Snakefile imports it while it builds the DAG, so every heavy function
is named as a ``"module:function"`` hook and imported only when called. One task, one
analysis and one figure set per dataset (``labels.datasets``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from iclscope.registry import SizePanel, Study

NAME = "labels"
PREFIX = "labels_"  # task labels_<dataset>

GUIDE = (
    "In-context labels are kept, randomised, flipped, replaced by arbitrary words or flipped "
    "halfway. Each curve is the prediction for example i from examples 1..i-1, averaged over "
    "repeats. A model that learns the label relationship tracks the in-context labels "
    "(flipped: agreement with the true labels falls); one that ignores them keeps predicting "
    "the true labels. After a flip halfway, following the most recent mapping shows as a "
    "switch after the dashed line."
)


def datasets(config: Mapping[str, Any]) -> list[str]:
    return [ds["name"] for ds in config[NAME]["datasets"]]


def task_names(config: Mapping[str, Any]) -> list[str]:
    return [PREFIX + name for name in datasets(config)]


def task_params(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    from iclscope.tasks.common import TaskError

    wanted = name.removeprefix(PREFIX)
    for ds in config[NAME]["datasets"]:
        if ds["name"] == wanted:
            # analysis settings are not the task's: changing them must not rebuild it
            rest = {k: v for k, v in config[NAME].items() if k not in ("datasets", "analysis")}
            return {"seed": config["seed"], "dataset": ds, NAME: rest}
    raise TaskError(f"task {name!r}: no dataset named {wanted!r} under labels.datasets")


def task_data_files(name: str, config: Mapping[str, Any], root: Path) -> list[Path]:
    from iclscope.config import resolve_path

    ds = task_params(name, config)["dataset"]
    return [resolve_path(ds["path"], root)] if ds["source"] == "file" else []


def build_task(name: str, params: Mapping[str, Any], root: Path) -> Any:
    from iclscope.tasks.labels import build_labels

    return build_labels(params["dataset"], params[NAME], params["seed"], root)


def plan(task: str, row: Mapping[str, Any]) -> Any:
    from iclscope.extraction.plan import labels_plan

    return labels_plan(row)


def inputs(config: Mapping[str, Any], dataset: str | None) -> dict[str, str]:
    return {
        "tasks": f"tasks/{PREFIX}{dataset}.parquet",
        "readouts": f"{{model}}/extract/{PREFIX}{dataset}/readouts.parquet",
    }


def spec(config: Mapping[str, Any], dataset: str | None) -> dict[str, Any]:
    """The labels section (without the dataset list) and the dataset."""
    labels = {k: v for k, v in config[NAME].items() if k != "datasets"}
    return {"seed": config["seed"], "dataset": dataset, NAME: labels}


def headlines(root: Path, context: Mapping[str, Any]) -> list[Any]:
    from iclscope.studies.labels.headlines import label_headlines

    return label_headlines(root, context["datasets"], context["seed"], context["n_boot"], context["level"])


STUDY = Study(
    NAME, "Study C: label relationships",
    ("positions", "curves", "summary"),
    ("curves.png", "halfway.png", "calibrated.png"),
    per_dataset=True,
    key_tables=("summary",),
    citation="Kossen, Gal, Rainforth, 2024",
    guide=GUIDE,
    task_prefix=PREFIX,
    plot_tables=("curves",),
    compare_figures=("label_curves.png",),
    size_panels=(SizePanel("default - random", "true-label log-lik. difference (nats)"),
                 SizePanel("default - flipped", "true-label log-lik. difference (nats)"),
                 SizePanel("follows_flipped_late", "share following flipped labels")),
    size_rank=1,
    hooks={
        "datasets": f"{__name__}:datasets",
        "task_names": f"{__name__}:task_names",
        "task_params": f"{__name__}:task_params",
        "task_data_files": f"{__name__}:task_data_files",
        "build_task": f"{__name__}:build_task",
        "plan": f"{__name__}:plan",
        "inputs": f"{__name__}:inputs",
        "spec": f"{__name__}:spec",
        "analyse": "iclscope.studies.labels.analyse:analyse",
        "plot": "iclscope.studies.labels.figures:plot",
        "headlines": f"{__name__}:headlines",
        "compare": "iclscope.studies.labels.compare:compare",
    },
)
