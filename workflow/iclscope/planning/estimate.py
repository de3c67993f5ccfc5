"""What one model job will cost: tokens, FLOPs, memory, bytes written and wall time.

Tokens come from the engine's own accounting (:func:`~iclscope.extraction.engine.prepare_prompts`
and :func:`~iclscope.extraction.batching.plan_batches` on the job's prompts, with the model's
tokenizer), so prompt and branch tokens, batches and LM-head rows are exact. FLOPs follow
from the model's shape (:mod:`~iclscope.planning.shape`); time divides them by the device's
dense peak at a stated model-FLOP utilisation (MFU); memory adds up the weights, the
forward's activations for the largest batch and the engine's chunked temporaries (their
budgets are :mod:`~iclscope.extraction.budgets`); bytes are the tables' rows times their
encoded width. :class:`Assumptions` holds every constant that is not counted, with the
measurement it comes from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from iclscope import contracts
from iclscope.extraction.budgets import CAPTURE_BYTES, HEAD_BYTES, POOL_BYTES
from iclscope.planning.devices import Device
from iclscope.planning.outputs import ExtractionLayout, extraction_bytes, table_bytes
from iclscope.planning.batches import BatchCost, batch_costs
from iclscope.planning.shape import DTYPE_BYTES, ModelShape

MiB = 1024**2
# of a GPU's memory a job may fill (the CUDA context and the allocator's slack take the rest)
USABLE_MEMORY = 0.9


@dataclass(frozen=True)
class Assumptions:
    """The constants a plan assumes (everything else is counted).

    Measured on the 2-core development machines (``iclscope plan --against`` compares a
    finished run with its plan); GPU figures are stated, not measured here.
    """

    mfu: float  # of the device's dense peak, reached by an extraction forward
    decode_mfu: float  # of the peak, reached by a generation step (small matrices)
    startup_seconds: float = 5.0  # python, torch and transformers imports, tokenisation
    load_bandwidth: float = 1e9  # bytes/s from a prepared folder to the device
    # a job's process beside the model: libraries, tokenizer, first-call buffers (measured:
    # 490 MiB for a 70B-wide model in bfloat16, 390 MiB for SmolLM2 in float32)
    base_host_bytes: float = 512 * MiB
    cuda_host_bytes: float = 1024 * MiB  # host memory of a CUDA context
    # the forward's live activations per token: this many hidden-size and intermediate-size
    # vectors in the model's dtype (residual, norm, q/k/v/o; gate, up, their product)
    act_hidden: float = 12.0
    act_intermediate: float = 4.0
    # host memory per output row held until the table is written (Python tuples, strings)
    row_host_bytes: float = 400.0
    margin: float = 1.5  # what a scheduler request adds on top of an estimate

    @classmethod
    def for_device(cls, device: Device, **overrides: Any) -> "Assumptions":
        """The defaults for a device kind: CPU figures measured here, GPU ones stated."""
        if device.kind == "cpu":
            base = dict(mfu=0.62, decode_mfu=0.25)
        else:
            base = dict(mfu=0.35, decode_mfu=0.05, startup_seconds=20.0, load_bandwidth=2e9)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


@dataclass
class JobPlan:
    """One job's estimate; ``parts`` breaks memory (bytes) and time (seconds) down."""

    model: str
    job: str  # extract | generate
    task: str
    shard: str  # "K/N"
    device: str
    dtype: str
    prompts: int
    distinct_prompts: int
    prompt_tokens: int
    branch_tokens: int
    padded_tokens: int
    batches: int
    head_rows: int
    flops: float
    device_bytes: float  # peak on the device (the CPU's RAM when it runs there)
    host_bytes: float  # peak resident memory of the job's process
    output_bytes: dict[str, float]  # table -> bytes on disk
    seconds: float
    device_memory: float = 0.0  # of one device of the kind planned for
    parts: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # where ``seconds`` is an upper bound (free generation stops when the list closes, which
    # only the run can tell): the time if every bounded sequence stopped at once
    seconds_floor: float | None = None
    output_bytes_floor: float | None = None  # the same for the bytes written

    @property
    def total_output_bytes(self) -> float:
        return sum(self.output_bytes.values())

    @property
    def gpus(self) -> int:
        """Devices the job's memory fills (one on a CPU): more than one needs ``device_map``."""
        if self.device_memory <= 0 or self.device == "cpu":
            return 1
        return max(1, math.ceil(self.device_bytes / (USABLE_MEMORY * self.device_memory)))

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(total_output_bytes=self.total_output_bytes, gpus=self.gpus)
        return out


# --------------------------------------------------------------------------- extraction


