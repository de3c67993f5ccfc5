"""Format-constrained sampling of coin-flip lists (study A1, ``constrained`` mode).

At every step only the continuations that keep the list format are allowed: the
separator, then one symbol (``", Tails"`` after ``"[Heads"``). The model's exact
probability of each symbol given the prefix is computed (the product of its tokens'
probabilities, however many tokens it has in context), renormalised over the two
symbols, and a flip is drawn from it, until ``n_flips`` flips. Every sequence is well
formed and reaches ``n_flips``, whatever the model would have written instead, and the
per-step probabilities are recorded beside the sampled flips: what the Bernoulli,
gambler's-fallacy and Markov accounts predict is a probability per step, not a sample.
The separator's own tokens are forced (their probability is not part of a symbol's).

Both candidates are scored in the same forward, as branches of one row: a step feeds the
last step's chosen symbol's final token, the separator, then each symbol's tokens but its
last (a symbol's first token is read from the separator's distribution, each further one
from its own branch), each branch attending to the history and the separator but not to
the other branch, at the positions it would have in the continued text (a 4-D attention
mask). A one-token symbol needs no branch at all. The unchosen branch's entries stay in the
KV cache, masked for every later step, so the cache is never copied, and the LM head runs
only where a distribution is read. A prompt is read once per batch
however many samples it has (its cache rows are then repeated). Each sequence draws its
uniforms from ``rng(seed, "constrained", prompt_id, sample)``, so its flips do not depend
on the batch. Sliding-window attention is not applied to the custom mask: the cache
(prompt, both branches of every step) must stay within the model's window (checked).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch

from iclscope.architectures import base_model, input_device
from iclscope.errors import ExtractionError
from iclscope.extraction.generation import GenerationRequest, in_batches
from iclscope.extraction.readouts import candidate_tokens, logprobs_at
from iclscope.seeding import rng

# characters of context before a piece that decide how it tokenises (byte-level BPE does not
# merge across more than a word boundary)
CONTEXT_CHARS = 24


@dataclass(frozen=True)
class ConstrainedSequence:
    prompt_id: str
    sample: int
    flips: str  # "0"/"1" per step, n_flips of them
    text: str  # the generated continuation, as the model read it
    logp: np.ndarray  # (n_flips, 2): log P(symbol | prefix) of each symbol, exact
    p_second: np.ndarray  # (n_flips,): P(second symbol) renormalised over the two (temperature 1)
    n_tokens: int  # tokens of the continuation (separators and chosen symbols)


def split_separator(separator: str) -> tuple[str, str]:
    """``", "`` -> ``(",", " ")``: the separator's lead, which closes an item, and its blank,
    which opens the next one."""
    lead = separator.rstrip()
    return lead, separator[len(lead):]


class PieceTokens:
    """Tokens of the separator and of each symbol, in the context they follow (cached on
    the context's last characters)."""

    def __init__(self, tokenizer: Any, symbols: Sequence[str], separator: str) -> None:
        self.tokenizer, self.symbols = tokenizer, list(symbols)
        self.lead, self.blank = split_separator(separator)
        self._tokens = lru_cache(maxsize=None)(self._uncached)

    def _uncached(self, context: str, piece: str) -> tuple[int, ...]:
        try:
            return tuple(candidate_tokens(self.tokenizer, context, piece))
        except ValueError as err:
            raise ExtractionError(f"constrained generation: {err}; choose symbols and a separator that start "
                                  "new tokens") from err

    def step(self, text: str, first: bool) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[str, ...]]:
        """What a step after ``text`` feeds: the forced separator tokens (none for the first
        flip when the prompt ends with the separator's lead or an opening bracket), then each
        symbol's tokens; and each symbol's piece of text (separator included)."""
        tail = text[-CONTEXT_CHARS:]
        opened = first and (text.endswith(self.lead) or text.endswith("["))
        sep_text = "" if opened else self.lead
        sep = self._tokens(tail, sep_text) if sep_text else ()
        after = (tail + sep_text)[-CONTEXT_CHARS:]
        blank = "" if text.endswith("[") and opened else self.blank
        pieces = tuple(self._tokens(after, blank + s) for s in self.symbols)
        return sep, pieces, tuple(sep_text + blank + s for s in self.symbols)


