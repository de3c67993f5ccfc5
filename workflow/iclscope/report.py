"""The HTML report: every figure of the run, grouped by model and study.

A first version: issue 7 adds Snakemake's own report with rst captions per figure.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from iclscope.tables import atomic_path

STUDY_TITLES = {
    "binary": "Study A: binary-sequence dynamics (Bigelow et al., 2024)",
    "representations": "Study B: representations before and after ICL (Yousefi et al., 2024)",
    "labels": "Study C: label relationships (Kossen, Gal, Rainforth, 2024)",
}


def figure_key(path: Path) -> tuple[str, str]:
    """(model, study) of a figure at ``.../{model}/figures/{study}/{name}.png``."""
    return path.parent.parent.parent.name, path.parent.name


def write_report(figures: Sequence[str | Path], out: str | Path, title: str = "iclscope report") -> Path:
    """Write a self-contained HTML page embedding ``figures`` (PNG), atomically."""
    out = Path(out)
    groups: dict[tuple[str, str], list[Path]] = {}
    for fig in sorted(Path(f) for f in figures):
        groups.setdefault(figure_key(fig), []).append(fig)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
        "figure{display:inline-block;margin:1em;}img{max-width:520px;}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for (model, study), figs in sorted(groups.items()):
        parts.append(f"<h2>{html.escape(model)}: {html.escape(STUDY_TITLES.get(study, study))}</h2>")
        for fig in figs:
            data = base64.b64encode(fig.read_bytes()).decode()
            parts.append(
                f"<figure><img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(fig.stem)}</figcaption></figure>"
            )
    parts.append("</body></html>\n")
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return out
