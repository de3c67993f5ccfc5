"""Analyses of extracted tables: pure functions (arrays in, arrays or frames out).

One module per study concept; I/O and Snakemake wiring live in ``iclscope.studies``.
"""