def generate_constrained(model: torch.nn.Module, tokenizer: Any, requests: Sequence[GenerationRequest], seed: int,
                         temperature: float, n_flips: int, symbols: Sequence[str], separator: str,
                         batch_size: int = 64) -> list[ConstrainedSequence]:
    """``n_flips`` format-constrained flips for every request (``temperature`` > 0 divides
    the log-probabilities before the draw; the recorded ones are the model's own)."""
    if temperature <= 0:
        raise ExtractionError("constrained generation samples: binary.generation.temperature must be > 0")
    device = input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pieces = PieceTokens(tokenizer, symbols, separator)
    return in_batches(tokenizer, requests, batch_size, "generate (constrained)", lambda reqs, encoded, index: _batch(
        model, pieces, reqs, encoded, index, seed, temperature, n_flips, pad_id, device))


@contextmanager
def _grouped_query_sdpa():
    """Let SDPA read grouped-query keys as they are cached. With a custom mask transformers
    otherwise repeats every cached key and value per query head at every step, which
    dominated the step's time (a copy of the whole cache per layer)."""
    before = os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TRANSFORMERS_SDPA_FORCE_GQA"]
        else:
            os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = before


def _read_prompts(model, encoded: Sequence[Sequence[int]], pad_id: int, device) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """One forward over the batch's distinct prompts (left-padded); the cache, the mask of
    real entries and the next-token log-probabilities, repeated to one row per sequence."""
    distinct = sorted(set(map(tuple, encoded)), key=lambda e: (-len(e), e))
    row_of = {e: i for i, e in enumerate(distinct)}
    width = len(distinct[0])
    ids = torch.full((len(distinct), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(distinct), width), dtype=torch.bool)  # which cached entries later steps attend to
    for b, e in enumerate(distinct):
        ids[b, width - len(e):] = torch.tensor(e)
        real[b, width - len(e):] = True
    positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)
    output = base_model(model)(input_ids=ids.to(device), attention_mask=real.long().to(device),
                               position_ids=positions.to(device), use_cache=True)
    rows = torch.tensor([row_of[tuple(e)] for e in encoded])
    past = output.past_key_values
    past.batch_select_indices(rows.to(device))
    last = logprobs_at(model, output.last_hidden_state[:, -1:], torch.arange(len(distinct)).to(device),
                       torch.zeros(len(distinct), dtype=torch.long, device=device))
    return past, real[rows], last[rows.to(device)]


@dataclass
class _Feed:
    """What one step feeds for one row: the last step's chosen symbol's final token (held
    back until its symbol was drawn), the separator, and every symbol's tokens but its
    last (the last one's following distribution is not needed: the separator is forced)."""
    carry: tuple[int, ...]
    sep: tuple[int, ...]
    cands: tuple[tuple[int, ...], ...]  # each symbol's full tokens
    texts: tuple[str, ...]

    @property
    def trunk(self) -> int:
        return len(self.carry) + len(self.sep)

    def starts(self) -> list[int]:
        """Where each symbol's branch begins in the feed."""
        at, out = self.trunk, []
        for cand in self.cands:
            out.append(at)
            at += len(cand) - 1
        return out

    @property
    def length(self) -> int:
        return self.trunk + sum(len(c) - 1 for c in self.cands)


