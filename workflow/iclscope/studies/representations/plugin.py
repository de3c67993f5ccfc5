"""Study B's registration: what the rest of iclscope asks of the study (iclscope.registry).

Light on purpose: the Snakefile imports it while it builds the DAG, so every heavy function
is named as a ``"module:function"`` hook and imported only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from iclscope.registry import EXTRACT_TABLES, SizePanel, Study

NAME = "representations"
TASKS = ("regression", "reading")

GUIDE = (
    "Linear-regression and reading-comprehension prompts before (k = 0) and after (k > 0) "
    "in-context examples. Similarity matrices and their alignment with hypothesis matrices "
    "(RSA) show whether hidden states organise by the task's structure; probes show whether "
    "a task parameter is linearly decodable (compare with the shuffled control); the "
    "attention ratio shows whether the answer position attends to the relevant sentence "
    "more than to the distractor; the last figure relates these changes to the change in error."
)


def task_params(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return {"seed": config["seed"], NAME: {name: config[NAME][name]}}


def task_data_files(name: str, config: Mapping[str, Any], root: Path) -> list[Path]:
    if name != "reading":
        return []
    from iclscope.config import resolve_path

    rc = config[NAME]["reading"]
    return [resolve_path(rc[f"{k}_file"], root) for k in ("names", "activities") if rc[k] is None]


def build_task(name: str, params: Mapping[str, Any], root: Path) -> Any:
    from iclscope.tasks import representations

    if name == "regression":
        return representations.build_regression(params[NAME], params["seed"])
    return representations.build_reading(params[NAME], params["seed"], root)


def plan(task: str, row: Mapping[str, Any]) -> Any:
    from iclscope.extraction.plan import representation_plan

    return representation_plan(row)


def extract_params(task: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The pooling: changing it reruns only this study's extraction."""
    return {"pooling": config[NAME]["pooling"]}


def inputs(config: Mapping[str, Any], dataset: str | None) -> dict[str, str]:
    named = {}
    for task in ("regression", "reading"):
        named[f"{task}_tasks"] = f"tasks/{task}.parquet"
        for t in EXTRACT_TABLES:
            named[f"{task}_{t}"] = f"{{model}}/extract/{task}/{t}.parquet"
    return named


def headlines(root: Path, context: Mapping[str, Any]) -> list[Any]:
    from iclscope.studies.representations.headlines import representation_headlines

    return representation_headlines(root)


STUDY = Study(
    NAME, "Study B: representations before and after ICL",
    ("behaviour", "behaviour_summary", "rsa", "similarity", "probes", "attention_ratio",
     "repr_vs_behaviour", "effects"),
    ("rsa_matrices.png", "alignment.png", "probes.png", "attention_ratio.png", "behaviour.png", "effects.png"),
    key_tables=("behaviour_summary", "effects", "probes", "attention_ratio"),
    citation="Yousefi et al., 2024",
    guide=GUIDE,
    tasks=TASKS,
    compare_figures=("depth_profiles.png",),
    size_panels=(SizePanel("gain_correct", "change in accuracy after ICL"),
                 SizePanel("gain_expected_error", "change in expected error after ICL")),
    size_rank=3,
    hooks={
        "task_params": f"{__name__}:task_params",
        "task_data_files": f"{__name__}:task_data_files",
        "build_task": f"{__name__}:build_task",
        "plan": f"{__name__}:plan",
        "extract_params": f"{__name__}:extract_params",
        "inputs": f"{__name__}:inputs",
        "analyse": "iclscope.studies.representations.analyse:analyse",
        "plot": "iclscope.studies.representations.figures:plot",
        "headlines": f"{__name__}:headlines",
        "compare": "iclscope.studies.representations.compare:compare",
    },
)
