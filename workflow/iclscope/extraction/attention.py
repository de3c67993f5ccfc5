"""Attention mass from chosen query positions onto declared spans, without attention maps.

The forward keeps using the fast SDPA kernel for its output. Beside it, for the few
query positions that are needed (e.g. the answer position), the attention function
recomputes only those softmax rows from the same (rotary-embedded) queries and keys,
reduces them to the mass on each span, and drops them. Full (B, H, T, T) maps are never
formed.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

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


def span_mass(query: torch.Tensor, key: torch.Tensor, capture: AttentionCapture, scaling: float) -> torch.Tensor:
    """Mass (K, H, S) on each span from the captured query rows.

    ``query`` (B, H, T, D) and ``key`` (B, H_kv, T, D) as the attention layer sees them;
    grouped key/value heads are shared by ``H // H_kv`` query heads.
    """
    n_heads, n_kv = query.shape[1], key.shape[1]
    q = query[capture.rows, :, capture.cols].float()  # (K, H, D)
    k = key[capture.rows].float().repeat_interleave(n_heads // n_kv, dim=1)  # (K, H, T, D)
    scores = torch.einsum("khd,khtd->kht", q, k) * scaling
    steps = torch.arange(key.shape[2], device=key.device)
    allowed = capture.key_mask[capture.rows] & (steps[None, :] <= capture.cols[:, None])  # causal, no pads
    probs = torch.softmax(scores.masked_fill(~allowed[:, None, :], float("-inf")), dim=-1)
    return torch.einsum("kht,kst->khs", probs, capture.span_masks.to(probs.dtype))


def _attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    capture = _current.get()
    if capture is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        capture.masses[module.layer_idx + 1] = span_mass(query, key, capture, scale)
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
def capturing(capture: AttentionCapture) -> Iterator[AttentionCapture]:
    """Forwards run inside this block fill ``capture.masses``."""
    token = _current.set(capture)
    try:
        yield capture
    finally:
        _current.reset(token)
