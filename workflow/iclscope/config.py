"""Configuration: JSON-Schema validation with defaults, plus the checks a schema cannot say.

:func:`validate_config` is called by the Snakefile before any job runs and by the CLI.
Every problem is reported with the dotted key that holds it (``models[1].path``) and what
was expected; all problems are reported at once.
"""

from __future__ import annotations

import copy
import json
import string
from pathlib import Path
from typing import Any, Iterator, Mapping

import jsonschema
import yaml

from iclscope.embedded import EMBEDDED_SOURCES

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
MODEL_SOURCES = ("embedded", "path", "hf_id")


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


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
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


def validate_config(
    config: Mapping[str, Any], root: Path | None = None, schema_path: Path = SCHEMA_PATH
) -> dict[str, Any]:
    """Validate ``config`` and return a copy with every default filled in.

    ``root`` is the directory relative paths are resolved against (default: cwd).
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
        problems += _check_binary(cfg["binary"])
        problems += _check_representations(cfg["representations"], root)
        problems += _check_labels(cfg["labels"], root)
        problems += _check_context(cfg, root)
        problems += _check_data(cfg, root)
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


def _check_template(template: str, key: str, allowed: set[str], required: set[str]) -> list[str]:
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


def _check_binary(cfg: dict[str, Any]) -> list[str]:
    problems = []
    heads, tails = cfg["symbols"]
    if heads == tails:
        problems.append(f"config key `binary.symbols`: the two symbols must differ (both {heads!r})")
    if cfg["separator"].strip() and any(cfg["separator"].strip() in s for s in cfg["symbols"]):
        problems.append("config key `binary.symbols`: a symbol contains the separator")
    coin = {"heads", "tails", "p_heads", "p_tails"}
    problems += _check_template(cfg["generation"]["prompt"], "binary.generation.prompt", coin, set())
    if cfg["generation"]["system"] is not None:
        problems += _check_template(cfg["generation"]["system"], "binary.generation.system", coin, set())
    for part in ("judgment", "continuation"):
        problems += _check_template(cfg[part]["prompt"], f"binary.{part}.prompt", {"flips"}, {"flips"})
    from iclscope.tasks.binary import rotation_duplicates  # here: tasks.binary imports this module

    # continuation curves are averaged over phase rotations: rotations of one concept are one concept;
    # a judgment concept's account is fitted by its period (011 and 101 are one hypothesis), and
    # the concepts' mean p(random) drop would count such a concept twice
    for part, why in (("continuation", "one concept once averaged over rotations"),
                      ("judgment", "one hypothesis of the model-selection accounts, counted twice in the "
                                   "concepts' mean")):
        for a, b in rotation_duplicates(cfg[part]["concepts"]):
            problems.append(f"config key `binary.{part}.concepts`: {a!r} and {b!r} are phase rotations "
                            f"of each other ({why}); keep one")
    for part in ("judgment", "continuation"):
        for k, template in enumerate(cfg[part].get("prompt_variants", [])):
            problems += _check_template(template, f"binary.{part}.prompt_variants[{k}]", {"flips"}, {"flips"})
    separator = cfg["separator"].strip()
    for k, pair in enumerate(cfg.get("replicates", {}).get("symbols", [])):
        if pair[0] == pair[1]:
            problems.append(f"config key `binary.replicates.symbols[{k}]`: the two symbols must differ "
                            f"(both {pair[0]!r})")
        if separator and any(separator in s for s in pair):
            problems.append(f"config key `binary.replicates.symbols[{k}]`: a symbol contains the separator")
    if not cfg["judgment"]["concepts"] and cfg["judgment"]["n_random"] == 0:
        problems.append("config key `binary.judgment`: no concepts and n_random = 0 leave nothing to judge")
    return problems


def _check_representations(cfg: dict[str, Any], root: Path) -> list[str]:
    problems = []
    reg = cfg["regression"]
    n_x = reg["x_max"] - reg["x_min"] + 1
    if n_x < max(reg["n_shots"]) + 1:
        problems.append(
            f"config key `representations.regression`: x_min..x_max holds {n_x} integers, "
            f"too few for {max(reg['n_shots'])} distinct examples plus a query"
        )
    n_conditions = len(set(reg["slopes"])) * len(set(reg["intercepts"]))
    if n_conditions < 3:
        problems.append(f"config key `representations.regression`: {n_conditions} conditions; RSA needs at least 3")
    problems += _check_template(reg["example_template"], "representations.regression.example_template", {"x", "y"}, {"x", "y"})
    problems += _check_template(reg["query_template"], "representations.regression.query_template", {"x"}, {"x"})
    rc = cfg["reading"]
    for item, count in (("names", "n_names"), ("activities", "n_activities")):
        if rc[item] is None:
            path = resolve_path(rc[f"{item}_file"], root)
            if not path.is_file():
                problems.append(f"config key `representations.reading.{item}_file`: {path} does not exist")
        elif len(rc[item]) < rc[count]:
            problems.append(
                f"config key `representations.reading.{item}`: {len(rc[item])} given, {count} = {rc[count]}"
            )
    rt = "representations.reading"
    if rc["n_variants"] % 2:
        problems.append(f"config key `{rt}.n_variants`: {rc['n_variants']} is odd; it must be even so that the "
                        "relevant sentence comes first in exactly half of each condition's prompts")
    if max(rc["n_shots"]) > 0 and min(rc["n_names"], rc["n_activities"]) < 4:
        problems.append(f"config key `{rt}.n_names`/`n_activities`: solved examples (n_shots > 0) need at least 4 "
                        "names and 4 activities, since an example shares no name or activity with the query's story")
    elif max(rc["n_shots"]) > (rc["n_names"] - 2) * (rc["n_activities"] - 2):
        problems.append(f"config key `{rt}.n_shots`: {max(rc['n_shots'])} examples exceed (n_names - 2) * "
                        f"(n_activities - 2) = {(rc['n_names'] - 2) * (rc['n_activities'] - 2)} conditions "
                        "sharing no name or activity with the query's story")
    problems += _check_template(rc["sentence_template"], f"{rt}.sentence_template", {"name", "activity"}, {"name", "activity"})
    problems += _check_template(rc["question_template"], f"{rt}.question_template", {"name"}, {"name"})
    problems += _check_template(rc["prompt_template"], f"{rt}.prompt_template", {"story", "question"}, {"story", "question"})
    problems += _check_representation_analysis(cfg)
    return problems


# condition fields and pooled spans of study B's tasks (see iclscope.tasks.representations)
def _representation_names() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Study B's condition fields and poolable spans per task, as the task builders name them
    (imported here, not copied: the builders are their one source)."""
    from iclscope.tasks.representations import CONDITION_FIELDS, TASK_SPANS

    fields = {task: set(names) for task, names in CONDITION_FIELDS.items()}
    spans = {task: {"end", *names} for task, names in TASK_SPANS.items()}  # end: the prompt's last token
    return fields, spans
