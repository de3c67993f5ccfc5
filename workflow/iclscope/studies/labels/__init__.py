"""Study C (label relationships, Kossen, Gal & Rainforth 2024): from readouts to curves.

Input: a ``labels_<dataset>`` task table and its readouts, where readout ``answer_i``
holds the log-probability of every label word of the prompt's verbalisation at the
``Answer:`` of in-context example i (one teacher-forced pass per prompt).

Tables written (one set per dataset):

positions
    One row per (condition, repeat, position): ``dataset, condition, repeat, position``
    (1-based; the prediction for example i from examples 1..i-1), ``true_label`` and
    ``context_label`` (words of the prompt's verbalisation), ``logp_true``,
    ``logp_context`` (log-probabilities renormalised over the label words), ``correct``
    (argmax is the true label), ``correct_context`` (argmax is the in-context label),
    ``entropy`` (nats, over the label words), ``logp_label_mass`` (log of the label words'
    total probability over the full vocabulary, not renormalised: how much of the model's
    prediction the renormalised metrics describe), ``scoring`` (``exact`` or
    ``first_token``, which word log-probs all of these use); ``logp_true_calibrated`` and
    ``correct_calibrated``: the same after contextual calibration (Zhao et al. 2021) with the
    condition's content-free twin at the same repeat and position, whose shown labels are
    the same (``labels.analysis.calibrate``; null for conditions without a twin).
curves
    ``dataset, condition, position, metric, mean, ci_low, ci_high, n``: per position the
    mean over repeats and its percentile-bootstrap interval (repeats resampled), for the
    metrics logp_true, logp_context, correct, correct_context, entropy, logp_label_mass,
    and the two calibrated ones for the conditions that have them.
    Metadata records the smoothing window and the scoring.
summary
    ``dataset, kind, metric, position_name, position, condition, condition_b, mean,
    ci_low, ci_high, n, beta, variance_ratio``, for every metric (the last two only on
    the adjusted rows). Position i is the prediction for example i from
    examples 1..i-1, so "after k examples" is position k + 1.

    * ``kind = "value"``: the curves at named positions ``first`` (1), ``after_N`` (N + 1,
      the last prediction from the first mapping only), ``after_2N`` (2N + 1, from N
      examples of each mapping) and ``last`` (``n_examples``); ``n`` = repeats.
    * ``kind = "difference"``: paired differences (by repeat) at one position: default -
      random and default - flipped at ``last``, flip_df - flip_fd at ``after_2N``.
    * ``kind = "pooled_value"``: a condition's per-repeat mean over a window of positions,
      averaged over repeats (CI over repeats).
    * ``kind = "pooled_difference"``: default - random and default - flipped pooled over
      ``positions_2_to_last`` (2..n_examples: every position with an example in context)
      and ``last_quarter``; flip_df - flip_fd over
      ``second_mapping`` (N + 2 .. 2N + 1). Per repeat the mean over the window of the
      position-wise difference, then the mean over repeats with a paired percentile
      bootstrap over repeats (repeat r of every condition shares its example draws).
      Pooled rows have ``position`` = the window's last position and ``n`` = repeats.
    * ``kind = "pooled_difference_content_free"``: the same pooled a - b between the two
      conditions' content-free twins (``labels.content_free``), reported under a and b.
    * ``kind = "pooled_difference_adjusted"``: the pooled a - b adjusted by its twins'
      difference, a control variate: per repeat ``y - beta * c`` with y the plain effect
      and c the twins' (``(a - a_cf) - beta (b - b_cf)`` pooled), ``beta`` = cov(y, c) /
      var(c) cross-fitted (repeats dealt into ``labels.analysis.control_folds`` folds, each
      adjusted with the beta of the others, so the mean stays unbiased); ``beta`` is the
      all-repeat estimate, ``variance_ratio`` = var(adjusted) / var(y) as measured. The
      control has mean zero by design for default - random (random labels are drawn
      independently of the true ones) and for default - flipped with class-balanced draws
      (a shown label sequence and its flip are then equally likely), so the adjusted form
      estimates the plain effect; its variance is var(y) (1 - corr(y, c)^2) up to the
      estimation noise of beta, never the larger variance a fixed beta of 1 can give when
      the twins share little with the prompts.
    * calibrated metrics (``logp_true_calibrated``, ``correct_calibrated``) appear in the
      ``pooled_value`` and ``pooled_difference`` rows of conditions that both have twins.

    These pooled effects are the ones to read: one position of a few repeats is noise.
"""

# the API below is imported on first use: importing the package (for its light `plugin`
# module, read while the DAG is built) imports no analysis library
from iclscope.registry import lazy_exports  # noqa: E402

lazy_exports(__name__, {
    "analyse": ("analyse", "positions_table", "summary_table",),
    "figures": ("FIGURES", "HALFWAY_CONDITIONS", "MAIN_CONDITIONS", "plot",),
    "settings": ("CALIBRATED_METRICS", "DIFFERENCES", "LabelsSettings", "METRICS", "POOLED_DIFFERENCES", "POOLED_VALUE_WINDOWS", "SUMMARY_COLUMNS", "analysis_settings",),
})

__all__ = [
    "CALIBRATED_METRICS", "DIFFERENCES", "FIGURES", "HALFWAY_CONDITIONS", "LabelsSettings", "MAIN_CONDITIONS", "METRICS",
    "POOLED_DIFFERENCES",
    "POOLED_VALUE_WINDOWS", "SUMMARY_COLUMNS", "analyse", "analysis_settings", "plot", "positions_table",
    "summary_table",
]
