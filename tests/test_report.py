"""The HTML report: figures grouped by model and study in study order, with captions."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from iclscope.report import STUDY_GUIDES, figure_key, write_report  # noqa: E402


def figure(path: Path, caption: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    fig.savefig(path)
    plt.close(fig)
    captions_path = path.parent / "captions.json"
    captions = json.loads(captions_path.read_text()) if captions_path.exists() else {}
    captions[path.name] = caption
    captions_path.write_text(json.dumps(captions))
    return path


def test_figure_key_reads_model_study_and_dataset():
    assert figure_key(Path("results/m1/figures/binary/judgment.png")) == ("m1", "binary")
    assert figure_key(Path("/x/results/m1/figures/labels/sentiment/curves.png")) == ("m1", "labels: sentiment")


def test_report_orders_studies_keeps_figure_order_and_shows_captions(tmp_path):
    root = tmp_path / "results" / "m"
    figs = [
        figure(root / "figures/labels/sentiment/curves.png", "label curves <caption>"),
        figure(root / "figures/binary/generation.png", "generation caption"),
        figure(root / "figures/binary/continuation.png", "continuation caption"),
        figure(root / "figures/representations/rsa_matrices.png", "rsa caption"),
    ]
    out = write_report([*figs, root / "figures/binary/captions.json"], tmp_path / "report.html")
    page = out.read_text()
    assert page.count("<img") == 4
    # study order A, B, C; within a study the given order
    assert page.index("Study A") < page.index("Study B") < page.index("Study C")
    assert page.index("generation caption") < page.index("continuation caption")
    assert "label curves &lt;caption&gt;" in page  # captions are escaped
    assert "dataset sentiment" in page
    for guide in STUDY_GUIDES.values():
        assert guide[:40] in page.replace("&#x27;", "'")
