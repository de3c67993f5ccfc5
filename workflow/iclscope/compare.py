"""The cross-model stage: every model's headline quantities side by side, and figures.

Inputs are each model's ``findings.parquet`` (written by :mod:`iclscope.findings`, so the
per-model and the cross-model statements come from the same code), its ``card.json`` (size,
family, quantisation) and the tables each study's overlay figures draw. Outputs, under
``results/compare/``: ``headlines.parquet`` (one row per model x quantity x unit, with the
model's size and family), ``findings.md`` (the cross-model text, generated), and figures
with a ``captions.json``: the size figure (the studies' ``size_panels``) and each study's
overlay figures (its ``compare_figures``, drawn by its ``compare`` hook; see
:class:`iclscope.registry.Study`).
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from iclscope import provenance
from iclscope.figures import no_data, pyplot, save_figure
from iclscope.findings import FINDINGS, fmt
from iclscope.registry import SIZE_FIGURE, STUDIES, SizePanel
from iclscope.tables import atomic_path, read_table, write_table

# card fields copied onto every headline row (what a fair comparison must show)
CARD_FIELDS = (
    ("n_parameters", pa.int64()), ("n_parameters_without_embedding", pa.int64()), ("n_layers", pa.int32()),
    ("hidden_size", pa.int32()), ("model_type", pa.string()), ("family", pa.string()),
    ("instruct", pa.bool_()), ("has_chat_template", pa.bool_()), ("gguf_quantization", pa.string()),
    ("context_length", pa.int64()), ("sliding_window", pa.int64()),
)
HEADLINES = pa.schema([*[FINDINGS.field(i) for i in range(len(FINDINGS))], *CARD_FIELDS])

# the size figure's caption; each study's overlay figures come with their own (its `compare` hook)
SIZE_CAPTION = (
    "Headline quantities of every model, models ordered by parameter count without the embedding "
    "table (total in the tick label); bars are the CIs of the per-model findings. Quantities: {quantities}."
)


def size_panels() -> list[tuple[str, SizePanel]]:
    """(study, panel) of the size figure: each study's ``size_panels`` in its order, the studies
    by ``size_rank`` (the unranked after, in registry order)."""
    ranked = sorted(STUDIES.values(), key=lambda s: (s.size_rank is None, s.size_rank or 0))
    return [(s.name, panel) for s in ranked for panel in s.size_panels]


def card_row(card: Mapping[str, Any]) -> dict[str, Any]:
    return {name: card.get(name) for name, _ in CARD_FIELDS}


def stack_headlines(findings: Mapping[str, str | Path], cards: Mapping[str, str | Path]) -> pd.DataFrame:
    """Every model's findings rows with its card fields, in model order."""
    frames = []
    for model in sorted(findings):
        frame = read_table(findings[model]).to_pandas()
        card = json.loads(Path(cards[model]).read_text())
        for name, value in card_row(card).items():
            frame[name] = value
        frames.append(frame)
    if not frames:
        raise ValueError("compare: no model's findings given")
    return pd.concat(frames, ignore_index=True)


def cross_model_markdown(headlines: pd.DataFrame) -> str:
    """findings.md of the comparison: per quantity and unit, every model's estimate and CI,
    models ordered by size. Every number is a cell of ``headlines.parquet``."""
    lines = ["# Findings: models compared", ""]
    sizes = headlines.drop_duplicates("model").set_index("model")["n_parameters_without_embedding"]
    lines.append("Models, by parameters without the embedding table: " + ", ".join(
        f"`{m}` ({fmt(float(sizes[m]))})" for m in sizes.sort_values().index) + ".")
    lines.append("")
    order = list(sizes.sort_values().index)
    for study in STUDIES:  # registry order
        rows = headlines[headlines["study"] == study]
        if rows.empty:
            continue
        lines += [f"## {study}", ""]
        for (quantity, unit), g in rows.groupby(["quantity", "unit"], sort=True):
            g = g.set_index("model").reindex([m for m in order if m in set(g["model"])])
            parts = []
            for model, r in g.iterrows():
                ci = "" if math.isnan(r.ci_low) else f" [{fmt(r.ci_low)}, {fmt(r.ci_high)}]"
                parts.append(f"`{model}` {fmt(r.estimate)}{ci}")
            lines.append(f"- `{quantity}`, `{unit}`: " + "; ".join(parts) + ".")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _millions(n: Any) -> str:
    return "?" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{float(n) / 1e6:.0f}M"


