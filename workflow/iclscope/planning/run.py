"""A whole run's plan from its config: every model job, before anything runs.

For each configured model the plan needs its shape (the prepared folder's ``config.json``,
a ``path:`` model's, or the shipped shape of an embedded model: no weights), a tokenizer
(the model's own where it is on disk, else the embedded SmolLM2 tokenizer as a stand-in,
noted) and the task tables (read from ``results/tasks/`` when they are current, else built
in memory; nothing is written).
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from iclscope.errors import ModelError
from iclscope.extraction.params import extract_params, generate_params
from iclscope.planning.devices import Device, find_device
from iclscope.planning.estimate import Assumptions, JobPlan, plan_extract, plan_generate
from iclscope.planning.shape import ModelShape, load_shape, reference_shapes
from iclscope.registry import sampled_task

log = logging.getLogger(__name__)

STAND_IN_TOKENIZER = "smollm2-135m-instruct"


@dataclass
class PlannedModel:
    """What a plan knows of one model without loading its weights."""

    name: str
    shape: ModelShape
    tokenizer: Any
    card: dict[str, Any]
    notes: list[str]


def prepared_dir(config: Mapping[str, Any], name: str) -> Path:
    return Path(config["resources_dir"]) / "models" / name


@lru_cache(maxsize=4)
def _tokenizer(where: str) -> Any:
    from transformers import AutoTokenizer

    if where.startswith("embedded:"):
        from iclscope.models import embedded_tokenizer

        return embedded_tokenizer(where.removeprefix("embedded:"))
    return AutoTokenizer.from_pretrained(where)


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model"))


def model_shape(model_cfg: Mapping[str, Any], config: Mapping[str, Any], root: Path,
                shape: str | None = None) -> ModelShape:
    """A configured model's shape: ``shape`` (a reference shape or ``config.json``) if
    given, else the prepared folder's, a ``path:`` model's or an embedded model's shipped
    one; no weights are read."""
    from iclscope.config import resolve_path

    name = model_cfg["name"]
    prepared = root / prepared_dir(config, name)
    path = resolve_path(model_cfg["path"], root) if "path" in model_cfg else None
    if shape is not None:
        return load_shape(shape, name)
    if (prepared / "config.json").is_file():
        return load_shape(prepared, name)
    if path is not None and path.is_dir() and (path / "config.json").is_file():
        return load_shape(path, name)
    if model_cfg.get("embedded") in reference_shapes():
        return load_shape(model_cfg["embedded"], name)
    raise ModelError(f"model {name!r}: no config.json to plan from (prepare it first: snakemake "
                     f"{prepared / 'card.json'}; or plan its shape with --model CONFIG_JSON)")


def planned_model(model_cfg: Mapping[str, Any], config: Mapping[str, Any], root: Path,
                  shape: str | None = None) -> PlannedModel:
    """Shape, tokenizer and card of a configured model (``shape``: a reference shape name
    or ``config.json`` overriding where the shape comes from)."""
    from iclscope.config import resolve_path

    name = model_cfg["name"]
    notes: list[str] = []
    prepared = root / prepared_dir(config, name)
    path = resolve_path(model_cfg["path"], root) if "path" in model_cfg else None
    shape_of = model_shape(model_cfg, config, root, shape)
    if _has_tokenizer(prepared):
        tokenizer = _tokenizer(str(prepared))
    elif path is not None and _has_tokenizer(path):
        tokenizer = _tokenizer(str(path))
    elif model_cfg.get("embedded") == STAND_IN_TOKENIZER:
        tokenizer = _tokenizer(f"embedded:{STAND_IN_TOKENIZER}")
    else:
        tokenizer = _tokenizer(f"embedded:{STAND_IN_TOKENIZER}")
        notes.append(f"tokens counted with the {STAND_IN_TOKENIZER} tokenizer as a stand-in "
                     "(the model's own is not on disk)")
    card_path = prepared / "card.json"
    if card_path.is_file() and shape is None:
        card = json.loads(card_path.read_text())
    else:
        card = {"name": name, "weights_sha256": "0" * 64, "model_type": shape_of.model_type,
                "n_layers": shape_of.n_layers, "hidden_size": shape_of.hidden,
                "n_parameters": shape_of.n_params, "context_length": shape_of.context_length}
    return PlannedModel(name, shape_of, tokenizer, card, notes)


def task_rows(task: str, config: Mapping[str, Any], root: Path) -> list[dict[str, Any]]:
    """A task's rows: its table under ``results/tasks/`` when it was built from the same
    config keys, else built in memory."""
    from iclscope import provenance
    from iclscope.tables import read_table, table_metadata
    from iclscope.tasks import build_task, task_params

    params = task_params(task, config)
    path = root / config["results_dir"] / "tasks" / f"{task}.parquet"
    if path.is_file() and table_metadata(path).get("config_hash") == provenance.config_hash(params):
        return read_table(path).to_pylist()
    log.info("building task %s in memory (results/tasks/ has no current table)", task)
    return build_task(task, params, root).to_pylist()


def _command(step: str, model_dir: str, tasks: str, params: Mapping[str, Any], batch_tokens: int,
             outs: Sequence[str]) -> str:
    from iclscope.provenance import canonical_json

    return shlex.join(["__main__.py", step, "--model-dir", model_dir, "--tasks", tasks, "--params",
                       canonical_json(params), "--batch-tokens", str(batch_tokens), "--out", *outs])


def resolved_dtype(model_cfg: Mapping[str, Any], kind: str) -> str:
    """The dtype a model runs in on a device of ``kind`` (``auto``: bfloat16 on a GPU,
    float32 on a CPU, as :func:`iclscope.models.resolve_dtype`)."""
    dtype = model_cfg.get("dtype", "auto")
    if dtype == "auto":
        return "bfloat16" if kind == "gpu" else "float32"
    return dtype


def plan_model(model_cfg: Mapping[str, Any], config: Mapping[str, Any], root: Path, device: Device,
               assume: Assumptions, tasks: Mapping[str, list[dict[str, Any]]], shape: str | None = None,
               only: tuple[str, int, int] | None = None, sizes: bool = True) -> list[JobPlan]:
    """Every model job of one model (``only``: just the extraction ``(task, shard, n_shards)``;
    ``sizes=False``: without the tables' bytes)."""
    model = planned_model(model_cfg, config, root, shape)
    dtype = resolved_dtype(model_cfg, device.kind)
    results, name = config["results_dir"], model.name
    model_dir = str(prepared_dir(config, name))
    n_shards = int(model_cfg.get("shards", 1))
    budget = int(model_cfg.get("batch_tokens", 4096))
    plans = []
    for task, rows in tasks.items():
        if task == sampled_task():
            if only is not None:
                continue
            params = generate_params(model_cfg, config)
            command = _command("generate", model_dir, f"{results}/tasks/{task}.parquet", params, budget,
                               [f"{results}/{name}/extract/{task}/generations.parquet"])
            plans.append(plan_generate(model.shape, model.tokenizer, rows, model=name, task=task, device=device,
                                       dtype=dtype, batch_tokens=budget, generation=params["generation"],
                                       assume=assume, card=model.card, params=params, command=command,
                                       sizes=sizes))
            continue
        params = extract_params(model_cfg, task, config)
        outs = [f"{results}/{name}/extract/{task}/{t}.parquet" for t in ("embeddings", "attention", "readouts")]
        command = _command("extract", model_dir, f"{results}/tasks/{task}.parquet", params, budget, outs)
        recorded = {**params, "batch_tokens": budget}
        if only is not None and only[0] != task:
            continue
        shards, of = ([only[1]], only[2]) if only is not None else (range(n_shards), n_shards)
        for shard in shards:
            plans.append(plan_extract(
                model.shape, model.tokenizer, rows, model=name, task=task, device=device, dtype=dtype,
                batch_tokens=budget, poolings=params.get("pooling", ["max", "mean", "last"]), assume=assume,
                card=model.card, params=recorded, command=command, shard=shard, n_shards=of, sizes=sizes))
    for plan in plans:
        plan.notes += model.notes
    return plans


def plan_config(config: Mapping[str, Any], root: Path, device: str | None = None,
                mfu: float | None = None) -> list[JobPlan]:
    """Every model job of a validated config on ``device`` (default: the config's
    ``plan.device``)."""
    return _plan_models(config, root, config["models"], device, mfu)


def plan_shapes(config: Mapping[str, Any], root: Path, shapes: Sequence[str], device: str | None = None,
                mfu: float | None = None, overrides: Mapping[str, Any] | None = None) -> list[JobPlan]:
    """Plan models that need not be configured or on disk: each of ``shapes`` (a reference
    shape or a ``config.json``) runs with the first configured model's settings, updated
    with ``overrides`` (``dtype``, ``batch_tokens``, ``shards``), on the config's tasks."""
    base = {k: v for k, v in config["models"][0].items() if k not in ("name", "embedded", "path", "hf_id")}
    base.update({k: v for k, v in (overrides or {}).items() if v is not None})
    models = []
    for spec in shapes:
        name = Path(spec).parent.name if Path(spec).name == "config.json" else Path(spec).stem
        models.append({**base, "name": name, "_shape": spec})
    return _plan_models(config, root, models, device, mfu)


def _plan_models(config: Mapping[str, Any], root: Path, models: Sequence[Mapping[str, Any]], device: str | None,
                 mfu: float | None) -> list[JobPlan]:
    from iclscope.tasks import task_names

    target = find_device(device or config["plan"]["device"])
    assume = Assumptions.for_device(target, mfu=mfu or config["plan"]["mfu"])
    tasks = {task: task_rows(task, config, root) for task in task_names(config)}
    plans: list[JobPlan] = []
    for model_cfg in models:
        plans += plan_model(model_cfg, config, root, target, assume, tasks, shape=model_cfg.get("_shape"))
    return plans
