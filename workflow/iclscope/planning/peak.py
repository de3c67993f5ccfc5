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


def gemm_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a square matrix product (the roofline MFU is measured against)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
