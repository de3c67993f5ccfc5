"""Study B's settings: tasks, inputs and outputs, table schemas, and the analysis settings
read from the validated config (defaults live in config/schema.yaml)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from iclscope import contracts
from iclscope.analysis import rsa as rsa_math
from iclscope.analysis.probes import CLASSIFIERS

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
    from iclscope.config import section_settings

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
    from iclscope.config import section_settings, with_defaults

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


def task_setting(settings: Mapping[str, Any], key: str, task: str) -> Any:
    """A per-task setting: the value for ``task`` when ``settings[key]`` is a mapping (falling
    back to the default's entry), else the value itself. Lists come back as lists."""
    value = settings[key]
    if isinstance(value, Mapping):
        if task in value:
            value = value[task]
        else:
            default = schema_defaults()[key]
            if not isinstance(default, Mapping) or task not in default:
                raise ValueError(
                    f"representations.analysis.{key} has no entry for task {task!r} (entries: {sorted(value)})"
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
        value = given.get(key, default[key])
        if isinstance(value, Mapping):
            fallback = default[key]
            value = value.get(task, fallback.get(task) if isinstance(fallback, Mapping) else fallback)
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
