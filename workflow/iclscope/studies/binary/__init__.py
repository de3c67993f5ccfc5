"""Study A: binary-sequence ICL dynamics (Bigelow et al., arXiv 2310.17639).

A package: :mod:`.settings` (names and the analysis settings), :mod:`.analyse` (reads the
extracted tables, computes and writes the tables below: the judgment, continuation and
model-selection analyses, and the generation ones of :mod:`.generation`; :mod:`.frames`:
typed frames) and :mod:`.figures` (draws only what the tables hold).

Reads the extraction step's tables, computes the analyses A1-A5 (docs/studies/binary.md)
with the pure modules in :mod:`iclscope.analysis`, writes the result tables (:func:`analyse`)
and draws the figures (:func:`plot`). The functions above ``analyse`` are pure: DataFrames in, DataFrames out.

Conventions
-----------
Flip 0 is the first symbol (``Heads``), flip 1 the second (``Tails``), so a sequence's ``mean``
is its fraction of Tails and tracks ``p_tails / 100``. ``|x|`` (column ``length``) is the number
of flips of the concept the model has seen.

Analysis settings
-----------------
``params["binary"]["analysis"]`` (defaults from config/schema.yaml, see :func:`analysis_settings`): ``n_boot`` (bootstrap replicates, 1000),
``ci_level`` (0.95), ``levenshtein`` (``"normalized"`` or ``"indel"``, see
:func:`iclscope.analysis.binary_metrics.levenshtein_ratio`), ``windows`` (repeated-substring
window sizes, 5..25). The gambler's-fallacy baseline uses the paper's window w = 5.

Output tables (Parquet, one row per observation)
-----------------------------------------------
Generation modes (``binary.generation.modes``; column ``mode`` of the generation tables):
``constrained`` sequences are sampled with only a symbol and the separator allowed next, the
model's probabilities renormalised over the two symbols, so every sequence reaches n_flips
and each step's exact model probability is recorded; ``free`` sequences are the paper's
sampling, parsed afterwards and dropped when shorter than n_flips. Every table below
reports each mode apart; ``generation_steps`` exists for the constrained mode only.

``generation_metrics`` (:data:`iclscope.contracts.BINARY_GENERATION_METRICS`), one row per
sequence of the model or of a fitted baseline's samples (per mode):
    source (str: ``model``, ``bernoulli``, ``gamblers_fallacy`` or ``markov``), p_tails (float64,
    percent), sample (int32; the generation's sample index for the model, 0..n-1 for a
    baseline), flips (str: the model's GENERATED flips, cropped to ``n_flips``; the flip the
    prompt itself wrote, ``[Heads,``, is never part of them), mean, alternation (p_A),
    longest_run (int32), gzip_net (int32, bytes of gzip net of its fixed 20-byte header and
    trailer, 0 for the empty string), running_std, running_min, running_max (of the running
    average), repeats_w{w} (int32; null where w >= n_flips: fewer than two windows fit, nothing
    can repeat) for every window w, forced_flips (str: the prompt's flips; null for baselines),
    mode (the generation mode the sequence, or the sequences a baseline was fitted to, come from).
``baselines`` (:data:`iclscope.contracts.BINARY_BASELINES`), per p_tails one ``model`` row and
one row per baseline fitted (maximum likelihood) to the model's cropped sequences:
    p_tails, source, n_total (generations at this p), n_short (dropped: fewer than n_flips
    generated flips under the ``parse`` mode), n_unparsed (generations whose list did not parse completely or was not
    closed; informational: such a sequence is still used when its parsed prefix holds
    n_flips flips), n_used (= n_total - n_short), n_flips, params (JSON of the fitted
    parameters, ``""`` for the model), n_params, loglik (total natural-log likelihood of the
    model's n_used sequences under the fitted baseline), loglik_per_flip, bic
    (n_params ln(flips) - 2 loglik), bic_rank (1 = best; 0 on the model row), delta_bic (bic -
    the best bic at this p), mean_levenshtein (mean pairwise Levenshtein ratio among the
    model's sequences on the model row, among the baseline's samples on a baseline row: the
    memorisation reference), parse (``binary.generation.parse``: ``first_letter`` or
    ``strict``), n_clean (sequences whose every generated item was exactly a symbol word),
    n_used_strict / n_used_first_letter (what each parse mode keeps; n_used is the configured
    mode's). Fit columns are NaN on the model row and everywhere when n_used = 0. mode: the
    generation mode (one set of rows per mode). prob_params, prob_cross_entropy, prob_kl,
    prob_mae, prob_kl_rank (constrained only, else null): the baseline fitted to the model's
    per-step probabilities instead of its samples (:func:`iclscope.analysis.baselines.compare_baselines_on_probs`):
    its parameters, the mean cross-entropy and KL(model || baseline) per step (nats), the mean
    |P_model - P_baseline|, and its rank by KL (1 = the account closest to the model's own
    probabilities).
``generation_steps`` (:data:`iclscope.contracts.GENERATION_STEPS`), one row per flip of every
constrained sequence: p_tails, sample, step (1-based), flip, p_second (the model's probability
of the second symbol at that step, renormalised over the two), and the history it saw, the
prompt's flips first: run_symbol and run_length (the run it ends with), running_mean (its
fraction of second symbols), p_same (the probability of continuing that run). The figure
``generation_steps.png`` and the findings' ``run_continuation_change`` read it: p_same
falling with run_length is the gambler's fallacy.
``judgment`` (:data:`iclscope.contracts.JUDGMENT`), one row per judgment prompt:
    concept (``random`` for the Bernoulli(0.5) controls), length (|x|), sample, p_random =
    P(r...) / (P(r...) + P(n...)), logp_r, logp_n (the readouts), prompt_id.
``judgment_summary`` (:data:`iclscope.contracts.JUDGMENT_SUMMARY`), per concept (``random`` =
the controls) and |x|: mean p_random over the samples (a concept's replicate variants, the
controls' draws), its bootstrap CI over them (NaN for a single sample), n.
``continuation`` (:data:`iclscope.contracts.CONTINUATION`), per concept, |x| and depth d:
    concept, length (|x| = n, 0..max_length - d), depth, p_continue (mean over the concept's
    units, its phase rotations in every replicate variant, of P(next d flips continue the
    concept | first n flips)), p_continue_sum (the sum over rotations, the paper's "summed
    over phase rotations", averaged over variants), p_continue_min, p_continue_max (range
    over units), n_rotations, n_units.
``model_selection`` (:data:`iclscope.contracts.MODEL_SELECTION`), per curve (``judgment``:
one concept's p_random over |x|, depth 0; ``continuation``: one concept and depth), one row
per account:
    curve, concept, account, transition, slope, ci_low, ci_high, depth, k (phases of the
    concept; 0 for ``random``), n_points (lengths fitted), n_units (curves averaged), ci_method,
    midpoint, midpoint_low, midpoint_high, slope_low, slope_high, n_params, sse, r2, bic,
    best, temperature, logit_prior, prior_concept, ci_reason (null when ci_low/ci_high exist,
    else why they do not).
    * account ``lm``: the model's own curve (:func:`iclscope.analysis.logistic.logistic_bootstrap`). A
      logistic in |x| is fitted to the unit-mean implied p_random; ``transition`` = |x|* = its
      midpoint, where the FITTED curve crosses 0.5 (NaN when that lies outside the lengths
      observed); for continuation the implied p_random is (1 - p_continue) / (1 - 0.5^d), the
      inverse of ``model_selection.p_continue``, so |x|* is where the fitted p_continue is
      (1 + 0.5^d) / 2. ``slope``: the logistic's sharpness, per flip. ``ci_low``/``ci_high``
      (= ``midpoint_low``/``midpoint_high``): the expanded percentile CI (for the number of
      units) of the replicates' midpoints, reported only from at least
      ``binary.analysis.min_units`` units (8) and when it contains ``transition`` and stays
      clear of the optimiser's bounds (else NaN and ``ci_reason``); ``slope_*``: of the
      slope (NaN when not containing it). A fit resting on the optimiser's midpoint or lower
      slope bound reports neither midpoint nor slope; one on the upper slope bound (a step)
      keeps its midpoint. ``ci_method`` says what was resampled: ``units`` = a continuation
      concept's (rotation, replicate variant) prompts, a judgment concept's variants, the
      controls' samples (every distinct resample fitted once), ``none`` = no interval.
      sse/r2/bic: of the logistic, on the curve's own scale.
    * accounts ``averaging``, ``hard``, ``soft`` (:func:`model_selection.compare_accounts`,
      not for ``random``): least-squares fits of the Bayesian model-selection account.
      ``transition`` = the fitted n*, ``slope`` = the account's logistic slope in |x|, ln 2 / T
      (ln 2 for averaging, inf for hard); CI columns NaN (``ci_method`` ``none``, ``ci_reason``
      :data:`ACCOUNT_CI_REASON`); ``best``
      marks the lowest BIC among the three (BIC = n ln(sse / n) + n_params ln n).
    Fit failures (e.g. non-finite values) give NaN rows and a logged warning.

Figures: see :data:`FIGURES` and :func:`plot`.
"""

