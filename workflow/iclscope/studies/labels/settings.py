"""Study C's settings: the metrics and the comparisons its summary reports, and the
analysis settings read from the validated config (defaults live in config/schema.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

METRICS = ("logp_true", "logp_context", "correct", "correct_context", "entropy", "logp_label_mass")
# (condition a, condition b, named position) pairs reported as paired differences
DIFFERENCES = (
    ("default", "random", "last"),
    ("default", "flipped", "last"),
    ("flip_df", "flip_fd", "after_2N"),
)
# (condition a, condition b, window) pairs reported as pooled paired differences
POOLED_DIFFERENCES = (
    ("default", "random", "positions_2_N"),
    ("default", "random", "last_quarter"),
    ("default", "flipped", "positions_2_N"),
    ("default", "flipped", "last_quarter"),
    ("flip_df", "flip_fd", "second_mapping"),
)
# windows over which each condition's pooled value is reported
POOLED_VALUE_WINDOWS = ("positions_2_N", "last_quarter")
SUMMARY_COLUMNS = ["kind", "metric", "position_name", "position", "condition", "condition_b", "mean", "ci_low",
                   "ci_high", "n"]


def analysis_settings(labels: Mapping[str, Any]) -> dict[str, Any]:
    """``labels["analysis"]`` with the schema's defaults filled in and checked against it."""
    from iclscope.config import section_settings

    return section_settings("labels", "analysis", labels.get("analysis"))
