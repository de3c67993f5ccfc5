"""Study B's task B1: linear-regression prompts (see :mod:`iclscope.tasks.representations`).

regression (B1)
    Condition = line ``y = a*x + b`` (``a={a:g},b={b:g}``). Extra columns: slope,
    intercept (float64), variant (int32), query_x (int64), target (float64, noiseless
    a*x+b), answer (target as written in examples), examples_x (list<int64>),
    examples_y (list<float64>) of the k examples in the prompt, candidates (list<str>:
    every integer answer from a little below the smallest target to a little above the
    largest), candidate_texts (each candidate as it would follow the prompt, with the
    example template's spacing, e.g. ``" -7"``) and answer_end (what follows an answer in
    the examples, up to the next example's x: the template's text after {y}, the example
    separator and the template's text before {x}, e.g. ``"\n\nInput: "``). A candidate is
    scored as its tokens plus the first token of answer_end, both tokenised in context, so
    its probability includes the end of the number (``" 1"`` is not ``" 12"``) with the
    terminator the model's tokenizer really writes after an answer (``"\n"`` for SmolLM2,
    whose pre-tokenizer splits ``"\n\nInput"`` into two ``"\n"``; ``"\n\n"`` for Gemma 3).
    Spans: query (the query x), query_line, examples (k > 0), example_{i} (i = 1..k),
    instruction (when non-empty).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from iclscope import contracts
from iclscope.config import with_defaults
from iclscope.seeding import rng
from iclscope.tasks.common import TaskError, fill_template, task_table
from iclscope.tasks.representations.shared import (
    few_shot_prompt,
    format_number,
    integer,
    number_grid,
    shot_counts,
    text_value,
)


def regression_draws(
    seed: int, variant: int, x_min: int, x_max: int, n_examples: int
) -> tuple[int, np.ndarray]:
    """The query x and ``n_examples`` distinct example x's (none equal to the query) of a variant.

    The draws depend on the variant only, never on the condition (the line): every condition
    gets the same query x and the same example x's for a given variant, so prompts of two
    conditions differ only in the y values, and the before-ICL prompts (k = 0) of one variant
    are identical across conditions (the model cannot know the line without examples). The
    examples are a prefix of a seeded permutation, so raising ``n_examples`` keeps the earlier
    ones; the query does not depend on ``n_examples`` at all.
    """
    query = int(rng(seed, "regression", "variant", variant, "query").integers(x_min, x_max + 1))
    pool = np.arange(x_min, x_max + 1, dtype=np.int64)
    pool = pool[pool != query]
    examples = rng(seed, "regression", "variant", variant, "examples").permutation(pool)[:n_examples]
    return query, examples


def regression_targets(
    xs: np.ndarray,
    slope: float,
    intercept: float,
    noise: float,
    seed: int,
    variant: int,
) -> np.ndarray:
    """``y = a*x + b``, plus Normal(0, noise) rounded to an integer when ``noise > 0``.

    The noise draws depend on the variant only (like the x's), so every condition of a
    variant carries the same noise sequence and conditions differ only by their line.
    """
    ys = slope * xs.astype(np.float64) + intercept
    if noise > 0:
        eps = rng(seed, "regression", "variant", variant, "noise").normal(0.0, noise, size=len(xs))
        ys = np.round(ys + eps) + 0.0  # + 0.0 turns -0.0 into 0.0
    return ys


def build_regression(cfg: Mapping[str, Any], seed: int) -> pa.Table:
    """B1: linear-regression prompts for every (slope, intercept) condition.

    Reads ``cfg["regression"]`` (defaults: config/schema.yaml); returns one row per
    condition x variant x n_shots (columns and spans in the module docstring).
    """
    reg = with_defaults("representations", cfg)["regression"]
    key = "representations.regression"
    slopes = number_grid(reg["slopes"], f"{key}.slopes")
    intercepts = number_grid(reg["intercepts"], f"{key}.intercepts")
    x_min = integer(reg["x_min"], f"{key}.x_min")
    x_max = integer(reg["x_max"], f"{key}.x_max")
    shots = shot_counts(reg["n_shots"], f"{key}.n_shots")
    n_variants = integer(reg["n_variants"], f"{key}.n_variants", minimum=1)
    noise = reg["noise"]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise TaskError(f"{key}.noise must be a number >= 0, got {noise!r}")
    n_examples = shots[-1]
    if x_max - x_min < n_examples:
        raise TaskError(
            f"{key}.x_min/x_max: [{x_min}, {x_max}] holds {max(x_max - x_min + 1, 0)} integers, "
            f"fewer than the query plus {n_examples} distinct examples ({key}.n_shots)"
        )
    instruction = text_value(reg["instruction"], f"{key}.instruction")
    separator = text_value(reg["example_separator"], f"{key}.example_separator")

    records = []
    for a in slopes:
        for b in intercepts:
            condition = f"a={a:g},b={b:g}"
            for variant in range(n_variants):
                query_x, xs = regression_draws(seed, variant, x_min, x_max, n_examples)
                ys = regression_targets(xs, a, b, float(noise), seed, variant)
                target = a * query_x + b
                examples = [
                    fill_template(
                        reg["example_template"],
                        {"x": format_number(x), "y": format_number(y)},
                        f"{key}.example_template",
                        required=("x", "y"),
                    )
                    for x, y in zip(xs, ys)
                ]
                query = fill_template(
                    reg["query_template"],
                    {"x": format_number(query_x)},
                    f"{key}.query_template",
                    spans={"x": "query"},
                ).named("query_line")
                for k in shots:
                    prompt = few_shot_prompt(instruction, examples[:k], query, separator)
                    records.append(
                        {
                            "prompt_id": f"regression:{condition}:v{variant:02d}:k{k:02d}",
                            "task": "regression",
                            "condition": condition,
                            "n_shots": k,
                            "text": prompt.text,
                            "spans": list(prompt.spans),
                            "slope": a,
                            "intercept": b,
                            "variant": variant,
                            "query_x": query_x,
                            "target": target,
                            "answer": format_number(target),
                            "examples_x": [int(x) for x in xs[:k]],
                            "examples_y": [float(y) for y in ys[:k]],
                        }
                    )
    candidates = number_candidates([r["target"] for r in records])
    prefix, end = answer_affixes(reg["example_template"], reg["query_template"], separator)
    for record in records:
        record["candidates"] = [format_number(c) for c in candidates]
        record["candidate_texts"] = [f"{prefix}{format_number(c)}" for c in candidates]
        record["answer_end"] = end
    return task_table(records, contracts.REGRESSION_TASK)


def answer_affixes(example_template: str, query_template: str, separator: str) -> tuple[str, str]:
    """What comes between the query prompt and the answer ``{y}``, and what follows an
    answer in the examples up to the next example's ``{x}``.

    With the defaults (``"Input: {x}\nOutput: {y}\n"`` after ``"Input: {x}\nOutput:"``,
    separator ``"\n"``) that is ``(" ", "\n\nInput: ")``. The end reaches into the next
    example because a tokenizer may split the same whitespace differently at the end of a
    text (SmolLM2: ``"\n\n"`` alone is one token, before ``"Input"`` two); the readout
    scores only its first token.
    """
    after_x = example_template.split("{x}", 1)[-1]
    before_y, _, after_y = after_x.partition("{y}")
    query_tail = query_template.split("{x}", 1)[-1]
    prefix = before_y[len(query_tail):] if before_y.startswith(query_tail) else " "
    lead = example_template.split("{x}", 1)[0]  # how the next example starts
    return prefix, after_y + separator + lead


def number_candidates(targets: Sequence[float]) -> list[int]:
    """Integer answers around the targets: their range widened by 10% (at least 2) each side."""
    low, high = float(np.floor(min(targets))), float(np.ceil(max(targets)))
    pad = max(2.0, round(0.1 * (high - low)))
    return list(range(int(low - pad), int(high + pad) + 1))
