"""The `tasks` table contract shared by every task builder.

A task table has one row per prompt. Binding columns (docs/outputs.md, "The task-table contract"):

=============  ===========================================  ==============================
column         type                                         meaning
=============  ===========================================  ==============================
prompt_id      string                                       stable id, unique in the table
task           string                                       task name (= the `{task}` wildcard)
condition      string                                       the experimental condition
n_shots        int32                                        in-context examples in the prompt
text           string                                       the prompt, exactly as fed
spans          list<struct<name: str, start: i32, end: i32>>  character offsets into `text`
=============  ===========================================  ==============================

These are :data:`iclscope.contracts.TASK`; each task's table adds typed columns of its own
after them, with its schema in :mod:`iclscope.contracts` (``BINARY_GENERATION_TASK``, ...,
``LABELS_TASK``; meanings in each builder's docstring). Rows are sorted by ``prompt_id`` so
that tables are byte-identical across runs.
"""

from __future__ import annotations

from dataclasses import dataclass
import string
from typing import Any, Collection, Iterable, Mapping, Sequence

import pyarrow as pa

from iclscope.contracts import TASK_BASE_FIELDS

_FORMATTER = string.Formatter()


class TaskError(ValueError):
    """A task cannot be built from the given config or data."""


@dataclass(frozen=True)
class Span:
    """A named half-open character range ``[start, end)`` of a prompt's text."""

    name: str
    start: int
    end: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "end": self.end}


class TextBuilder:
    """Builds a prompt piece by piece while recording the spans of named pieces.

    >>> b = TextBuilder(); b.add("Q: "); b.add("x = 3", span="query"); b.text
    'Q: x = 3'
    >>> b.spans
    [Span(name='query', start=3, end=8)]
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.spans: list[Span] = []

    def add(self, piece: str, span: str | None = None) -> Span | None:
        """Append ``piece``; if ``span`` is given, record it under that name and return it."""
        start = self._length
        self._parts.append(piece)
        self._length += len(piece)
        if span is None:
            return None
        if not piece:
            raise TaskError(f"span {span!r} would be empty")
        new = Span(span, start, self._length)
        self.spans.append(new)
        return new

    def mark(self, name: str, start: int, end: int | None = None) -> Span:
        """Record a span over text already added (``end`` defaults to the current end)."""
        stop = self._length if end is None else end
        if not 0 <= start < stop <= self._length:
            raise TaskError(f"span {name!r} [{start}, {stop}) is outside the text")
        new = Span(name, start, stop)
        self.spans.append(new)
        return new

    @property
    def length(self) -> int:
        return self._length

    @property
    def text(self) -> str:
        return "".join(self._parts)


def task_table(records: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a typed task table from row dicts (``spans`` as lists of :class:`Span` or dicts),
    with the task's ``schema`` from :mod:`iclscope.contracts` (the binding columns first).

    Checks the contract: unique prompt ids, spans inside the text and non-empty.
    Rows come out sorted by ``prompt_id``.
    """
    if list(schema)[: len(TASK_BASE_FIELDS)] != TASK_BASE_FIELDS:
        raise ValueError("a task table's schema starts with iclscope.contracts.TASK_BASE_FIELDS")
    rows = []
    seen: set[str] = set()
    for rec in records:
        row = dict(rec)
        pid = row["prompt_id"]
        if pid in seen:
            raise TaskError(f"duplicate prompt_id {pid!r}")
        seen.add(pid)
        spans = [s.as_dict() if isinstance(s, Span) else dict(s) for s in row["spans"]]
        for s in spans:
            if not 0 <= s["start"] < s["end"] <= len(row["text"]):
                raise TaskError(
                    f"prompt {pid!r}: span {s['name']!r} [{s['start']}, {s['end']}) "
                    f"is empty or outside its text of length {len(row['text'])}"
                )
        row["spans"] = spans
        missing = [f.name for f in schema if f.name not in row]
        if missing:
            raise TaskError(f"prompt {pid!r}: missing columns {missing}")
        rows.append({f.name: row[f.name] for f in schema})
    rows.sort(key=lambda r: r["prompt_id"])
    return pa.Table.from_pylist(rows, schema=schema)


