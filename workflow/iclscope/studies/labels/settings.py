"""Study C's settings: the metrics and the comparisons its summary reports, and the
analysis settings read from the validated config (defaults live in config/schema.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
SUMMARY_COLUMNS = ["kind", "metric", "position_name", "position", "condition", "condition_b", "mean", "ci_low",
                   "ci_high", "n", "beta", "variance_ratio"]


def analysis_settings(labels: Mapping[str, Any]) -> dict[str, Any]:
    """``labels["analysis"]`` with the schema's defaults filled in and checked against it."""
    from iclscope.config import section_settings

    return section_settings("labels", "analysis", labels.get("analysis"))
