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

from iclscope.registry import STUDIES
from iclscope.tables import atomic_path

# each study's heading (title and paper) and how to read it, shown above its figures: the registry's
STUDY_TITLES = {s.name: f"{s.title} ({s.citation})" if s.citation else s.title for s in STUDIES.values()}
STUDY_GUIDES = {s.name: s.guide for s in STUDIES.values() if s.guide}
STUDY_ORDER = tuple(STUDIES)  # registry order: A, B, C
COMPARE = "compare"  # results/compare/: the cross-model stage


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


def markdown_to_html(text: str) -> str:
    """The small markdown subset findings.md uses: headings, bullets, paragraphs, `code`."""
    def inline(line: str) -> str:
        parts = html.escape(line).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    out, in_list = [], False
    for line in text.splitlines():
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def model_of_findings(path: Path) -> str:
    """The model of ``results/{model}/findings.md``."""
    return path.parent.name


def write_report(figures: Sequence[str | Path], out: str | Path, title: str = "iclscope report",
                 findings: Sequence[str | Path] = ()) -> Path:
    """Write a self-contained HTML page embedding ``figures`` (PNG) and each model's
    generated ``findings.md`` (shown before that model's figures), atomically."""
    out = Path(out)
    findings_of = {model_of_findings(Path(f)): Path(f) for f in findings}
    groups: dict[tuple[str, str], list[Path]] = {}
    # figures keep the order given (the studies' FIGURES order); groups are ordered below
    for fig in (Path(f) for f in figures if str(f).endswith(".png")):
        groups.setdefault(figure_key(fig), []).append(fig)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
        "figure{margin:1.5em 0;}img{max-width:100%;}figcaption{color:#333;max-width:900px;}.guide{background:#f4f6f8;padding:.8em 1em;border-left:4px solid #7a8ca0;}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    def order(key: tuple[str, str]) -> tuple:
        study, _, dataset = key[1].partition(": ")
        # the comparison of models opens the report
        return key[0] != COMPARE, key[0], STUDY_ORDER.index(study) if study in STUDY_ORDER else len(STUDY_ORDER), dataset

    keys = sorted(groups, key=order)
    parts.append("<p>Every figure of the run, grouped by model and study, each with a caption saying what "
                 "it shows and with which settings. Tables behind them: <code>results/{model}/</code>; "
                 "provenance: <code>iclscope audit results/</code>.</p><ul>")
    parts += [f"<li><a href='#g{i}'>{html.escape(m)}" + (f": {html.escape(st)}" if st else "") + "</a></li>"
              for i, (m, st) in enumerate(keys)]
    parts.append("</ul>")
    shown_guides: set[tuple[str, str]] = set()
    shown_findings: set[str] = set()
    for i, (model, study) in enumerate(keys):
        if model in findings_of and model not in shown_findings:
            shown_findings.add(model)
            parts.append(f"<section class='findings'>{markdown_to_html(findings_of[model].read_text())}</section>")
        figs = groups[(model, study)]
        study_name, _, dataset = study.partition(": ")
        heading = STUDY_TITLES.get(study_name, study_name) + (f", dataset {dataset}" if dataset else "")
        if model == COMPARE:
            parts.append(f"<h2 id='g{i}'>Models compared</h2>")
        else:
            parts.append(f"<h2 id='g{i}'>{html.escape(model)}: {html.escape(heading)}</h2>")
        if study_name in STUDY_GUIDES and (model, study_name) not in shown_guides:
            shown_guides.add((model, study_name))
            parts.append(f"<p class='guide'><b>How to read it.</b> {html.escape(STUDY_GUIDES[study_name])}</p>")
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
