"""Study C's settings: the metrics and the comparisons its summary reports, and the
analysis settings read from the validated config (defaults live in config/schema.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iclscope.config import check_template, context_problems, resolve_path, section_settings
from iclscope.datasets import load_dataset
from iclscope.tasks.common import TaskError

METRICS = ("logp_true", "logp_context", "correct", "correct_context", "entropy", "logp_label_mass")
# the same scores after contextual calibration with the condition's content-free twin at the
# same repeat and position (NaN for conditions without a twin, or with labels.analysis.calibrate off)
CALIBRATED_METRICS = ("logp_true_calibrated", "correct_calibrated")
# (condition a, condition b, named position) pairs reported as paired differences
DIFFERENCES = (
    ("default", "random", "last"),
    ("default", "flipped", "last"),
    ("flip_df", "flip_fd", "after_2N"),
)
# (condition a, condition b, window) pairs reported as pooled paired differences
POOLED_DIFFERENCES = (
    ("default", "random", "positions_2_to_last"),
    ("default", "random", "last_quarter"),
    ("default", "flipped", "positions_2_to_last"),
    ("default", "flipped", "last_quarter"),
    ("flip_df", "flip_fd", "second_mapping"),
)
# windows over which each condition's pooled value is reported
POOLED_VALUE_WINDOWS = ("positions_2_to_last", "last_quarter")
# classes of the built-in labelled datasets (see iclscope.datasets)
BUILTIN_CLASSES = {"vader": 2, "novel": 2}
SUMMARY_COLUMNS = ["kind", "metric", "position_name", "position", "condition", "condition_b", "mean", "ci_low",
                   "ci_high", "n", "beta", "variance_ratio"]


def analysis_settings(labels: Mapping[str, Any]) -> dict[str, Any]:
    """``labels["analysis"]`` with the schema's defaults filled in and checked against it."""
    return section_settings("labels", "analysis", labels.get("analysis"))


@dataclass(frozen=True)
class LabelsSettings:
    """Study C's analysis settings, read once from the validated ``labels`` section
    (:meth:`from_section`): ``labels.analysis`` (:func:`analysis_settings`, the schema's defaults
    filled in) and the task keys the summary reads. Its functions get these values from here,
    never from defaults of their own."""

    scoring: str  # labels.analysis.scoring: exact or first_token
    smooth: int  # labels.analysis.smooth: trailing moving-average window over positions
    n_boot: int  # labels.analysis.n_boot: bootstrap resamples of the repeats
    level: float  # labels.analysis.level: confidence level
    calibrate: bool  # labels.analysis.calibrate: contextual calibration with the content-free twins
    control_folds: int  # labels.analysis.control_folds: cross-fitting folds of the twin adjustment
    n_examples: int  # labels.n_examples: labelled examples per prompt
    flip_at: int  # labels.flip_at: where the flip conditions change mapping

    @classmethod
    def from_section(cls, labels: Mapping[str, Any]) -> LabelsSettings:
        """The settings of a validated ``labels`` section; ``labels.analysis`` is checked against the schema."""
        analysis = analysis_settings(labels)
        return cls(scoring=str(analysis["scoring"]), smooth=int(analysis["smooth"]), n_boot=int(analysis["n_boot"]),
                   level=float(analysis["level"]), calibrate=bool(analysis["calibrate"]),
                   control_folds=int(analysis["control_folds"]), n_examples=int(labels["n_examples"]),
                   flip_at=int(labels["flip_at"]))


# ----------------------------------------------------------------------------- config checks


def check_config(config: dict[str, Any], root: Path) -> list[str]:
    """Study C's own config checks (what the schema cannot say), on a config the schema
    accepted: the ``labels`` section always; when the study runs, the prompts' length against
    each model's context, and the local data files (loaded here: empty, header-only, missing
    columns, empty texts, one class) with their label words (one per class), which would
    otherwise fail inside a job. Called by :func:`iclscope.config.validate_config`."""
    problems = _check_section(config["labels"], root)
    if "labels" not in config["studies"]:
        return problems
    # a labelled example is at least its text, a label word and a separator
    problems += context_problems(config, root, [("labels.n_examples", 3 * config["labels"]["n_examples"])])
    for i, ds in enumerate(config["labels"]["datasets"]):
        key = f"config key `labels.datasets[{i}]` (dataset {ds['name']!r}"
        n_classes = BUILTIN_CLASSES.get(ds["source"])
        if ds["source"] == "file":
            if "path" not in ds or not resolve_path(ds["path"], root).is_file():
                continue  # reported by _check_section
            try:
                n_classes = len(load_dataset(ds, root, config["seed"]).classes)
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


def _check_section(cfg: dict[str, Any], root: Path) -> list[str]:
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
    problems += check_template(cfg["template"], "labels.template", {"text", "label"}, {"text", "label"})
    problems += check_template(cfg["template_pair"], "labels.template_pair", {"text", "text2", "label"}, {"text", "text2", "label"})
    return problems


