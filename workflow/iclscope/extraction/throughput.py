"""How fast an extraction job ran, and against what: logged and recorded by every job.

Every ``iclscope extract`` job measures this machine's matrix-product peak in its own
process (:func:`~iclscope.planning.peak.gemm_peak`, as ``iclscope bench extract`` does) and
reports, in its log and in its tables' provenance (key ``throughput``):

* ``tokens_per_s``: the prompts' tokens over the extraction's seconds (preparing the
  prompts, the forwards, building and writing the tables), counted as the benchmark
  counts them, so the two compare;
* ``compute_bound_s``: the job's FLOPs (the plan's count, :mod:`iclscope.planning.shape`,
  over the batches the job ran: blocks over every padded and branch token, attention over
  its (query, key) pairs, the LM head at the read rows) at the peak: no job runs faster.
  ``bound_ratio`` = seconds / compute bound;
* ``mfu``: those FLOPs over the seconds, as a fraction of the peak (= 1 / ``bound_ratio``).
  Counted, not estimated as 2 x parameters x tokens: a model's embedding table (two thirds
  of Gemma 3 270M) is looked up, not multiplied, and the LM head runs only where a readout
  is read, so that estimate would put Gemma 3 above the peak.

A log line starting with :data:`LOG_PREFIX` holds the record as JSON, which
``iclscope bench jobs`` reads back for every job of a run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

LOG_PREFIX = "iclscope-throughput "


@dataclass(frozen=True)
class Throughput:
    """One extraction job's speed (see the module docstring for each derived figure)."""

    model: str
    task: str
    shard: str  # "K/N"
    device: str
    dtype: str
    cpu: str  # the CPU's vector extensions torch uses (AVX512, AVX2, ...)
    threads: int
    prompt_tokens: int  # the computed (distinct) prompts' tokens
    branch_tokens: int  # candidate-branch tokens computed beside them
    padded_tokens: int
    parameters: int
    flops: float
    gemm_peak: float  # FLOP/s, measured in the job's process
    seconds: float  # the extraction: prompts prepared, forwards run, tables built
    forward_seconds: float  # of which the batches' forwards (capture and readouts included)
    # known once the tables are written (the log's record; the provenance's has None): the
    # writing, and the job's time from its command's start (imports, model load, peak included)
    write_seconds: float | None = None
    job_seconds: float | None = None

    @property
    def tokens_per_s(self) -> float:
        """Prompt tokens over the extraction's seconds, writing included where known."""
        return self.prompt_tokens / max(self.seconds + (self.write_seconds or 0.0), 1e-9)

    @property
    def mfu(self) -> float:
        return 1.0 / self.bound_ratio

    @property
    def compute_bound_s(self) -> float:
        return self.flops / self.gemm_peak

    @property
    def bound_ratio(self) -> float:
        return (self.seconds + (self.write_seconds or 0.0)) / max(self.compute_bound_s, 1e-12)

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s, "mfu": self.mfu,
                "compute_bound_s": self.compute_bound_s, "bound_ratio": self.bound_ratio}

    def summary(self) -> str:
        written = f", {self.write_seconds:.1f} s writing" if self.write_seconds is not None else ""
        job = f"; job {self.job_seconds:.1f} s from its start" if self.job_seconds is not None else ""
        return (f"throughput: {self.prompt_tokens} prompt tokens (+{self.branch_tokens} in candidate branches) in "
                f"{self.seconds:.1f} s of extraction ({self.forward_seconds:.1f} s forwards{written}{job}): "
                f"{self.tokens_per_s:.0f} tokens/s; compute bound {self.compute_bound_s:.1f} s ({self.flops / 1e12:.2f} "
                f"TFLOP at a measured {self.dtype} GEMM peak of {self.gemm_peak / 1e9:.0f} GFLOP/s on {self.device}, "
                f"{self.cpu}, {self.threads} threads): {self.bound_ratio:.2f}x the bound, MFU {self.mfu:.3f}")


def batch_flops(model_config: Mapping[str, Any], prepared: Sequence[Any], batches: Sequence[Sequence[int]]) -> float:
    """FLOPs of the engine's ``batches`` (indices into ``prepared``) by the plan's count."""
    from iclscope.planning.batches import batch_costs
    from iclscope.planning.shape import ModelShape

    shape = ModelShape.from_config(model_config)
    return sum(shape.linear_flops(b.padded) + shape.attention_flops(b.pairs) + shape.head_flops(b.head_rows)
               for b in batch_costs(prepared, batches))


def cpu_capability() -> str:
    """The vector extensions torch's CPU kernels use here (``AVX512``, ``AVX2``, ...)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # older torch
        return "unknown"


def log_record(throughput: Throughput) -> None:
    """Log the human summary and the machine-readable line :func:`read_logs` finds."""
    log.info("%s", throughput.summary())
    log.info("%s%s", LOG_PREFIX, json.dumps(throughput.record(), sort_keys=True))


def parse_log(text: str) -> dict[str, Any] | None:
    """The last throughput record in a job's log text (``None`` where it has none)."""
    found = None
    for line in text.replace("\r", "\n").splitlines():
        at = line.find(LOG_PREFIX)
        if at >= 0:
            found = json.loads(line[at + len(LOG_PREFIX):])
    return found


def read_logs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every throughput record in ``paths`` (job logs), each with the log it came from."""
    records = []
    for path in sorted(map(Path, paths)):
        record = parse_log(path.read_text(errors="replace"))
        if record is not None:
            records.append({**record, "log": str(path)})
    return records
