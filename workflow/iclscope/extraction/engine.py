"""The extraction pass: pooled embeddings, attention mass and readouts from one forward.

For each batch of prompts (length-sorted under a token budget) the engine runs the base
model once with

* forward hooks pooling every declared span at every layer (``pooling``),
* the capturing SDPA attention reducing the ``end`` query's rows to span masses
  (``attention``), and
* candidate branches appended to the prompts (``branches``), so that the LM head, run
  only at read positions afterwards (``readouts``), gives exact multi-token
  log-probabilities at every declared position of the sequence.

Nothing but the reduced values leaves a batch. Results do not depend on the batch
composition (position ids count real tokens; pads are masked). A prompt that repeats
another's text, spans and plan (e.g. a zero-shot prompt shared by every condition) is
computed once and its rows copied under each prompt id.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa
import torch

from iclscope.errors import ExtractionError
from iclscope.architectures import base_model, input_device
from iclscope import progress
from iclscope.extraction.assemble import attention_table, embedding_table, readout_table
from iclscope.extraction.attention import AttentionCapture, capturing, window_positions
from iclscope.extraction.batching import shard_batches, plan_batches
from iclscope.extraction.branches import BranchedSequence, branch_mask
from iclscope.extraction.budgets import HEAD_BYTES, chunk_count
from iclscope.extraction.plan import END, PromptPlan, ReadPoint
from iclscope.extraction.pooling import SpanIndex, pool_spans, pooled_layers
from iclscope.extraction.readouts import candidate_tokens, logprobs_at, tokens_with_initial, vocab_size
from iclscope.extraction.throughput import batch_flops
from iclscope.extraction.tokens import TokenizedPrompt, tokenize_prompts

log = logging.getLogger(__name__)

# tokens of context kept when a candidate is tokenised after a prompt's prefix
TAIL_TOKENS = 4


@dataclass
class PreparedRead:
    """A read point resolved to sequence indices: per candidate its scoring steps, or
    (``initials``) the token sets whose probability mass is summed at ``position``."""

    point: ReadPoint
    position: int
    steps: list[list[tuple[int, int]]] = field(default_factory=list)
    initial_sets: list[list[int]] | None = None


@dataclass
class PreparedPrompt:
    prompt: TokenizedPrompt
    plan: PromptPlan
    sequence: BranchedSequence
    reads: list[PreparedRead]


@dataclass
class Extracted:
    """The three tables of one extraction (see :mod:`iclscope.contracts`) and statistics."""

    embeddings: pa.Table
    attention: pa.Table
    readouts: pa.Table
    stats: dict[str, Any]
    # what the job's throughput report needs (:mod:`~iclscope.extraction.throughput`): the
    # computed prompts' and branches' tokens, the FLOPs of the batches run, and seconds per phase
    work: dict[str, float] = field(default_factory=dict)


class CandidateTokenizer:
    """Tokenises candidates in context, cached on the last few characters of the prefix.

    Byte-level BPE never merges across more than a word boundary, so the last
    ``TAIL_TOKENS`` tokens of context decide how a candidate is split.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str, str, str], list[int]] = {}
        self._initials: dict[str, list[int]] = {}

    def after(self, prompt: TokenizedPrompt, text: str, read_pos: int, candidate: str, end: str = "") -> list[int]:
        """The candidate's tokens after the read token, plus the first token of ``end``
        when given (see :func:`~iclscope.extraction.readouts.candidate_tokens`)."""
        first = max(0, read_pos - TAIL_TOKENS + 1)
        while first < read_pos and prompt.offsets[first][1] <= prompt.offsets[first][0]:
            first += 1  # skip zero-width special tokens
        tail = text[prompt.offsets[first][0] : prompt.offsets[read_pos][1]]
        key = (tail, candidate, end)  # the end text decides the last token scored
        if key not in self._cache:
            try:
                self._cache[key] = candidate_tokens(self.tokenizer, tail, candidate, end)
            except ValueError as err:
                raise ExtractionError(f"prompt {prompt.prompt_id!r}: {err}") from err
        return self._cache[key]

    def initial(self, letter: str) -> list[int]:
        if letter not in self._initials:
            self._initials[letter] = tokens_with_initial(self.tokenizer, letter)
            if not self._initials[letter]:
                raise ExtractionError(f"no vocabulary token starts with {letter!r}")
        return self._initials[letter]


