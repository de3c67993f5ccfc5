"""Study B in the comparison (its ``compare`` hook): every model's change after ICL against
relative depth, so models of different depth line up."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from iclscope.compare import model_tables
from iclscope.figures import no_data, pyplot, save_figure
from iclscope.findings import depth_band, one_readout, primary_comparator

FIGURES = {
    "depth_profiles.png": (
        "Study B: change after ICL (k = {shots}) of hypothesis alignment (divided by its comparator's ceiling) "
        "and of the attention log ratio, "
        "against relative depth (layer / number of layers), so models of different depth line up."
    ),
}


def depth_figure(profiles: Mapping[str, Mapping[str, pd.Series]], path: Path) -> None:
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


def alignment_profile(rsa: pd.DataFrame) -> tuple[str, pd.Series, str]:
    """(measure, change per relative depth, the shots compared) of the alignment the per-model
    findings read: the same task, pooling, span and comparator."""
    value = next(c for c in ("alignment_normalised", "alignment", "spearman") if c in rsa.columns)
    task = "reading" if (rsa["task"] == "reading").any() else str(rsa["task"].iloc[0])
    sub = one_readout(rsa[rsa["task"] == task], task, None, "mean")
    keys = {"task": task, "pooling": sub["pooling"].iloc[0], "span": sub["span"].iloc[0],
            "hypothesis": sorted(sub["hypothesis"].unique())[0]}
    if "comparator" in sub.columns:
        keys["comparator"] = primary_comparator(rsa)
    shots = ", ".join(str(k) for k in sorted(sub["n_shots"].unique()))
    return f"alignment ({keys['task']}, {keys['hypothesis']})", depth_profile(sub, value, keys), shots


def attention_profile(att: pd.DataFrame) -> tuple[str, pd.Series]:
    """(measure, change per relative depth) of the attention ratio, over every prompt."""
    value = "log_ratio" if "log_ratio" in att.columns else "ratio"
    if "relevant_first" in att.columns and att["relevant_first"].isna().any():
        att = att[att["relevant_first"].isna()]
    return f"attention {value}", depth_profile(att, value, {"head": -1})


def compare(results: Path, models: Sequence[str], params: Mapping[str, Any], figures_dir: Path) -> dict[str, str]:
    """The models' alignment and attention-ratio profiles (``representations/rsa.parquet``,
    ``attention_ratio.parquet``); the caption names the shots compared (of the last model)."""
    rsas = model_tables(results, models, "representations/rsa.parquet")
    atts = model_tables(results, models, "representations/attention_ratio.parquet")
    profiles: dict[str, dict[str, pd.Series]] = {}
    shots = ""
    for m in models:
        rsa, att = rsas.get(m), atts.get(m)
        prof: dict[str, pd.Series] = {}
        if rsa is not None and "relevant_first" in rsa.columns:
            rsa = rsa[rsa["relevant_first"].isna()]  # every prompt (the story orders are split rows)
        if rsa is not None and not rsa.empty:
            measure, profile, shots = alignment_profile(rsa)
            prof[measure] = profile
        if att is not None and not att.empty:
            measure, profile = attention_profile(att)
            prof[measure] = profile
        profiles[m] = prof
    depth_figure(profiles, figures_dir / "depth_profiles.png")
    return {"depth_profiles.png": FIGURES["depth_profiles.png"].format(shots=shots or "n/a")}