def work_bytes(shape: ModelShape, b: BatchCost, dtype: str, n_poolings: int,
               assume: Assumptions) -> dict[str, float]:
    """Working memory of one batch beside the weights: the forward's activations, the
    branch mask, and the largest of the engine's chunked temporaries (capture, pooling,
    LM head), each at most its budget."""
    size = DTYPE_BYTES[dtype]
    act = b.padded * size * (assume.act_hidden * shape.hidden + assume.act_intermediate * shape.intermediate)
    mask = float(b.size * b.width * b.width) if b.masked else 0.0  # boolean (B, 1, T, T)
    capture = 0.0
    if b.attending:
        capture = (min(CAPTURE_BYTES, b.attending * shape.n_heads * b.width * (shape.head_dim + 2) * 4.0)
                   + b.attending * shape.kv_width * b.width * size)
    pool = 0.0
    if b.pooled_spans:
        pool = min(POOL_BYTES, b.span_tokens * shape.hidden * 4.0) + b.pooled_spans * n_poolings * shape.hidden * 4.0
    head = 0.0
    if b.head_rows:
        rows = min(b.head_rows, max(1, HEAD_BYTES // (4 * shape.vocab)))
        # logits in the model's dtype, a float32 copy unless they are float32, the log-softmax
        head = rows * shape.vocab * (size + (0 if size == 4 else 4) + 4.0)
    return {"activations": act, "mask": mask, "temporaries": max(capture, pool, head)}


def _extract_metadata(kind: str, job: Mapping[str, Any]) -> dict[str, str]:
    from iclscope import provenance

    meta = provenance.metadata(kind, job["params"], seed=None, model=job["card"], extra={
        "task": job["task"], "shard": "gathered", "tasks_config_hash": "0" * 64,
        "stats": {"prompts": job["prompts"], "real_tokens": job["tokens"]}})
    meta[provenance.PREFIX + "command"] = job["command"]
    return meta


def plan_extract(shape: ModelShape, tokenizer: Any, rows: Sequence[Mapping[str, Any]], *, model: str, task: str,
                 device: Device, dtype: str, batch_tokens: int, poolings: Sequence[str], assume: Assumptions,
                 card: Mapping[str, Any], params: Mapping[str, Any], command: str, shard: int = 0,
                 n_shards: int = 1, sizes: bool = True) -> JobPlan:
    """The cost of extracting shard ``shard`` of ``n_shards`` of a task's ``rows``
    (``sizes=False``: without the tables' bytes, which take a second to estimate)."""
    from iclscope.extraction.batching import plan_batches, shard_batches
    from iclscope.extraction.engine import distinct_prompts, prepare_prompts
    from iclscope.extraction.plan import plan_for

    plans = [plan_for(task, row) for row in rows]
    distinct, copies = distinct_prompts(rows, plans)
    everything = prepare_prompts([rows[i] for i in distinct], [plans[i] for i in distinct], tokenizer,
                                 shape.context_length, resolve_initials=False)
    # the shard's batches of the whole task's plan, as the engine runs them
    whole = shard_batches(plan_batches([len(p.sequence.ids) for p in everything], batch_tokens), shard, n_shards)
    kept = [i for b in whole for i in b]
    position = {i: k for k, i in enumerate(kept)}
    prepared = [everything[i] for i in kept]
    batch_index = [[position[i] for i in b] for b in whole]
    copies = {p.prompt.prompt_id: copies[p.prompt.prompt_id] for p in prepared}
    n_prompts = sum(len(c) for c in copies.values())
    batches = batch_costs(prepared, batch_index)

    flops = sum(shape.linear_flops(b.padded) + shape.attention_flops(b.pairs) + shape.head_flops(b.head_rows)
                for b in batches)
    weights = shape.weight_bytes(dtype)
    work = [work_bytes(shape, b, dtype, len(poolings), assume) for b in batches]
    peak_work = max((sum(w.values()) for w in work), default=0.0)
    device_bytes = weights + peak_work

    # the three tables (a repeated prompt's copies included) and their bytes
    batch_of = [0] * len(prepared)
    for i, index in enumerate(batch_index):
        for k in index:
            batch_of[k] = i
    layout = ExtractionLayout(shape, prepared, copies, batch_of, poolings)
    job = {"params": params, "card": card, "task": task, "prompts": n_prompts, "command": command,
           "tokens": sum(len(p.sequence.ids) for p in prepared)}
    output = extraction_bytes(layout, {t: _extract_metadata(t, job) for t in ("embeddings", "attention", "readouts")}
                              ) if sizes else {}
    emb_rows = layout.n_embedding_rows()
    held = emb_rows * (2 * 4.0 * shape.hidden + assume.row_host_bytes) \
        + (layout.n_attention_rows() + layout.n_readout_rows()) * assume.row_host_bytes
    # host: the process, the model where it runs on the CPU (a GPU's weights load straight
    # to it), the tables held
    host = assume.base_host_bytes + held + (device_bytes if device.kind == "cpu"
                                            else assume.cuda_host_bytes)
    compute = flops / (device.peak(dtype) * assume.mfu)
    load = weights / assume.load_bandwidth
    seconds = assume.startup_seconds + load + compute
    return JobPlan(
        model=model, job="extract", task=task, shard=f"{shard + 1}/{n_shards}", device=device.name, dtype=dtype,
        prompts=n_prompts, distinct_prompts=len(prepared),
        prompt_tokens=sum(p.sequence.n_prompt for p in prepared),
        branch_tokens=sum(p.sequence.n_branch for p in prepared),
        padded_tokens=sum(b.padded for b in batches), batches=len(batches),
        head_rows=sum(b.head_rows for b in batches), flops=flops, device_bytes=device_bytes, host_bytes=host,
        output_bytes=output, seconds=seconds, device_memory=device.memory_bytes,
        parts={"weights_bytes": weights, "work_bytes": peak_work, "held_bytes": held,
               "startup_s": assume.startup_seconds, "load_s": load, "compute_s": compute},
    )


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _ModeSteps:
    """How one generation mode decodes: ``steps`` forwards of ``fed`` tokens a row, the LM
    head read at ``reads`` of them; ``exact`` unless ``steps`` is only a bound; whether a
    prompt shared by several samples is read once (``shared_prefill``)."""
    steps: int
    fed: int
    reads: int
    exact: bool
    shared_prefill: bool


def _generation_steps(tokenizer: Any, texts: Sequence[str], generation: Mapping[str, Any],
                      params: Mapping[str, Any]) -> dict[str, _ModeSteps]:
    """Per generation mode, how it decodes.

    Constrained sampling feeds, ``n_flips`` times whatever the model would write, the last
    flip's final symbol token, the separator and every symbol's tokens but its last, and
    reads the head before each symbol token; free sampling feeds and reads one token a step
    until the list closes, which only the run can tell: ``max_new_tokens`` is its bound."""
    from iclscope.extraction.constrained import PieceTokens

    out = {}
    for mode in generation.get("modes", ["free"]):
        if mode == "constrained":
            pieces = PieceTokens(tokenizer, list(params.get("symbols", ["Heads", "Tails"])),
                                 params.get("separator", ", "))
            sep, cands, _ = pieces.step(texts[0] + pieces.step(texts[0], True)[2][0], False)
            branches = sum(len(c) - 1 for c in cands)
            out[mode] = _ModeSteps(int(generation["n_flips"]), 1 + len(sep) + branches, 1 + branches, True, True)
        else:
            out[mode] = _ModeSteps(int(generation["max_new_tokens"]), 1, 1, False, False)
    return out


def plan_generate(shape: ModelShape, tokenizer: Any, rows: Sequence[Mapping[str, Any]], *, model: str, task: str,
                  device: Device, dtype: str, batch_tokens: int, generation: Mapping[str, Any],
                  assume: Assumptions, card: Mapping[str, Any], params: Mapping[str, Any],
                  command: str, sizes: bool = True) -> JobPlan:
    """The cost of sampling ``generation["n_samples"]`` sequences of every prompt of the
    sampled task ``task`` in each mode, with a KV cache, in batches as :func:`run_generate` forms them: constrained
    sequences take exactly ``n_flips`` steps, free ones at most ``max_new_tokens`` (an upper
    bound where a sequence closes its list early)."""
    import numpy as np

    from iclscope.extraction.generation import chat_text

    n_samples = int(generation["n_samples"])
    texts = [chat_text(tokenizer, row["text"], row.get("system")) for row in rows]
    lengths = [len(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts]
    # the requests in run_generate's order (prompt by prompt, each sample), sorted longest first
    requests = sorted(((lengths[p], p) for p in range(len(texts)) for _ in range(n_samples)),
                      key=lambda r: -r[0])
    modes = _generation_steps(tokenizer, texts, generation, params)
    batch_size = max(1, batch_tokens // 64)
    size = DTYPE_BYTES[dtype]
    weights = shape.weight_bytes(dtype)
    flops = compute = floor = 0.0
    peak_work = 0.0
    padded = 0
    batches = [requests[i:i + batch_size] for i in range(0, len(requests), batch_size)]
    peak = device.peak(dtype)
    for how in modes.values():
        # a step of one token a row reaches decode_mfu; one feeding several is a small
        # prefill: its extra tokens are costed at the prefill's mfu
        step_mfu = assume.decode_mfu + (assume.mfu - assume.decode_mfu) * (1 - 1 / how.fed)
        for batch in batches:
            b, width = len(batch), batch[0][0]
            read = len({p for _, p in batch}) if how.shared_prefill else b
            padded += read * width
            prefill = (shape.linear_flops(read * width) + shape.attention_flops(read * width * width)
                       + shape.head_flops(read))
            flops += prefill
            compute += prefill / (peak * assume.mfu)
            floor += prefill / (peak * assume.mfu)
            for s in range(how.steps):
                cached = width + (s + 1) * how.fed
                step = (shape.linear_flops(b * how.fed) + shape.attention_flops(b * how.fed * cached)
                        + shape.head_flops(b * how.reads))
                moved = weights + shape.kv_bytes(b * cached, dtype)
                flops += step
                seconds = max(step / (peak * step_mfu), moved / device.bandwidth)
                compute += seconds
                floor += seconds if how.exact else 0.0
            act = read * width * size * (assume.act_hidden * shape.hidden + assume.act_intermediate * shape.intermediate)
            # the cache grows by concatenation: at the last step the old and the grown copy coexist
            peak_work = max(peak_work, act + 2 * shape.kv_bytes(b * (width + how.steps * how.fed), dtype)
                            + b * how.reads * shape.vocab * 8.0)
    device_bytes = weights + peak_work
    steps = max(how.steps for how in modes.values())
    notes = [f"free sequences counted at max_new_tokens = {how.steps} steps (an upper bound)"
             for how in modes.values() if not how.exact]

    # the generations table: a constrained sequence holds n_flips flips and their per-step
    # log-probabilities; a free one is counted at the step bound (its text is the model's)
    rng = np.random.default_rng(0)
    words = list(params.get("symbols", ["Heads", "Tails"]))
    from iclscope import provenance

    meta = provenance.metadata("generations", params, seed=0, model=card,
                               extra={"symbols": words, "inputs": sorted(set(texts))})
    meta[provenance.PREFIX + "command"] = command

    def table_rows(shortest: bool = False):
        """Rows like the run's; a free sequence at half its step bound in flips (one flip
        when ``shortest``: the floor of what it can write)."""
        for mode, how in modes.items():
            mode_steps, fed, exact = how.steps, how.fed, how.exact
            flips = mode_steps if mode == "constrained" else (1 if shortest else max(1, mode_steps // 2))
            for row, text in zip(rows, texts):
                for sample in range(n_samples):
                    drawn = rng.integers(0, 2, flips)
                    per_step = [rng.uniform(-5, 0, flips).astype(np.float32).tolist() for _ in range(2)] \
                        if mode == "constrained" else [[], []]
                    yield {"prompt_id": row["prompt_id"], "p_tails": row["prompt_id"], "sample": sample,
                           "raw": ", ".join(words[i] for i in drawn) + ("" if exact else "]"),
                           "flips": "".join(map(str, drawn)), "parsed": True, "n_tokens": mode_steps * fed,
                           "forced_flips": "0", "n_clean": flips, "clean": True, "rendered_prompt": text,
                           "mode": mode, "step_logp_first": per_step[0], "step_logp_second": per_step[1],
                           "step_p_second": [float(np.exp(x)) for x in per_step[1]]}

    n_rows = len(rows) * n_samples * len(modes)
    output = {"generations": table_bytes(contracts.GENERATIONS, table_rows(), n_rows, meta)} if sizes else {}
    bounded = not all(how.exact for how in modes.values())
    output_floor = (table_bytes(contracts.GENERATIONS, table_rows(shortest=True), n_rows, meta)
                    if sizes and bounded else None)
    held = n_rows * (assume.row_host_bytes + steps * 8.0)
    host = assume.base_host_bytes + held + (device_bytes if device.kind == "cpu"
                                            else assume.cuda_host_bytes)
    load = weights / assume.load_bandwidth
    seconds = assume.startup_seconds + load + compute
    return JobPlan(
        model=model, job="generate", task=task, shard="1/1", device=device.name, dtype=dtype,
        prompts=n_rows, distinct_prompts=len(rows), prompt_tokens=n_samples * sum(lengths), branch_tokens=0,
        padded_tokens=padded + sum(len(requests) * how.steps * how.fed for how in modes.values()),
        batches=len(batches) * len(modes),
        head_rows=sum(len(requests) * (how.steps * how.reads + 1) for how in modes.values()),
        flops=flops, device_bytes=device_bytes, host_bytes=host, output_bytes=output, seconds=seconds,
        device_memory=device.memory_bytes,
        parts={"weights_bytes": weights, "work_bytes": peak_work, "held_bytes": held,
               "startup_s": assume.startup_seconds, "load_s": load, "compute_s": compute},
        notes=notes,
        seconds_floor=assume.startup_seconds + load + floor if bounded else None,
        output_bytes_floor=output_floor,
    )
