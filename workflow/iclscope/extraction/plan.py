"""What to extract from each prompt of a task: the declarations the engine executes.

The task tables declare spans; this module says, per task, which of them the analyses
need pooled, which receive attention mass from which query, and where which candidate
continuations are read. Nothing else is computed or stored.

Positions: a read ``before`` span S predicts S's first token from the token just before
it (e.g. ``Answer:`` -> the label); ``before=None`` reads after the prompt's last token.
The query ``end`` is the prompt's last token (the answer position).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

from iclscope.contracts import ANSWER_READOUT, JUDGMENT_READOUT, answer_name, example_index, flip_name

END = "end"  # the prompt's last token, as a pooled span and as the attention query


@dataclass(frozen=True)
class ReadPoint:
    """Candidate continuations read at one position.

    ``labels`` name the candidates in the readouts table; ``texts`` are what each adds
    after the prefix (``None`` = the text between the read token and span ``before``
    followed by the label, e.g. ``" " + "positive"``). With ``initials`` the candidates
    are sets of vocabulary tokens starting with each label (A3's r / n). ``end``: the text
    that follows a candidate in the examples (B1's ``answer_end``); each candidate is then
    scored with the first token of ``end`` as tokenised in context, the terminator the
    model really sees after an answer (``"\n"`` or ``"\n\n"`` depending on the tokenizer).
    """

    name: str
    before: str | None
    labels: tuple[str, ...]
    texts: tuple[str, ...] | None = None
    initials: bool = False
    end: str = ""


@dataclass(frozen=True)
class PromptPlan:
    """Spans to pool, spans that receive attention from the ``end`` query, and readouts."""

    pool: tuple[str, ...] = ()
    attend: tuple[str, ...] = ()
    reads: tuple[ReadPoint, ...] = ()


def _span_names(row: Mapping[str, Any]) -> list[str]:
    return [s["name"] for s in row["spans"]]


def representation_plan(row: Mapping[str, Any]) -> PromptPlan:
    # study B: every span but the per-example ones (their union is the `examples` span)
    spans = tuple(n for n in _span_names(row) if example_index(n) is None)
    # regression rows say what follows an answer (its terminator is scored); reading's do not
    answer = ReadPoint(ANSWER_READOUT, None, tuple(row["candidates"]), tuple(row["candidate_texts"]),
                       end=row.get("answer_end") or "")
    return PromptPlan(pool=(*spans, END), attend=spans, reads=(answer,))


def judgment_plan(row: Mapping[str, Any]) -> PromptPlan:
    return PromptPlan(reads=(ReadPoint(JUDGMENT_READOUT, None, ("r", "n"), initials=True),))


def continuation_plan(row: Mapping[str, Any]) -> PromptPlan:
    # the next-flip conditional before every flip: one pass gives the whole curve (A4)
    symbols = tuple(row["symbols"])
    reads = tuple(
        ReadPoint(flip_name(t), flip_name(t), ("0", "1"), tuple(symbols))
        for t in range(1, len(row["flips"]) + 1)
    )
    return PromptPlan(reads=reads)


def labels_plan(row: Mapping[str, Any]) -> PromptPlan:
    # study C: the label distribution at every `Answer:` of the context (C3)
    words = tuple(row["label_words"])
    n = len(row["context_class"])
    return PromptPlan(reads=tuple(ReadPoint(answer_name(i), answer_name(i), words) for i in range(1, n + 1)))


def plan_for(task: str, row: Mapping[str, Any]) -> PromptPlan:
    """The extraction plan of one task-table row (``task`` = the table's task name): the
    ``plan`` hook of the study that owns the task (:mod:`iclscope.registry`)."""
    return _plan_hook(task)(task, row)


@lru_cache(maxsize=None)
def _plan_hook(task: str) -> Callable[[str, Mapping[str, Any]], PromptPlan]:
    from iclscope.registry import owner

    try:
        study = owner(task)
    except KeyError as err:
        raise ValueError(f"task {task!r} has no extraction plan ({err.args[0]})") from None
    if not study.has("plan"):
        raise ValueError(f"task {task!r} has no extraction plan (study {study.name!r} registers none)")
    return study.hook("plan")
