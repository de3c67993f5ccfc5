"""Exact multi-token candidates in the same forward pass, as branches of the prompt.

A candidate's log-probability is the sum over its tokens of the model's log-probability
of each token given the prefix and the candidate's earlier tokens. Instead of one pass
per (position, candidate), the tokens a candidate needs as *inputs* (all but its last)
are appended to the prompt as branch tokens: each attends to the prompt up to its read
position and to its own ancestors only, and takes the position id it would have in the
continued text. Candidates sharing a prefix share its branch tokens (a trie), and a
prefix the prompt itself continues with (the in-context label) reuses the prompt's own
tokens, so single-token and teacher-forced candidates cost nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch


@dataclass
class BranchedSequence:
    """A prompt's tokens followed by branch tokens.

    ``parents[i]`` is the index of the token that branch token ``i`` continues (-1 for
    prompt tokens); ``positions[i]`` its position id.
    """

    ids: list[int]
    n_prompt: int
    positions: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)

    @classmethod
    def of_prompt(cls, ids: Sequence[int]) -> "BranchedSequence":
        n = len(ids)
        return cls(list(ids), n, list(range(n)), [-1] * n)

    @property
    def n_branch(self) -> int:
        return len(self.ids) - self.n_prompt

    def add_candidates(self, read_pos: int, candidates: Sequence[Sequence[int]]) -> list[list[tuple[int, int]]]:
        """Branch the candidates' token lists off token ``read_pos``.

        Returns per candidate its scoring steps ``(index, token)``: the log-probability
        of ``token`` under the distribution computed at sequence index ``index``.
        """
        nodes: dict[tuple[int, ...], int] = {(): read_pos}
        steps_all = []
        for tokens in candidates:
            steps = []
            for j, token in enumerate(tokens):
                prefix = tuple(tokens[:j])
                steps.append((self._node(nodes, read_pos, prefix), int(token)))
            steps_all.append(steps)
        return steps_all

    def _node(self, nodes: dict[tuple[int, ...], int], read_pos: int, prefix: tuple[int, ...]) -> int:
        if prefix in nodes:
            return nodes[prefix]
        parent = self._node(nodes, read_pos, prefix[:-1])
        follow = read_pos + len(prefix)
        if parent < self.n_prompt and follow < self.n_prompt and self.ids[follow] == prefix[-1]:
            index = follow  # the prompt itself continues this way: reuse its token
        else:
            index = len(self.ids)
            self.ids.append(prefix[-1])
            self.positions.append(self.positions[parent] + 1)
            self.parents.append(parent)
        nodes[prefix] = index
        return index


def branch_mask(sequences: Sequence[BranchedSequence], width: int) -> torch.Tensor:
    """The (B, 1, width, width) boolean attention mask (True = may attend) of right-padded
    branched sequences: causal over the prompt, ancestors-only for branch tokens, and
    pad queries attending to themselves (a fully masked row would give NaN)."""
    mask = torch.zeros((len(sequences), width, width), dtype=torch.bool)
    causal = torch.ones((width, width), dtype=torch.bool).tril_()  # made once, sliced per prompt
    for b, seq in enumerate(sequences):
        n = seq.n_prompt
        mask[b, :n, :n] = causal[:n, :n]
        for i in range(n, len(seq.ids)):
            mask[b, i] = mask[b, seq.parents[i]]
            mask[b, i, i] = True
        pads = torch.arange(len(seq.ids), width)
        mask[b, pads, pads] = True
    return mask[:, None]
