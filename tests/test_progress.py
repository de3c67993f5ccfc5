"""Progress bars: rate and ETA where a person watches, quiet in tests and with -q."""

from __future__ import annotations

import io
import logging

from iclscope import progress


def test_bar_shows_rate_and_eta_when_on():
    out = io.StringIO()
    with progress.bar(100, "extract reading", unit="tok", file=out, force=True) as bar:
        for _ in range(4):
            bar.update(25)
    text = out.getvalue()
    assert "extract reading" in text and "100/100" in text and "tok/s" in text and "<" in text  # ETA


def test_track_yields_every_item_and_counts_them():
    out = io.StringIO()
    assert list(progress.track(range(7), 7, "bootstrap", file=out, force=True)) == list(range(7))
    assert "7/7" in out.getvalue()


def test_quiet_under_pytest_with_q_and_when_asked(monkeypatch):
    assert not progress.enabled()  # PYTEST_CURRENT_TEST is set
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    logging.getLogger("iclscope").setLevel(logging.INFO)
    try:
        assert progress.enabled()
        monkeypatch.setenv("ICLSCOPE_PROGRESS", "0")
        assert not progress.enabled()
        monkeypatch.delenv("ICLSCOPE_PROGRESS")
        logging.getLogger("iclscope").setLevel(logging.WARNING)  # what -q sets
        assert not progress.enabled()
    finally:
        logging.getLogger("iclscope").setLevel(logging.NOTSET)
    out = io.StringIO()
    with progress.bar(3, "quiet", file=out) as bar:
        bar.update(3)
    assert out.getvalue() == ""
