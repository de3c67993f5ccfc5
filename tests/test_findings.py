"""Findings are generated from the tables: every number they state is a table cell,
and every cell is recomputed here from the table it names."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iclscope.findings import DEPTH_BANDS, Headline, bullet_groups, depth_band, fmt, render_markdown
from iclscope.report import markdown_to_html

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def numbers_outside_code(line: str) -> list[str]:
    """Number tokens of a markdown line outside `code` spans (units and quantity names)."""
    plain = "".join(part for i, part in enumerate(line.split("`")) if i % 2 == 0)
    return NUMBER.findall(plain)


def bullets_match_rows(markdown: str, frame: pd.DataFrame) -> None:
    """Each bullet of findings.md reads a group of rows; its numbers are those rows' cells,
    and every row's estimate is stated."""
    frame = frame.reset_index(drop=True)
    bullets = [line[2:] for line in markdown.splitlines() if line.startswith("- ")]
    groups = bullet_groups(frame)
    assert len(bullets) == len(groups) and sorted(i for g in groups for i in g) == list(range(len(frame)))
    for text, group in zip(bullets, groups):
        rows = frame.loc[group]
        cells = {fmt(v) for col in ("estimate", "ci_low", "ci_high", "n") for v in rows[col]}
        stated = numbers_outside_code(text)
        stray = [n for n in stated if n not in cells]
        assert not stray, f"{text!r} states {stray}, not cells of its rows {rows.to_dict('records')}"
        for est in rows["estimate"]:
            assert fmt(est) in stated or fmt(est) == "n/a", (text, est)


def test_fmt_and_depth_bands():
    assert fmt(3.0) == "3" and fmt(0.12345) == "0.123" and fmt(-1234.5) == "-1234" and fmt(math.nan) == "n/a"
    n_layers = 30
    bands = [depth_band(layer, n_layers) for layer in range(n_layers + 1)]
    assert bands[0] == "early" and bands[15] == "middle" and bands[30] == "late"
    # every layer lands in exactly one band, in depth order
    order = [name for name, _, _ in DEPTH_BANDS]
    assert [order.index(b) for b in bands] == sorted(order.index(b) for b in bands)
    with pytest.raises(ValueError):
        depth_band(31, n_layers)


def test_rendered_text_states_only_row_cells():
    rows = [
        Headline("binary", "transition", "continuation 0011 d=2", 7.25, 5.5, 9.75, 0, "binary/model_selection.parquet",
                 note="best account: soft"),
        Headline("binary", "sharpness", "continuation 0011 d=2", 0.75, 0.5, 1.25, 0, "binary/model_selection.parquet",
                 note="best account: soft"),
        Headline("binary", "baseline_bic_wins", "markov", 9.0, n=13, source="binary/baselines.parquet"),
        Headline("labels", "default - random", "sentiment positions_2_N", 0.41, 0.2, 0.63, 40,
                 "labels/sentiment/summary.parquet", note="nats"),
        Headline("labels", "follows_flipped_late", "novel", 0.125, math.nan, math.nan, 1,
                 "labels/novel/positions.parquet", note="share of predictions"),
    ]
    frame = pd.DataFrame([r.__dict__ for r in rows])
    frame.insert(0, "model", "m")
    text = render_markdown(frame, "m", {"config_hash": "abc123"})
    bullets_match_rows(text, frame)
    assert "no interval" in text and "## Study A" in text and "## Study C" in text
    page = markdown_to_html(text)
    assert "<li>" in page and "<code>continuation 0011 d=2</code>" in page and "<h3>" in page


def test_a_stray_number_is_caught():
    frame = pd.DataFrame([{**Headline("labels", "x", "u", 1.5, 1.0, 2.0, 3, "s").__dict__, "model": "m"}])
    bad = "- `u`: `x` 1.5 (CI [1, 2]; n = 3) and 0.7 from nowhere.\n"
    with pytest.raises(AssertionError, match="0.7"):
        bullets_match_rows(bad, frame)


def test_quote_into_replaces_only_the_marked_block():
    from iclscope.findings import quote_into

    doc = "intro 1.5\n<!-- findings:m -->\nold 0.3\n<!-- /findings:m -->\noutro 2\n"
    once = quote_into(doc, "m", "# Findings: m\n\n- `u`: 0.42\n", "results/m/findings.md")
    assert "old 0.3" not in once and "- `u`: 0.42" in once and "### Findings: m" in once
    assert once.startswith("intro 1.5\n") and once.endswith("outro 2\n") and "results/m/findings.md" in once
    assert quote_into(once, "m", "# Findings: m\n\n- `u`: 0.42\n", "results/m/findings.md") == once
    with pytest.raises(ValueError, match="findings:other"):
        quote_into(doc, "other", "x", "y")
