"""What study B's two task builders share: the names they give (spans, condition fields), numbers
as prompts write them, the checks of their config values and the few-shot layout."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from iclscope.contracts import example_name
from iclscope.tasks.common import Piece, TaskError, join_pieces

# What the builders name (config validation reads these instead of a copy): the spans of
# each task besides the per-example ``example_{i}`` ones (plus the extraction's pooled ``end``,
# the prompt's last token) and the condition fields a hypothesis can name.
TASK_SPANS = {
    "regression": ("query", "query_line", "examples", "instruction"),
    "reading": ("relevant", "distractor", "story", "question", "question_name", "examples"),
}
CONDITION_FIELDS = {"regression": ("slope", "intercept"), "reading": ("name", "activity")}


def format_number(value: float) -> str:
    """A number as written in prompts: integers without a decimal point, others
    positional without trailing zeros (``3.0`` -> ``"3"``, ``-0.5`` -> ``"-0.5"``)."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return np.format_float_positional(value, trim="-")


def integer(value: Any, key: str, minimum: int | None = None) -> int:
    """``value`` (config key ``key``) as an integer, at least ``minimum``; else a TaskError naming the key."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
    ):
        bound = "" if minimum is None else f" >= {minimum}"
        raise TaskError(f"{key} must be an integer{bound}, got {value!r}")
    return value


def number_grid(values: Any, key: str) -> list[float]:
    """A non-empty list of distinct numbers, as floats (config key ``key``)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise TaskError(f"{key} must be a non-empty list of numbers, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TaskError(f"{key}: {v!r} is not a number")
    grid = [float(v) for v in values]
    if len(set(grid)) != len(grid):
        raise TaskError(f"{key} has duplicate values: {values!r}")
    return grid


def shot_counts(values: Any, key: str) -> list[int]:
    """The ``n_shots`` list: distinct integers >= 0, sorted (config key ``key``)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise TaskError(f"{key} must be a non-empty list of integers >= 0, got {values!r}")
    shots = [integer(v, key, minimum=0) for v in values]
    if len(set(shots)) != len(shots):
        raise TaskError(f"{key} has duplicate values: {values!r}")
    return sorted(shots)


def text_value(value: Any, key: str) -> str:
    """``value`` (config key ``key``), which must be a string."""
    if not isinstance(value, str):
        raise TaskError(f"{key} must be a string, got {value!r}")
    return value


def few_shot_prompt(instruction: str, examples: Sequence[Piece], query: Piece, separator: str) -> Piece:
    """Instruction, solved examples and query joined by ``separator``.

    Spans: ``instruction`` (if any), ``examples`` over all examples and ``example_{i}``
    (i = 1..k) over each, plus the query's own spans.
    """
    blocks: list[Piece] = []
    if instruction:
        blocks.append(Piece(instruction).named("instruction"))
    if examples:
        numbered = [ex.plain().named(example_name(i)) for i, ex in enumerate(examples, start=1)]
        blocks.append(join_pieces(numbered, separator).named("examples"))
    blocks.append(query)
    return join_pieces(blocks, separator)
