"""Arrow schemas of the tables downstream of task construction (CONVENTIONS.md).

The column names are binding; implementations may add columns. The ``tasks`` contract
lives in :mod:`iclscope.tasks.common`.
"""

from __future__ import annotations

import pyarrow as pa


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

READOUTS = pa.schema([
    ("prompt_id", pa.string()), ("readout", pa.string()), ("candidate", pa.string()),
    ("logprob", pa.float32()),
])

GENERATIONS = pa.schema([
    ("prompt_id", pa.string()), ("p_tails", pa.float64()), ("sample", pa.int32()),
    ("raw", pa.string()), ("flips", pa.string()), ("parsed", pa.bool_()),
])

LABEL_POSITIONS = pa.schema([
    ("dataset", pa.string()), ("condition", pa.string()), ("repeat", pa.int32()),
    ("position", pa.int32()), ("true_label", pa.string()), ("context_label", pa.string()),
    ("logp_true", pa.float32()), ("logp_context", pa.float32()), ("correct", pa.bool_()),
    ("entropy", pa.float32()),
])

CURVE = pa.schema([
    ("dataset", pa.string()), ("condition", pa.string()), ("position", pa.int32()),
    ("metric", pa.string()), ("mean", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
])

BINARY_GENERATION_METRICS = pa.schema([
    ("p_tails", pa.float64()), ("sample", pa.int32()), ("flips", pa.string()),
    ("mean", pa.float64()), ("alternation", pa.float64()), ("longest_run", pa.int32()),
])
JUDGMENT = pa.schema([("concept", pa.string()), ("length", pa.int32()), ("p_random", pa.float64())])
CONTINUATION = pa.schema([
    ("concept", pa.string()), ("length", pa.int32()), ("depth", pa.int32()), ("p_continue", pa.float64()),
])
MODEL_SELECTION = pa.schema([
    ("curve", pa.string()), ("concept", pa.string()), ("account", pa.string()),
    ("transition", pa.float64()), ("slope", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
])

BEHAVIOUR = pa.schema([
    ("task", pa.string()), ("prompt_id", pa.string()), ("condition", pa.string()), ("n_shots", pa.int32()),
    ("answer", pa.string()), ("error", pa.float64()),
])
RSA = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("n_shots", pa.int32()), ("hypothesis", pa.string()),
    ("spearman", pa.float64()), ("p_value", pa.float64()),
])
PROBES = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("n_shots", pa.int32()), ("target", pa.string()),
    ("score", pa.float64()), ("control_score", pa.float64()),
])
ATTENTION_RATIO = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("n_shots", pa.int32()), ("ratio", pa.float64()),
])
REPR_VS_BEHAVIOUR = pa.schema([
    ("task", pa.string()), ("layer", pa.int16()), ("measure", pa.string()),
    ("mean", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
])
