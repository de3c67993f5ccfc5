"""Study B task builders: representations before and after ICL (Yousefi et al., arXiv 2310.00313).

Each builder takes ``cfg = config["representations"]`` and the global seed and returns a
task table (see :mod:`iclscope.tasks.common`; schemas :data:`iclscope.contracts.REGRESSION_TASK`
and ``READING_TASK``). Every condition has ``n_variants``
variants; each variant is emitted once per ``n_shots`` value k, using the first k of
its solved examples, so the prompts of one variant are nested: they share the query
and, for larger k, extend the examples of smaller k.

Controls built into the draws (each tested in tests/test_tasks_representations.py):

* regression: the query x, the example x's and the noise depend on the variant only, so
  every condition sees the same x's (paired by variant). Conditions then differ only in
  their y values, before-ICL prompts (k = 0) of a variant are identical across conditions,
  and condition means cannot track x.
* reading: ``n_variants`` must be even and ``relevant_first`` is True for exactly half the
  variants of every condition (so within every (condition, n_shots)); solved examples share
  no name and no activity with the query's story, so neither the correct activity nor the
  distractor's activity ever appears in the context (no copying, no priming of either);
  the solved examples' own sentence order is balanced within each prompt
  (:func:`balanced_example_orders`), so the context does not teach a position.

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
reading (B2)
    Condition = ``{name}|{activity}``. Extra columns: name, activity, distractor_name,
    distractor_activity, relevant_first (bool), examples_relevant_first (list<bool>: each
    solved example's own order, of the k in the prompt), variant (int32), answer (= activity),
    candidates (list<str>, all activities in use, sorted), candidate_texts (each as the
    answer template writes it after the question, e.g. ``" bake bread"``).
    Spans: relevant, distractor, story, question, question_name, examples (k > 0),
    example_{i}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from iclscope import contracts
from iclscope.contracts import example_name
from iclscope.config import resolve_path, with_defaults
from iclscope.seeding import rng
from iclscope.tasks.common import Piece, TaskError, fill_template, join_pieces, task_table


# the two sentences of a story
STORY_JOINER = " "
# What the builders below name (config validation reads these instead of a copy): the spans of
# each task besides the per-example ``example_{i}`` ones (plus the extraction's pooled ``end``,
# the prompt's last token) and the condition fields a hypothesis can name.
TASK_SPANS = {
    "regression": ("query", "query_line", "examples", "instruction"),
    "reading": ("relevant", "distractor", "story", "question", "question_name", "examples"),
}
CONDITION_FIELDS = {"regression": ("slope", "intercept"), "reading": ("name", "activity")}


# --------------------------------------------------------------------------- helpers


def format_number(value: float) -> str:
    """A number as written in prompts: integers without a decimal point, others
    positional without trailing zeros (``3.0`` -> ``"3"``, ``-0.5`` -> ``"-0.5"``)."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return np.format_float_positional(value, trim="-")


def load_items(path: Path, key: str) -> list[str]:
    """Items of a data file: one per line, blank lines and ``#`` comment lines skipped."""
    if not path.is_file():
        raise TaskError(f"{key}: data file {path} does not exist")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _int(value: Any, key: str, minimum: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
    ):
        bound = "" if minimum is None else f" >= {minimum}"
        raise TaskError(f"{key} must be an integer{bound}, got {value!r}")
    return value


