"""Study B (representations before and after ICL, Yousefi et al., arXiv 2310.00313): analyses and figures.

Inputs, per task (``regression``, ``reading``; a task that is not configured is simply absent):
``<task>_tasks`` (the task table), ``<task>_embeddings`` (pooled hidden states, rows sorted by
layer), ``<task>_attention`` (span masses from the ``end`` query) and ``<task>_readouts``
(``answer`` log-probabilities of every candidate). "Before ICL" is the smallest ``n_shots`` of a
task (0 by default), "after ICL" every larger one (one by default).

Analysis settings: ``params["representations"]["analysis"]`` (all optional; the config schema
must admit the key before a config can set it):

=================  ===========================================  ===========================================
key                default                                      meaning
=================  ===========================================  ===========================================
hypotheses         regression: [slope, intercept];              condition fields compared with the
                   reading: [name, activity]                    representations (B4) and probed (B5); a
                                                                list (every task) or {task: list}
rsa_spans          regression: [end, query];                    spans whose embeddings enter RSA: ``end``
                   reading: [end, question_name]                (the answer position) and the span naming
                                                                the query; a list or {task: list}
rsa_poolings       ``representations.pooling`` (max, mean,      poolings compared in RSA
                   last)
n_permutations     1000                                         condition-label permutations per RSA test
rsa_comparators    [tau_a, spearman]                            alignment comparators (tau_a, rho_a,
                                                                spearman, pearson); the first is the headline
probe_span         end                                          the one span probed (str or {task: str})
probe_pooling      first of rsa_poolings                        the one pooling probed
n_splits           5                                            grouped CV folds (groups = conditions)
ridge_alpha        1.0                                          ridge penalty (numeric targets)
logistic_C         1.0                                          inverse L2 penalty (classifier logistic)
classifier         ridge                                        categorical probe: closed-form ridge
                                                                classifier (ridge_alpha) or logistic
n_shuffles         100                                          target shuffles of the probe control
n_boot             1000                                         bootstrap resamples for every CI
correlation        pearson                                      B7 correlation: pearson or spearman
significance       0.05                                         p threshold marked in alignment.png
figure_layer       middle layer (``layers[len // 2]``)          layer shown in rsa_matrices.png
figure_pooling     first of rsa_poolings                        pooling shown in the figures
=================  ===========================================  ===========================================

Tables written (``outs`` keys; column types in :mod:`iclscope.contracts`):

behaviour (B1, B2)
    One row per prompt: ``task, prompt_id, condition, n_shots, variant, answer`` (the model's
    answer: the argmax candidate of readout ``answer``), ``correct_answer``, ``correct``
    (answer == correct_answer), ``error`` (regression: |answer - target|; reading:
    1 - correct), ``expected`` and ``expected_error`` (regression only, else NaN: the
    expectation of the candidates' values under the softmax restricted to the candidates, and
    its absolute error), ``logp_correct`` (log-probability of the correct answer renormalised
    over the candidates; NaN if it is not a candidate), ``n_candidates``. A task counts as
    numeric when its table has a ``target`` column. ``relevant_first``: the story order
    (reading; null for regression).
behaviour_summary
    ``task, n_shots, metric, mean, ci_low, ci_high, n_prompts, relevant_first``: per task and
    n_shots the mean over prompts of ``accuracy``, ``error``, ``logp_correct`` and (numeric
    tasks) ``expected_error``, with a percentile-bootstrap CI over prompts; ``relevant_first``
    null = pooled, true / false = only the prompts with that story order (reading).
rsa (B4)
    ``task, layer, n_shots, hypothesis, spearman, p_value, pooling, span, n_conditions,
    n_prompts, n_permutations, comparator, alignment``: per task, layer, pooling, span and n_shots the embeddings
    are averaged per condition, z-scored over conditions and compared by cosine similarity;
    ``alignment`` is the comparator ``comparator`` (one row per entry of ``rsa_comparators``:
    tau_a, rho_a, spearman or pearson) of that matrix with the hypothesis matrix (1 = the two
    conditions share the field) over the upper triangles, ``p_value`` its one-sided
    permutation p-value (seeded by ``rng(seed, "rsa", task, layer, pooling, span, n_shots,
    hypothesis)``, the same permutations for every comparator); ``spearman`` is the Spearman
    alignment in every row.
similarity
    ``task, layer, pooling, span, n_shots, row_condition, col_condition, similarity,
    shared``: the full similarity matrices behind ``rsa`` (long form), with ``shared`` the
    hypothesis fields the two conditions have in common (the hypothesis matrices).
probes (B5)
    ``task, layer, n_shots, target, score, control_score, selectivity, probe, metric,
    pooling, span, n_prompts, n_conditions``: cross-validated probes decoding each hypothesis
    field from single prompts' embeddings (``probe_span``, ``probe_pooling``); numeric fields
    by ridge regression (``metric`` r2), others by a classifier (accuracy; ``probe``
    ridge_classifier or logistic). Folds are grouped by condition (the probe must generalise to
    unseen conditions); ``control_score`` and ``control_sd`` are the mean and sd of the same
    probe over ``n_shuffles`` condition-level shuffles of the targets (seeded by ``rng(seed,
    "probe", task, layer, n_shots, target)``), ``p_value = (1 + #{control >= score}) / (1 +
    n_shuffles)``, ``selectivity = score - control_score``.
attention_ratio (B6)
    ``task, layer, head, n_shots, ratio, ci_low, ci_high, mass_relevant, mass_distractor,
    n_prompts, log_ratio, log_ci_low, log_ci_high, relevant_first``: per prompt the attention
    mass from the answer position (query ``end``) on span ``relevant`` divided by that on
    ``distractor`` (both masses floored at 1e-12); ``log_ratio`` is the mean over prompts of
    the log ratio with a bootstrap CI over prompts, ``ratio`` / ``ci_*`` its exp (the
    geometric mean: one near-zero denominator cannot dominate it); the masses are arithmetic
    means. ``relevant_first`` null = all prompts, true / false = one story order only. ``head = -1`` uses the masses
    averaged over heads (ratio of mean masses: a head that ignores both spans cannot blow the
    ratio up). Only tasks whose attention table has both spans get rows: ``reading``;
    ``regression`` has no distractor span, so it has no attention ratio.
repr_vs_behaviour (B7)
    ``task, layer, measure, pooling, span, behaviour, n_shots_before, n_shots_after, mean,
    ci_low, ci_high, n_conditions, delta_measure, delta_behaviour``: across conditions, the
    correlation (``mean``; pearson or spearman) of the change after ICL (after - before,
    per-condition means over prompts) in a representation measure with the change in a
    behavioural error, with a bootstrap CI over conditions. Measures: ``alignment:<field>``
    (per pooling and span of RSA): the condition's alignment, i.e. its mean similarity to the
    other conditions sharing the field minus its mean similarity to the conditions that do not,
    read from the before and after similarity matrices; ``attention_log_ratio`` (tasks with
    B6, head -1, layers >= 1, pooling null, span ``relevant/distractor``): the condition's mean
    log attention ratio. Behaviour (lower is better): ``error`` for every task, plus
    ``expected_error`` (numeric tasks) and ``nll`` (= -logp_correct, categorical tasks).
    The finding of the paper reads as a *negative* correlation: conditions whose alignment or
    attention ratio grows most lose most error. ``delta_*`` are the mean changes over conditions.

Cost: embeddings are streamed one layer at a time (rows sorted by layer), so memory holds one
layer. For the default run (31 layers, 3 poolings, 2 spans, 2 n_shots, 2 tasks) that is 1488
RSA permutation tests of 1000 permutations per comparator (about 3 ms each) and 248 probes
with 100 shuffles each (about 15-20 ms each: the ridge probes are solved in closed form once
per fold for the real targets and all shuffles together; ``classifier: logistic`` refits per
shuffle and costs minutes instead). BLAS is limited to one thread while analysing because the
many tiny products run faster that way.
"""

