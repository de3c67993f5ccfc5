"""Tokenised prompts and the token ranges of their character spans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence


class SpanError(ValueError):
    """A declared span cannot be mapped to tokens."""


@dataclass(frozen=True)
class TokenizedPrompt:
    """One prompt as token ids, with each named span as a half-open token range."""

    prompt_id: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]  # character range of each token in the text
    spans: dict[str, tuple[int, int]]  # span name -> [first token, last token + 1)

    def __len__(self) -> int:
        return len(self.input_ids)


def token_range(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """The tokens overlapping characters ``[start, end)``, as ``[first, last + 1)``.

    A token that straddles the span's edge (e.g. ``" Tails"`` for the span ``Tails``)
    belongs to it; zero-width tokens (special tokens) never do. ``None`` if no token
    overlaps.
    """
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    return (hits[0], hits[-1] + 1) if hits else None


def tokenize_prompts(
    tokenizer: Any, rows: Sequence[Mapping[str, Any]], max_length: int | None = None
) -> list[TokenizedPrompt]:
    """Tokenise task-table rows (``prompt_id``, ``text``, ``spans``) with offsets.

    Raises :class:`SpanError` naming the prompt and span when a span covers no token,
    and ``ValueError`` naming the prompt when it is longer than ``max_length`` tokens.
    """
    texts = [row["text"] for row in rows]
    enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True)
    prompts = []
    for row, ids, offsets in zip(rows, enc["input_ids"], enc["offset_mapping"]):
        pid = row["prompt_id"]
        if max_length is not None and len(ids) > max_length:
            raise ValueError(
                f"prompt {pid!r} has {len(ids)} tokens, more than the model's context of {max_length}"
            )
        spans = {}
        for span in row["spans"]:
            found = token_range(offsets, span["start"], span["end"])
            if found is None:
                raise SpanError(
                    f"prompt {pid!r}: span {span['name']!r} [{span['start']}, {span['end']}) maps to no token"
                )
            spans[span["name"]] = found
        prompts.append(TokenizedPrompt(pid, list(ids), [tuple(o) for o in offsets], spans))
    return prompts
