"""Study B's headline quantities for the findings (its ``headlines`` hook, :mod:`.plugin`).

Each reads the study's tables under ``results/{model}`` and returns :class:`iclscope.findings.Headline`
rows; :mod:`iclscope.findings` renders them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from iclscope.findings import Headline, _read

# how a unit names the prompts it rests on: relevant_first -> suffix (null = every prompt)
ORDER_SUFFIX = {None: "", True: " (relevant first)", False: " (relevant second)"}


def _order_of(value: Any) -> bool | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value) else bool(value)


def effect_unit(row: Any) -> str:
    """The findings' unit of a study B effect (parsed back by the tests): task, what, band,
    story order."""
    order = ORDER_SUFFIX[_order_of(row.relevant_first)]
    if row.quantity == "gain":
        return f"{row.task} k={row.n_shots_before}->{row.n_shots_after}{order}"
    what = "" if row.quantity == "attention_log_ratio_change" else f" {row.measure}"
    return f"{row.task}{what} {row.band}{order}"


def effect_quantity(row: Any) -> str:
    return f"gain_{row.measure}" if row.quantity == "gain" else str(row.quantity)


def effect_note(row: Any) -> str:
    """What an effect is, read from its row: the readout, the normalisation, what the
    interval resampled (counts in code spans: every number stated outside code is a cell)."""
    units = f"CI over `{row.units}`"
    if row.quantity == "gain":
        return units
    layers = f"layers `{int(row.layer_low)}-{int(row.layer_high)}` averaged in each resample"
    has_readout = not pd.isna(row.pooling)
    readout = f"{row.pooling} pooling of `{row.span}`" if has_readout else ""
    if row.quantity.startswith("alignment"):
        return f"{row.comparator} / its ceiling, {readout} (pre-declared); {units}, {layers}"
    if row.quantity == "repr_behaviour_r":
        what = f"{readout}, " if has_readout else ""
        return f"{what}behaviour `{row.behaviour}` (pre-declared); {units}, {layers}"
    return f"{units}, {layers}"


def representation_headlines(root: Path) -> list[Headline]:
    """Study B: the effects table's headline rows (its pre-declared readout), each with its
    interval over the experimental units: behaviour gains after ICL, and per depth band the
    change of normalised alignment, of the attention log ratio, and the correlation of
    representation change with behaviour change; tasks with a story order also per order."""
    src = "representations/effects.parquet"
    eff = _read(root, src, ["task", "quantity", "measure", "band", "relevant_first", "estimate", "ci_low",
                            "ci_high", "n_units", "units", "headline"])
    eff = eff[eff["headline"].astype(bool)]
    out = []
    for row in eff.itertuples(index=False):
        depth = float(row.relative_depth) if row.relative_depth is not None and not pd.isna(row.relative_depth) \
            else math.nan
        out.append(Headline("representations", effect_quantity(row), effect_unit(row), float(row.estimate),
                            float(row.ci_low), float(row.ci_high), int(row.n_units), src, relative_depth=depth,
                            note=effect_note(row)))
    return out