# the API below is imported on first use: importing the package (for its light `plugin`
# module, read while the DAG is built) imports no analysis library
from iclscope.registry import lazy_exports  # noqa: E402

lazy_exports(__name__, {
    "analyse": ("analyse", "combine_rotations", "continuation_curves", "continuation_selection", "curve_selection", "judgment_selection", "judgment_summary", "p_random", "restricted_log_q",),
    "generation": ("analyse_generations", "crop_generations", "generation_steps", "metrics_frame",),
    "figures": ("FIGURES", "captions", "generation_columns", "plot",),
    "settings": ("ACCOUNT_CI_REASON", "BinarySettings", "INPUTS", "MODEL", "OUTPUTS", "PARSE_MODES", "RANDOM", "analysis_settings",),
})

__all__ = [
    "ACCOUNT_CI_REASON", "BinarySettings", "FIGURES", "INPUTS", "MODEL", "OUTPUTS", "PARSE_MODES", "RANDOM", "analyse",
    "analyse_generations", "analysis_settings", "captions", "combine_rotations", "continuation_curves",
    "continuation_selection", "crop_generations", "curve_selection", "generation_columns", "generation_steps",
    "judgment_selection",
    "judgment_summary", "metrics_frame", "p_random", "plot", "restricted_log_q",
]
