"""What each batch of an extraction computes: the counts the cost plan turns into FLOPs and
memory, and every extraction job into its compute bound (:mod:`iclscope.extraction.throughput`).

Reads the engine's prepared prompts by their attributes only and imports nothing of the
engine, so that the engine can count its own batches without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class BatchCost:
    size: int
    width: int
    real_tokens: int
    masked: bool  # an explicit mask (padding or branches): attention computes every pair
    head_rows: int
    span_tokens: int
    pooled_spans: int
    attending: int
    attended_spans: int

    @property
    def padded(self) -> int:
        return self.size * self.width

    @property
    def pairs(self) -> int:
        return self.size * self.width * (self.width if self.masked else (self.width + 1) / 2)


def _head_rows(prepared: Any) -> int:
    rows: set[int] = set()
    for read in prepared.reads:
        if read.initial_sets is not None:
            rows.add(read.position)
        for steps in read.steps:
            rows.update(i for i, _ in steps)
    return len(rows)


def _span_tokens(prepared: Any) -> tuple[int, int]:
    """Tokens of the pooled spans and how many spans a prompt pools."""
    n = len(prepared.prompt)
    total = 0
    for name in prepared.plan.pool:
        start, end = (n - 1, n) if name == "end" else prepared.prompt.spans[name]
        total += end - start
    return total, len(prepared.plan.pool)


def batch_costs(prepared: Sequence[Any], batches: Sequence[Sequence[int]]) -> list[BatchCost]:
    """What each batch of ``prepared`` prompts computes (``batches``: indices into
    ``prepared``, as :func:`~iclscope.extraction.batching.plan_batches` forms them)."""
    lengths = [len(p.sequence.ids) for p in prepared]
    costs = []
    for index in batches:
        batch = [prepared[i] for i in index]
        width = max(lengths[i] for i in index)
        spans = [_span_tokens(p) for p in batch]
        costs.append(BatchCost(
            size=len(index), width=width, real_tokens=sum(lengths[i] for i in index),
            masked=any(p.sequence.n_branch for p in batch) or any(lengths[i] != width for i in index),
            head_rows=sum(_head_rows(p) for p in batch), span_tokens=sum(s for s, _ in spans),
            pooled_spans=sum(k for _, k in spans), attending=sum(1 for p in batch if p.plan.attend),
            attended_spans=max((len(p.plan.attend) for p in batch), default=0),
        ))
    return costs
