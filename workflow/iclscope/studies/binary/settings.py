"""Study A's settings: names, the inputs and outputs of its analysis, and the analysis
settings read from the validated config (defaults and ranges live in config/schema.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iclscope.analysis.model_selection import ACCOUNT_CI_REASON
from iclscope.contracts import PARSE_MODES

RANDOM = "random"
MODEL = "model"
INPUTS = ("judgment_tasks", "continuation_tasks", "generations", "judgment_readouts", "continuation_readouts")
OUTPUTS = ("generation_metrics", "baselines", "generation_steps", "judgment", "judgment_summary", "continuation",
           "model_selection")


def analysis_settings(binary: Mapping[str, Any]) -> dict[str, Any]:
    """``binary["analysis"]`` with the schema's defaults filled in and checked against it
    (:func:`iclscope.config.section_settings`: config/schema.yaml is the one home of defaults)."""
    from iclscope.config import section_settings

    out = section_settings("binary", "analysis", binary.get("analysis"))
    out["windows"] = [int(w) for w in out["windows"]]
    return out


__all__ = ["ACCOUNT_CI_REASON", "INPUTS", "MODEL", "OUTPUTS", "PARSE_MODES", "RANDOM", "analysis_settings"]
