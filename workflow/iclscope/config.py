"""Configuration, the base layer: the schema (package data), defaults, validation and its errors.

:func:`validate_config` is called by the Snakefile before any job runs and by the CLI.
Every problem is reported with the dotted key that holds it (``models[1].path``) and what
was expected; all problems are reported at once.

This module holds what every config has (the schema, the models, the plan) and imports
nothing of the studies, the tasks or the datasets. Each study's own checks (the cross-key
rules a schema cannot say) live in its settings module, as ``check_config(config, root)``
returning a list of problems: :func:`validate_config` finds them by the study names the
schema knows (:func:`study_checks`), so it names no study itself.
"""

from __future__ import annotations

import copy
import importlib
import json
import string
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import jsonschema
import yaml

from iclscope.embedded import EMBEDDED_SOURCES

REPO_ROOT = Path(__file__).resolve().parents[2]
# the schema ships inside the package (package data); config/schema.yaml is a link to it
SCHEMA_RESOURCE = "schema.yaml"
SCHEMA_PATH = Path(str(resources.files("iclscope").joinpath(SCHEMA_RESOURCE)))
MODEL_SOURCES = ("embedded", "path", "hf_id")
# where a study's settings module (the one with ``check_config``) lives; a study kept
# elsewhere (a plugin package) is entered in SETTINGS_MODULES by its name
SETTINGS_MODULE = "iclscope.studies.{name}.settings"
SETTINGS_MODULES: dict[str, str] = {}
CHECK_FUNCTION = "check_config"

Check = Callable[[dict[str, Any], Path], list[str]]


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid iclscope config ({len(problems)} problem(s)):\n{lines}")


