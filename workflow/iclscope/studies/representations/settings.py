"""Study B's settings: tasks, inputs and outputs, table schemas, and the analysis settings
read from the validated config (defaults live in config/schema.yaml)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iclscope import contracts
from iclscope.analysis import rsa as rsa_math
from iclscope.analysis.probes import CLASSIFIERS
from iclscope.config import check_template, model_layers, resolve_path, section_settings, with_defaults
from iclscope.tasks.representations import CONDITION_FIELDS, TASK_SPANS

log = logging.getLogger(__name__)

TASKS = ("regression", "reading")
INPUT_KINDS = ("tasks", "embeddings", "attention", "readouts")
OUTPUTS = ("behaviour", "behaviour_summary", "rsa", "similarity", "probes", "attention_ratio",
           "repr_vs_behaviour", "effects")
END = "end"  # the prompt's last token (the answer position): a pooled span and the attention query
RELEVANT, DISTRACTOR = "relevant", "distractor"
READOUT = contracts.ANSWER_READOUT


def schema_defaults() -> dict[str, Any]:
    """``representations.analysis`` as config/schema.yaml fills it (the one home of defaults)."""
    return section_settings("representations", "analysis", {})


# task-table columns that are never condition fields
_NOT_FIELDS = {"prompt_id", "condition", "text", "spans", "task", "n_shots"}
SCHEMAS = {
    "behaviour": contracts.BEHAVIOUR,
    "behaviour_summary": contracts.BEHAVIOUR_SUMMARY,
    "rsa": contracts.RSA,
    "similarity": contracts.SIMILARITY,
    "probes": contracts.PROBES,
    "attention_ratio": contracts.ATTENTION_RATIO,
    "repr_vs_behaviour": contracts.REPR_VS_BEHAVIOUR,
    "effects": contracts.EFFECTS,
}
# behavioural measures of B7 (lower is better); nll for categorical, expected_error for numeric tasks
BEHAVIOUR_MEASURES = ("error", "expected_error", "nll")


# ----------------------------------------------------------------------------- settings


def analysis_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis settings: ``params["representations"]["analysis"]`` with the schema's defaults.

    ``rsa_poolings`` defaults to ``params["representations"]["pooling"]`` (what extraction
    pooled), ``probe_pooling`` and ``figure_pooling`` to its first entry. Per-task keys
    (hypotheses, rsa_spans, probe_span) stay as given; read them with :func:`task_setting`.
    Raises ValueError for an unknown key or an invalid value, naming it.
    """
    section = params.get("representations", {}) or {}
    given = dict(section.get("analysis", {}) or {})
    if isinstance(given.get("rsa_comparators"), str):  # one comparator may be given bare
        given["rsa_comparators"] = [given["rsa_comparators"]]
    if isinstance(given.get("rsa_poolings"), str):
        given["rsa_poolings"] = [given["rsa_poolings"]]
    try:  # defaults, types and ranges: the schema's (unknown keys are refused there, by name)
        settings = section_settings("representations", "analysis", given)
    except ValueError as err:
        raise ValueError(f"representations.analysis: {err}") from err
    if settings["rsa_poolings"] is None:
        # what extraction pooled (the schema's default when the section does not say)
        settings["rsa_poolings"] = list(section.get("pooling") or with_defaults("representations", {})["pooling"])
    if isinstance(settings["rsa_poolings"], str):
        settings["rsa_poolings"] = [settings["rsa_poolings"]]
    settings["rsa_poolings"] = list(settings["rsa_poolings"])
    if not settings["rsa_poolings"]:
        raise ValueError("representations.analysis.rsa_poolings must name at least one pooling")
    for key in ("probe_pooling", "figure_pooling"):
        if settings[key] is None:
            settings[key] = settings["rsa_poolings"][0]
    comparators = settings["rsa_comparators"]
    bad = [c for c in comparators if c not in rsa_math.COMPARATORS]  # the schema's enum, from the code
    if bad:
        raise ValueError(f"representations.analysis.rsa_comparators: {bad} not among {list(rsa_math.COMPARATORS)}")
    if settings["classifier"] not in CLASSIFIERS:
        raise ValueError(f"representations.analysis.classifier must be one of {list(CLASSIFIERS)}, "
                         f"got {settings['classifier']!r}")
    return settings


