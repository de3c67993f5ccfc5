"""Length-sorted batches under a token budget, padded so results ignore batch makeup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Batch:
    """Padded model inputs for some prompts (``index`` = their positions in the input list)."""

    index: list[int]
    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 1 on real tokens
    position_ids: torch.Tensor  # (B, T) long, 0.. over real tokens whatever the padding
    offsets: list[int]  # where each prompt's first real token sits (left padding shifts it)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return self.input_ids.numel()


def plan_batches(lengths: Sequence[int], batch_tokens: int, min_efficiency: float = 0.9) -> list[list[int]]:
    """Group prompt indices into batches whose padded size ``len(batch) * longest`` stays
    within ``batch_tokens`` (a prompt longer than the budget gets a batch of its own).

    Prompts are sorted by length (longest first, ties by index), so the plan is
    deterministic; a batch is also closed before its real tokens would fall below
    ``min_efficiency`` of its padded tokens, so padding never wastes more than that.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        if current:
            padded = (len(current) + 1) * lengths[current[0]]
            if padded > batch_tokens or (real + lengths[i]) < min_efficiency * padded:
                batches.append(current)
                current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        batches.append(current)
    return batches


def shard_batches(batches: Sequence[Sequence[int]], shard: int, n_shards: int) -> list[list[int]]:
    """Batches ``shard, shard + n, shard + 2n ...`` (0-based) of a whole task's plan: a
    shard runs whole batches of the unsharded plan, so every prompt is computed beside the
    same prompts (the same padding and matrix shapes) however many shards there are, and
    the gathered tables equal an unsharded run's; batches of similar length mix."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    return [list(b) for j, b in enumerate(batches) if j % n_shards == shard]


def collate(
    sequences: Sequence[Sequence[int]], index: Sequence[int], pad_id: int, side: str = "right"
) -> Batch:
    """Pad ``sequences`` to one length on ``side`` (``right`` or ``left``).

    Position ids count real tokens only, so a prompt gets the same positions (and, with
    the attention mask, the same activations) whichever side is padded.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', not {side!r}")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    offsets = []
    for row, seq in enumerate(sequences):
        start = width - len(seq) if side == "left" else 0
        ids[row, start : start + len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, start : start + len(seq)] = 1
        offsets.append(start)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(list(index), ids, mask, positions, offsets)
