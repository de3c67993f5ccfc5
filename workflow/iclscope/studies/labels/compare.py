"""Study C in the comparison (its ``compare`` hook): every model's label curves in one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from iclscope.compare import model_tables
from iclscope.figures import no_data, pyplot, save_figure

FIGURES = {
    "label_curves.png": (
        "Study C: log-likelihood of the true label at every in-context position for the default, "
        "random and flipped conditions, one colour per model; dataset {datasets}."
    ),
}


def label_figure(curves: Mapping[tuple[str, str], pd.DataFrame], path: Path) -> None:
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


def compare(results: Path, models: Sequence[str], params: Mapping[str, Any], figures_dir: Path) -> dict[str, str]:
    """The models' curves (``labels/{dataset}/curves.parquet``) for every dataset of ``params``."""
    datasets = list(params.get("datasets", []))
    curves = {(m, ds): t for ds in datasets
              for m, t in model_tables(results, models, f"labels/{ds}/curves.parquet").items()}
    label_figure(curves, figures_dir / "label_curves.png")
    return {"label_curves.png": FIGURES["label_curves.png"].format(datasets=", ".join(datasets) or "none")}