def prepare_prompts(
    rows: Sequence[Mapping[str, Any]],
    plans: Sequence[PromptPlan],
    tokenizer: Any,
    max_length: int | None,
    resolve_initials: bool = True,
) -> list[PreparedPrompt]:
    """Tokenise the rows, resolve each plan's read points and append candidate branches.

    ``resolve_initials=False`` leaves initials reads' token sets empty (finding them decodes
    the whole vocabulary; a cost plan only needs the positions they are read at)."""
    prompts = tokenize_prompts(tokenizer, rows, max_length=max_length)
    cands = CandidateTokenizer(tokenizer)
    char_spans = [{s["name"]: (s["start"], s["end"]) for s in row["spans"]} for row in rows]
    prepared = []
    for row, prompt, plan, chars in zip(rows, prompts, plans, char_spans):
        seq = BranchedSequence.of_prompt(prompt.input_ids)
        reads = []
        for point in plan.reads:
            if point.before is None:
                pos, gap = len(prompt) - 1, ""
            else:
                if point.before not in prompt.spans:
                    raise ExtractionError(f"prompt {prompt.prompt_id!r}: no span {point.before!r} to read before")
                pos = prompt.spans[point.before][0] - 1
                if pos < 0:
                    raise ExtractionError(
                        f"prompt {prompt.prompt_id!r}: span {point.before!r} starts the prompt; nothing predicts it"
                    )
                gap = row["text"][prompt.offsets[pos][1] : chars[point.before][0]]
            read = PreparedRead(point, pos)
            if point.initials:
                read.initial_sets = [cands.initial(letter) if resolve_initials else [] for letter in point.labels]
            else:
                texts = point.texts if point.texts is not None else point.labels
                tokens = [cands.after(prompt, row["text"], pos, gap + t, point.end) for t in texts]
                read.steps = seq.add_candidates(pos, tokens)
            reads.append(read)
        # branch tokens take positions after their read point, not after the prompt
        if max_length is not None and max(seq.positions) + 1 > max_length:
            raise ExtractionError(
                f"prompt {prompt.prompt_id!r} with its candidates reaches position {max(seq.positions)}, "
                f"beyond the model's context of {max_length} tokens"
            )
        prepared.append(PreparedPrompt(prompt, plan, seq, reads))
    return prepared


def _span_tokens(p: PreparedPrompt, name: str) -> tuple[int, int]:
    n = len(p.prompt)
    return (n - 1, n) if name == END else p.prompt.spans[name]


def _check_finite(values: torch.Tensor, what: str, prompts: Sequence[PreparedPrompt]) -> None:
    # one pass: a NaN or an infinity makes the sum non-finite (the exact test runs only when
    # the sum is not finite, which a float32 overflow alone could also make it)
    if not math.isfinite(float(values.sum())) and not bool(torch.isfinite(values).all()):
        ids = ", ".join(p.prompt.prompt_id for p in prompts[:5])
        raise ExtractionError(f"non-finite {what} in the batch of prompts {ids}")


class _BatchResult:
    def __init__(self) -> None:
        self.pooled: dict[int, torch.Tensor] = {}  # layer -> (K, P, d)
        self.masses: dict[int, torch.Tensor] = {}  # layer -> (Q, H, S)
        self.reads: list[tuple[int, str, str, float, float]] = []  # prompt, readout, candidate, logp, first


