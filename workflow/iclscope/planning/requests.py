"""What a model job asks a scheduler for, from its plan: Snakemake resource functions.

The rules' ``mem_mb``, ``runtime`` and ``gpu`` of the model jobs call :class:`JobRequests`,
so a cluster job asks for what its plan estimates (times ``plan.margin``, times the attempt
number when Snakemake retries it), not a fixed number. Snakemake evaluates resources when
a job is about to be scheduled, once its task table and prepared model exist; before that
(a dry run of a fresh DAG) only a coarse figure from the model's shape is possible:
:data:`COARSE_RUNTIME_MINUTES`, and its weights plus :data:`COARSE_WORK_BYTES` of memory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from iclscope.registry import sampled_task

if TYPE_CHECKING:
    from iclscope.planning.estimate import JobPlan

# a scheduler request never below these: start-up varies on a loaded node, and clusters
# round small requests up anyway
MIN_RUNTIME_MINUTES = 10
MIN_MEM_MB = 1000
# what a dry run shows before a job's inputs exist (never what a scheduler is asked for:
# Snakemake evaluates the resources again when the job is scheduled)
COARSE_RUNTIME_MINUTES = 60
COARSE_WORK_BYTES = 2 * 1024**3


class JobRequests:
    """Plans of a config's model jobs, computed once each, as scheduler requests."""

    def __init__(self, config: Mapping[str, Any], root: Path | None = None, remote: bool = False) -> None:
        """``remote``: evaluated by the Snakemake inside a cluster job, whose requests the
        submitting process already made: memory and time are not planned again there (the
        job step uses neither), and the GPUs are the allocation's (SLURM's environment)."""
        self.config = config
        self.root = Path.cwd() if root is None else Path(root)
        self.remote = remote
        self._plans: dict[tuple[str, str, int, int], JobPlan | None] = {}

    def plan(self, model: str, task: str, shard: int = 1, n_shards: int = 1) -> JobPlan | None:
        """The plan of one model job (``shard`` counts from 1, as in the paths), or None
        while its task table or prepared model does not exist yet."""
        key = (model, task, shard, n_shards)
        if key not in self._plans:
            self._plans[key] = self._compute(*key)
        return self._plans[key]

    def _compute(self, model: str, task: str, shard: int, n_shards: int) -> JobPlan | None:
        from iclscope.planning.devices import find_device
        from iclscope.planning.estimate import Assumptions
        from iclscope.planning.run import plan_model, prepared_dir, task_rows

        cfg = self.config
        table = self.root / cfg["results_dir"] / "tasks" / f"{task}.parquet"
        card = self.root / prepared_dir(cfg, model) / "card.json"
        if not table.is_file() or not card.is_file():
            return None
        model_cfg = next(m for m in cfg["models"] if m["name"] == model)
        device = find_device(cfg["plan"]["device"])
        assume = Assumptions.for_device(device, mfu=cfg["plan"]["mfu"], margin=cfg["plan"]["margin"])
        only = None if task == sampled_task() else (task, shard - 1, n_shards)
        plans = plan_model(model_cfg, cfg, self.root, device, assume, {task: task_rows(task, cfg, self.root)},
                           only=only, sizes=False)
        return plans[0] if plans else None

    def _margin(self, attempt: int) -> float:
        return float(self.config["plan"]["margin"]) * max(1, int(attempt))

    def _weights(self, model: str) -> float:
        """Bytes of a model's weights from its shape alone (0 when no shape is at hand)."""
        from iclscope.errors import ModelError
        from iclscope.planning.run import model_shape, resolved_dtype

        model_cfg = next(m for m in self.config["models"] if m["name"] == model)
        try:
            shape = model_shape(model_cfg, self.config, self.root)
        except ModelError:
            return 0.0
        kind = "cpu" if self.config["plan"]["device"] == "cpu" else "gpu"
        return float(shape.weight_bytes(resolved_dtype(model_cfg, kind)))

    def mem_mb(self, model: str, task: str, shard: int = 1, n_shards: int = 1, attempt: int = 1) -> int:
        """Host memory (MB) for the job: its planned peak resident memory."""
        plan = None if self.remote else self.plan(model, task, shard, n_shards)
        planned = plan.host_bytes if plan is not None else self._weights(model) + COARSE_WORK_BYTES
        return max(MIN_MEM_MB, math.ceil(planned * self._margin(attempt) / 1e6))

    def runtime(self, model: str, task: str, shard: int = 1, n_shards: int = 1, attempt: int = 1) -> int:
        """Wall-time limit (minutes) for the job."""
        plan = None if self.remote else self.plan(model, task, shard, n_shards)
        if plan is None:
            return COARSE_RUNTIME_MINUTES * max(1, int(attempt))
        return max(MIN_RUNTIME_MINUTES, math.ceil(plan.seconds * self._margin(attempt) / 60))

    def gpus(self, model: str, task: str, shard: int = 1, n_shards: int = 1) -> int:
        """GPUs the job needs: one, or as many as its planned device memory fills when the
        plan's device is a GPU (the model must then be dispatched with ``device_map``)."""
        if self.remote and os.environ.get("SLURM_GPUS_ON_NODE", "").isdigit():
            return int(os.environ["SLURM_GPUS_ON_NODE"])
        plan = self.plan(model, task, shard, n_shards)
        return 1 if plan is None else plan.gpus
