"""The one list of studies: per study its tables and figures, and the comparison's figures.

The Snakefile (through ``rules/common.smk``), the CLI, the report and the studies read
this module, so adding a table or a figure is one edit here. It imports nothing beyond
the standard library, so building the DAG stays light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# what the extraction step writes per model and task
EXTRACT_TABLES = ("embeddings", "attention", "readouts")


@dataclass(frozen=True)
class Study:
    """One study: where its outputs go and what they are called."""

    name: str  # the config's `studies` entry, the results folder and the CLI's study argument
    title: str  # how reports head it
    tables: tuple[str, ...]  # results/{model}/{name}/[{dataset}/]{table}.parquet
    figures: tuple[str, ...]  # results/{model}/figures/{name}/[{dataset}/]{figure}
    per_dataset: bool = False  # one analysis, table set and figure set per labels dataset
    key_tables: tuple[str, ...] = ()  # also offered in Snakemake's report (as downloads)


STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        Study(
            "binary", "Study A: binary-sequence dynamics",
            ("generation_metrics", "baselines", "generation_steps", "judgment", "judgment_summary", "continuation",
             "model_selection"),
            ("generation.png", "generation_steps.png", "judgment.png", "continuation.png"),
            key_tables=("baselines", "judgment_summary", "model_selection"),
        ),
        Study(
            "representations", "Study B: representations before and after ICL",
            ("behaviour", "behaviour_summary", "rsa", "similarity", "probes", "attention_ratio",
             "repr_vs_behaviour", "effects"),
            ("rsa_matrices.png", "alignment.png", "probes.png", "attention_ratio.png", "behaviour.png", "effects.png"),
            key_tables=("behaviour_summary", "effects", "probes", "attention_ratio"),
        ),
        Study(
            "labels", "Study C: label relationships",
            ("positions", "curves", "summary"),
            ("curves.png", "halfway.png", "calibrated.png"),
            per_dataset=True,
            key_tables=("summary",),
        ),
    )
}

# results/compare/figures/: the models side by side (two or more models)
COMPARE_FIGURES = ("headlines_vs_size.png", "judgment_curves.png", "label_curves.png", "depth_profiles.png")
CAPTIONS_FILE = "captions.json"  # beside each figure set: every figure's caption, written by the plot step


def study(name: str) -> Study:
    try:
        return STUDIES[name]
    except KeyError:
        raise KeyError(f"unknown study {name!r}; known: {', '.join(STUDIES)}") from None


class Captions:
    """The captions a plot step wrote (``captions.json``), read when a report asks.

    The one source of every figure's caption: the plot step generates it from what ran,
    iclscope's HTML report shows it, and Snakemake's ``--report`` shows it through the
    figure's rst caption (``{{ snakemake.params.captions["generation.png"] }}``). As a
    rule param this object is not a rerun trigger (Snakemake records only plain values).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __getitem__(self, figure: str) -> str:
        try:
            captions = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return f"(no caption: {self.path} is missing or unreadable)"
        return rst_escape(str(captions.get(figure, f"(no caption for {figure} in {self.path})")))

    def __repr__(self) -> str:
        return f"Captions({str(self.path)!r})"


def rst_escape(text: str) -> str:
    """Plain text made safe for reStructuredText (captions hold ``*``, `` ` `` and ``|``)."""
    for char in ("\\", "*", "`", "|", "_"):
        text = text.replace(char, "\\" + char)
    return text
