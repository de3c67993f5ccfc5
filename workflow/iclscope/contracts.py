"""Arrow schemas of every table of the pipeline, the task tables first (docs/outputs.md).

The column names are binding; implementations may add columns. The task tables' columns
are the binding ones of every task (:data:`TASK`) followed by each task's own; the builders
in :mod:`iclscope.tasks` write them with these schemas.
"""

from __future__ import annotations

import pyarrow as pa

# --------------------------------------------------------------------------- readout names
# The names that connect the task builders (span names), the extraction plan (read points)
# and the analyses (the `readout` column): built and parsed here only.
ANSWER_READOUT = "answer"
# study C: the condition name of a content-free twin is its condition's name plus this
CONTENT_FREE_SUFFIX = "_cf"
# how generated coin-flip items are read (binary.generation.parse): the paper's first letter, or
# only items that are exactly a symbol word; used by generation (torch side) and study A
PARSE_MODES = ("first_letter", "strict")  # study B: the answer after the prompt's end
JUDGMENT_READOUT = "judgment"  # study A: r... vs n... after the judgment prompt


def flip_name(t: int) -> str:
    """Span and readout of flip ``t`` (1-based) of a binary sequence: ``flip_3``."""
    return f"flip_{int(t)}"


def answer_name(i: int) -> str:
    """Span of the label shown for in-context example ``i`` (1-based), and its readout."""
    return f"answer_{int(i)}"


def example_name(i: int) -> str:
    """Span of in-context example ``i`` (1-based)."""
    return f"example_{int(i)}"


def _index(name: str, prefix: str) -> int | None:
    head, sep, tail = str(name).partition("_")
    return int(tail) if sep and head == prefix and tail.isdigit() else None


def flip_index(name: str) -> int | None:
    """``t`` of a :func:`flip_name`, else None.

    >>> flip_index("flip_12"), flip_index("answer_1"), flip_index("flip_x")
    (12, None, None)
    """
    return _index(name, "flip")


def answer_index(name: str) -> int | None:
    """``i`` of an :func:`answer_name`, else None."""
    return _index(name, "answer")


def example_index(name: str) -> int | None:
    """``i`` of an :func:`example_name`, else None."""
    return _index(name, "example")


