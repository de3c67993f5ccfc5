"""The params of the model jobs: what their results depend on, read from the config.

The rules record these as their ``params`` (a change reruns the job) and the plan
(:mod:`iclscope.planning`) writes them into the tables it sizes. Kept free of heavy
imports: the Snakefile reads it while it builds the DAG.
"""

from __future__ import annotations

from typing import Any, Mapping

# what a forward pass's results depend on: a model's run-time settings (speed-only settings,
# `batch_tokens` and `shards`, are not among them: results do not depend on them)
RUNTIME_KEYS = ("dtype", "device", "device_map", "attn_implementation")


def runtime_params(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run-time settings of a validated ``models[i]`` entry that results depend on."""
    return {k: model_cfg[k] for k in RUNTIME_KEYS}


def extract_params(model_cfg: Mapping[str, Any], task: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The params of a model's extraction of ``task`` (the rule's ``params``): its run-time
    settings, plus what the task's study adds (its ``extract_params`` hook: study B's pooling,
    so changing it reruns only the tasks that pool)."""
    from iclscope.registry import owner

    return {**runtime_params(model_cfg), **owner(task).extract_params(task, config)}


def generate_params(model_cfg: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The params of a model's generation job (the rule's ``params``): its run-time settings
    and the seed, plus what the sampled task's study reads (its ``generate_params`` hook)."""
    from iclscope.registry import owner, sampled_task

    return {"runtime": {**runtime_params(model_cfg), "seed": config["seed"]},
            **owner(sampled_task()).call("generate_params", config)}