# context lengths and layer counts of the embedded models (known without loading them)
EMBEDDED_CONTEXT = {name: source.context_length for name, source in EMBEDDED_SOURCES.items()}
EMBEDDED_LAYERS = {name: source.n_layers for name, source in EMBEDDED_SOURCES.items()}


def _per_task(value: Any, tasks: Any) -> dict[str, Any]:
    """A study B per-task analysis key: one value for every task, or a {task: value} map."""
    if isinstance(value, dict):
        return value
    return {task: value for task in tasks}


def _check_representation_analysis(cfg: dict[str, Any]) -> list[str]:
    problems = []
    analysis, pooled = cfg["analysis"], set(cfg["pooling"])
    key = "representations.analysis"
    fields, spans = _representation_names()
    for name, known_by_task in (("hypotheses", fields), ("rsa_spans", spans), ("probe_span", spans)):
        if name not in analysis:
            continue
        for task, value in _per_task(analysis[name], fields).items():
            if task not in known_by_task:
                problems.append(f"config key `{key}.{name}`: unknown task {task!r}; known {sorted(known_by_task)}")
                continue
            values = [value] if isinstance(value, str) else list(value)
            unknown = [v for v in values if v not in known_by_task[task]]
            if unknown:
                what = "condition field" if name == "hypotheses" else "span"
                problems.append(
                    f"config key `{key}.{name}`: unknown {what}(s) {unknown} for {task}; "
                    f"known {sorted(known_by_task[task])}"
                )
    poolings = list(analysis.get("rsa_poolings") or [])
    poolings += [analysis[k] for k in ("probe_pooling", "figure_pooling") if analysis.get(k)]
    missing = sorted(set(poolings) - pooled)
    if missing:
        problems.append(
            f"config key `{key}`: pooling {missing} is not extracted; representations.pooling = {sorted(pooled)}"
        )
    return problems


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


def _check_context(cfg: dict[str, Any], root: Path) -> list[str]:
    """Prompts certainly longer than a model's context (every flip / example is at least
    one token) are refused here, before any job runs; exact lengths are checked at
    extraction time."""
    problems = []
    studies = set(cfg["studies"])
    needs = []
    if "binary" in studies:
        needs.append(("binary.judgment.lengths", max(cfg["binary"]["judgment"]["lengths"], default=0)))
        needs.append(("binary.continuation.max_length", cfg["binary"]["continuation"]["max_length"]))
    if "labels" in studies:
        # a labelled example is at least its text, a label word and a separator
        needs.append(("labels.n_examples", 3 * cfg["labels"]["n_examples"]))
    layer = cfg["representations"]["analysis"].get("figure_layer")
    for model in cfg["models"]:
        n_layers = model_layers(model, root)
        if layer is not None and n_layers is not None and layer > n_layers and "representations" in studies:
            problems.append(
                f"config key `representations.analysis.figure_layer`: layer {layer} does not exist in "
                f"model {model['name']!r}, which has layers 0..{n_layers}"
            )
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


