"""The cross-model stage: every model's headline quantities side by side, and figures.

Inputs are each model's ``findings.parquet`` (written by :mod:`iclscope.findings`, so the
per-model and the cross-model statements come from the same code), its ``card.json`` (size,
family, quantisation) and the curve tables the overlay figures draw. Outputs, under
``results/compare/``: ``headlines.parquet`` (one row per model x quantity x unit, with the
model's size and family), ``findings.md`` (the cross-model text, generated), and figures
with a ``captions.json``.
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
from iclscope.findings import FINDINGS, depth_band, fmt, one_readout, primary_comparator
from iclscope.registry import STUDIES
from iclscope.tables import atomic_path, read_table, write_table

# card fields copied onto every headline row (what a fair comparison must show)
CARD_FIELDS = (
    ("n_parameters", pa.int64()), ("n_parameters_without_embedding", pa.int64()), ("n_layers", pa.int32()),
    ("hidden_size", pa.int32()), ("model_type", pa.string()), ("family", pa.string()),
    ("instruct", pa.bool_()), ("has_chat_template", pa.bool_()), ("gguf_quantization", pa.string()),
    ("context_length", pa.int64()), ("sliding_window", pa.int64()),
)
HEADLINES = pa.schema([*[FINDINGS.field(i) for i in range(len(FINDINGS))], *CARD_FIELDS])

FIGURES = {
    "headlines_vs_size.png": (
        "Headline quantities of every model, models ordered by parameter count without the embedding "
        "table (total in the tick label); bars are the CIs of the per-model findings. Quantities: {quantities}."
    ),
    "judgment_curves.png": (
        "Study A: p(random) against the sequence length |x|, averaged over the formal concepts (solid) "
        "and over the random controls (dashed), one colour per model."
    ),
    "label_curves.png": (
        "Study C: log-likelihood of the true label at every in-context position for the default, "
        "random and flipped conditions, one colour per model; dataset {datasets}."
    ),
    "depth_profiles.png": (
        "Study B: change after ICL (k = {shots}) of hypothesis alignment (divided by its comparator's ceiling) "
        "and of the attention log ratio, "
        "against relative depth (layer / number of layers), so models of different depth line up."
    ),
}

# the quantities the size figure shows (one panel each; one series per unit)
SIZE_QUANTITIES = (
    ("labels", "default - random"), ("labels", "default - flipped"), ("labels", "follows_flipped_late"),
    ("binary", "transition"), ("representations", "gain_correct"), ("representations", "gain_expected_error"),
)


# y-axis labels of the size figure, in words
QUANTITY_WORDS = {
    "default - random": "true-label log-lik. difference (nats)",
    "default - flipped": "true-label log-lik. difference (nats)",
    "follows_flipped_late": "share following flipped labels",
    "transition": "transition point |x|* (flips)",
    "gain_correct": "change in accuracy after ICL",
    "gain_expected_error": "change in expected error after ICL",
}


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
    shown = [(s, q) for s, q in SIZE_QUANTITIES
             if ((headlines["study"] == s) & (headlines["quantity"] == q)).any()]
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
    for ax, (study, quantity) in zip(axes.flat, shown):
        rows = headlines[(headlines["study"] == study) & (headlines["quantity"] == quantity)]
        if quantity == "transition":  # one flip of continuation: the comparable unit
            rows = rows[rows["unit"].str.endswith("d=1") | rows["unit"].str.startswith("judgment")]
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
        ax.set_ylabel(QUANTITY_WORDS.get(quantity, quantity), fontsize=8)
        if missing:
            note = textwrap.fill("no estimate: " + ", ".join(missing), 48)
            ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=6, color="0.4", va="bottom")
        if units:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_figure(fig, path)
    return [f"{s}: {q}" for s, q in shown]


def _judgment_figure(judgments: Mapping[str, pd.DataFrame], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if not judgments:
        no_data(ax, "study A not run")
    for i, (model, j) in enumerate(sorted(judgments.items())):
        colour = f"C{i}"
        is_random = j["concept"] == "random"
        for mask, style, what in ((~is_random, "-", "concepts"), (is_random, "--", "random controls")):
            curve = j[mask].groupby("length")["p_random"].mean()
            if not curve.empty:
                ax.plot(curve.index, curve.to_numpy(), style, color=colour, marker="o", ms=3,
                        label=f"{model}: {what}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("sequence length |x| (flips)")
    ax.set_ylabel("p(random)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _label_figure(curves: Mapping[tuple[str, str], pd.DataFrame], path: Path) -> None:
    plt = pyplot()
    datasets = sorted({ds for _, ds in curves})
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(5.5 * max(len(datasets), 1), 4), squeeze=False)
    if not datasets:
        no_data(axes[0, 0], "study C not run")
    models = sorted({m for m, _ in curves})
    styles = {"default": "-", "random": ":", "flipped": "--"}
    for ax, ds in zip(axes[0], datasets):
        for i, model in enumerate(models):
            c = curves.get((model, ds))
            if c is None:
                continue
            c = c[c["metric"] == "logp_true"]
            for cond, style in styles.items():
                sub = c[c["condition"] == cond].sort_values("position")
                if not sub.empty:
                    ax.plot(sub["position"], sub["mean"], style, color=f"C{i}", label=f"{model}: {cond}")
                    ax.fill_between(sub["position"], sub["ci_low"], sub["ci_high"], color=f"C{i}", alpha=0.1)
        ax.set_title(f"dataset {ds}")
        ax.set_xlabel("in-context position (prediction after position - 1 examples)")
        ax.set_ylabel("log p(true label), nats")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _depth_figure(profiles: Mapping[str, Mapping[str, pd.Series]], path: Path) -> None:
    """``profiles[model][measure]`` = per relative depth change after ICL."""
    plt = pyplot()
    measures = sorted({m for p in profiles.values() for m in p})
    fig, axes = plt.subplots(1, max(len(measures), 1), figsize=(5.2 * max(len(measures), 1), 3.8),
                             squeeze=False)
    if not measures:
        no_data(axes[0, 0], "study B not run")
    for ax, measure in zip(axes[0], measures):
        for i, model in enumerate(sorted(profiles)):
            series = profiles[model].get(measure)
            if series is not None and not series.empty:
                ax.plot(series.index, series.to_numpy(), marker="o", ms=3, color=f"C{i}", label=model)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("relative depth (layer / number of layers)")
        ax.set_ylabel(f"change after ICL: {measure}")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def depth_profile(frame: pd.DataFrame, value: str, keys: Mapping[str, Any]) -> pd.Series:
    """After-minus-before change of ``value`` per layer, indexed by relative depth."""
    for k, v in keys.items():
        if k in frame.columns:
            frame = frame[frame[k] == v]
    if frame.empty:
        return pd.Series(dtype=float)
    shots = sorted(frame["n_shots"].unique())
    wide = frame.pivot_table(index="layer", columns="n_shots", values=value)
    change = (wide[shots[-1]] - wide[shots[0]]).dropna()
    n_layers = int(frame["layer"].max())
    change.index = change.index / max(n_layers, 1)
    depth_band(0, n_layers)  # validates n_layers
    return change


def _optional(path: Path) -> pd.DataFrame | None:
    return read_table(path).to_pandas() if path.exists() else None


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
    quantities = _size_figure(headlines, figs / "headlines_vs_size.png")
    judgments = {m: t for m in models if (t := _optional(results / m / "binary/judgment.parquet")) is not None}
    _judgment_figure(judgments, figs / "judgment_curves.png")
    datasets = list(params.get("datasets", []))
    curves = {(m, ds): t for m in models for ds in datasets
              if (t := _optional(results / m / f"labels/{ds}/curves.parquet")) is not None}
    _label_figure(curves, figs / "label_curves.png")
    profiles: dict[str, dict[str, pd.Series]] = {}
    shots = ""
    for m in models:
        rsa = _optional(results / m / "representations/rsa.parquet")
        att = _optional(results / m / "representations/attention_ratio.parquet")
        prof: dict[str, pd.Series] = {}
        if rsa is not None and "relevant_first" in rsa.columns:
            rsa = rsa[rsa["relevant_first"].isna()]  # every prompt (the story orders are split rows)
        if rsa is not None and not rsa.empty:
            value = next(c for c in ("alignment_normalised", "alignment", "spearman") if c in rsa.columns)
            # the readout the per-model findings read (same pooling, span and comparator)
            task = "reading" if (rsa["task"] == "reading").any() else str(rsa["task"].iloc[0])
            sub = one_readout(rsa[rsa["task"] == task], task, None, "mean")
            keys = {"task": task, "pooling": sub["pooling"].iloc[0], "span": sub["span"].iloc[0],
                    "hypothesis": sorted(sub["hypothesis"].unique())[0]}
            if "comparator" in sub.columns:
                keys["comparator"] = primary_comparator(rsa)
            prof[f"alignment ({keys['task']}, {keys['hypothesis']})"] = depth_profile(sub, value, keys)
            shots = ", ".join(str(k) for k in sorted(sub["n_shots"].unique()))
        if att is not None and not att.empty:
            value = "log_ratio" if "log_ratio" in att.columns else "ratio"
            keys = {"head": -1}
            if "relevant_first" in att.columns and att["relevant_first"].isna().any():
                att = att[att["relevant_first"].isna()]
            prof[f"attention {value}"] = depth_profile(att, value, keys)
        profiles[m] = prof
    _depth_figure(profiles, figs / "depth_profiles.png")
    captions = {
        "headlines_vs_size.png": FIGURES["headlines_vs_size.png"].format(quantities="; ".join(quantities) or "none"),
        "judgment_curves.png": FIGURES["judgment_curves.png"],
        "label_curves.png": FIGURES["label_curves.png"].format(datasets=", ".join(datasets) or "none"),
        "depth_profiles.png": FIGURES["depth_profiles.png"].format(shots=shots or "n/a"),
    }
    with atomic_path(figs / "captions.json") as tmp:
        tmp.write_text(json.dumps(captions, indent=2, sort_keys=True) + "\n")
    return headlines
