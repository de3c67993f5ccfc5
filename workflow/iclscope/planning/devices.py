"""Devices a plan can target: dense peak throughput, memory and bandwidth.

GPU figures are the vendors' datasheet numbers for dense (not structured-sparse) matrix
math: bfloat16/float16 on the tensor cores, float32 without TF32 (PyTorch's default for
matrix products). The CPU is measured on the machine that plans (a square GEMM, as
``iclscope bench`` measures its MFU against), so a CPU plan is about this machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Mapping

TFLOPS = 1e12
GBPS = 1e9
GIB = 1024**3


@dataclass(frozen=True)
class Device:
    """One accelerator (or this machine's CPU) as a plan sees it."""

    name: str
    kind: str  # gpu | cpu
    peak_flops: Mapping[str, float]  # dtype -> dense FLOP/s
    memory_bytes: float  # per device
    bandwidth: float  # device memory, bytes/s
    note: str = ""
    extra: Mapping[str, float] = field(default_factory=dict)

    def peak(self, dtype: str) -> float:
        if dtype not in self.peak_flops:
            raise ValueError(f"device {self.name} has no {dtype} peak (it has {', '.join(self.peak_flops)})")
        return self.peak_flops[dtype]


def _gpu(name: str, bf16: float | None, fp16: float, fp32: float, memory_gib: float, bandwidth_gbps: float,
         note: str) -> Device:
    peaks = {"float16": fp16 * TFLOPS, "float32": fp32 * TFLOPS}
    if bf16 is not None:
        peaks["bfloat16"] = bf16 * TFLOPS
    return Device(name, "gpu", peaks, memory_gib * GIB, bandwidth_gbps * GBPS, note)


# name -> datasheet figures (dense TFLOPS bf16, fp16, fp32; memory GiB as sold; GB/s)
GPUS: dict[str, Device] = {d.name: d for d in (
    _gpu("a100-40gb", 312, 312, 19.5, 40, 1555, "NVIDIA A100 SXM4 40 GB"),
    _gpu("a100-80gb", 312, 312, 19.5, 80, 2039, "NVIDIA A100 SXM4 80 GB"),
    _gpu("h100-pcie", 756, 756, 51, 80, 2000, "NVIDIA H100 PCIe 80 GB"),
    _gpu("h100-sxm", 989, 989, 67, 80, 3350, "NVIDIA H100 SXM5 80 GB"),
    _gpu("h200", 989, 989, 67, 141, 4800, "NVIDIA H200 SXM 141 GB"),
    _gpu("l40s", 362, 362, 91.6, 48, 864, "NVIDIA L40S 48 GB"),
    _gpu("l4", 121, 121, 30.3, 24, 300, "NVIDIA L4 24 GB"),
    _gpu("a10", 125, 125, 31.2, 24, 600, "NVIDIA A10 24 GB"),
    _gpu("v100-32gb", None, 125, 15.7, 32, 900, "NVIDIA V100 SXM2 32 GB (no bfloat16)"),
    _gpu("rtx-4090", 165, 165, 82.6, 24, 1008, "NVIDIA GeForce RTX 4090 24 GB (fp32 accumulation)"),
)}


def _measure_bandwidth(size: int = 64 * 1024 * 1024, repeats: int = 5) -> float:
    """Best bytes/s of copying a float32 tensor (read and write counted)."""
    import torch

    a = torch.ones(size // 4)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - start)
    return 2 * size / best


@lru_cache(maxsize=None)
def this_cpu() -> Device:
    """This machine's CPU with its measured float32 and bfloat16 GEMM peaks (about two
    seconds, once per process), its memory bandwidth and its RAM."""
    import os

    import torch

    from iclscope.planning.peak import gemm_peak

    cpu = torch.device("cpu")
    peaks = {"float32": gemm_peak(torch.float32, cpu), "bfloat16": gemm_peak(torch.bfloat16, cpu)}
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Device("cpu", "cpu", peaks, float(memory), _measure_bandwidth(),
                  f"this machine's CPU, {torch.get_num_threads()} threads, GEMM peak measured")


def device_names() -> list[str]:
    return ["cpu", *GPUS]


def find_device(name: str) -> Device:
    """A device by name (``cpu`` = this machine, measured)."""
    if name == "cpu":
        return this_cpu()
    if name not in GPUS:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(device_names())}")
    return GPUS[name]


def with_peak(device: Device, dtype: str, flops: float) -> Device:
    """``device`` with its ``dtype`` peak replaced (a figure measured elsewhere)."""
    return replace(device, peak_flops={**device.peak_flops, dtype: flops})
