"""Benchmarks (`iclscope bench`): extraction against the bare forward and the naive way
(:mod:`.extract`), the sampling loop against ``model.generate`` (:mod:`.generate`), and the
tables of an accelerator against CPU fp32 (:mod:`.device`)."""

from iclscope.bench.extract import (
    bench_extract, explicit_mask, format_summary, gemm_peak, markdown_table, spread_rows, sync,
)

__all__ = ["bench_extract", "explicit_mask", "format_summary", "gemm_peak", "markdown_table", "spread_rows", "sync"]
