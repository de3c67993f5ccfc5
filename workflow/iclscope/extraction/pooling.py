"""Pooling hidden states over token spans, layer by layer, while the forward runs.

Hidden states are never kept beyond the layer that produced them: a forward pre-hook on
the first decoder block (layer 0: its input, i.e. the embeddings with whatever the family
adds, such as Gemma's scaling or GPT-2's position embeddings) and a forward hook on each
decoder block (layers 1..L, the residual stream after the block, before the final norm)
pool every declared span at once and hand the result on.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from iclscope.architectures import decoder_layers
from iclscope.extraction.budgets import POOL_BYTES, chunk_count

POOLINGS = ("max", "mean", "last")


@dataclass(frozen=True)
class SpanIndex:
    """Spans of a padded batch: item k covers tokens ``[starts[k], ends[k])`` of row ``rows[k]``."""

    rows: torch.Tensor  # (K,) long
    starts: torch.Tensor  # (K,) long
    ends: torch.Tensor  # (K,) long
    # the batch layouts pooled so far, (rows, width, device) -> their groups: built once
    # per batch, read at every layer
    _layouts: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_lists(cls, rows: Sequence[int], starts: Sequence[int], ends: Sequence[int]) -> "SpanIndex":
        as_long = lambda xs: torch.tensor(list(xs), dtype=torch.long)  # noqa: E731
        index = cls(as_long(rows), as_long(starts), as_long(ends))
        if bool((index.ends <= index.starts).any()):
            raise ValueError("every span needs at least one token")
        return index

    def __len__(self) -> int:
        return int(self.rows.numel())

    def groups(self, n_rows: int, width: int, device: torch.device) -> torch.Tensor:
        """(G, rows * width) long: for each group of non-overlapping spans, the span each
        token of the flattened batch lies in (``len(self)`` for none). Nested spans (a story
        and its sentences) fall into different groups, so a reduction makes one pass over
        the batch's tokens per group, each token added in order (see :func:`pool_spans`)."""
        key = (n_rows, width, str(device))
        if key not in self._layouts:
            if len(self) and (int(self.rows.max()) >= n_rows or int(self.ends.max()) > width):
                raise ValueError(f"a span lies outside the ({n_rows}, {width}) batch")
            first = (self.rows * width + self.starts).tolist()
            stop = (self.rows * width + self.ends).tolist()
            # interval colouring: each span, by start, joins the first group that has ended before it
            ends_of: list[int] = []
            group = [0] * len(first)
            for k in sorted(range(len(first)), key=lambda k: (first[k], -stop[k])):
                g = next((g for g, e in enumerate(ends_of) if e <= first[k]), len(ends_of))
                if g == len(ends_of):
                    ends_of.append(stop[k])
                else:
                    ends_of[g] = stop[k]
                group[k] = g
            target = np.full((max(len(ends_of), 1), n_rows * width), len(first), dtype=np.int64)
            for k, g in enumerate(group):
                target[g, first[k]:stop[k]] = k
            self._layouts[key] = torch.as_tensor(target, device=device)
        return self._layouts[key]


def pool_spans(hidden: torch.Tensor, spans: SpanIndex, poolings: Sequence[str],
               budget: int = POOL_BYTES) -> torch.Tensor:
    """Pool ``hidden`` (B, T, d) over each span: returns (K, len(poolings), d) in float32.

    ``max`` and ``mean`` reduce the span's tokens; ``last`` takes its last token. A reduction
    scatters the batch's tokens straight into their spans, one pass per group of
    non-overlapping spans (:meth:`SpanIndex.groups`): no token is gathered or copied and no
    loop runs over spans. Sums are float32, over a span's tokens in order (what a segment
    mean computes, to the bit); a model not in float32 has a float32 copy made of a chunk of
    tokens at a time, within ``budget`` bytes (see :mod:`~iclscope.extraction.budgets`).
    """
    unknown = set(poolings) - set(POOLINGS)
    if unknown:
        raise ValueError(f"unknown pooling {sorted(unknown)}; known: {list(POOLINGS)}")
    n_rows, width, d = hidden.shape
    groups = spans.groups(n_rows, width, hidden.device)
    flat = hidden.reshape(n_rows * width, d)
    k = len(spans)  # row k of each reduction collects the tokens in no span
    out = []
    for method in poolings:
        if method == "last":
            last = spans.rows * width + spans.ends - 1
            out.append(flat[last.to(flat.device)].float())
        elif method == "max":  # exact in any dtype: the maximum is one of the values
            top = torch.empty((k + 1, d), dtype=flat.dtype, device=flat.device)
            for target in groups:
                top.scatter_reduce_(0, target[:, None].expand(-1, d), flat, "amax", include_self=False)
            out.append(top[:k].float())
        else:
            sums = torch.zeros((k + 1, d), dtype=torch.float32, device=flat.device)
            step = len(flat) if flat.dtype == torch.float32 else chunk_count(len(flat), 4 * d, budget)
            for target in groups:
                for a in range(0, len(flat), step):  # tokens in order: the same sums in any chunks
                    sums.index_add_(0, target[a:a + step], flat[a:a + step].float())
            lengths = (spans.ends - spans.starts).to(device=flat.device, dtype=torch.float32)
            out.append(sums[:k] / lengths[:, None])
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
