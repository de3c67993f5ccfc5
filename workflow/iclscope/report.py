"""The HTML report: every figure of the run with its caption, grouped by model and study.

Each plot step writes ``captions.json`` beside its figures; the report shows each figure
with its caption (what it shows, with which settings).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Sequence

from iclscope.tables import atomic_path

STUDY_TITLES = {
    "binary": "Study A: binary-sequence dynamics (Bigelow et al., 2024)",
    "representations": "Study B: representations before and after ICL (Yousefi et al., 2024)",
    "labels": "Study C: label relationships (Kossen, Gal, Rainforth, 2024)",
}


def figure_key(path: Path) -> tuple[str, str]:
    """(model, study) of a figure at ``.../{model}/figures/{study}[/{dataset}]/{name}.png``
    (study C has a folder per dataset, shown as ``labels: {dataset}``)."""
    parts = path.parts
    i = len(parts) - 1 - parts[::-1].index("figures")
    model, rest = parts[i - 1], parts[i + 1 : -1]
    return model, ": ".join(rest)


def caption_of(fig: Path) -> str:
    path = fig.parent / "captions.json"
    if path.exists():
        return json.loads(path.read_text()).get(fig.name, fig.stem)
    return fig.stem


def write_report(figures: Sequence[str | Path], out: str | Path, title: str = "iclscope report") -> Path:
    """Write a self-contained HTML page embedding ``figures`` (PNG), atomically."""
    out = Path(out)
    groups: dict[tuple[str, str], list[Path]] = {}
    for fig in sorted(Path(f) for f in figures if str(f).endswith(".png")):
        groups.setdefault(figure_key(fig), []).append(fig)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
        "figure{margin:1.5em 0;}img{max-width:100%;}figcaption{color:#333;max-width:900px;}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for (model, study), figs in sorted(groups.items()):
        study_name, _, dataset = study.partition(": ")
        heading = STUDY_TITLES.get(study_name, study_name) + (f", dataset {dataset}" if dataset else "")
        parts.append(f"<h2>{html.escape(model)}: {html.escape(heading)}</h2>")
        for fig in figs:
            data = base64.b64encode(fig.read_bytes()).decode()
            parts.append(
                f"<figure><img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>"
                f"<figcaption><b>{html.escape(fig.stem)}</b>: {html.escape(caption_of(fig))}</figcaption></figure>"
            )
    parts.append("</body></html>\n")
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return out
