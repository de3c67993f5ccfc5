"""This machine's measured matrix-product peak: what a CPU plan assumes
(:func:`iclscope.planning.devices.this_cpu`) and what ``iclscope bench`` measures MFU
against. Here, not in :mod:`iclscope.bench`, so that planning imports no benchmark (and
through it no model loader)."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer reads it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# the probe product that sizes the measurement, and how long a measurement may take
PROBE_SIZE = 256
PEAK_BUDGET_S = 4.0


def peak_size(probe_seconds: float, size: int, products: int, budget_s: float = PEAK_BUDGET_S,
              probe: int = PROBE_SIZE) -> int:
    """The matrix size to measure at: ``size``, or smaller (a multiple of 64, at least
    ``probe``) where ``products`` products of that size would take longer than ``budget_s``
    at the probe's speed (``probe_seconds`` for one ``probe``-sized product)."""
    projected = probe_seconds * (size / probe) ** 3 * products
    if projected <= budget_s:
        return size
    return max(probe, int(size * (budget_s / projected) ** (1 / 3)) // 64 * 64)


def _product_seconds(a: torch.Tensor, b: torch.Tensor, device: torch.device, times: int) -> float:
    best = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def gemm_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a square matrix product (the roofline MFU is measured against).

    A dtype the device multiplies slowly is measured on smaller matrices, so that the
    measurement stays near :data:`PEAK_BUDGET_S`: with torch, MKL and oneDNN held to AVX2
    (no bf16 instructions), bfloat16 products ran at 2.2 GFLOP/s against float32's 194, and
    six of 2048 took six minutes, inside Snakemake's scheduler, which plans a job's
    resources before it starts it."""
    probe = torch.randn(PROBE_SIZE, PROBE_SIZE, dtype=dtype, device=device)
    size = peak_size(_product_seconds(probe, probe, device, 2), size, repeats + 1)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    return 2 * size**3 / _product_seconds(a, b, device, repeats + 1)