def _size_figure(headlines: pd.DataFrame, path: Path) -> list[str]:
    """One panel per headline quantity; models on the x axis ordered by size (their
    parameter counts in the tick labels), one series per unit with its CI."""
    plt = pyplot()
    shown = [(s, panel) for s, panel in size_panels()
             if ((headlines["study"] == s) & (headlines["quantity"] == panel.quantity)).any()]
    models = (headlines.drop_duplicates("model")
              .sort_values(["n_parameters_without_embedding", "model"])[
                  ["model", "n_parameters", "n_parameters_without_embedding"]])
    ticks = [f"{r.model}\n{_millions(r.n_parameters_without_embedding)} non-emb.\n{_millions(r.n_parameters)} total"
             for r in models.itertuples(index=False)]
    position = {m: i for i, m in enumerate(models["model"])}
    n = max(len(shown), 1)
    cols = min(n, 3)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.4 * cols, 3.8 * rows_n), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    if not shown:
        axes.flat[0].set_visible(True)
        no_data(axes.flat[0], "no headline quantity to compare")
    for ax, (study, panel) in zip(axes.flat, shown):
        quantity = panel.quantity
        rows = headlines[(headlines["study"] == study) & (headlines["quantity"] == quantity)]
        rows = rows[rows["unit"].map(panel.shows).astype(bool)]
        # units with no estimate for any model (e.g. no transition within the lengths) draw nothing:
        # named in the panel instead of cluttering the legend
        defined = rows.groupby("unit")["estimate"].apply(lambda e: bool(np.isfinite(e.astype(float)).any()))
        missing = sorted(u for u, ok in defined.items() if not ok)
        units = sorted(u for u, ok in defined.items() if ok)[:8]
        width = 0.6 / max(len(units), 1)
        for i, unit in enumerate(units):
            u = rows[rows["unit"] == unit]
            x = u["model"].map(position).to_numpy(float) + (i - (len(units) - 1) / 2) * width
            y = u["estimate"].to_numpy(float)
            err = np.vstack([y - u["ci_low"].to_numpy(float), u["ci_high"].to_numpy(float) - y])
            err = np.where(np.isfinite(err), np.abs(err), 0.0)
            ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label=unit)
        ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
        ax.set_xlim(-0.6, len(ticks) - 0.4)
        ax.set_title(f"{study}: {quantity}", fontsize=10)
        ax.set_ylabel(panel.words, fontsize=8)
        if missing:
            note = textwrap.fill("no estimate: " + ", ".join(missing), 48)
            ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=6, color="0.4", va="bottom")
        if units:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_figure(fig, path)
    return [f"{s}: {panel.quantity}" for s, panel in shown]


def model_tables(results: Path, models: Sequence[str], relative: str) -> dict[str, pd.DataFrame]:
    """Each model's table ``results/{model}/{relative}``, for the models that have it (what a
    study's ``compare`` hook draws)."""
    return {m: read_table(path).to_pandas() for m in models if (path := results / m / relative).exists()}


def write_compare(results: str | Path, models: Sequence[str], cards: Mapping[str, str | Path],
                  params: Mapping[str, Any], out_dir: str | Path) -> pd.DataFrame:
    """Write ``out_dir``/{headlines.parquet, findings.md, figures/*.png, figures/captions.json}."""
    results, out = Path(results), Path(out_dir)
    findings = {m: results / m / "findings.parquet" for m in models}
    headlines = stack_headlines(findings, cards)
    meta = provenance.metadata("compare", params, seed=int(params.get("seed", 0)),
                               extra={"models": sorted(models)})
    schema = pa.schema([HEADLINES.field(n) for n in headlines.columns if n in HEADLINES.names])
    write_table(pa.Table.from_pandas(headlines[schema.names], schema=schema, preserve_index=False),
                out / "headlines.parquet", meta)
    with atomic_path(out / "findings.md") as tmp:
        tmp.write_text(cross_model_markdown(headlines))

    figs = out / "figures"
    quantities = _size_figure(headlines, figs / SIZE_FIGURE)
    captions = {SIZE_FIGURE: SIZE_CAPTION.format(quantities="; ".join(quantities) or "none")}
    for study in STUDIES.values():  # each study's overlay figures, its own code (its `compare` hook)
        if study.has("compare"):
            drawn = study.call("compare", results, list(models), params, figs)
            if set(drawn) != set(study.compare_figures):
                raise ValueError(f"study {study.name!r}: its compare hook drew {sorted(drawn)}, its record "
                                 f"registers {sorted(study.compare_figures)} (compare_figures)")
            captions.update(drawn)
    with atomic_path(figs / "captions.json") as tmp:
        tmp.write_text(json.dumps(captions, indent=2, sort_keys=True) + "\n")
    return headlines
