"""Seeded, batched sampling with a KV cache (study A1), and parsing of the flips.

Every sequence draws its own uniform numbers from ``rng(seed, prompt_id, sample)`` and
samples by inverting the cumulative distribution, so a sequence's tokens do not depend
on which other sequences share its batch. Prompts are left-padded so all rows append
at the same column; generation stops per row at the stop string (``]``) or EOS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from iclscope import progress
from iclscope.architectures import input_device
from iclscope.seeding import rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_id: str
    sample: int
    text: str  # exactly what the model reads (chat template already applied)


@dataclass(frozen=True)
class Generated:
    prompt_id: str
    sample: int
    text: str  # the generated continuation, cut after the stop string
    n_tokens: int
    stopped: bool  # the stop string (or EOS) came before max_new_tokens


def chat_text(tokenizer: Any, prompt: str, system: str | None, answer_marker: str = "\n\nA: ") -> str:
    """The model input for a completion prompt: with a system line and a chat template,
    the question becomes the user turn and the answer's start is prefilled as the
    assistant's; otherwise the prompt is used as written."""
    if not system or not getattr(tokenizer, "chat_template", None):
        return prompt
    question, marker, answer = prompt.rpartition(answer_marker)
    if not marker:
        question, answer = prompt, ""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return head + answer


