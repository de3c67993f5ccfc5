"""Study C task: label relationships (Kossen, Gal & Rainforth, arXiv 2307.12375).

:func:`build_labels` writes the task ``labels_<dataset>``: one prompt per (condition, repeat),
each a run of ``n_examples`` labelled examples drawn with replacement from the dataset::

    Sentence: 'awful' \\nAnswer: negative\\n\\nSentence: 'joy' \\nAnswer: positive ...

Every example shows its label, so one teacher-forced pass scores each ``answer_i`` position
from examples ``1..i-1``. The example draws depend only on (seed, dataset, repeat), so all
conditions of one repeat show the same inputs and differ only in their labels (paired design).
``class_draw`` says how: ``balanced`` (the default) draws each example's class uniformly and
then an item of that class, ``dataset`` draws items uniformly (the paper's draw; the classes
then follow the dataset's balance). Balanced draws keep label frequency from posing as
learning the mapping (a model that favours the context's majority label gains in default and
loses in flipped when one class dominates) and make a shown label sequence and its flip
equally likely, which the content-free control of default - flipped needs (below).
``repeats`` applies to every condition; ``repeats_by_condition`` sets another number for the
named ones (``arbitrary`` covers every arbitrary_* condition), so the conditions the pooled
effects compare can have many repeats and the others fewer. Repeat r is the same draw in every
condition that has it.

Conditions (class ``y`` of ``K``; positions ``i`` are 1-based):

==============  ===================================================================
default         shown class = y, verbalised with the dataset's ``label_words``
random          shown class = class of another example drawn the same way (not a
                permutation of the prompt's own labels: that would make the labels before
                position i depend on example i's own label through the counts)
flipped         shown class = (y + 1) mod K (a swap for binary tasks)
arbitrary_...   shown class = y, verbalised with replacement words; one condition per
                word list and order (both orders for pairs; list and reverse for K>2)
flip_df         default for i <= flip_at, flipped after (needs n_examples >= 2 flip_at + 1)
flip_fd         flipped for i <= flip_at, default after (same)
alternating     default at odd i, flipped at even i
<name>_cf       content-free twin of condition <name> (``content_free``): the same
                shown labels, every input replaced by ``content_free_text``
==============  ===================================================================

Content-free twins are a control variate. With the inputs gone, the model can react to the
shown label sequence only (copying recent labels, following their frequency), and that
reaction is most of the repeat-to-repeat spread of default - random on a task the model
cannot learn. ``random`` draws its labels independently from the same marginal as the true
ones, so default_cf - random_cf has expectation zero and subtracting it leaves the expected
default - random unchanged while removing that spread. With ``class_draw: balanced`` the
same holds for default_cf - flipped_cf: each shown label is uniform and independent of the
earlier ones, so the label the model is scored on and its flip are equally likely given
what it has seen (see :mod:`iclscope.studies.labels`).

Columns added to the task contract (lists have one entry per position, in order):

===============  ================  ===============================================
dataset          string            dataset name
repeat           int32             repeat index, 0-based
label_words      list<string>      the K candidate label words of the condition
true_class       list<int32>       true class of each example
context_class    list<int32>       class shown in the prompt
true_labels      list<string>      the condition's word for the true class
context_labels   list<string>      the word shown in the prompt
example_index    list<int32>       index of the example in the dataset
===============  ================  ===============================================

Spans: ``answer_i`` covers the shown label word (no leading space), ``example_i`` the
whole formatted example (without the separator). The table's schema metadata carries
``iclscope.dataset``: the dataset's name, classes, default label words and source info.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from iclscope import contracts
from iclscope.contracts import CONTENT_FREE_SUFFIX, answer_name, example_name
from iclscope.datasets import LabelledData, load_dataset
from iclscope.provenance import PREFIX, canonical_json
from iclscope.config import with_defaults
from iclscope.seeding import rng
from iclscope.tasks.common import Span, TaskError, TextBuilder, task_table

CONDITIONS = ("default", "random", "flipped", "arbitrary", "flip_df", "flip_fd", "alternating")
FLIP_CONDITIONS = ("flip_df", "flip_fd")



@dataclass(frozen=True)
class Condition:
    """A label condition: its ``name``, label ``words`` (class order) and ``mapping``.

    ``mapping`` is how shown classes derive from true ones: one of ``default``, ``random``,
    ``flipped``, ``flip_df``, ``flip_fd``, ``alternating`` (arbitrary conditions use
    ``default`` with other words). ``content_free``: the inputs are replaced by a placeholder.
    """

    name: str
    words: tuple[str, ...]
    mapping: str
    content_free: bool = False


def build_labels(
    dataset_cfg: Mapping[str, Any], labels_cfg: Mapping[str, Any], seed: int, root: Path
) -> pa.Table:
    """The task table ``labels_<name>`` for one dataset entry of the config.

    ``labels_cfg`` is the config's ``labels`` section (missing keys take the schema defaults),
    ``root`` resolves relative dataset paths. Returns one row per condition and repeat
    (arbitrary counted once per word list and order), sorted by ``prompt_id``.
    """
    cfg = with_defaults("labels", {k: v for k, v in labels_cfg.items() if v is not None})
    data = load_dataset(dataset_cfg, root, seed=seed)
    n_examples = int(cfg["n_examples"])
    _check_settings(data.name, cfg, n_examples)
    default_words = list(dataset_cfg.get("label_words") or data.classes)
    conditions = expand_conditions(
        data.name, cfg["conditions"], default_words, cfg["arbitrary_labels"], len(data.classes)
    )
    conditions += content_free_twins(conditions, cfg["content_free"])
    pair = data.texts2 is not None
    template = cfg["template_pair"] if pair else cfg["template"]
    pieces = parse_template(data.name, template, pair)
    rows = _rows(data, conditions, pieces, cfg, seed)
    table = task_table(rows, contracts.LABELS_TASK)
    card = {
        "name": data.name,
        "classes": data.classes,
        "label_words": default_words,
        "info": data.info,
    }
    return table.replace_schema_metadata({f"{PREFIX}dataset": canonical_json(card)})


def expand_conditions(
    dataset: str,
    names: Sequence[str],
    default_words: Sequence[str],
    arbitrary_labels: Sequence[Sequence[str]],
    k: int,
) -> list[Condition]:
    """The concrete conditions, in config order (``arbitrary`` expanded, duplicates merged).

    Checks every word list (length ``k``, non-blank, no duplicates) and raises
    :class:`TaskError` naming ``dataset`` on problems.
    """
    default = _check_words(dataset, "default label_words", default_words, k)
    out: dict[str, Condition] = {}
    for name in names:
        if name not in CONDITIONS:
            raise TaskError(
                f"dataset {dataset!r}: unknown label condition {name!r}; expected one of "
                f"{list(CONDITIONS)}"
            )
        if name != "arbitrary":
            out.setdefault(name, Condition(name, default, name))
            continue
        if not arbitrary_labels:
            raise TaskError(
                f"dataset {dataset!r}: condition 'arbitrary' needs arbitrary_labels, got none"
            )
        for given in arbitrary_labels:
            words = _check_words(dataset, "arbitrary_labels entry", given, k)
            for order in (words, words[::-1]):
                new = Condition(arbitrary_name(order), order, "default")
                known = out.setdefault(new.name, new)
                if known.words != new.words:
                    raise TaskError(
                        f"dataset {dataset!r}: arbitrary label lists {list(known.words)} and "
                        f"{list(new.words)} give the same condition name {new.name!r}"
                    )
    return list(out.values())


def content_free_twins(conditions: Sequence[Condition], names: Sequence[str]) -> list[Condition]:
    """The content-free twin ``<name>_cf`` of each condition in ``names`` that this run has
    (a narrower ``conditions`` on top of a config that twins others keeps building)."""
    by_name = {c.name: c for c in conditions}
    return [Condition(n + CONTENT_FREE_SUFFIX, by_name[n].words, by_name[n].mapping, content_free=True)
            for n in names if n in by_name]


def arbitrary_name(words: Sequence[str]) -> str:
    """``arbitrary_<w0>_<w1>...``: words lowercased, other than [a-z0-9] -> ``-``."""
    return "arbitrary_" + "_".join(re.sub(r"[^a-z0-9]", "-", w.lower()) for w in words)


def shown_classes(
    mapping: str, true: np.ndarray, k: int, flip_at: int, other: np.ndarray | None = None
) -> np.ndarray:
    """Classes shown in context, shape ``(n,)``, from true classes ``true`` (shape ``(n,)``).

    ``other`` holds the classes of independently drawn examples (``random`` only);
    ``flip_at`` is the N of ``flip_df`` / ``flip_fd``.
    """
    position = np.arange(1, len(true) + 1)
    flipped = (true + 1) % k
    if mapping == "default":
        return true
    if mapping == "random":
        if other is None or len(other) != len(true):
            raise ValueError("mapping 'random' needs `other` of the same length as `true`")
        return other
    if mapping == "flipped":
        return flipped
    if mapping == "flip_df":
        return np.where(position <= flip_at, true, flipped)
    if mapping == "flip_fd":
        return np.where(position <= flip_at, flipped, true)
    if mapping == "alternating":
        return np.where(position % 2 == 1, true, flipped)
    raise ValueError(f"unknown mapping {mapping!r}")


def condition_repeats(conditions: Sequence[Condition], repeats: int,
                      by_condition: Mapping[str, int]) -> dict[str, int]:
    """Repeats per concrete condition: ``by_condition[name]`` (``arbitrary`` for every
    arbitrary_* condition) or else ``repeats``."""
    out = {}
    for cond in conditions:
        base = cond.name.removesuffix(CONTENT_FREE_SUFFIX) if cond.content_free else cond.name
        key = "arbitrary" if base.startswith("arbitrary_") else base
        out[cond.name] = int(by_condition.get(key, repeats))  # a twin has its condition's repeats
    return out


def class_members(labels: np.ndarray, k: int, dataset: str) -> list[np.ndarray]:
    """Per class ``0..k-1`` the sorted dataset indices of its items; every class must have one."""
    members = [np.flatnonzero(labels == c) for c in range(k)]
    empty = [c for c, m in enumerate(members) if not len(m)]
    if empty:
        raise TaskError(f"dataset {dataset!r}: class_draw 'balanced' needs items of every class; "
                        f"classes {empty} have none")
    return members


def draw_balanced(members: Sequence[np.ndarray], n: int, g: np.random.Generator) -> np.ndarray:
    """``n`` dataset indices: each example's class uniform over the classes, then an item of
    that class uniformly (both with replacement), so every shown label sequence and its
    flipped (rotated) version are equally likely."""
    classes = g.integers(0, len(members), n)
    within = g.random(n)
    return np.array([members[c][int(u * len(members[c]))] for c, u in zip(classes.tolist(), within.tolist())],
                    dtype=np.int64)


def parse_template(dataset: str, template: str, pair: bool) -> list[tuple[str, str | None]]:
    """Split a template into (literal, field) pieces; field is text, text2, label or None.

    ``{label}`` must occur exactly once, ``{text}`` at least once, ``{text2}`` only (and at
    least once) when ``pair``; conversions and format specs are refused so that the
    ``answer_i`` span is exactly the label word.
    """
    allowed = {"text", "label", "text2"} if pair else {"text", "label"}
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise TaskError(f"dataset {dataset!r}: template {template!r} is malformed: {err}") from err
    pieces = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (field not in allowed or spec or conversion):
            raise TaskError(
                f"dataset {dataset!r}: template {template!r} has field {{{field}}}"
                f"{'!' + conversion if conversion else ''}{':' + spec if spec else ''}; "
                f"allowed are plain {sorted(allowed)}"
            )
        pieces.append((literal, field))
    fields = [f for _, f in pieces if f is not None]
    if fields.count("label") != 1 or not allowed <= set(fields):
        raise TaskError(
            f"dataset {dataset!r}: template {template!r} must contain {{label}} exactly once "
            f"and each of {sorted(allowed - {'label'})}"
        )
    return pieces


def render_prompt(
    pieces: Sequence[tuple[str, str | None]],
    examples: Sequence[Mapping[str, str]],
    separator: str,
) -> tuple[str, list[Span]]:
    """Format ``examples`` (dicts with text[, text2], label) into one prompt.

    Returns the text and its spans: ``answer_i`` over each label, ``example_i`` over each
    example (``i`` 1-based).
    """
    builder = TextBuilder()
    for i, values in enumerate(examples, start=1):
        if i > 1:
            builder.add(separator)
        start = builder.length
        for literal, field in pieces:
            builder.add(literal)
            if field is not None:
                builder.add(values[field], span=answer_name(i) if field == "label" else None)
        builder.mark(example_name(i), start)
    return builder.text, builder.spans


def _rows(
    data: LabelledData,
    conditions: Sequence[Condition],
    pieces: Sequence[tuple[str, str | None]],
    cfg: Mapping[str, Any],
    seed: int,
) -> Iterator[dict[str, Any]]:
    """One row per (repeat, condition); draws are keyed so conditions never shift each other."""
    n, k = int(cfg["n_examples"]), len(data.classes)
    labels = np.asarray(data.labels, dtype=np.int64)
    balanced = cfg["class_draw"] == "balanced"
    members = class_members(labels, k, data.name) if balanced else []
    repeats = condition_repeats(conditions, int(cfg["repeats"]), cfg["repeats_by_condition"])
    for repeat in range(max(repeats.values())):
        g = rng(seed, "labels", data.name, "examples", repeat)
        index = draw_balanced(members, n, g) if balanced else g.integers(0, len(data), n)
        true = labels[index]
        present = [c for c in conditions if repeat < repeats[c.name]]
        other = None
        if any(c.mapping == "random" for c in present):
            g = rng(seed, "labels", data.name, "random", repeat)
            # the shown class of an independent draw from the same class distribution
            other = g.integers(0, k, n) if balanced else labels[g.integers(0, len(data), n)]
        for cond in present:
            shown = shown_classes(cond.mapping, true, k, int(cfg["flip_at"]), other)
            placeholder = str(cfg["content_free_text"]) if cond.content_free else None
            examples = [
                _example(data, i, cond.words[c], placeholder) for i, c in zip(index.tolist(), shown.tolist())
            ]
            text, spans = render_prompt(pieces, examples, str(cfg["separator"]))
            yield {
                "prompt_id": f"labels_{data.name}:{cond.name}:r{repeat:04d}",
                "task": f"labels_{data.name}",
                "condition": cond.name,
                "n_shots": n,
                "text": text,
                "spans": spans,
                "dataset": data.name,
                "repeat": repeat,
                "label_words": list(cond.words),
                "true_class": true.tolist(),
                "context_class": shown.tolist(),
                "true_labels": [cond.words[c] for c in true.tolist()],
                "context_labels": [cond.words[c] for c in shown.tolist()],
                "example_index": index.tolist(),
            }


def _example(data: LabelledData, index: int, label: str, placeholder: str | None = None) -> dict[str, str]:
    """Template values of dataset item ``index`` shown with ``label`` (its texts replaced by
    ``placeholder`` when given: a content-free example)."""
    values = {"text": data.texts[index] if placeholder is None else placeholder, "label": label}
    if data.texts2 is not None:
        values["text2"] = data.texts2[index] if placeholder is None else placeholder
    return values


def _check_settings(dataset: str, cfg: Mapping[str, Any], n_examples: int) -> None:
    """Sizes are positive; with flip conditions, ``flip_at >= 1`` and ``n_examples >= 2 * flip_at + 1``.

    ``repeats_by_condition`` may name conditions this run leaves out (a narrower
    ``conditions`` on top of the shipped config keeps working); the schema refuses names
    that are no condition at all.

    D->F and F->D are compared on the prediction made after exactly ``2 * flip_at`` examples
    (``flip_at`` of each mapping), which is position ``2 * flip_at + 1`` (position i predicts
    example i from examples 1..i-1): the prompt must hold that many examples.
    """
    repeats = {"repeats": cfg["repeats"], **{f"repeats_by_condition.{k}": v
                                              for k, v in cfg["repeats_by_condition"].items()}}
    if n_examples < 1 or any(int(v) < 1 for v in repeats.values()):
        raise TaskError(f"dataset {dataset!r}: n_examples and repeats must be >= 1, got "
                        f"n_examples={n_examples} and {repeats}")
    flips = [c for c in cfg["conditions"] if c in FLIP_CONDITIONS]
    flip_at = int(cfg["flip_at"])
    if flips and not 1 <= flip_at <= (n_examples - 1) // 2:
        raise TaskError(
            f"dataset {dataset!r}: flip_at={flip_at} must lie in 1..{(n_examples - 1) // 2} for "
            f"conditions {flips}: the D->F vs F->D comparison needs the prediction after "
            f"2 * flip_at examples, so n_examples (= {n_examples}) must be >= 2 * flip_at + 1"
        )


def _check_words(dataset: str, what: str, words: Sequence[str], k: int) -> tuple[str, ...]:
    """``k`` distinct label words, none blank or with surrounding whitespace."""
    words = tuple(str(w) for w in words)
    if len(words) != k:
        raise TaskError(
            f"dataset {dataset!r}: {what} {list(words)} has {len(words)} words, "
            f"but the dataset has K={k} classes"
        )
    for w in words:
        if not w.strip() or w != w.strip():
            raise TaskError(
                f"dataset {dataset!r}: {what} {list(words)} has an empty label word or one "
                f"with surrounding whitespace ({w!r})"
            )
    if len(set(words)) != k:
        raise TaskError(f"dataset {dataset!r}: {what} {list(words)} has duplicate label words")
    return words
