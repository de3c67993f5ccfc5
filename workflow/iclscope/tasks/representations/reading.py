"""Study B's task B2: reading-comprehension prompts (see :mod:`iclscope.tasks.representations`).

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
from iclscope.config import resolve_path, with_defaults
from iclscope.seeding import rng
from iclscope.tasks.common import Piece, TaskError, fill_template, join_pieces, task_table
from iclscope.tasks.representations.shared import few_shot_prompt, integer, shot_counts, text_value

# the two sentences of a story
STORY_JOINER = " "


def load_items(path: Path, key: str) -> list[str]:
    """Items of a data file: one per line, blank lines and ``#`` comment lines skipped."""
    if not path.is_file():
        raise TaskError(f"{key}: data file {path} does not exist")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


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
    n = integer(rd[f"n_{kind}"], f"representations.reading.n_{kind}", minimum=2)
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

    def told(person: str, doing: str, span: str) -> Piece:  # one sentence of the story
        return fill_template(sentence, {"name": person, "activity": doing}, f"{key}.sentence_template",
                             required=("name", "activity")).named(span)

    relevant = told(name, activity, "relevant")
    distractor = told(distractor_name, distractor_activity, "distractor")
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
    shots = shot_counts(rd["n_shots"], f"{key}.n_shots")
    n_variants = integer(rd["n_variants"], f"{key}.n_variants", minimum=1)
    separator = text_value(rd["example_separator"], f"{key}.example_separator")
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
                prompt = few_shot_prompt("", examples[:k], query, separator)
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
