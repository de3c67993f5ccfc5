"""Study A's settings: names, the inputs and outputs of its analysis, and the analysis
settings read from the validated config (defaults and ranges live in config/schema.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iclscope.analysis.model_selection import ACCOUNT_CI_REASON
from iclscope.config import check_template, context_problems, section_settings
from iclscope.contracts import PARSE_MODES
from iclscope.tasks.binary import rotation_duplicates

RANDOM = "random"
MODEL = "model"
INPUTS = ("judgment_tasks", "continuation_tasks", "generations", "judgment_readouts", "continuation_readouts")
OUTPUTS = ("generation_metrics", "baselines", "generation_steps", "judgment", "judgment_summary", "continuation",
           "model_selection")


def analysis_settings(binary: Mapping[str, Any]) -> dict[str, Any]:
    """``binary["analysis"]`` with the schema's defaults filled in and checked against it
    (:func:`iclscope.config.section_settings`: config/schema.yaml is the one home of defaults)."""
    out = section_settings("binary", "analysis", binary.get("analysis"))
    out["windows"] = [int(w) for w in out["windows"]]
    return out


@dataclass(frozen=True)
class BinarySettings:
    """Study A's analysis settings, read once from the validated ``binary`` section
    (:meth:`from_section`): ``binary.analysis`` (:func:`analysis_settings`, the schema's
    defaults filled in) and the task keys the analysis reads. Its functions get these values
    from here, never from defaults of their own."""

    n_boot: int  # binary.analysis.n_boot: bootstrap replicates
    min_units: int  # binary.analysis.min_units: fewest units behind an interval
    ci_level: float  # binary.analysis.ci_level
    levenshtein: str  # binary.analysis.levenshtein: normalized or indel
    windows: tuple[int, ...]  # binary.analysis.windows: repeated-substring window sizes
    n_flips: int  # binary.generation.n_flips: flips a generated sequence is cropped to
    parse: str  # binary.generation.parse: first_letter or strict
    max_depth: int  # binary.continuation.max_depth: deepest continuation

    @classmethod
    def from_section(cls, binary: Mapping[str, Any]) -> BinarySettings:
        """The settings of a ``binary`` section whose defaults are filled in
        (:func:`iclscope.config.with_defaults`); ``binary.analysis`` is checked against the schema."""
        analysis = analysis_settings(binary)
        return cls(n_boot=int(analysis["n_boot"]), min_units=int(analysis["min_units"]),
                   ci_level=float(analysis["ci_level"]), levenshtein=str(analysis["levenshtein"]),
                   windows=tuple(analysis["windows"]), n_flips=int(binary["generation"]["n_flips"]),
                   parse=str(binary["generation"]["parse"]), max_depth=int(binary["continuation"]["max_depth"]))

    def analysis(self) -> dict[str, Any]:
        """``binary.analysis`` as :func:`analysis_settings` gives it (the tables' provenance records it)."""
        return {"n_boot": self.n_boot, "min_units": self.min_units, "ci_level": self.ci_level,
                "levenshtein": self.levenshtein, "windows": list(self.windows)}


# ----------------------------------------------------------------------------- config checks


def check_config(config: dict[str, Any], root: Path) -> list[str]:
    """Study A's own config checks (what the schema cannot say), on a config the schema
    accepted: the ``binary`` section always; the prompts' length against each model's
    context and the concept lists when the study runs. Called by
    :func:`iclscope.config.validate_config`; returns the problems, each with its key."""
    problems = _check_section(config["binary"])
    if "binary" in config["studies"]:
        cfg = config["binary"]
        problems += context_problems(config, root, [
            ("binary.judgment.lengths", max(cfg["judgment"]["lengths"], default=0)),
            ("binary.continuation.max_length", cfg["continuation"]["max_length"]),
        ])
        for task in ("judgment", "continuation"):
            if not cfg[task]["concepts"]:
                problems.append(f"config key `binary.{task}.concepts`: empty; give at least one 0/1 concept")
    return problems


def _check_section(cfg: dict[str, Any]) -> list[str]:
    problems = []
    heads, tails = cfg["symbols"]
    if heads == tails:
        problems.append(f"config key `binary.symbols`: the two symbols must differ (both {heads!r})")
    if cfg["separator"].strip() and any(cfg["separator"].strip() in s for s in cfg["symbols"]):
        problems.append("config key `binary.symbols`: a symbol contains the separator")
    coin = {"heads", "tails", "p_heads", "p_tails"}
    problems += check_template(cfg["generation"]["prompt"], "binary.generation.prompt", coin, set())
    if cfg["generation"]["system"] is not None:
        problems += check_template(cfg["generation"]["system"], "binary.generation.system", coin, set())
    for part in ("judgment", "continuation"):
        problems += check_template(cfg[part]["prompt"], f"binary.{part}.prompt", {"flips"}, {"flips"})
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
            problems += check_template(template, f"binary.{part}.prompt_variants[{k}]", {"flips"}, {"flips"})
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




__all__ = ["ACCOUNT_CI_REASON", "BinarySettings", "INPUTS", "MODEL", "OUTPUTS", "PARSE_MODES", "RANDOM", "analysis_settings",
           "check_config"]