def sample_token(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw from ``probs`` (V,) with one uniform number ``u``."""
    cdf = np.cumsum(probs, dtype=np.float64)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(probs) - 1))


def sample_tokens(probs: torch.Tensor, draws: Sequence[float]) -> list[int]:
    """:func:`sample_token` of every row of ``probs`` (B, V) with its uniform number, at once:
    the same float64 running sums (a sequential sum per row, as numpy's), so the same tokens,
    in torch's threads instead of a Python loop over rows (a large vocabulary's cumulative
    sums were most of a generation step on the CPU)."""
    cdf = torch.cumsum(probs.double(), dim=1)
    threshold = torch.tensor(list(draws), dtype=torch.float64, device=cdf.device)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, threshold, right=True)[:, 0].clamp(max=probs.shape[1] - 1).tolist()


def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    seed: int,
    temperature: float,
    max_new_tokens: int,
    stop: str = "]",
    batch_size: int = 64,
) -> list[Generated]:
    """Sample a continuation for every request (temperature > 0; ``0`` = greedy)."""
    device = input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = tokenizer.eos_token_id
    return in_batches(tokenizer, requests, batch_size, "generate", lambda reqs, encoded, index: _generate_batch(
        model, tokenizer, reqs, encoded, index, seed, temperature, max_new_tokens, stop, pad_id, eos, device))


def in_batches(tokenizer: Any, requests: Sequence[GenerationRequest], batch_size: int, label: str,
               run_batch: Any) -> list[Any]:
    """Encode the requests, run ``run_batch(requests, encoded, index)`` (a dict index ->
    result) on batches of ``batch_size``, longest prompts first (the least padding), and
    return the results in request order, with progress."""
    encoded = [tokenizer(r.text, add_special_tokens=True)["input_ids"] for r in requests]
    order = sorted(range(len(requests)), key=lambda i: (-len(encoded[i]), i))
    out: dict[int, Any] = {}
    with progress.bar(len(order), label, unit="seq") as bar:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            out.update(run_batch([requests[i] for i in index], [encoded[i] for i in index], index))
            bar.update(len(index))
            log.info("%s: %d/%d sequences", label, min(start + batch_size, len(order)), len(order))
    return [out[i] for i in range(len(requests))]


def _generate_batch(model, tokenizer, requests, encoded, index, seed, temperature, max_new_tokens, stop,
                    pad_id, eos, device) -> dict[int, Generated]:
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for b, e in enumerate(encoded):
        ids[b, width - len(e):] = torch.tensor(e)
        mask[b, width - len(e):] = 1
    draws = [rng(seed, "generation", r.prompt_id, r.sample).random(max_new_tokens) for r in requests]
    tokens: list[list[int]] = [[] for _ in requests]
    texts = [""] * len(requests)
    done = [False] * len(requests)
    past = None
    step_ids, full_mask = ids.to(device), mask.to(device)
    rows = list(range(len(requests)))  # the request behind each row of the running batch
    with torch.inference_mode():
        for step in range(max_new_tokens):
            positions = (full_mask.cumsum(dim=1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
            output = model(input_ids=step_ids, attention_mask=full_mask, position_ids=positions,
                           past_key_values=past, use_cache=True, logits_to_keep=1)
            past = output.past_key_values
            logits = output.logits[:, -1].float()
            if temperature > 0:
                chosen = sample_tokens(torch.softmax(logits / temperature, dim=-1).cpu(),
                                       [float(draws[b][step]) for b in rows])
            else:
                chosen = logits.argmax(dim=-1).tolist()
            nxt = []
            for k, b in enumerate(rows):
                token = int(chosen[k])
                tokens[b].append(token)
                if token == eos:
                    done[b] = True
                else:
                    texts[b] += tokenizer.decode([token])
                    if stop and stop in texts[b]:
                        done[b] = True
                nxt.append(token)
            keep = [k for k, b in enumerate(rows) if not done[b]]
            if not keep:
                break
            if len(keep) < len(rows):
                # drop the sequences that closed their list: the rest decode without them (a
                # sequence's tokens do not depend on its batch mates, see the tests)
                kept = torch.tensor(keep, device=device)
                past.batch_select_indices(kept)
                full_mask = full_mask[kept]
                rows = [rows[k] for k in keep]
                nxt = [nxt[k] for k in keep]
            step_ids = torch.tensor(nxt, device=device)[:, None]
            full_mask = torch.cat([full_mask, torch.ones_like(full_mask[:, :1])], dim=1)
    results = {}
    for b, (i, r) in enumerate(zip(index, requests)):
        text = texts[b]
        if stop and stop in text:
            text = text[: text.index(stop) + len(stop)]
        results[i] = Generated(r.prompt_id, r.sample, text, len(tokens[b]), done[b])
    return results




@dataclass(frozen=True)
class ParsedGeneration:
    """A generated list split into what the prompt forced and what the model wrote.

    ``flips``: the generated flips (first-letter rule, up to the first unmatched item);
    ``forced_flips``: the flips of items the prompt itself started (``"[Heads,"`` -> ``"0"``);
    ``parsed``: every item matched and the list was closed (as :func:`parse_flips`);
    ``n_clean``: how many leading generated items are exactly a symbol word (after stripping
    whitespace), so the strict parse is ``flips[:n_clean]``; ``clean``: every generated item is.
    """

    flips: str
    forced_flips: str
    parsed: bool
    n_clean: int
    clean: bool


def _items(text: str, opening: int) -> tuple[list[tuple[int, str]], bool]:
    """Items of the list opened by the ``[`` at ``opening`` (-1: from the start) as
    (absolute offset of the first non-blank character, stripped item), and whether the list
    was closed; a trailing empty item dropped."""
    start = opening + 1
    body = text[start:]
    closed = "]" in body
    body = body.split("]", 1)[0]
    items, offset = [], start
    for raw in body.split(","):
        lead = len(raw) - len(raw.lstrip())
        items.append((offset + lead, raw.strip()))
        offset += len(raw) + 1
    if items and items[-1][1] == "":
        items = items[:-1]  # a trailing comma (the prompt ends with one)
    return items, closed


def _code(item: str, symbols: Sequence[str]) -> str | None:
    by_letter = {s[0].lower(): str(i) for i, s in enumerate(symbols)}
    if len(by_letter) < len(symbols):  # symbols share a first letter: match exactly
        return next((str(i) for i, s in enumerate(symbols) if item == s), None)
    return by_letter.get(item[:1].lower()) if item else None


def parse_generation(prompt: str, generated: str, symbols: Sequence[str]) -> ParsedGeneration:
    """Parse ``prompt + generated`` like :func:`parse_flips`, separating the prompt's flips.

    An item is forced when its first non-blank character lies in ``prompt`` (so a prompt
    ending in ``"[Heads,"`` forces one flip, ``"[He"`` too); items wholly generated are the
    model's. Randomness metrics must use only the model's flips. The list is the one the
    prompt opens (its last ``[``): a ``[`` the model writes later (``" 49.5% [Tails]"``)
    is an item's text, not a new list.
    """
    text = prompt + generated
    opening = prompt.rfind("[") if "[" in prompt else text.find("[")
    items, closed = _items(text, opening)
    codes: list[str] = []
    for _, item in items:
        code = _code(item, symbols)
        if code is None:
            break
        codes.append(code)
    parsed = closed and len(codes) == len(items)
    n_forced = sum(1 for offset, _ in items if offset < len(prompt))
    n_forced = min(n_forced, len(codes))
    generated_items = [item for offset, item in items if offset >= len(prompt)]
    exact = [item in symbols for item in generated_items]
    n_clean = next((i for i, ok in enumerate(exact) if not ok), len(exact))
    n_clean = min(n_clean, len(codes) - n_forced)
    return ParsedGeneration(
        flips="".join(codes[n_forced:]), forced_flips="".join(codes[:n_forced]), parsed=parsed,
        n_clean=n_clean, clean=all(exact),
    )


def generation_record(task_row: Mapping[str, Any], rendered_prompt: str, generated: Generated,
                      symbols: Sequence[str]) -> dict[str, Any]:
    """One row of the ``generations`` table (:data:`iclscope.contracts.GENERATIONS`).

    ``task_row``: the ``binary_generation`` task row (prompt_id, p_tails, text);
    ``rendered_prompt``: exactly what the model read (:func:`chat_text` of the row), stored
    because it differs from ``text`` when a chat template is applied.
    """
    p = parse_generation(task_row["text"], generated.text, symbols)
    return {
        "prompt_id": generated.prompt_id, "p_tails": float(task_row["p_tails"]), "sample": generated.sample,
        "raw": generated.text, "flips": p.flips, "parsed": p.parsed, "n_tokens": generated.n_tokens,
        "forced_flips": p.forced_flips, "n_clean": p.n_clean, "clean": p.clean,
        "rendered_prompt": rendered_prompt, "mode": "free", "step_logp_first": [], "step_logp_second": [],
        "step_p_second": [],
    }


def constrained_record(task_row: Mapping[str, Any], rendered_prompt: str, sequence: Any,
                       symbols: Sequence[str]) -> dict[str, Any]:
    """One ``generations`` row of a format-constrained sequence
    (:class:`iclscope.extraction.constrained.ConstrainedSequence`): well formed by
    construction, every flip the model's, with its per-step probabilities."""
    forced = parse_generation(task_row["text"], "", symbols).forced_flips
    return {
        "prompt_id": sequence.prompt_id, "p_tails": float(task_row["p_tails"]), "sample": sequence.sample,
        "raw": sequence.text, "flips": sequence.flips, "parsed": True, "n_tokens": sequence.n_tokens,
        "forced_flips": forced, "n_clean": len(sequence.flips), "clean": True, "rendered_prompt": rendered_prompt,
        "mode": "constrained", "step_logp_first": sequence.logp[:, 0].tolist(),
        "step_logp_second": sequence.logp[:, 1].tolist(), "step_p_second": sequence.p_second.tolist(),
    }


def parse_flips(text: str, symbols: Sequence[str]) -> tuple[str, bool]:
    """Flips (a 0/1 string) from a list such as ``"[Heads, Tails, Tai"``.

    Items are read from the first ``[`` on (the list the text opens; a later ``[`` is part
    of an item), split at commas and matched by their first letter (case-insensitive) to the
    symbols' first letters, or exactly when the symbols share a first letter. Returns the
    flips up to the first item that matches no symbol and whether every item parsed and the
    list was closed with ``]``.
    """
    items, closed = _items(text, text.find("["))
    flips = []
    for _, item in items:
        code = _code(item, symbols)
        if code is None:
            return "".join(flips), False
        flips.append(code)
    return "".join(flips), closed
