"""The toy study's registration: its record and its light hooks (iclscope.registry).

Registered by the entry point ``toy = "toy_study.plugin:STUDY"`` in the group
``iclscope.studies`` (pyproject.toml); the config then names it: ``studies: [toy]``.
"""

from __future__ import annotations

from typing import Any, Mapping

from iclscope.registry import SizePanel, Study

NAME = "toy"
TASK = "toy_parity"


def schema() -> dict[str, Any]:
    """The config section ``toy`` (config/schema.yaml does not know it)."""
    return {
        "type": "object", "additionalProperties": False, "default": {},
        "properties": {
            "numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                        "default": [1, 2, 3, 4, 5, 6]},
            "analysis": {"type": "object", "additionalProperties": False, "default": {},
                         "properties": {"threshold": {"type": "number", "default": 0.5}}},
        },
    }


def task_params(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    # only what builds the task: changing the analysis settings must not rebuild it
    return {"seed": config["seed"], NAME: {"numbers": config[NAME]["numbers"]}}


def inputs(config: Mapping[str, Any], dataset: str | None) -> dict[str, str]:
    return {"tasks": f"tasks/{TASK}.parquet", "readouts": f"{{model}}/extract/{TASK}/readouts.parquet"}


STUDY = Study(
    NAME, "Toy study: parity",
    tables=("scores",),
    figures=("parity.png",),
    key_tables=("scores",),
    guide="p(yes) for 'is N even?' against N; even numbers should sit high.",
    tasks=(TASK,),
    compare_figures=("toy_parity.png",),  # results/compare/figures/, with two or more models
    size_panels=(SizePanel("accuracy", "share of parities right"),),  # in the size figure
    hooks={
        "schema": f"{__name__}:schema",
        "task_params": f"{__name__}:task_params",
        "build_task": "toy_study.run:build_task",
        "plan": "toy_study.run:plan",
        "inputs": f"{__name__}:inputs",
        "analyse": "toy_study.run:analyse",
        "plot": "toy_study.run:plot",
        "headlines": "toy_study.run:headlines",
        "compare": "toy_study.run:compare",
    },
)
