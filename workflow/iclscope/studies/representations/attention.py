"""Study B's attention ratio (B6): per prompt, the attention mass from the answer position on
the relevant sentence over that on the distractor, and its summaries over prompts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from iclscope import contracts
from iclscope.analysis.attention_ratio import attention_ratio, geometric_mean_ratio, log_attention_ratio
from iclscope.seeding import rng
from iclscope.studies.representations.settings import DISTRACTOR, END, RELEVANT


log = logging.getLogger(__name__)


def prompt_attention_ratios(
    attention: pd.DataFrame, relevant: str = RELEVANT, distractor: str = DISTRACTOR, query: str = END
) -> pd.DataFrame:
    """Attention ratio per prompt, layer and head from an attention table.

    ``attention``: ``prompt_id, layer, head, query, span, mass``. Returns ``prompt_id, layer,
    head, mass_relevant, mass_distractor, ratio, log_ratio`` (ratio = relevant / distractor mass,
    see :func:`iclscope.analysis.attention_ratio.attention_ratio`; log_ratio its log with both
    masses floored, :func:`iclscope.analysis.attention_ratio.log_attention_ratio`). Raises
    ValueError when either span or the query is absent.
    """
    rows = attention[attention["query"] == query] if "query" in attention.columns else attention
    spans = set(rows["span"].unique())
    for name in (relevant, distractor):
        if name not in spans:
            raise ValueError(
                f"attention table has no span {name!r} for query {query!r} (spans: {sorted(spans)})"
            )
    rows = rows[rows["span"].isin([relevant, distractor])]
    wide = rows.pivot_table(index=["prompt_id", "layer", "head"], columns="span", values="mass",
                            aggfunc="first", observed=True)
    wide = wide.dropna(subset=[relevant, distractor]).reset_index()
    out = pd.DataFrame({
        "prompt_id": wide["prompt_id"].astype(str),
        "layer": wide["layer"].astype(int),
        "head": wide["head"].astype(int),
        "mass_relevant": wide[relevant].astype(float),
        "mass_distractor": wide[distractor].astype(float),
    })
    out["ratio"] = attention_ratio(out["mass_relevant"].to_numpy(), out["mass_distractor"].to_numpy())
    out["log_ratio"] = log_attention_ratio(out["mass_relevant"].to_numpy(), out["mass_distractor"].to_numpy())
    return out


def summarise_attention_ratios(
    ratios: pd.DataFrame,
    n_shots: Mapping[str, int],
    task: str,
    seed: int,
    n_boot: int,
    relevant_first: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """Geometric-mean attention ratio over prompts per layer, head and n_shots, with bootstrap CIs.

    ``ratios``: :func:`prompt_attention_ratios`; ``n_shots``: prompt_id -> n_shots;
    ``relevant_first``: prompt_id -> story order (reading), or None. The summary is the mean
    log ratio (``log_ratio``, CI ``log_ci_*``) and its exp (``ratio``, ``ci_*``: the geometric
    mean, :func:`iclscope.analysis.attention_ratio.geometric_mean_ratio`). Rows with
    ``relevant_first`` null pool all prompts; with a mapping, rows for each story order follow.
    Seeded by ``rng(seed, "attention_ratio", task, layer, head, n_shots, order)`` (order:
    "pooled", "first", "second"). Columns: the attention_ratio table's (module docstring).
    """
    frame = ratios.assign(n_shots=ratios["prompt_id"].map(n_shots))
    frame = frame[frame["n_shots"].notna()]
    subsets: list[tuple[Any, str, pd.Series | None]] = [(None, "pooled", None)]
    if relevant_first is not None:
        first = frame["prompt_id"].map(relevant_first)
        subsets += [(True, "first", first == True), (False, "second", first == False)]  # noqa: E712
    rows = []
    for order, tag, mask in subsets:
        part = frame if mask is None else frame[mask.to_numpy(dtype=bool)]
        for (layer, head, k), g in part.groupby(["layer", "head", "n_shots"], sort=True):
            gen = rng(seed, "attention_ratio", task, int(layer), int(head), int(k), tag)
            logs, ratio = geometric_mean_ratio(g["log_ratio"].to_numpy(dtype=float), gen, n_boot=n_boot)
            rows.append({"task": task, "layer": int(layer), "head": int(head), "n_shots": int(k),
                         "ratio": ratio.mean, "ci_low": ratio.low, "ci_high": ratio.high,
                         "log_ratio": logs.mean, "log_ci_low": logs.low, "log_ci_high": logs.high,
                         "mass_relevant": float(g["mass_relevant"].mean()),
                         "mass_distractor": float(g["mass_distractor"].mean()), "n_prompts": len(g),
                         "relevant_first": order})
    out = pd.DataFrame(rows, columns=contracts.ATTENTION_RATIO.names)
    out["relevant_first"] = out["relevant_first"].astype(object)
    return out