def _batch(model, pieces: PieceTokens, requests, encoded, index, seed, temperature, n_flips, pad_id,
           device) -> dict[int, ConstrainedSequence]:
    rows = len(encoded)
    draws = [rng(seed, "constrained", r.prompt_id, r.sample).random(n_flips) for r in requests]
    texts = [r.text for r in requests]
    generated = [""] * rows
    flips = np.zeros((rows, n_flips), dtype=np.int8)
    logp = np.zeros((rows, n_flips, 2))
    n_tokens = [0] * rows
    next_pos = [len(e) for e in encoded]
    carry: list[tuple[int, ...]] = [()] * rows
    window = getattr(model.config, "sliding_window", None)
    base = base_model(model)
    with torch.inference_mode(), _grouped_query_sdpa():
        past, real, last = _read_prompts(model, encoded, pad_id, device)
        for step in range(n_flips):
            feeds = [_Feed(carry[b], *pieces.step(texts[b] + generated[b], first=(step == 0))) for b in range(rows)]
            feed_len = max(f.length for f in feeds)
            ids = torch.full((rows, feed_len), pad_id, dtype=torch.long)
            pos = torch.zeros((rows, feed_len), dtype=torch.long)
            within = torch.zeros((rows, feed_len, feed_len), dtype=torch.bool)
            read_rows, read_cols = [], []  # where the head is read: before each symbol's tokens
            for b, f in enumerate(feeds):
                trunk = f.carry + f.sep
                n = len(trunk)
                ids[b, :n] = torch.tensor(trunk, dtype=torch.long) if n else ids[b, :0]
                pos[b, :n] = torch.arange(next_pos[b], next_pos[b] + n)
                within[b, :n, :n] = torch.tril(torch.ones((n, n), dtype=torch.bool))
                for start, cand in zip(f.starts(), f.cands):
                    k = len(cand) - 1
                    ids[b, start:start + k] = torch.tensor(cand[:-1], dtype=torch.long)
                    pos[b, start:start + k] = torch.arange(next_pos[b] + n, next_pos[b] + n + k)
                    within[b, start:start + k, :n] = True
                    within[b, start:start + k, start:start + k] = torch.tril(torch.ones((k, k), dtype=torch.bool))
                for i in range(f.length, feed_len):
                    within[b, i, i] = True  # a padding query attends to itself (a fully masked row is NaN)
                read_rows += [b] * (1 + sum(len(c) - 1 for c in f.cands))
                read_cols += [n - 1] + [i for start, cand in zip(f.starts(), f.cands)
                                        for i in range(start, start + len(cand) - 1)]
            if window is not None and real.shape[1] + feed_len >= int(window):
                raise ExtractionError(f"constrained generation needs a cache of {real.shape[1] + feed_len} entries "
                                      f"(the prompt and the symbols' branches of every step), beyond the model's "
                                      f"sliding window of {window} tokens: shorten the prompt or n_flips")
            read = last  # nothing to feed (a first flip of one-token symbols right after "["): the prompt's
            if feed_len:
                history = real[:, None, :].expand(rows, feed_len, real.shape[1])
                mask = torch.cat([history, within], dim=2)[:, None]  # (rows, 1, feed, cache + feed)
                output = base(input_ids=ids.to(device), attention_mask=mask.to(device),
                              position_ids=pos.to(device), past_key_values=past, use_cache=True)
                past = output.past_key_values
                read = logprobs_at(model, output.last_hidden_state, torch.tensor(read_rows).to(device),
                                   torch.tensor(read_cols).clamp(min=0).to(device))  # (reads, V)
            kept = torch.zeros((rows, feed_len), dtype=torch.bool)
            at = 0
            for b, f in enumerate(feeds):
                # the distribution before a symbol's first token: the trunk's last, or, with
                # nothing fed yet this step, the prompt's; before each further token, its branch's
                before_first = read[at] if read_cols[at] >= 0 else last[b]
                at += 1
                scores = []
                for cand in f.cands:
                    total = float(before_first[cand[0]])
                    for token in cand[1:]:
                        total += float(read[at][token])
                        at += 1
                    scores.append(total)
                logp[b, step] = scores
                scaled = np.array(scores) / temperature
                p_first = float(np.exp(scaled[0] - np.logaddexp(scaled[0], scaled[1])))
                chosen = int(draws[b][step] >= p_first)
                flips[b, step] = chosen
                generated[b] += f.texts[chosen]
                start, cand = f.starts()[chosen], f.cands[chosen]
                kept[b, :f.trunk] = True
                kept[b, start:start + len(cand) - 1] = True
                n_tokens[b] += len(f.sep) + len(cand)
                next_pos[b] += f.trunk + len(cand) - 1
                carry[b] = cand[-1:]
            real = torch.cat([real, kept], dim=1)
    out = {}
    for b, (i, r) in enumerate(zip(index, requests)):
        lp = logp[b]
        second = np.exp(lp[:, 1] - np.logaddexp(lp[:, 0], lp[:, 1]))
        out[i] = ConstrainedSequence(r.prompt_id, r.sample, "".join(map(str, flips[b])), generated[b], lp, second,
                                     n_tokens[b])
    return out