# the API below is imported on first use: importing the package (for its light `plugin`
# module, read while the DAG is built) imports no analysis library
from iclscope.registry import lazy_exports  # noqa: E402

lazy_exports(__name__, {
    "analyse": ("analyse",),
    "attention": ("prompt_attention_ratios", "summarise_attention_ratios",),
    "embeddings": ("iter_layers",),
    "statistics": ("condition_alignment", "condition_fields", "known_fields", "probe_fields", "rsa_by_condition",),
    "behaviour": ("prompt_behaviour", "summarise_behaviour",),
    "figures": ("FIGURES", "plot",),
    "settings": ("END", "OUTPUTS", "READOUT", "RepresentationsSettings", "SCHEMAS", "TASKS", "TaskSettings", "analysis_settings", "headline_readout", "schema_defaults", "task_setting",),
})

__all__ = [
    "END", "FIGURES", "OUTPUTS", "READOUT", "RepresentationsSettings", "SCHEMAS", "TASKS", "TaskSettings", "analyse",
    "analysis_settings",
    "condition_alignment", "condition_fields", "iter_layers", "known_fields", "plot", "probe_fields",
    "prompt_attention_ratios", "prompt_behaviour", "rsa_by_condition", "schema_defaults",
    "summarise_attention_ratios", "summarise_behaviour", "task_setting", "headline_readout",
]
