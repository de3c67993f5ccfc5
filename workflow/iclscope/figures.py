"""Helpers every figure-drawing module shares: a headless backend, atomic saving, empty panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iclscope.tables import atomic_path


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend (figures are drawn in jobs, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG atomically (a killed job leaves no half-written figure) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return Path(path)


def no_data(ax: Any, text: str = "no data") -> None:
    """Mark a panel whose data is missing, instead of leaving it silently empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, color="grey", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