# --------------------------------------------------------------------------- task tables
# a named half-open character range [start, end) of a prompt's text
SPAN_TYPE = pa.struct([("name", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
TASK_BASE_FIELDS: list[pa.Field] = [
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("condition", pa.string(), nullable=False),
    pa.field("n_shots", pa.int32(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("spans", pa.list_(SPAN_TYPE), nullable=False),
]
# Binding columns of every task table; each task adds its own after them (the schemas below); rows sorted by `prompt_id`
TASK = pa.schema(TASK_BASE_FIELDS)


def _task(*extra: pa.Field) -> pa.Schema:
    """A task table's schema: the binding columns, then the task's own."""
    return pa.schema([*TASK_BASE_FIELDS, *extra])


_STRINGS = pa.list_(pa.string())
_INTS = pa.list_(pa.int32())
# study A (iclscope.tasks.binary): one prompt per p_tails
BINARY_GENERATION_TASK = _task(pa.field("p_tails", pa.float64(), nullable=False), pa.field("system", pa.string()))
# study A: one prompt per concept, length, sample and variant (random controls: concept `random`)
BINARY_JUDGMENT_TASK = _task(
    pa.field("concept", pa.string(), nullable=False),
    pa.field("length", pa.int32(), nullable=False),
    pa.field("sample", pa.int32(), nullable=False),
    pa.field("flips", pa.string(), nullable=False),
    pa.field("variant", pa.int32(), nullable=False),
    pa.field("symbols", _STRINGS, nullable=False),
)
# study A: one prompt per concept, phase rotation and variant, read at every flip
BINARY_CONTINUATION_TASK = _task(
    pa.field("concept", pa.string(), nullable=False),
    pa.field("rotation", pa.int32(), nullable=False),
    pa.field("length", pa.int32(), nullable=False),
    pa.field("flips", pa.string(), nullable=False),
    pa.field("max_depth", pa.int32(), nullable=False),
    pa.field("symbols", _STRINGS, nullable=False),
    pa.field("variant", pa.int32(), nullable=False),
)
# study B (iclscope.tasks.representations): one prompt per line (slope, intercept), variant and n_shots
REGRESSION_TASK = _task(
    pa.field("slope", pa.float64(), nullable=False),
    pa.field("intercept", pa.float64(), nullable=False),
    pa.field("variant", pa.int32(), nullable=False),
    pa.field("query_x", pa.int64(), nullable=False),
    pa.field("target", pa.float64(), nullable=False),
    pa.field("answer", pa.string(), nullable=False),
    pa.field("examples_x", pa.list_(pa.int64()), nullable=False),
    pa.field("examples_y", pa.list_(pa.float64()), nullable=False),
    pa.field("candidates", _STRINGS, nullable=False),
    pa.field("candidate_texts", _STRINGS, nullable=False),
    pa.field("answer_end", pa.string(), nullable=False),
)
# study B: one prompt per story (name, activity), variant and n_shots
READING_TASK = _task(
    pa.field("name", pa.string(), nullable=False),
    pa.field("activity", pa.string(), nullable=False),
    pa.field("distractor_name", pa.string(), nullable=False),
    pa.field("distractor_activity", pa.string(), nullable=False),
    pa.field("relevant_first", pa.bool_(), nullable=False),
    pa.field("examples_relevant_first", pa.list_(pa.bool_()), nullable=False),
    pa.field("variant", pa.int32(), nullable=False),
    pa.field("answer", pa.string(), nullable=False),
    pa.field("candidates", _STRINGS, nullable=False),
    pa.field("candidate_texts", _STRINGS, nullable=False),
)
# study C (iclscope.tasks.labels): one prompt per condition and repeat; the metadata carries the dataset's card
LABELS_TASK = _task(
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("repeat", pa.int32(), nullable=False),
    pa.field("label_words", _STRINGS, nullable=False),
    pa.field("true_class", _INTS, nullable=False),
    pa.field("context_class", _INTS, nullable=False),
    pa.field("true_labels", _STRINGS, nullable=False),
    pa.field("context_labels", _STRINGS, nullable=False),
    pa.field("example_index", _INTS, nullable=False),
)


def vector(hidden: int) -> pa.DataType:
    """A hidden-state vector column type: ``fixed_size_list<float32>[hidden]``."""
    return pa.list_(pa.float32(), hidden)


def embeddings_schema(hidden: int) -> pa.Schema:
    """Pooled hidden states: one row per (prompt, layer, span, pooling); layer 0 = embeddings."""
    return pa.schema([
        ("prompt_id", pa.string()), ("layer", pa.int16()), ("span", pa.string()),
        ("pooling", pa.string()), ("vector", vector(hidden)),
    ])


ATTENTION = pa.schema([
    ("prompt_id", pa.string()), ("layer", pa.int16()), ("head", pa.int16()),  # head -1 = mean
    ("query", pa.string()), ("span", pa.string()), ("mass", pa.float32()),
])

# logprob: exact (sum over the candidate's tokens); first_token_logprob: its first token
# only (the label-relationship paper's scoring, kept so either can be analysed)
READOUTS = pa.schema([
    ("prompt_id", pa.string()), ("readout", pa.string()), ("candidate", pa.string()),
    ("logprob", pa.float32()), ("first_token_logprob", pa.float32()),
])

# study A1 (iclscope.extraction.generation.generation_record): flips = the GENERATED flips only
# (first-letter parse); forced_flips = the flips the prompt itself wrote ("[Heads," -> "0");
# n_clean = leading generated flips whose items are exactly a symbol word (binary.generation.parse
# strict keeps flips[:n_clean]); clean = every generated item was exactly a symbol word;
# rendered_prompt = exactly the text the model read (chat template and system line applied),
# which differs from the task table's `text` for instruct models
# mode = how the sequence was sampled (GENERATION_MODES): ``free`` (the paper's: the model writes
# what it likes, parsed afterwards) or ``constrained`` (only symbol-then-separator continuations
# allowed, n_flips of them); step_logp_first / step_logp_second (constrained only, one entry per
# generated flip): the model's exact log P(symbol | prefix) of each symbol, step_p_second the
# second symbol's probability renormalised over the two (temperature 1); empty for free rows
GENERATION_MODES = ("constrained", "free")
GENERATIONS = pa.schema([
    ("prompt_id", pa.string()), ("p_tails", pa.float64()), ("sample", pa.int32()),
    ("raw", pa.string()), ("flips", pa.string()), ("parsed", pa.bool_()), ("n_tokens", pa.int32()),
    ("forced_flips", pa.string()), ("n_clean", pa.int32()), ("clean", pa.bool_()),
    ("rendered_prompt", pa.string()), ("mode", pa.string()), ("step_logp_first", pa.list_(pa.float32())),
    ("step_logp_second", pa.list_(pa.float32())), ("step_p_second", pa.list_(pa.float64())),
])

LABEL_POSITIONS = pa.schema([
    ("dataset", pa.string()), ("condition", pa.string()), ("repeat", pa.int32()),
    ("position", pa.int32()), ("true_label", pa.string()), ("context_label", pa.string()),
    ("logp_true", pa.float32()), ("logp_context", pa.float32()), ("correct", pa.bool_()),
    ("correct_context", pa.bool_()), ("entropy", pa.float32()), ("logp_label_mass", pa.float32()),
    ("scoring", pa.string()), ("logp_true_calibrated", pa.float32()), ("correct_calibrated", pa.bool_()),
])

CURVE = pa.schema([
    ("dataset", pa.string()), ("condition", pa.string()), ("position", pa.int32()),
    ("metric", pa.string()), ("mean", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("n", pa.int64()),
])
LABEL_SUMMARY = pa.schema([
    ("dataset", pa.string()), ("kind", pa.string()), ("metric", pa.string()), ("position_name", pa.string()),
    ("position", pa.int32()), ("condition", pa.string()), ("condition_b", pa.string()),
    ("mean", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("n", pa.int64()),
    ("beta", pa.float64()), ("variance_ratio", pa.float64()),
])

# study A: every column is documented in iclscope.studies.binary
REPEAT_WINDOWS = tuple(range(5, 26))


def binary_generation_metrics_schema(windows: tuple[int, ...] = REPEAT_WINDOWS) -> pa.Schema:
    """One row per sequence (the model's or a baseline's sample); ``repeats_w{w}`` per window.

    Metrics are of the generated flips only (``forced_flips``: what the prompt wrote, null for
    baselines); ``gzip_net`` is net of gzip's fixed overhead; ``repeats_w{w}`` is null where
    w >= the sequence length (no two windows fit)."""
    return pa.schema([
        ("source", pa.string()), ("p_tails", pa.float64()), ("sample", pa.int32()), ("flips", pa.string()),
        ("mean", pa.float64()), ("alternation", pa.float64()), ("longest_run", pa.int32()),
        ("gzip_net", pa.int32()), ("running_std", pa.float64()), ("running_min", pa.float64()),
        ("running_max", pa.float64()), *[(f"repeats_w{w}", pa.int32()) for w in windows],
        ("forced_flips", pa.string()), ("mode", pa.string()),
    ])


BINARY_GENERATION_METRICS = binary_generation_metrics_schema()
BINARY_BASELINES = pa.schema([
    ("p_tails", pa.float64()), ("source", pa.string()), ("n_total", pa.int32()), ("n_short", pa.int32()),
    ("n_unparsed", pa.int32()), ("n_used", pa.int32()), ("n_flips", pa.int32()), ("params", pa.string()),
    ("n_params", pa.int32()), ("loglik", pa.float64()), ("loglik_per_flip", pa.float64()),
    ("bic", pa.float64()), ("bic_rank", pa.int32()), ("delta_bic", pa.float64()),
    ("mean_levenshtein", pa.float64()),
    # parse = binary.generation.parse; n_clean = sequences whose every generated item was exactly a
    # symbol word; n_used_<mode> = sequences each parse mode keeps (n_used = the configured mode's)
    ("parse", pa.string()), ("n_clean", pa.int32()), ("n_used_strict", pa.int32()),
    ("n_used_first_letter", pa.int32()),
    # the generation mode (GENERATION_MODES) the row's sequences come from; prob_*: the baseline
    # fitted to the model's per-step probabilities (constrained mode only, else null/NaN):
    # its parameters, mean cross-entropy and KL(model || baseline) per step (nats), mean
    # |P_model - P_baseline|, and its rank by KL (1 = explains the probabilities best)
    ("mode", pa.string()), ("prob_params", pa.string()), ("prob_cross_entropy", pa.float64()),
    ("prob_kl", pa.float64()), ("prob_mae", pa.float64()), ("prob_kl_rank", pa.int32()),
])
# study A, constrained mode: one row per generated flip, with the model's probability of the
# second symbol at that step and the history it saw (the prompt's own flips included):
# run_symbol / run_length = the symbol and length of the run the history ends with,
# running_mean = its fraction of second symbols, p_same = the probability of continuing the run
GENERATION_STEPS = pa.schema([
    ("p_tails", pa.float64()), ("sample", pa.int32()), ("step", pa.int32()), ("flip", pa.int8()),
    ("p_second", pa.float64()), ("run_symbol", pa.int8()), ("run_length", pa.int32()),
    ("running_mean", pa.float64()), ("p_same", pa.float64()),
])
JUDGMENT = pa.schema([
    ("concept", pa.string()), ("length", pa.int32()), ("sample", pa.int32()), ("p_random", pa.float64()),
    ("logp_r", pa.float64()), ("logp_n", pa.float64()), ("prompt_id", pa.string()),
])
# per concept (``random`` = the Bernoulli controls) and |x|: mean p_random over the samples
# with its bootstrap CI over samples (NaN where one sample), what the judgment figure draws
JUDGMENT_SUMMARY = pa.schema([
    ("concept", pa.string()), ("length", pa.int32()), ("mean", pa.float64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("n", pa.int32()),
])
CONTINUATION = pa.schema([
    ("concept", pa.string()), ("length", pa.int32()), ("depth", pa.int32()), ("p_continue", pa.float64()),
    ("p_continue_sum", pa.float64()), ("p_continue_min", pa.float64()), ("p_continue_max", pa.float64()),
    ("n_rotations", pa.int32()), ("n_units", pa.int32()),
])
MODEL_SELECTION = pa.schema([
    ("curve", pa.string()), ("concept", pa.string()), ("account", pa.string()),
    ("transition", pa.float64()), ("slope", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("depth", pa.int32()), ("k", pa.int32()), ("n_points", pa.int32()), ("n_units", pa.int32()),
    ("ci_method", pa.string()), ("midpoint", pa.float64()), ("midpoint_low", pa.float64()),
    ("midpoint_high", pa.float64()), ("slope_low", pa.float64()), ("slope_high", pa.float64()),
    ("n_params", pa.int32()), ("sse", pa.float64()), ("r2", pa.float64()), ("bic", pa.float64()),
    ("best", pa.bool_()), ("temperature", pa.float64()), ("logit_prior", pa.float64()),
    ("prior_concept", pa.float64()),
    ("ci_reason", pa.string()),  # null when ci_low/ci_high exist, else why not
])

BEHAVIOUR = pa.schema([
    ("task", pa.string()), ("prompt_id", pa.string()), ("condition", pa.string()), ("n_shots", pa.int32()),
    ("answer", pa.string()), ("error", pa.float64()),
    # study B (iclscope.studies.representations): answer = the model's argmax candidate
    ("variant", pa.int32()), ("correct_answer", pa.string()), ("correct", pa.bool_()),
    ("expected", pa.float64()), ("expected_error", pa.float64()), ("logp_correct", pa.float64()),
    ("n_candidates", pa.int32()),
    ("relevant_first", pa.bool_()),  # reading: story order; null for tasks without one
    # the first prompt_id with this prompt's text: rows sharing it are one observation
    ("distinct_prompt_id", pa.string()),
])
BEHAVIOUR_SUMMARY = pa.schema([
    ("task", pa.string()), ("n_shots", pa.int32()), ("metric", pa.string()),
    ("mean", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("n_prompts", pa.int32()),
    ("relevant_first", pa.bool_()),  # null = pooled over story orders; true / false = that order only
])
RSA = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("n_shots", pa.int32()), ("hypothesis", pa.string()),
    ("spearman", pa.float64()), ("p_value", pa.float64()),
    ("pooling", pa.string()), ("span", pa.string()), ("n_conditions", pa.int32()), ("n_prompts", pa.int32()),
    ("n_permutations", pa.int32()),
    # one row per comparator: alignment = its value, p_value its permutation p; spearman kept in every row
    ("comparator", pa.string()), ("alignment", pa.float64()),
    # the comparator's best value against this hypothesis, and alignment / ceiling (1 = perfect)
    ("ceiling", pa.float64()), ("alignment_normalised", pa.float64()),
    ("relevant_first", pa.bool_()),  # null = every prompt; true / false = one story order's prompts
])
# the similarity matrices behind RSA, long; shared = hypothesis fields the two conditions share
SIMILARITY = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("pooling", pa.string()), ("span", pa.string()),
    ("n_shots", pa.int32()), ("row_condition", pa.string()), ("col_condition", pa.string()),
    ("similarity", pa.float64()), ("shared", pa.list_(pa.string())),
])
PROBES = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("n_shots", pa.int32()), ("target", pa.string()),
    ("score", pa.float64()), ("control_score", pa.float64()),
    ("selectivity", pa.float64()), ("probe", pa.string()), ("metric", pa.string()), ("pooling", pa.string()),
    ("span", pa.string()), ("n_prompts", pa.int32()), ("n_conditions", pa.int32()),
    # control_score = mean over n_shuffles group-level shuffles; p_value = permutation p of score
    ("control_sd", pa.float64()), ("p_value", pa.float64()), ("n_shuffles", pa.int32()),
    # selectivity = max(score, chance) - mean(max(control, chance)); p_resolution = 1 / (1 + n_shuffles)
    ("chance", pa.float64()), ("p_resolution", pa.float64()),
])
ATTENTION_RATIO = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("n_shots", pa.int32()), ("ratio", pa.float64()),
    ("head", pa.int16()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),  # head -1 = head-mean masses
    ("mass_relevant", pa.float64()), ("mass_distractor", pa.float64()), ("n_prompts", pa.int32()),
    # ratio / ci_* = geometric mean over prompts = exp(log_ratio / log_ci_*); relevant_first null = pooled
    ("log_ratio", pa.float64()), ("log_ci_low", pa.float64()), ("log_ci_high", pa.float64()),
    ("relevant_first", pa.bool_()),
])
# study B's stated effects with intervals over their experimental units
# (iclscope.studies.representations.effects): quantity gain / alignment_change / alignment_after /
# attention_log_ratio_change / repr_behaviour_r; band null for gains; relevant_first null = pooled
EFFECTS = pa.schema([
    ("task", pa.string()), ("quantity", pa.string()), ("measure", pa.string()), ("pooling", pa.string()),
    ("span", pa.string()), ("behaviour", pa.string()), ("comparator", pa.string()), ("relevant_first", pa.bool_()),
    ("band", pa.string()), ("layer_low", pa.int16()), ("layer_high", pa.int16()), ("relative_depth", pa.float64()),
    ("n_shots_before", pa.int32()), ("n_shots_after", pa.int32()),
    ("estimate", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("n_units", pa.int32()), ("units", pa.string()), ("headline", pa.bool_()),
])
# mean = the correlation across conditions of the two changes after ICL (B7)
REPR_VS_BEHAVIOUR = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("measure", pa.string()),
    ("mean", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("pooling", pa.string()), ("span", pa.string()), ("behaviour", pa.string()),
    ("n_shots_before", pa.int32()), ("n_shots_after", pa.int32()), ("n_conditions", pa.int32()),
    ("delta_measure", pa.float64()), ("delta_behaviour", pa.float64()),
])
