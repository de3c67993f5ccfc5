"""Attention mass from chosen query positions onto declared spans, without attention maps.

The forward keeps using the fast SDPA kernel for its output. Beside it, for the few
query positions that are needed (e.g. the answer position), the attention function
recomputes only those softmax rows from the same (rotary-embedded, normed) queries and
keys with the layer's own scaling, reduces them to the mass on each span, and drops them.
Full (B, H, T, T) maps are never formed.

Sliding-window layers (Gemma 3, Qwen2 with ``use_sliding_window``) see only keys fewer
than ``sliding_window`` positions back. The window is measured in position ids (set with
:func:`window_positions`), so branch tokens, which sit after the prompt but continue it
from an earlier position, get the window they would have in the continued text.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from iclscope.extraction.budgets import CAPTURE_BYTES, chunk_count

ATTENTION_NAME = "iclscope_sdpa"


@dataclass
class AttentionCapture:
    """What to measure in one batch, and (after the forward) what was measured.

    Item k is the query at token ``cols[k]`` of batch row ``rows[k]``; ``span_masks[k, s]``
    marks the key tokens of span s for that item. ``masses[layer]`` is (K, H, S): the
    attention probability each head puts on each span (layers counted from 1).
    """

    rows: torch.Tensor  # (K,) long
    cols: torch.Tensor  # (K,) long
    key_mask: torch.Tensor  # (B, T) bool: real (non-pad) tokens
    span_masks: torch.Tensor  # (K, S, T) float
    masses: dict[int, torch.Tensor] = field(default_factory=dict)


_current: ContextVar[AttentionCapture | None] = ContextVar("iclscope_attention_capture", default=None)
_positions: ContextVar[torch.Tensor | None] = ContextVar("iclscope_window_positions", default=None)


def within_window(positions: torch.Tensor, window: int) -> torch.Tensor:
    """(B, 1, T, T) bool: key j lies fewer than ``window`` positions before (or after)
    query i, by the position ids ``positions`` (B, T)."""
    return ((positions[:, :, None] - positions[:, None, :]) < window)[:, None]


def span_mass(query: torch.Tensor, key: torch.Tensor, capture: AttentionCapture, scaling: float,
              window: int | None = None, positions: torch.Tensor | None = None,
              budget: int = CAPTURE_BYTES) -> torch.Tensor:
    """Mass (K, H, S) on each span from the captured query rows.

    ``query`` (B, H, T, D) and ``key`` (B, H_kv, T, D) as the attention layer sees them;
    grouped key/value heads are shared by ``H // H_kv`` query heads. With a sliding
    ``window``, keys ``window`` or more positions back (by ``positions`` (B, T), else by
    index) get no attention. The float32 copy of the keys each query row reads is made
    for a chunk of rows and heads at a time, within ``budget`` bytes (see
    :mod:`~iclscope.extraction.budgets`), so it never grows with the batch.
    """
    n_heads, n_kv = query.shape[1], key.shape[1]
    n_keys, head_dim = key.shape[2], key.shape[3]
    steps = torch.arange(n_keys, device=key.device)
    allowed = capture.key_mask[capture.rows] & (steps[None, :] <= capture.cols[:, None])  # causal, no pads
    if window is not None:
        pos = positions[capture.rows] if positions is not None else steps[None, :].expand(len(capture.rows), -1)
        query_pos = pos.gather(1, capture.cols[:, None])
        allowed &= (query_pos - pos) < window
    # per (row, head): its keys (T, D) and its scores and probabilities (T), in float32
    per_head = 4 * n_keys * (head_dim + 2)
    heads = chunk_count(n_heads, per_head, budget)
    rows = chunk_count(len(capture.rows), per_head * heads, budget)
    kv_head = torch.arange(n_heads, device=key.device) // (n_heads // n_kv)
    out = []
    for a in range(0, len(capture.rows), rows):
        r, c = capture.rows[a:a + rows], capture.cols[a:a + rows]
        parts = []
        for h in range(0, n_heads, heads):
            q = query[r, h:h + heads, c].float()  # (k, h, D)
            k = key[r][:, kv_head[h:h + heads]].float()  # (k, h, T, D)
            scores = torch.einsum("khd,khtd->kht", q, k) * scaling
            parts.append(torch.softmax(scores.masked_fill(~allowed[a:a + rows, None, :], float("-inf")), dim=-1))
        probs = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        out.append(torch.einsum("kht,kst->khs", probs, capture.span_masks[a:a + rows].to(probs.dtype)))
    return out[0] if len(out) == 1 else torch.cat(out)


def _attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    window = kwargs.get("sliding_window")
    positions = _positions.get()
    if positions is not None and positions.shape[1] != key.shape[2]:
        positions = None  # not the forward these positions were set for (e.g. a cached step)
    if window is not None and positions is not None and attention_mask is not None \
            and attention_mask.dtype == torch.bool:
        attention_mask = attention_mask & within_window(positions, window)
    out = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    capture = _current.get()
    if capture is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        capture.masses[module.layer_idx + 1] = span_mass(query, key, capture, scale, window, positions)
    return out


def register() -> str:
    """Register the capturing attention (and SDPA's mask for it) with transformers; returns
    the name to pass as ``attn_implementation``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


@contextmanager
def window_positions(positions: torch.Tensor) -> Iterator[None]:
    """Forwards run inside this block measure sliding windows by ``positions`` (B, T)."""
    token = _positions.set(positions)
    try:
        yield
    finally:
        _positions.reset(token)


@contextmanager
def capturing(capture: AttentionCapture) -> Iterator[AttentionCapture]:
    """Forwards run inside this block fill ``capture.masses``."""
    token = _current.set(capture)
    try:
        yield capture
    finally:
        _current.reset(token)