def per_task(value: Any, tasks: Iterable[str]) -> dict[str, Any]:
    """A per-task setting (one value for every task, or a ``{task: value}`` mapping) as a
    ``{task: value}`` mapping: a mapping as given (its tasks only), else ``value`` for each
    of ``tasks``. The one reading of such keys: the config checks, :func:`task_setting` and
    :func:`headline_readout` use it."""
    if isinstance(value, Mapping):
        return dict(value)
    return {task: value for task in tasks}


def task_setting(settings: Mapping[str, Any], key: str, task: str) -> Any:
    """A per-task setting: the value for ``task`` when ``settings[key]`` is a mapping (falling
    back to the default's entry), else the value itself. Lists come back as lists."""
    values = per_task(settings[key], (task,))
    if task in values:
        value = values[task]
    else:
        default = schema_defaults()[key]
        if not isinstance(default, Mapping) or task not in default:
            raise ValueError(
                f"representations.analysis.{key} has no entry for task {task!r} (entries: {sorted(values)})"
            )
        value = default[task]
    if key in ("hypotheses", "rsa_spans"):
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"representations.analysis.{key} for task {task!r} must be a non-empty list, "
                             f"got {value!r}")
        return [str(v) for v in value]
    if key == "probe_span" and not isinstance(value, str):
        raise ValueError(f"representations.analysis.probe_span for task {task!r} must be one span name, got {value!r}")
    return value


def headline_readout(settings: Mapping[str, Any], task: str) -> dict[str, str]:
    """The pre-declared readout of ``task``'s headline effects: ``pooling``, ``span`` and
    ``behaviour`` from ``representations.analysis.headline`` (a value for every task, or a
    mapping whose missing tasks keep the schema's default). Raises ValueError naming the key
    when the span is not an RSA span of the task, the pooling not an RSA pooling, or the
    measure unknown."""
    given = settings.get("headline") or {}
    default = schema_defaults()["headline"]
    out = {}
    for key in ("pooling", "span", "behaviour"):
        value = per_task(given.get(key, default[key]), (task,))
        value = value[task] if task in value else per_task(default[key], (task,)).get(task)
        if not isinstance(value, str):
            raise ValueError(f"representations.analysis.headline.{key} for task {task!r} must be one name, "
                             f"got {value!r}")
        out[key] = value
    spans = task_setting(settings, "rsa_spans", task)
    if out["span"] not in spans:
        raise ValueError(f"representations.analysis.headline.span {out['span']!r} for task {task!r} is not one of "
                         f"its rsa_spans {spans}")
    if out["pooling"] not in settings["rsa_poolings"]:
        raise ValueError(f"representations.analysis.headline.pooling {out['pooling']!r} is not one of the "
                         f"rsa_poolings {list(settings['rsa_poolings'])}")
    if out["behaviour"] not in BEHAVIOUR_MEASURES:
        raise ValueError(f"representations.analysis.headline.behaviour {out['behaviour']!r} for task {task!r} must "
                         f"be one of {list(BEHAVIOUR_MEASURES)}")
    return out


@dataclass(frozen=True)
class TaskSettings:
    """One task's own values of the per-task settings (:func:`task_setting`)."""

    hypotheses: tuple[str, ...]  # representations.analysis.hypotheses: condition fields compared
    rsa_spans: tuple[str, ...]  # representations.analysis.rsa_spans: pooled spans compared by RSA
    probe_span: str  # representations.analysis.probe_span: the span the probes read


