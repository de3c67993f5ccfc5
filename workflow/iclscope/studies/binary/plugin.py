"""Study A's registration: what the rest of iclscope asks of the study (iclscope.registry).

Light on purpose: the Snakefile imports it while it builds the DAG, so every heavy function
is named as a ``"module:function"`` hook and imported only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from iclscope.registry import SizePanel, Study

NAME = "binary"
TASKS = ("binary_generation", "binary_judgment", "binary_continuation")
# the one task a model samples instead of extracting (`iclscope generate`)
GENERATION_TASK = "binary_generation"

GUIDE = (
    "The model writes, judges and continues coin-flip sequences. Generation: compare the "
    "model's metrics with the fitted baselines; a model that alternates too much or avoids long "
    "runs sits apart from Bernoulli. Judgment: p(random) for formal concepts should fall from "
    "about 1 to about 0 within a few repetitions while random controls stay high. Continuation: "
    "P(the next d flips continue the concept) against the context length |x|; a sharp S-curve "
    "with an early transition |x|* looks like Bayesian model selection, a slow climb like "
    "averaging."
)


def task_params(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    part = name.removeprefix("binary_")
    b = config[NAME]
    return {"seed": config["seed"], NAME: {"symbols": b["symbols"], "separator": b["separator"], part: b[part]}}


def build_task(name: str, params: Mapping[str, Any], root: Path) -> Any:
    from iclscope.tasks import binary

    builder = {
        "binary_generation": binary.build_generation,
        "binary_judgment": binary.build_judgment,
        "binary_continuation": binary.build_continuation,
    }[name]
    return builder(params[NAME], params["seed"])


def plan(task: str, row: Mapping[str, Any]) -> Any:
    from iclscope.extraction import plan as plans

    if task == "binary_judgment":
        return plans.judgment_plan(row)
    if task == "binary_continuation":
        return plans.continuation_plan(row)
    raise ValueError(f"task {task!r} has no extraction plan ({GENERATION_TASK} is sampled by `iclscope generate`)")


def generate_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the generation job reads of the config beside the model's run-time settings."""
    b = config[NAME]
    return {"generation": b["generation"], "symbols": b["symbols"], "separator": b["separator"]}


def inputs(config: Mapping[str, Any], dataset: str | None) -> dict[str, str]:
    return {
        "judgment_tasks": "tasks/binary_judgment.parquet",
        "continuation_tasks": "tasks/binary_continuation.parquet",
        "generations": f"{{model}}/extract/{GENERATION_TASK}/generations.parquet",
        "judgment_readouts": "{model}/extract/binary_judgment/readouts.parquet",
        "continuation_readouts": "{model}/extract/binary_continuation/readouts.parquet",
    }


def headlines(root: Path, context: Mapping[str, Any]) -> list[Any]:
    from iclscope.studies.binary.headlines import binary_headlines

    return binary_headlines(root, context["seed"], context["n_boot"], context["level"])


STUDY = Study(
    NAME, "Study A: binary-sequence dynamics",
    ("generation_metrics", "baselines", "generation_steps", "judgment", "judgment_summary", "continuation",
     "model_selection"),
    ("generation.png", "generation_steps.png", "judgment.png", "continuation.png"),
    key_tables=("baselines", "judgment_summary", "model_selection"),
    citation="Bigelow et al., 2024",
    guide=GUIDE,
    tasks=TASKS,
    sampled_tasks=(GENERATION_TASK,),
    compare_figures=("judgment_curves.png",),
    # one flip of continuation, and judgment: the comparable units
    size_panels=(SizePanel("transition", "transition point |x|* (flips)", units=("*d=1", "judgment*")),),
    size_rank=2,
    hooks={
        "task_params": f"{__name__}:task_params",
        "build_task": f"{__name__}:build_task",
        "plan": f"{__name__}:plan",
        "generate_params": f"{__name__}:generate_params",
        "inputs": f"{__name__}:inputs",
        "analyse": "iclscope.studies.binary.analyse:analyse",
        "plot": "iclscope.studies.binary.figures:plot",
        "headlines": f"{__name__}:headlines",
        "compare": "iclscope.studies.binary.compare:compare",
    },
)
