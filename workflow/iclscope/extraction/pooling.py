"""Pooling hidden states over token spans, layer by layer, while the forward runs.

Hidden states are never kept beyond the layer that produced them: a forward pre-hook on
the first decoder block (layer 0: its input, i.e. the embeddings with whatever the family
adds, such as Gemma's scaling or GPT-2's position embeddings) and a forward hook on each
decoder block (layers 1..L, the residual stream after the block, before the final norm)
pool every declared span at once and hand the result on.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from iclscope.architectures import decoder_layers
from iclscope.extraction.budgets import POOL_BYTES

POOLINGS = ("max", "mean", "last")


@dataclass(frozen=True)
class SpanIndex:
    """Spans of a padded batch: item k covers tokens ``[starts[k], ends[k])`` of row ``rows[k]``."""

    rows: torch.Tensor  # (K,) long
    starts: torch.Tensor  # (K,) long
    ends: torch.Tensor  # (K,) long

    @classmethod
    def from_lists(cls, rows: Sequence[int], starts: Sequence[int], ends: Sequence[int]) -> "SpanIndex":
        as_long = lambda xs: torch.tensor(list(xs), dtype=torch.long)  # noqa: E731
        index = cls(as_long(rows), as_long(starts), as_long(ends))
        if bool((index.ends <= index.starts).any()):
            raise ValueError("every span needs at least one token")
        return index

    def __len__(self) -> int:
        return int(self.rows.numel())

    def to(self, device: torch.device) -> "SpanIndex":
        return SpanIndex(self.rows.to(device), self.starts.to(device), self.ends.to(device))


def pool_spans(hidden: torch.Tensor, spans: SpanIndex, poolings: Sequence[str],
               budget: int = POOL_BYTES) -> torch.Tensor:
    """Pool ``hidden`` (B, T, d) over each span: returns (K, len(poolings), d) in float32.

    ``max`` and ``mean`` reduce the span's tokens; ``last`` takes its last token. Only the
    spans' tokens are converted to float32, a chunk of spans at a time within ``budget``
    bytes (see :mod:`~iclscope.extraction.budgets`): never a copy of the whole batch.
    """
    unknown = set(poolings) - set(POOLINGS)
    if unknown:
        raise ValueError(f"unknown pooling {sorted(unknown)}; known: {list(POOLINGS)}")
    lengths = spans.ends - spans.starts
    row_bytes = 4 * hidden.shape[-1]
    chunks, first, used = [], 0, 0
    for k, n in enumerate(lengths.tolist()):
        if k > first and used + n * row_bytes > budget:
            chunks.append((first, k))
            first, used = k, 0
        used += n * row_bytes
    chunks.append((first, len(lengths)))
    return torch.cat([_pool_chunk(hidden, spans, lengths, a, b, poolings) for a, b in chunks]) \
        if len(chunks) > 1 else _pool_chunk(hidden, spans, lengths, 0, len(lengths), poolings)


def _pool_chunk(hidden: torch.Tensor, spans: SpanIndex, lengths: torch.Tensor, a: int, b: int,
                poolings: Sequence[str]) -> torch.Tensor:
    """:func:`pool_spans` of spans ``a..b-1``: (b - a, len(poolings), d) float32."""
    rows, starts, ends, lengths = spans.rows[a:b], spans.starts[a:b], spans.ends[a:b], lengths[a:b]
    # every span's tokens, one after the other: (sum of lengths, d)
    token_rows = torch.repeat_interleave(rows, lengths)
    first = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
    token_cols = first + torch.arange(int(lengths.sum()), device=hidden.device)
    tokens = hidden[token_rows, token_cols].float()
    out = []
    for method in poolings:
        if method == "last":
            out.append(hidden[rows, ends - 1].float())
        else:
            out.append(torch.segment_reduce(tokens, method, lengths=lengths, axis=0))
    return torch.stack(out, dim=1)


@contextmanager
def pooled_layers(
    model: torch.nn.Module, on_layer: Callable[[int, torch.Tensor], None]
) -> Iterator[None]:
    """While active, every forward of ``model`` calls ``on_layer(layer, hidden)`` for the
    first decoder block's input (layer 0) and each decoder block's output (layers 1..L)."""
    blocks = decoder_layers(model)

    def embeddings_hook(module, args, kwargs):  # type: ignore[no-untyped-def]
        on_layer(0, args[0] if args else kwargs["hidden_states"])

    def hook_for(layer: int):
        def hook(module, args, output):  # type: ignore[no-untyped-def]
            on_layer(layer, output[0] if isinstance(output, tuple) else output)

        return hook

    handles = [blocks[0].register_forward_pre_hook(embeddings_hook, with_kwargs=True)]
    handles += [m.register_forward_hook(hook_for(i)) for i, m in enumerate(blocks, start=1)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