@dataclass(frozen=True)
class RepresentationsSettings:
    """Study B's analysis settings, read once from the validated ``representations`` section
    (:meth:`from_section`, through :func:`analysis_settings`: the schema's defaults filled in,
    the poolings defaulted to what extraction pooled). Its functions get these values from
    here, never from defaults of their own; the per-task keys are resolved per task
    (:meth:`task`, :meth:`readout`)."""

    n_permutations: int  # permutations of the RSA tests
    rsa_comparators: tuple[str, ...]  # alignment comparators; the first is the headline
    rsa_poolings: tuple[str, ...]  # poolings compared by RSA
    probe_pooling: str  # the pooling the probes read
    n_splits: int  # cross-validation folds of the probes
    ridge_alpha: float  # the ridge probes' penalty
    logistic_C: float  # the logistic probes' inverse penalty
    classifier: str  # probe of categorical fields: ridge or logistic
    n_shuffles: int  # target shuffles of the probes' control
    n_shuffles_max: int  # where no shuffle reaches a probe's score, shuffles continue up to this many
    n_boot: int  # bootstrap resamples of the intervals
    correlation: str  # representation-vs-behaviour correlation: pearson or spearman
    significance: float  # the figures' significance level
    figure_layer: int | None  # the similarity figure's layer (None: the middle one)
    figure_pooling: str  # the figures' pooling
    # ``representations.analysis`` as analysis_settings gave it: the per-task keys (hypotheses,
    # rsa_spans, probe_span, headline: one value or {task: value}) and the tables' provenance
    validated: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_section(cls, representations: Mapping[str, Any]) -> RepresentationsSettings:
        """The settings of a ``representations`` section (``analysis`` and ``pooling`` read;
        a ValueError names an unknown key or an invalid value)."""
        s = analysis_settings({"representations": representations})
        return cls(
            n_permutations=int(s["n_permutations"]), rsa_comparators=tuple(s["rsa_comparators"]),
            rsa_poolings=tuple(s["rsa_poolings"]), probe_pooling=str(s["probe_pooling"]), n_splits=int(s["n_splits"]),
            ridge_alpha=float(s["ridge_alpha"]), logistic_C=float(s["logistic_C"]), classifier=str(s["classifier"]),
            n_shuffles=int(s["n_shuffles"]), n_shuffles_max=int(s["n_shuffles_max"]), n_boot=int(s["n_boot"]),
            correlation=str(s["correlation"]), significance=float(s["significance"]),
            figure_layer=None if s["figure_layer"] is None else int(s["figure_layer"]),
            figure_pooling=str(s["figure_pooling"]), validated=s,
        )

    def task(self, task: str) -> TaskSettings:
        """``task``'s values of the per-task keys (a ValueError names a missing or invalid one)."""
        return TaskSettings(hypotheses=tuple(task_setting(self.validated, "hypotheses", task)),
                            rsa_spans=tuple(task_setting(self.validated, "rsa_spans", task)),
                            probe_span=str(task_setting(self.validated, "probe_span", task)))

    def readout(self, task: str) -> dict[str, str]:
        """``task``'s pre-declared headline readout (:func:`headline_readout`)."""
        return headline_readout(self.validated, task)

    def record(self) -> dict[str, Any]:
        """The analysis settings as the tables' provenance records them (:func:`analysis_settings`'s dict)."""
        return dict(self.validated)


# ----------------------------------------------------------------------------- config checks


def check_config(config: dict[str, Any], root: Path) -> list[str]:
    """Study B's own config checks (what the schema cannot say), on a config the schema
    accepted: the ``representations`` section always (its tasks, templates, data files and
    analysis keys); the figure layer against each model's layers when the study runs.
    Called by :func:`iclscope.config.validate_config`; returns the problems, each with its key."""
    problems = _check_section(config["representations"], root)
    layer = config["representations"]["analysis"].get("figure_layer")
    if layer is None or "representations" not in config["studies"]:
        return problems
    for model in config["models"]:
        n_layers = model_layers(model, root)
        if n_layers is not None and layer > n_layers:
            problems.append(
                f"config key `representations.analysis.figure_layer`: layer {layer} does not exist in "
                f"model {model['name']!r}, which has layers 0..{n_layers}"
            )
    return problems


def _check_section(cfg: dict[str, Any], root: Path) -> list[str]:
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
    problems += check_template(reg["example_template"], "representations.regression.example_template", {"x", "y"}, {"x", "y"})
    problems += check_template(reg["query_template"], "representations.regression.query_template", {"x"}, {"x"})
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
    problems += check_template(rc["sentence_template"], f"{rt}.sentence_template", {"name", "activity"}, {"name", "activity"})
    problems += check_template(rc["question_template"], f"{rt}.question_template", {"name"}, {"name"})
    problems += check_template(rc["prompt_template"], f"{rt}.prompt_template", {"story", "question"}, {"story", "question"})
    problems += _check_analysis(cfg)
    return problems


def _task_names() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Study B's condition fields and poolable spans per task, as the task builders name them
    (imported, not copied: the builders are their one source)."""
    fields = {task: set(names) for task, names in CONDITION_FIELDS.items()}
    spans = {task: {"end", *names} for task, names in TASK_SPANS.items()}  # end: the prompt's last token
    return fields, spans


def _check_analysis(cfg: dict[str, Any]) -> list[str]:
    problems = []
    analysis, pooled = cfg["analysis"], set(cfg["pooling"])
    key = "representations.analysis"
    fields, spans = _task_names()
    for name, known_by_task in (("hypotheses", fields), ("rsa_spans", spans), ("probe_span", spans)):
        if name not in analysis:
            continue
        for task, value in per_task(analysis[name], fields).items():
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


