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
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14 if len(text) < 30 else 9, color="grey", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# axis labels in words for the column names the figures plot (a reader sees no raw names)
AXIS_WORDS = {
    "r2": "R² (cross-validated)",
    "accuracy": "accuracy",
    "error": "absolute error of the argmax answer",
    "expected_error": "absolute error of the expected answer",
    "correct": "accuracy",
    "logp_correct": "log-probability of the correct answer (nats)",
    "logp_true": "log-likelihood of the true label (nats)",
    "logp_context": "log-likelihood of the in-context label (nats)",
    "logp_label_mass": "log total probability of the label words (nats)",
    "nll": "negative log-likelihood of the answer (nats)",
    "entropy": "entropy over the label words (nats)",
    "attention_log_ratio": "attention log ratio (relevant / distractor)",
}


def words(name: str) -> str:
    """How a figure labels the quantity ``name`` (a column or measure name).

    >>> words("expected_error"), words("alignment:intercept")
    ('absolute error of the expected answer', "alignment with hypothesis 'intercept'")
    """
    if name.startswith("alignment:"):
        return f"alignment with hypothesis '{name.split(':', 1)[1]}'"
    return AXIS_WORDS.get(name, name.replace("_", " "))