def key_path(parts: Iterator[Any] | list[Any]) -> str:
    """``['models', 1, 'path']`` -> ``models[1].path``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _with_defaults(validator_class: type) -> type:
    """A validator class that fills in ``default`` values while it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def load_schema(path: Path | None = None) -> dict[str, Any]:
    """The config schema: the package's own (``iclscope/schema.yaml``, read as package data)
    unless ``path`` names another file."""
    if path is None:
        return yaml.safe_load(resources.files("iclscope").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8"))
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def resolve_path(path: str, root: Path) -> Path:
    """A config path: absolute as given; relative to ``root`` (the working directory),
    falling back to the repository for the shipped ``data/`` files."""
    p = Path(path)
    if p.is_absolute():
        return p
    if (root / p).exists() or not (REPO_ROOT / p).exists():
        return root / p
    return REPO_ROOT / p


def known_studies(schema: Mapping[str, Any]) -> list[str]:
    """The study names the schema admits in ``studies`` (its enum), in its order."""
    return list(schema["properties"]["studies"]["items"].get("enum", []))


def study_checks(name: str) -> Check:
    """Study ``name``'s own checks: its registry record's ``check_config`` hook when it has
    one (a study registered from outside this package), else ``check_config`` of its
    settings module; a registered study with neither has no checks beyond its schema."""
    from iclscope import registry  # the standard library only: no cycle, no heavy import

    record = registry.STUDIES.get(name)
    if record is not None and record.has(CHECK_FUNCTION):
        return record.hook(CHECK_FUNCTION)
    builtin = any(entry.startswith(f"iclscope.studies.{name}.") for entry in registry.BUILTIN)
    if name in SETTINGS_MODULES or record is None or builtin:
        module = importlib.import_module(SETTINGS_MODULES.get(name, SETTINGS_MODULE.format(name=name)))
        return getattr(module, CHECK_FUNCTION)
    return lambda config, root: []


def validate_config(
    config: Mapping[str, Any], root: Path | None = None, schema_path: Path | None = None
) -> dict[str, Any]:
    """Validate ``config`` and return a copy with every default filled in.

    ``root`` is the directory relative paths are resolved against (default: cwd).
    Every study the schema knows has its section checked (configured or not: a section is
    validated whether or not its study runs); see :func:`study_checks`.
    Raises :class:`ConfigError` listing every problem.
    """
    root = Path.cwd() if root is None else Path(root)
    cfg = copy.deepcopy(dict(config))
    schema = load_schema(schema_path)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    problems = [
        f"config key `{key_path(list(err.absolute_path))}`: {err.message}"
        for err in sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if not problems:  # semantic checks assume the shapes the schema guarantees
        problems += _check_models(cfg["models"], root)
        names = known_studies(schema)
        for name in names + [s for s in cfg["studies"] if s not in names]:
            problems += study_checks(name)(cfg, root)
        problems += _check_devices(cfg["models"])
        problems += _check_plan(cfg["plan"])
    if problems:
        raise ConfigError(problems)
    return cfg


# folders under results/ that are not models: the cross-model stage and the task tables
# folders and files a run writes beside results/{model}/: a model named so would collide
RESERVED_MODEL_NAMES = ("compare", "tasks", "logs", "benchmarks", "bench", "report.html")


def _check_models(models: list[dict[str, Any]], root: Path) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for i, model in enumerate(models):
        key = f"models[{i}]"
        name = model["name"]
        if name in seen:
            problems.append(f"config key `{key}.name`: duplicate model name {name!r} (also models[{seen[name]}])")
        seen.setdefault(name, i)
        if name in RESERVED_MODEL_NAMES:
            problems.append(f"config key `{key}.name`: {name!r} is reserved (results/{name}/ holds "
                            "another stage's outputs); choose another name")
        given = [s for s in MODEL_SOURCES if s in model]
        if len(given) != 1:
            problems.append(
                f"config key `{key}` (model {name!r}): give exactly one of {', '.join(MODEL_SOURCES)}; "
                f"got {given or 'none'}"
            )
            continue
        if "path" in model:
            path = resolve_path(model["path"], root)
            if not path.exists():
                problems.append(f"config key `{key}.path` (model {name!r}): {path} does not exist")
            elif path.is_file() and path.suffix != ".gguf":
                problems.append(f"config key `{key}.path` (model {name!r}): {path} is a file but not a .gguf")
            elif path.is_dir() and not (path / "config.json").exists() and not model.get("gguf_file"):
                problems.append(
                    f"config key `{key}.path` (model {name!r}): {path} has no config.json "
                    "(set gguf_file to load a GGUF inside it)"
                )
            elif path.is_dir() and not model.get("gguf_file"):
                problem = _architecture_problem(path / "config.json")
                if problem:
                    problems.append(f"config key `{key}.path` (model {name!r}): {problem}")
        # embedded models are tested families (iclscope.embedded); hf_id and GGUF models are checked when loaded
    return problems


def _architecture_problem(config_json: Path) -> str | None:
    """Why the extraction engine cannot run the model described by ``config_json``, if so."""
    from iclscope.architectures import supported_architecture

    try:
        model_config = json.loads(config_json.read_text())
    except (OSError, ValueError) as err:
        return f"{config_json} cannot be read as JSON ({err})"
    problem = supported_architecture(model_config)
    return f"unsupported architecture in {config_json}: {problem}" if problem else None


def check_template(template: str, key: str, allowed: set[str], required: set[str]) -> list[str]:
    """Problems with a ``str.format`` template: unknown or missing fields."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        return [f"config key `{key}`: not a valid template ({err})"]
    problems = []
    if fields - allowed:
        problems.append(f"config key `{key}`: unknown field(s) {sorted(fields - allowed)}; allowed {sorted(allowed)}")
    if required - fields:
        problems.append(f"config key `{key}`: must contain {sorted('{' + f + '}' for f in required - fields)}")
    return problems


# context lengths and layer counts of the embedded models (known without loading them)
EMBEDDED_CONTEXT = {name: source.context_length for name, source in EMBEDDED_SOURCES.items()}
EMBEDDED_LAYERS = {name: source.n_layers for name, source in EMBEDDED_SOURCES.items()}




def _model_config_value(model: Mapping[str, Any], root: Path, key: str, embedded: Mapping[str, int]) -> int | None:
    if "embedded" in model:
        return embedded.get(model["embedded"])
    if "path" in model:
        config_json = resolve_path(model["path"], root) / "config.json"
        if config_json.is_file():
            found = json.loads(config_json.read_text())
            # GPT-2 spells these n_positions / n_layer
            value = found.get(key) or found.get(CONFIG_KEY_ALIASES.get(key, key))
            return int(value) if value else None
    return None


CONFIG_KEY_ALIASES = {"max_position_embeddings": "n_positions", "num_hidden_layers": "n_layer"}


def model_context(model: Mapping[str, Any], root: Path) -> int | None:
    """A model's context length where its config tells it without loading weights."""
    return _model_config_value(model, root, "max_position_embeddings", EMBEDDED_CONTEXT)


def model_layers(model: Mapping[str, Any], root: Path) -> int | None:
    """A model's number of decoder layers where its config tells it without loading weights."""
    return _model_config_value(model, root, "num_hidden_layers", EMBEDDED_LAYERS)


def context_problems(cfg: Mapping[str, Any], root: Path, needs: Sequence[tuple[str, int]]) -> list[str]:
    """Prompts certainly longer than a model's context: ``needs`` are ``(config key, tokens)``
    pairs, a lower bound on the tokens the prompts that key sets need (every flip / example
    is at least one token). Refused here, before any job runs; exact lengths are checked at
    extraction time."""
    problems = []
    for model in cfg["models"]:
        context = model_context(model, root)
        if context is None:
            continue
        for key, tokens in needs:
            if tokens > context:
                problems.append(
                    f"config key `{key}`: prompts need more than {tokens} tokens, beyond the "
                    f"{context}-token context of model {model['name']!r}"
                )
    return problems


# set to 1 where the machine that plans the run has no CUDA but its jobs run on one that has
SKIP_DEVICE_CHECK = "ICLSCOPE_SKIP_DEVICE_CHECK"


def _check_plan(plan: Mapping[str, Any]) -> list[str]:
    """``plan.device`` must be one a plan knows (a profile's placeholder left unfilled ends here)."""
    from iclscope.planning.devices import device_names

    if plan["device"] in device_names():
        return []
    return [f"config key `plan.device`: unknown device {plan['device']!r}; known: {', '.join(device_names())} "
            "(the SLURM profile's `config: plan={device: <gpu-type>}` names the GPU its model jobs run on)"]


def _check_devices(models: list[dict[str, Any]]) -> list[str]:
    """``device: cuda`` on a machine without CUDA would fail inside the first model job."""
    import os

    wanted = [(i, m["name"]) for i, m in enumerate(models) if m.get("device") == "cuda"]
    if not wanted or os.environ.get(SKIP_DEVICE_CHECK) == "1":
        return []
    import torch

    if torch.cuda.is_available():
        return []
    return [
        f"config key `models[{i}].device` (model {name!r}): cuda, but this machine has no CUDA device "
        f"(torch {torch.__version__}); use device: auto (cuda where available, else cpu) or cpu, or set "
        f"{SKIP_DEVICE_CHECK}=1 where the jobs run on another machine than the one planning them"
        for i, name in wanted
    ]


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base`` as Snakemake merges ``--configfile``s: mappings
    key by key (recursively), anything else (lists included) replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (not validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"])
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError([f"config file {path} is not valid YAML: {err}"]) from err
    if not isinstance(raw, dict):
        raise ConfigError([f"config file {path}: expected a mapping at the top level"])
    return raw


def load_config(*paths: str | Path, root: Path | None = None) -> dict[str, Any]:
    """Read YAML config files, each merged over the ones before (as Snakemake's
    ``--configfile a.yaml b.yaml``), and validate the result (see :func:`validate_config`)."""
    if not paths:
        raise ConfigError(["no config file given"])
    merged: dict[str, Any] = {}
    for path in paths:
        merged = merge_config(merged, read_config_file(path))
    return validate_config(merged, root=root)


def with_defaults(section: str, value: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the top-level config ``section`` (e.g. ``binary``) with every schema
    default filled in; the schema stays the one place defaults are written.

    Only fills: builders called from Python run their own checks, and
    :func:`validate_config` is where a config is validated.
    """
    subschema = load_schema()["properties"][section]
    filled = copy.deepcopy(dict(value or {}))
    for _ in _with_defaults(jsonschema.Draft202012Validator)(subschema).iter_errors(filled):
        pass  # iterating the validator is what fills the defaults
    return filled


def study_defaults() -> dict[str, Any]:
    """The studies' part of a config that sets none of it: ``seed``, ``studies`` and each of
    those studies' sections, every value the schema's default (the built-in studies')."""
    properties = load_schema()["properties"]
    studies = list(properties["studies"]["default"])
    return {"seed": properties["seed"]["default"], "studies": studies, **{name: with_defaults(name) for name in studies}}


def section_settings(section: str, key: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config[section][key]`` (e.g. ``binary.analysis``) with every default filled in from
    the schema and checked against it: the schema is the one home of defaults and ranges, so
    the study modules hold no copies. Raises :class:`ConfigError` naming each bad key."""
    subschema = load_schema()["properties"][section]["properties"][key]
    filled = copy.deepcopy(dict(value or {}))
    validator = _with_defaults(jsonschema.Draft202012Validator)(subschema)
    problems = [f"config key `{section}.{key}{'.' + key_path(list(err.absolute_path)) if err.absolute_path else ''}`: "
                f"{err.message}" for err in validator.iter_errors(filled)]
    if problems:
        raise ConfigError(problems)
    return filled

