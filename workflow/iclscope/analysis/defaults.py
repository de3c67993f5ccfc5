"""The documented defaults of the public analysis functions, in one place.

Each equals the schema's default for the config keys named in :data:`SCHEMA_KEYS`
(``tests/test_package.py`` checks it), so a function called from Python without a setting
computes what a default run computes. The studies never rely on them: they pass every
value from their settings, read from the validated config (the schema is where a default
is written; these constants repeat it for the functions' signatures only).
"""

from __future__ import annotations

N_BOOT = 1000  # bootstrap resamples of an interval
LEVEL = 0.95  # an interval's coverage
N_PERMUTATIONS = 1000  # label permutations of an RSA test
N_SHUFFLES = 100  # target shuffles of a probe's control
N_SPLITS = 5  # grouped cross-validation folds of a probe
RIDGE_ALPHA = 1.0  # ridge penalty of a probe
LOGISTIC_C = 1.0  # inverse L2 penalty of a logistic probe
CLASSIFIER = "ridge"  # the categorical probe
CORRELATION = "pearson"  # the correlation of changes across conditions
# fewest units an interval is computed from (8 units: 6435 distinct resamples; the
# replicates of 3-5 rotations alone gave a few dozen, and residual resampling of one
# sequence ignores that neighbouring lengths' residuals are correlated)
MIN_INTERVAL_UNITS = 8

# constant -> the config keys (dotted, in the schema) whose default it is
SCHEMA_KEYS: dict[str, tuple[str, ...]] = {
    "N_BOOT": ("binary.analysis.n_boot", "representations.analysis.n_boot", "labels.analysis.n_boot"),
    "LEVEL": ("binary.analysis.ci_level", "labels.analysis.level"),
    "N_PERMUTATIONS": ("representations.analysis.n_permutations",),
    "N_SHUFFLES": ("representations.analysis.n_shuffles",),
    "N_SPLITS": ("representations.analysis.n_splits",),
    "RIDGE_ALPHA": ("representations.analysis.ridge_alpha",),
    "LOGISTIC_C": ("representations.analysis.logistic_C",),
    "CLASSIFIER": ("representations.analysis.classifier",),
    "CORRELATION": ("representations.analysis.correlation",),
    "MIN_INTERVAL_UNITS": ("binary.analysis.min_units",),
}