def span_text(text: str, spans: Sequence[Mapping[str, Any]], name: str) -> str:
    """The text of the span called ``name`` (first match); for tests and checks."""
    for s in spans:
        if s["name"] == name:
            return text[s["start"] : s["end"]]
    raise KeyError(f"no span named {name!r}")


# --------------------------------------------------------------------------- pieces


@dataclass(frozen=True)
class Piece:
    """A piece of prompt text with spans whose offsets are relative to its start."""

    text: str
    spans: tuple[Span, ...] = ()

    def named(self, name: str) -> Piece:
        """The same piece with an extra span ``name`` over all of its text."""
        if not self.text:
            raise TaskError(f"span {name!r} would be empty")
        return Piece(self.text, (Span(name, 0, len(self.text)), *self.spans))

    def plain(self) -> Piece:
        """The same text without spans (e.g. a solved example whose inner spans must not
        be confused with those of the query)."""
        return Piece(self.text)

    def shifted(self, offset: int) -> tuple[Span, ...]:
        """The spans moved by ``offset`` characters."""
        return tuple(Span(s.name, s.start + offset, s.end + offset) for s in self.spans)


def join_pieces(pieces: Iterable[Piece | str], separator: str = "") -> Piece:
    """Concatenate pieces with ``separator`` between them, keeping all spans."""
    text: list[str] = []
    spans: list[Span] = []
    length = 0
    for i, piece in enumerate(pieces):
        if i:
            text.append(separator)
            length += len(separator)
        piece = Piece(piece) if isinstance(piece, str) else piece
        spans.extend(piece.shifted(length))
        text.append(piece.text)
        length += len(piece.text)
    return Piece("".join(text), tuple(spans))


def fill_template(
    template: str,
    values: Mapping[str, Any],
    key: str,
    spans: Mapping[str, str] | None = None,
    required: Collection[str] = (),
) -> Piece:
    """Format ``template`` like :meth:`str.format`, recording where fields land.

    Args:
        template: a format string with named fields (``{name}``), ``{{``/``}}`` escapes.
        values: field -> value; a :class:`Piece` value keeps its own spans (shifted).
        key: the config key the template came from, named in error messages.
        spans: field -> span name recorded over every occurrence of that field.
        required: fields that must occur; fields named in ``spans`` must occur too.

    Returns:
        The filled text with spans relative to its start.
    """
    if not isinstance(template, str):
        raise TaskError(f"{key} must be a template string, got {template!r}")
    spans = dict(spans or {})
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as err:
        raise TaskError(f"{key}: malformed template {template!r}: {err}") from err
    pieces: list[Piece | str] = []
    used: set[str] = set()
    for literal, field, spec, conversion in parsed:
        pieces.append(literal)
        if field is None:
            continue
        if field not in values:
            raise TaskError(
                f"{key}: unknown field {{{field}}} in template {template!r}; "
                f"allowed fields are {sorted(values)}"
            )
        used.add(field)
        value = values[field]
        raw = value.text if isinstance(value, Piece) else value
        try:
            rendered = _FORMATTER.format_field(
                _FORMATTER.convert_field(raw, conversion), spec or ""
            )
        except (ValueError, TypeError) as err:
            raise TaskError(f"{key}: cannot format field {{{field}}}: {err}") from err
        # inner spans only stay valid when formatting left the text unchanged
        piece = value if isinstance(value, Piece) and rendered == value.text else Piece(rendered)
        if field in spans:
            piece = piece.named(spans[field])
        pieces.append(piece)
    missing = (set(required) | set(spans)) - used
    if missing:
        raise TaskError(f"{key}: template {template!r} lacks the field(s) {sorted(missing)}")
    return join_pieces(pieces)