def _number_grid(values: Any, key: str) -> list[float]:
    if not isinstance(values, (list, tuple)) or not values:
        raise TaskError(f"{key} must be a non-empty list of numbers, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TaskError(f"{key}: {v!r} is not a number")
    grid = [float(v) for v in values]
    if len(set(grid)) != len(grid):
        raise TaskError(f"{key} has duplicate values: {values!r}")
    return grid


def _shots(values: Any, key: str) -> list[int]:
    if not isinstance(values, (list, tuple)) or not values:
        raise TaskError(f"{key} must be a non-empty list of integers >= 0, got {values!r}")
    shots = [_int(v, key, minimum=0) for v in values]
    if len(set(shots)) != len(shots):
        raise TaskError(f"{key} has duplicate values: {values!r}")
    return sorted(shots)


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise TaskError(f"{key} must be a string, got {value!r}")
    return value


def _prompt(instruction: str, examples: Sequence[Piece], query: Piece, separator: str) -> Piece:
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


# --------------------------------------------------------------------------- regression


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
    slopes = _number_grid(reg["slopes"], f"{key}.slopes")
    intercepts = _number_grid(reg["intercepts"], f"{key}.intercepts")
    x_min = _int(reg["x_min"], f"{key}.x_min")
    x_max = _int(reg["x_max"], f"{key}.x_max")
    shots = _shots(reg["n_shots"], f"{key}.n_shots")
    n_variants = _int(reg["n_variants"], f"{key}.n_variants", minimum=1)
    noise = reg["noise"]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise TaskError(f"{key}.noise must be a number >= 0, got {noise!r}")
    n_examples = shots[-1]
    if x_max - x_min < n_examples:
        raise TaskError(
            f"{key}.x_min/x_max: [{x_min}, {x_max}] holds {max(x_max - x_min + 1, 0)} integers, "
            f"fewer than the query plus {n_examples} distinct examples ({key}.n_shots)"
        )
    instruction = _string(reg["instruction"], f"{key}.instruction")
    separator = _string(reg["example_separator"], f"{key}.example_separator")

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
                    prompt = _prompt(instruction, examples[:k], query, separator)
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


# --------------------------------------------------------------------------- reading


def _items(rd: Mapping[str, Any], kind: str, root: Path) -> list[str]:
    """The first ``n_{kind}`` names or activities, from the inline list or the data file."""
    key = f"representations.reading.{kind}"
    if rd[kind] is not None:
        items = rd[kind]
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise TaskError(f"{key} must be a list of strings, got {items!r}")
        items = [i.strip() for i in items]
        source = key
    else:
        path = resolve_path(rd[f"{kind}_file"], root)
        items = load_items(path, f"{key}_file")
        source = str(path)
    if any(not i for i in items):
        raise TaskError(f"{source}: empty item in {key}")
    duplicates = sorted({i for i in items if items.count(i) > 1})
    if duplicates:
        raise TaskError(f"{source}: duplicate {kind} {duplicates}")
    n = _int(rd[f"n_{kind}"], f"representations.reading.n_{kind}", minimum=2)
    if n > len(items):
        raise TaskError(
            f"representations.reading.n_{kind} = {n} but {source} holds only {len(items)} {kind}"
        )
    return items[:n]


def _draw_story(
    g: np.random.Generator,
    name: str,
    activity: str,
    names: Sequence[str],
    activities: Sequence[str],
    avoid_names: Sequence[str] = (),
    avoid_activities: Sequence[str] = (),
) -> tuple[str, str]:
    """A distractor name (!= name) and distractor activity (!= activity).

    ``avoid_names`` / ``avoid_activities``: names and activities of a query's story that the
    distractor of a solved example must not mention either, so that the context never states
    anything about the query's person, its distractor person or their activities.
    """
    skip_names = {name, *avoid_names}
    skip_activities = {activity, *avoid_activities}
    other_names = [n for n in names if n not in skip_names]
    other_activities = [a for a in activities if a not in skip_activities]
    distractor_name = other_names[int(g.integers(len(other_names)))]
    distractor_activity = other_activities[int(g.integers(len(other_activities)))]
    return distractor_name, distractor_activity


def balanced_orders(n_variants: int, g: np.random.Generator) -> list[bool]:
    """``relevant_first`` for each variant of one condition: exactly half True, in a seeded order.

    ``n_variants`` must be even (TaskError otherwise): the reading position of the relevant
    sentence is then balanced within every condition and, since each variant is emitted once per
    ``n_shots``, within every (condition, n_shots).
    """
    if n_variants % 2:
        raise TaskError(
            f"representations.reading.n_variants must be even (got {n_variants}): half of each "
            "condition's variants put the relevant sentence first, half second"
        )
    order = np.array([True, False] * (n_variants // 2))
    return [bool(v) for v in g.permutation(order)]


def balanced_example_orders(n_examples: int, g: np.random.Generator) -> list[bool]:
    """``relevant_first`` of each solved example of one prompt: every consecutive pair of
    examples holds one of each order (seeded which comes first), so the first 2j examples are
    exactly balanced and an odd count is off by one (its last example's order is drawn)."""
    orders: list[bool] = []
    for _ in range((n_examples + 1) // 2):
        first = bool(g.integers(2))
        orders += [first, not first]
    return orders[:n_examples]


def _story_prompt(
    rd: Mapping[str, Any],
    name: str,
    activity: str,
    distractor_name: str,
    distractor_activity: str,
    relevant_first: bool,
) -> Piece:
    """Story and question with spans relevant, distractor, story, question, question_name."""
    key = "representations.reading"
    sentence = rd["sentence_template"]
    relevant = fill_template(
        sentence,
        {"name": name, "activity": activity},
        f"{key}.sentence_template",
        required=("name", "activity"),
    ).named("relevant")
    distractor = fill_template(
        sentence,
        {"name": distractor_name, "activity": distractor_activity},
        f"{key}.sentence_template",
        required=("name", "activity"),
    ).named("distractor")
    story = join_pieces(
        [relevant, distractor] if relevant_first else [distractor, relevant], STORY_JOINER
    )
    question = fill_template(
        rd["question_template"],
        {"name": name},
        f"{key}.question_template",
        spans={"name": "question_name"},
    )
    return fill_template(
        rd["prompt_template"],
        {"story": story, "question": question},
        f"{key}.prompt_template",
        spans={"story": "story", "question": "question"},
    )


def build_reading(cfg: Mapping[str, Any], seed: int, root: Path) -> pa.Table:
    """B2: reading-comprehension prompts for every (name, activity) condition.

    Reads ``cfg["reading"]`` (defaults: config/schema.yaml); data files are resolved
    against ``root``. Solved examples come from conditions sharing no name and no activity
    with the query's story (its relevant and its distractor sentence), and their
    distractors avoid them too, so the context never states the query's fact (ICL gains
    cannot come from copying it) and never primes the distractor's activity either.
    ``relevant_first`` is balanced exactly within every condition (``n_variants`` even).
    Needs at least 4 names and 4 activities when examples are used, and
    ``max(n_shots) <= (n_names - 2) * (n_activities - 2)``. Returns one
    row per condition x variant x n_shots (columns and spans in the module docstring).
    """
    rd = with_defaults("representations", cfg)["reading"]
    key = "representations.reading"
    names = _items(rd, "names", Path(root))
    activities = _items(rd, "activities", Path(root))
    shots = _shots(rd["n_shots"], f"{key}.n_shots")
    n_variants = _int(rd["n_variants"], f"{key}.n_variants", minimum=1)
    separator = _string(rd["example_separator"], f"{key}.example_separator")
    n_examples = shots[-1]
    if n_examples and min(len(names), len(activities)) < 4:
        raise TaskError(
            f"{key}.n_names/n_activities: solved examples need at least 4 names and 4 activities "
            f"(got {len(names)} and {len(activities)}): an example and its distractor avoid the "
            "names and activities of the query's story (relevant and distractor sentence)"
        )
    capacity = (len(names) - 2) * (len(activities) - 2)
    if n_examples > capacity:
        raise TaskError(
            f"{key}.n_shots: {n_examples} examples need as many conditions sharing no name and no "
            f"activity with the query's story, but {len(names)} names x {len(activities)} "
            f"activities give only {capacity} = (n_names - 2) * (n_activities - 2)"
        )
    conditions = [(n, a) for n in names for a in activities]
    candidates = sorted(activities)
    candidate_texts = [
        fill_template(rd["answer_template"], {"activity": c}, f"{key}.answer_template").text
        for c in candidates
    ]

    records = []
    for name, activity in conditions:
        condition = f"{name}|{activity}"
        orders = balanced_orders(n_variants, rng(seed, "reading", condition, "order"))
        for variant in range(n_variants):
            g = rng(seed, "reading", condition, variant)
            distractor_name, distractor_activity = _draw_story(g, name, activity, names, activities)
            relevant_first = orders[variant]
            query = _story_prompt(
                rd, name, activity, distractor_name, distractor_activity, relevant_first
            )
            story_names = (name, distractor_name)
            story_activities = (activity, distractor_activity)
            # examples share no name and no activity with the story: neither the correct
            # activity nor the distractor's is ever an example answer (or mentioned at all)
            disjoint = [
                (n, a) for n, a in conditions
                if n not in story_names and a not in story_activities
            ]
            # a prefix of a permutation: the examples for small k are those of large k
            order = rng(seed, "reading", condition, variant, "examples").permutation(len(disjoint))
            # the examples' own sentence order, balanced within the prompt (every even prefix
            # exactly): an unbalanced context would teach "the answer is in the first sentence"
            example_orders = balanced_example_orders(
                n_examples, rng(seed, "reading", condition, variant, "example_orders")
            )
            examples = []
            for i, j in enumerate(order[:n_examples]):
                ex_name, ex_activity = disjoint[int(j)]
                g = rng(seed, "reading", condition, variant, "example", i)
                ex_distractor = _draw_story(
                    g, ex_name, ex_activity, names, activities, story_names, story_activities
                )
                ex_first = example_orders[i]
                answer = fill_template(
                    rd["answer_template"],
                    {"activity": ex_activity},
                    f"{key}.answer_template",
                    required=("activity",),
                )
                examples.append(
                    join_pieces(
                        [_story_prompt(rd, ex_name, ex_activity, *ex_distractor, ex_first), answer]
                    )
                )
            for k in shots:
                prompt = _prompt("", examples[:k], query, separator)
                records.append(
                    {
                        "prompt_id": f"reading:{condition}:v{variant:02d}:k{k:02d}",
                        "task": "reading",
                        "condition": condition,
                        "n_shots": k,
                        "text": prompt.text,
                        "spans": list(prompt.spans),
                        "name": name,
                        "activity": activity,
                        "distractor_name": distractor_name,
                        "distractor_activity": distractor_activity,
                        "relevant_first": relevant_first,
                        "examples_relevant_first": example_orders[:k],
                        "variant": variant,
                        "answer": activity,
                        "candidates": candidates,
                        "candidate_texts": candidate_texts,
                    }
                )
    return task_table(records, contracts.READING_TASK)
