"""Log-probabilities of candidate continuations, computed only where they are read.

The LM head (a fifth of this model's compute if applied everywhere) runs only on the
final hidden states at read positions. Candidates are tokenised in context, so a label
word after ``"Answer:"`` is scored as the tokens the model would really see (``" positive"``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def vocab_size(model: torch.nn.Module) -> int:
    """Rows of the model's output head: the width of its next-token distribution (may
    exceed the tokenizer's vocabulary, padded for speed)."""
    return int(model.get_output_embeddings().weight.shape[0])


def logprobs_at(model: torch.nn.Module, final_hidden: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities (K, V) in float32 at ``final_hidden[rows, positions]``.

    ``final_hidden`` is the base model's last hidden state (after the final norm), (B, T, d).
    Logits are soft-capped as the model's own forward does (``final_logit_softcapping``,
    Gemma).
    """
    picked = final_hidden[rows, positions]
    logits = model.get_output_embeddings()(picked)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # in place: (K, V) is the largest tensor here, a copy per step would triple it
        logits = logits.div_(cap).tanh_().mul_(cap)
    return torch.log_softmax(logits.float(), dim=-1)


def candidate_tokens(tokenizer: Any, prefix: str, candidate: str, end: str = "") -> list[int]:
    """The tokens ``candidate`` adds after ``prefix``, as tokenised together in context.

    With ``end`` (the text that follows the candidate in the examples) the three are
    tokenised together and the first token covering the start of ``end`` is scored too:
    the terminator as the model's tokenizer writes it after an answer. Raises
    ``ValueError`` if the candidate tokenises to nothing, merges with the end of the prefix
    or its last token merges with ``end`` (then its tokens cannot be separated).
    """
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    body = tokenizer(prefix + candidate, add_special_tokens=False)["input_ids"]
    whole = tokenizer(prefix + candidate + end, add_special_tokens=False)["input_ids"] if end else body
    if whole[: len(head)] != head:
        raise ValueError(f"candidate {candidate!r} merges with the end of the prefix {prefix[-20:]!r}")
    if len(body) == len(head):
        raise ValueError(f"candidate {candidate!r} tokenizes to nothing after {prefix[-20:]!r}")
    if not end:
        return whole[len(head):]
    # the candidate's own tokens must survive unchanged when ``end`` follows it
    if whole[: len(body)] != body or len(whole) == len(body):
        raise ValueError(
            f"candidate {candidate!r} cannot be separated from the end text {end!r} that follows it: "
            f"its last token merges with it (alone {_token_texts(tokenizer, body[len(head):])}, "
            f"followed by it {_token_texts(tokenizer, whole[len(head): len(body)])})"
        )
    return whole[len(head): len(body) + 1]


def _token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """Token strings, for error messages."""
    return [tokenizer.decode([i]) for i in ids]


def tokens_with_initial(tokenizer: Any, initial: str) -> list[int]:
    """Every vocabulary token whose text, without leading whitespace, starts with ``initial``
    (case-insensitive): e.g. ``r`` covers ``" random"``, ``"r"``, ``" Rand"``."""
    ids = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).lstrip()
        if text[:1].lower() == initial.lower():
            ids.append(token_id)
    return ids


def sequence_logprob(step_logprobs: torch.Tensor, tokens: Sequence[int]) -> float:
    """Sum of ``step_logprobs[i, tokens[i]]``: the log-probability of a multi-token
    continuation from the distributions before each of its tokens, (len(tokens), V)."""
    index = torch.arange(len(tokens))
    return float(step_logprobs[index, torch.tensor(list(tokens))].sum())
