"""Study A in the comparison (its ``compare`` hook): every model's judgment curve in one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from iclscope.compare import model_tables
from iclscope.figures import no_data, pyplot, save_figure

FIGURES = {
    "judgment_curves.png": (
        "Study A: p(random) against the sequence length |x|, averaged over the formal concepts (solid) "
        "and over the random controls (dashed), one colour per model."
    ),
}


def judgment_figure(judgments: Mapping[str, pd.DataFrame], path: Path) -> None:
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


def compare(results: Path, models: Sequence[str], params: Mapping[str, Any], figures_dir: Path) -> dict[str, str]:
    """The models' judgment curves (``binary/judgment.parquet``; a model without it is left out)."""
    judgment_figure(model_tables(results, models, "binary/judgment.parquet"), figures_dir / "judgment_curves.png")
    return dict(FIGURES)
