"""Study C's figures, drawn from the curves table only, with captions naming what ran."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from iclscope.figures import no_data, save_figure, words
from iclscope.studies.labels.settings import analysis_settings
from iclscope.tables import read_table

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- figures

FIGURES = {
    "curves.png": (
        "Study C, dataset {dataset}: accuracy against the true labels, log-likelihood of the true "
        "label (renormalised over the label words, {scoring} scoring) and the label words' total "
        "log-probability over the full vocabulary (un-renormalised; the renormalised metrics are "
        "ratios within this mass) at every in-context position (position i predicts example i "
        "from examples 1..i-1), mean over {repeats} repeats with {level:.0%} bootstrap bands, for "
        "the conditions {main_conditions}{arbitrary}."
    ),
    "halfway.png": (
        "Study C, dataset {dataset}: label mappings that change within the context (D->F, F->D: "
        "flipped after N = {flip_at} examples; alternating), drawn for the conditions of this run: "
        "{halfway_conditions}. Dashed line at the first flipped label, dotted line at position 2N + 1, "
        "the prediction after N examples of each mapping, where D->F and F->D are compared. Left: "
        "agreement with the true labels; right: with the in-context labels. Following the most recent "
        "mapping shows as a switch after N."
    ),
    "calibrated.png": (
        "Study C, dataset {dataset}: contextual calibration (Zhao et al. 2021) with each condition's "
        "content-free twin at the same repeat and position (the same shown labels, inputs replaced): "
        "accuracy and log-likelihood of the true label after calibration (solid) and before (dashed), "
        "mean over the repeats with {level:.0%} bootstrap bands, for the twinned conditions "
        "{calibrated_conditions}. Calibration removes the preference the shown labels alone induce."
    ),
}
MAIN_CONDITIONS = ("default", "random", "flipped")
HALFWAY_CONDITIONS = ("default", "flip_df", "flip_fd", "alternating")


def _band(ax, frame: pd.DataFrame, label: str, **style: Any) -> None:
    frame = frame.sort_values("position")
    line = ax.plot(frame["position"], frame["mean"], label=label, **style)[0]
    ax.fill_between(frame["position"], frame["ci_low"], frame["ci_high"], color=line.get_color(), alpha=0.15,
                    linewidth=0)


def plot(tables: Mapping[str, str], params: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    """Draw FIGURES into ``out_dir`` from the ``curves`` table; returns file -> caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    labels = params["labels"]
    settings = analysis_settings(labels)
    curves = read_table(tables["curves"]).to_pandas()
    dataset = params["dataset"]
    flip_at = int(labels["flip_at"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    palette = dict(zip((*MAIN_CONDITIONS, "flip_df", "flip_fd", "alternating"), sns.color_palette("deep", 6)))

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    for ax, metric, title in ((axes[0], "correct", "accuracy vs true labels"),
                              (axes[1], "logp_true", "log p(true label), renormalised"),
                              (axes[2], "logp_label_mass", "log total p(label words), full vocabulary")):
        data = curves[curves["metric"] == metric]
        arbitrary = sorted(c for c in data["condition"].unique() if c.startswith("arbitrary"))
        for k, condition in enumerate(arbitrary):
            _band(ax, data[data["condition"] == condition], "arbitrary words (each)" if k == 0 else None,
                  color="0.6", linewidth=0.8)
        for condition in MAIN_CONDITIONS:
            frame = data[data["condition"] == condition]
            if len(frame):
                _band(ax, frame, condition, color=palette[condition], linewidth=2)
        if metric == "correct":
            ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set(title=title, xlabel="in-context example (position)", ylabel=words(metric))
        if len(data) == 0:
            no_data(ax)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{dataset}: what ICL learns from labels")
    fig.tight_layout()
    save_figure(fig, out / "curves.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, metric, title in ((axes[0], "correct", "agreement with true labels"),
                              (axes[1], "correct_context", "agreement with in-context labels")):
        data = curves[curves["metric"] == metric]
        for condition in HALFWAY_CONDITIONS:
            frame = data[data["condition"] == condition]
            if len(frame):
                _band(ax, frame, condition, color=palette[condition], linewidth=2)
        ax.axvline(flip_at + 1, color="black", linestyle="--", linewidth=1)
        ax.axvline(2 * flip_at + 1, color="black", linestyle=":", linewidth=1)
        ax.set(title=title, xlabel="in-context example (position)", ylabel="accuracy", ylim=(-0.02, 1.02))
        if len(data) == 0:
            no_data(ax)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{dataset}: flipping labels halfway (first flipped label at example {flip_at + 1})")
    fig.tight_layout()
    save_figure(fig, out / "halfway.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    calibrated = sorted(set(curves.loc[curves["metric"] == "logp_true_calibrated", "condition"]))
    for ax, metric, title in ((axes[0], "correct", "accuracy vs true labels"),
                              (axes[1], "logp_true", "log p(true label), renormalised")):
        for condition in calibrated:
            color = palette.get(condition, "0.4")
            before = curves[(curves["metric"] == metric) & (curves["condition"] == condition)]
            after = curves[(curves["metric"] == f"{metric}_calibrated") & (curves["condition"] == condition)]
            _band(ax, after, f"{condition}, calibrated", color=color, linewidth=2)
            ax.plot(before.sort_values("position")["position"], before.sort_values("position")["mean"],
                    color=color, linewidth=1, linestyle="--", label=f"{condition}, raw")
        if metric == "correct":
            ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set(title=title, xlabel="in-context example (position)", ylabel=words(metric))
        if not calibrated:
            no_data(ax, "no condition has a content-free twin (labels.content_free) or calibrate is off")
    if calibrated:
        axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{dataset}: calibrated with the content-free twins")
    fig.tight_layout()
    save_figure(fig, out / "calibrated.png")

    # captions name what this run drew, not every condition the study knows
    ran = set(curves["condition"].unique()) if len(curves) else set()
    arbitrary = sorted(c for c in ran if c.startswith("arbitrary"))
    values = {"dataset": dataset, "scoring": settings["scoring"], "repeats": _repeats_text(curves, labels),
              "level": float(settings["level"]), "flip_at": flip_at,
              "main_conditions": ", ".join(c for c in MAIN_CONDITIONS if c in ran) or "none",
              "arbitrary": (f"; arbitrary replacement words in grey ({', '.join(arbitrary)})" if arbitrary else ""),
              "halfway_conditions": ", ".join(c for c in HALFWAY_CONDITIONS if c in ran) or "none",
              "calibrated_conditions": ", ".join(calibrated) or "none"}
    return {name: caption.format(**values) for name, caption in FIGURES.items()}


def _repeats_text(curves: pd.DataFrame, labels: Mapping[str, Any]) -> str:
    """How many repeats the curves average: one number, or one per condition where
    ``repeats_by_condition`` made them differ (read from the curves' ``n``)."""
    if not len(curves):
        return str(labels.get("repeats"))
    per = curves.groupby("condition", sort=True)["n"].max().astype(int)
    if per.nunique() == 1:
        return str(per.iloc[0])
    most = per.mode().iloc[0]
    others = ", ".join(f"{c}: {n}" for c, n in per.items() if n != most)
    return f"{most} ({others})"