def _check_labels(cfg: dict[str, Any], root: Path) -> list[str]:
    problems = []
    seen: set[str] = set()
    for i, ds in enumerate(cfg["datasets"]):
        key = f"labels.datasets[{i}]"
        if ds["name"] in seen:
            problems.append(f"config key `{key}.name`: duplicate dataset name {ds['name']!r}")
        seen.add(ds["name"])
        if ds["source"] == "file":
            if "path" not in ds:
                problems.append(f"config key `{key}.path` (dataset {ds['name']!r}): a file dataset needs a path")
            elif not resolve_path(ds["path"], root).is_file():
                problems.append(
                    f"config key `{key}.path` (dataset {ds['name']!r}): {resolve_path(ds['path'], root)} does not exist"
                )
        if ds["source"] == "hf" and "hf_name" not in ds:
            problems.append(f"config key `{key}.hf_name` (dataset {ds['name']!r}): an hf dataset needs hf_name")
        words = ds.get("label_words", [])
        if any(not w.strip() for w in words):
            problems.append(f"config key `{key}.label_words` (dataset {ds['name']!r}): empty label word")
        if len(set(words)) != len(words):
            problems.append(f"config key `{key}.label_words` (dataset {ds['name']!r}): duplicate label words {words}")
    flips = [c for c in cfg["conditions"] if c in ("flip_df", "flip_fd")]
    if flips and not 2 * cfg["flip_at"] + 1 <= cfg["n_examples"]:
        # D->F vs F->D is read at position 2N + 1: the prediction after N examples of each mapping
        problems.append(
            f"config key `labels.flip_at`: {cfg['flip_at']} needs n_examples >= 2 * flip_at + 1 = "
            f"{2 * cfg['flip_at'] + 1} for {flips} (the prediction after 2N examples), "
            f"got n_examples = {cfg['n_examples']}"
        )
    if "arbitrary" in cfg["conditions"] and not cfg["arbitrary_labels"]:
        problems.append("config key `labels.arbitrary_labels`: empty, but `labels.conditions` names `arbitrary`; "
                        "give at least one list of replacement label words (or drop the condition)")
    for j, words in enumerate(cfg["arbitrary_labels"]):
        if len(set(words)) != len(words) or any(not w.strip() for w in words):
            problems.append(f"config key `labels.arbitrary_labels[{j}]`: words must be distinct and non-empty")
    problems += _check_template(cfg["template"], "labels.template", {"text", "label"}, {"text", "label"})
    problems += _check_template(cfg["template_pair"], "labels.template_pair", {"text", "text2", "label"}, {"text", "text2", "label"})
    return problems


# set to 1 where the machine that plans the run has no CUDA but its jobs run on one that has
SKIP_DEVICE_CHECK = "ICLSCOPE_SKIP_DEVICE_CHECK"
# classes of the built-in labelled datasets (see iclscope.datasets)
BUILTIN_CLASSES = {"vader": 2, "novel": 2}


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


def _check_data(cfg: dict[str, Any], root: Path) -> list[str]:
    """Data problems that would otherwise fail inside a job: concept lists, and study C's
    local data files (loaded here: empty, header-only, missing columns, empty texts, one
    class) and their label words (one per class)."""
    problems = []
    studies = set(cfg["studies"])
    if "binary" in studies:
        for task in ("judgment", "continuation"):
            if not cfg["binary"][task]["concepts"]:
                problems.append(f"config key `binary.{task}.concepts`: empty; give at least one 0/1 concept")
    if "labels" not in studies:
        return problems
    from iclscope.datasets import load_dataset
    from iclscope.tasks.common import TaskError

    for i, ds in enumerate(cfg["labels"]["datasets"]):
        key = f"config key `labels.datasets[{i}]` (dataset {ds['name']!r}"
        n_classes = BUILTIN_CLASSES.get(ds["source"])
        if ds["source"] == "file":
            if "path" not in ds or not resolve_path(ds["path"], root).is_file():
                continue  # reported by _check_labels
            try:
                n_classes = len(load_dataset(ds, root, cfg["seed"]).classes)
            except TaskError as err:
                problems.append(f"{key}, file {ds['path']}): {err}")
                continue
        elif ds["source"] == "hf" and ds.get("classes"):
            n_classes = len(ds["classes"])
        words = ds.get("label_words")
        if words is not None and n_classes is not None and len(words) != n_classes:
            problems.append(
                f"{key}).label_words: {len(words)} label words {words} for {n_classes} classes; "
                "give one word per class, in class order"
            )
    return problems


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