def batch_inputs(sequences: Sequence[BranchedSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded model inputs of branched sequences: ``input_ids``, ``position_ids``,
    ``attention_mask`` (the branch mask, or a plain padding mask without branches) and
    ``real`` (the prompt tokens, a (B, width) bool)."""
    width = max(len(s.ids) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(sequences), width), dtype=torch.long)
    real = torch.zeros((len(sequences), width), dtype=torch.bool)
    for b, seq in enumerate(sequences):
        n = len(seq.ids)
        ids[b, :n] = torch.tensor(seq.ids)
        positions[b, :n] = torch.tensor(seq.positions)
        real[b, : seq.n_prompt] = True
    if any(s.n_branch for s in sequences):
        mask: torch.Tensor = branch_mask(list(sequences), width)
    else:
        mask = real.long()  # a plain padding mask keeps the fast causal SDPA path
    return {"input_ids": ids, "position_ids": positions, "attention_mask": mask, "real": real}


def _run_batch(
    model: torch.nn.Module,
    batch: Sequence[PreparedPrompt],
    poolings: Sequence[str],
    pad_id: int,
    device: torch.device,
) -> _BatchResult:
    tensors = batch_inputs([p.sequence for p in batch], pad_id)
    ids, positions, mask, real = (tensors[k] for k in ("input_ids", "position_ids", "attention_mask", "real"))
    width = ids.shape[1]
    result = _BatchResult()

    # spans to pool: (row, start, end) for every (prompt, pooled span)
    pool_items = [(b, *_span_tokens(p, s)) for b, p in enumerate(batch) for s in p.plan.pool]
    span_index = SpanIndex.from_lists(*zip(*pool_items)) if pool_items else None

    def on_layer(layer: int, hidden: torch.Tensor) -> None:
        if span_index is not None:
            result.pooled[layer] = pool_spans(hidden, span_index, poolings).cpu()

    # attention: one query (the prompt's last token) per prompt that attends to spans
    attending = [b for b, p in enumerate(batch) if p.plan.attend]
    capture = None
    if attending:
        n_spans = max(len(batch[b].plan.attend) for b in attending)
        span_masks = torch.zeros((len(attending), n_spans, width))
        for k, b in enumerate(attending):
            for s, name in enumerate(batch[b].plan.attend):
                start, end = _span_tokens(batch[b], name)
                span_masks[k, s, start:end] = 1.0
        cols = [batch[b].sequence.n_prompt - 1 for b in attending]
        capture = AttentionCapture(
            torch.tensor(attending, device=device), torch.tensor(cols, device=device),
            real.to(device), span_masks.to(device),
        )

    base = base_model(model)
    inputs = dict(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device))
    with torch.inference_mode(), pooled_layers(model, on_layer), window_positions(inputs["position_ids"]):
        if capture is not None:
            with capturing(capture):
                final = base(**inputs, use_cache=False).last_hidden_state
            result.masses = {layer: m.cpu() for layer, m in capture.masses.items()}
            _check_captured(model, result.masses)
        else:
            final = base(**inputs, use_cache=False).last_hidden_state
        _read(model, final, batch, result)
    for layer, pooled in result.pooled.items():
        _check_finite(pooled, f"pooled hidden states at layer {layer}", batch)
    for layer, masses in result.masses.items():
        _check_finite(masses, f"attention mass at layer {layer}", batch)
    return result


def _check_captured(model: torch.nn.Module, masses: Mapping[int, torch.Tensor]) -> None:
    """Every layer's attention must have gone through the capturing attention."""
    n_layers = int(model.config.num_hidden_layers)
    if sorted(masses) != list(range(1, n_layers + 1)):
        raise ExtractionError(
            f"unsupported architecture: the capturing attention saw layers {sorted(masses)} of 1..{n_layers} "
            f"of model_type {model.config.model_type!r}; its attention does not go through transformers' "
            "attention interface (load it with the attn_implementation that attention.register() returns)"
        )


def _read(model: torch.nn.Module, final: torch.Tensor, batch: Sequence[PreparedPrompt], result: _BatchResult) -> None:
    """Log-probabilities of every read candidate; the LM head runs only at read indices,
    in chunks, keeping only the entries read (never a (positions, vocab) table)."""
    needed: dict[tuple[int, int], int] = {}  # (batch row, sequence index) -> head row
    tokens_at: dict[int, set[int]] = {}  # head row -> token ids read there
    sets_at: dict[int, set[str]] = {}  # head row -> initial sets summed there
    sets: dict[str, list[int]] = {}
    for b, p in enumerate(batch):
        for read in p.reads:
            if read.initial_sets is not None:
                row = needed.setdefault((b, read.position), len(needed))
                for label, ids in zip(read.point.labels, read.initial_sets):
                    sets[label] = ids
                    sets_at.setdefault(row, set()).add(label)
                continue
            for steps in read.steps:
                for i, token in steps:
                    row = needed.setdefault((b, i), len(needed))
                    tokens_at.setdefault(row, set()).add(token)
    if not needed:
        return
    keys = list(needed)
    rows = torch.tensor([k[0] for k in keys], device=final.device)
    cols = torch.tensor([k[1] for k in keys], device=final.device)
    token_logp: dict[tuple[int, int], float] = {}
    set_logp: dict[tuple[int, str], float] = {}
    # the (rows, vocab) float32 logits of one chunk stay within HEAD_BYTES
    step = chunk_count(len(keys), 4 * vocab_size(model), HEAD_BYTES)
    for start in range(0, len(keys), step):
        stop = min(start + step, len(keys))
        # checking the (chunk, d) hidden states is cheaper than the (chunk, vocab) result
        _check_finite(final[rows[start:stop], cols[start:stop]], "final hidden states at read positions", batch)
        chunk = logprobs_at(model, final, rows[start:stop], cols[start:stop])  # (chunk, vocab)
        pairs = [(r, t) for r in range(start, stop) for t in sorted(tokens_at.get(r, ()))]
        if pairs:
            index_r = torch.tensor([r - start for r, _ in pairs], device=chunk.device)
            index_t = torch.tensor([t for _, t in pairs], device=chunk.device)
            values = chunk[index_r, index_t].cpu().tolist()
            token_logp.update(zip(pairs, values))
        for label, ids in sets.items():
            members = [r for r in range(start, stop) if label in sets_at.get(r, ())]
            if members:
                local = torch.tensor([r - start for r in members], device=chunk.device)
                ids_t = torch.tensor(ids, device=chunk.device)
                summed = torch.logsumexp(chunk[local][:, ids_t], dim=-1).cpu().tolist()
                set_logp.update(((r, label), v) for r, v in zip(members, summed))
    for b, p in enumerate(batch):
        for read in p.reads:
            if read.initial_sets is not None:
                row = needed[(b, read.position)]
                for label in read.point.labels:
                    value = set_logp[(row, label)]
                    result.reads.append((b, read.point.name, label, value, value))
                continue
            for label, steps in zip(read.point.labels, read.steps):
                parts = [token_logp[(needed[(b, i)], token)] for i, token in steps]
                result.reads.append((b, read.point.name, label, sum(parts), parts[0]))


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _run_with_retry(run: Callable[[Sequence[PreparedPrompt]], _BatchResult], batch: Sequence[PreparedPrompt],
                    device: torch.device) -> list[tuple[Sequence[PreparedPrompt], _BatchResult]]:
    """Run a batch; on CUDA out-of-memory halve it and retry each half (logged)."""
    try:
        return [(batch, run(batch))]
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if device.type != "cuda" or not _is_oom(err) or len(batch) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(batch) // 2
        log.warning("CUDA out of memory on %d prompts; retrying as %d + %d", len(batch), half, len(batch) - half)
        return _run_with_retry(run, batch[:half], device) + _run_with_retry(run, batch[half:], device)


def extract(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    plans: Sequence[PromptPlan],
    poolings: Sequence[str],
    batch_tokens: int,
    max_length: int | None = None,
    min_efficiency: float = 0.9,
    shard: int = 0,
    n_shards: int = 1,
) -> Extracted:
    """Run ``model`` over the task rows following their plans; returns the three tables.

    Batches hold at most ``batch_tokens`` padded tokens and at least ``min_efficiency``
    real tokens per padded token (see :func:`~iclscope.extraction.batching.plan_batches`).
    Shard ``shard`` of ``n_shards`` runs every n-th batch of the whole task's plan
    (:func:`~iclscope.extraction.batching.shard_batches`) and tables its prompts only.

    Raises :class:`ExtractionError` for an empty input, a too-long prompt, a span or
    candidate that cannot be mapped, or non-finite values (naming the prompts).
    """
    if not rows:
        raise ExtractionError("the task table has no prompts")
    started = time.perf_counter()
    distinct, copies = distinct_prompts(rows, plans)
    try:
        prepared = prepare_prompts([rows[i] for i in distinct], [plans[i] for i in distinct], tokenizer, max_length)
    except ValueError as err:
        raise ExtractionError(str(err)) from err
    device = input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(p.sequence.ids) for p in prepared]
    try:
        batches = shard_batches(plan_batches(lengths, batch_tokens, min_efficiency), shard, n_shards)
    except ValueError as err:
        raise ExtractionError(str(err)) from err
    kept = [i for b in batches for i in b]
    hidden = int(model.config.hidden_size)
    real_tokens = sum(lengths[i] for i in kept)
    padded_tokens = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    n_prompts = sum(len(copies[prepared[i].prompt.prompt_id]) for i in kept)
    branch_tokens = sum(prepared[i].sequence.n_branch for i in kept)
    log.info("%d prompts (%d distinct), %d tokens (%d in candidate branches) in %d batches, "
             "padding efficiency %.3f", n_prompts, len(kept), real_tokens, branch_tokens, len(batches),
             real_tokens / max(padded_tokens, 1))

    order: list[int] = []
    results: list[tuple[Sequence[PreparedPrompt], _BatchResult]] = []
    start = time.perf_counter()
    done_tokens = 0
    with progress.bar(real_tokens, "extract", unit="tok") as bar:  # rate in tokens/s, and the ETA
        for k, index in enumerate(batches, start=1):
            batch = [prepared[i] for i in index]
            results += _run_with_retry(lambda b: _run_batch(model, b, poolings, pad_id, device), batch, device)
            order += index
            batch_tokens_done = sum(lengths[i] for i in index)
            done_tokens += batch_tokens_done
            bar.update(batch_tokens_done)
            if k == len(batches) or k % 10 == 0:
                rate = done_tokens / max(time.perf_counter() - start, 1e-9)
                log.info("batch %d/%d: %d/%d tokens, %.0f tokens/s", k, len(batches), done_tokens, real_tokens, rate)

    forwards = time.perf_counter() - start
    tables = Extracted(
        embeddings=embedding_table(results, poolings, hidden, copies),
        attention=attention_table(results, copies),
        readouts=readout_table(results, copies),
        # no timings: tables must be byte-identical across runs
        stats={"prompts": n_prompts, "distinct_prompts": len(kept), "real_tokens": real_tokens,
               "padded_tokens": padded_tokens, "batches": len(batches)},
    )
    tables.work = {
        "prompt_tokens": real_tokens - branch_tokens, "branch_tokens": branch_tokens,
        "flops": batch_flops(model.config.to_dict(), prepared, batches),
        "prepare_s": start - started, "forward_s": forwards, "tables_s": time.perf_counter() - start - forwards,
    }
    return tables


def distinct_prompts(rows: Sequence[Mapping[str, Any]],
                     plans: Sequence[PromptPlan]) -> tuple[list[int], dict[str, list[tuple[int, str]]]]:
    """The rows to compute (the first of each identical text, spans and plan, in table
    order) and, per computed prompt id, every ``(table position, prompt id)`` that takes its
    results (itself first): the tables list rows in table order. Identical inputs give
    identical outputs, so a repeat costs nothing."""
    first: dict[tuple[Any, ...], int] = {}
    copies: dict[str, list[tuple[int, str]]] = {}
    for i, (row, plan) in enumerate(zip(rows, plans)):
        key = (row["text"], tuple((s["name"], s["start"], s["end"]) for s in row["spans"]), plan)
        j = first.setdefault(key, i)
        copies.setdefault(rows[j]["prompt_id"], []).append((i, row["prompt_id"]))
    return sorted(first.values()), copies
