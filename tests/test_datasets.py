"""Unit tests of iclscope.datasets: the VADER and novel embedded sets and local files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from iclscope.datasets import LabelledData, load_dataset, vader_lexicon_path
from iclscope.tasks.common import TaskError


def raw_lexicon() -> dict[str, tuple[float, float]]:
    """The lexicon parsed independently of the module: alphabetic words, last entry wins."""
    out = {}
    for line in vader_lexicon_path().read_text(encoding="utf-8").splitlines():
        token, mean, std = line.rstrip("\r").split("\t")[:3]
        if re.fullmatch("[a-z]+", token):
            out[token] = (float(mean), float(std))
    return out


def write(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` in the format given by the suffix of ``path``."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    return path


# --- vader ----------------------------------------------------------------------------------


def test_vader_thresholds_match_raw_lexicon() -> None:
    data = load_dataset({"name": "sentiment", "source": "vader"}, Path("."))
    lexicon = raw_lexicon()
    expected = sorted(w for w, (m, s) in lexicon.items() if abs(m) >= 2.0 and s <= 1.0)
    assert data.texts == expected
    assert data.texts2 is None
    assert data.classes == ["negative", "positive"]
    assert set(data.labels) == {0, 1}
    for word, label in zip(data.texts, data.labels):
        mean, std = lexicon[word]
        assert abs(mean) >= 2.0 and std <= 1.0
        assert label == int(mean > 0)
    assert data.info["min_abs_valence"] == 2.0
    assert data.info["max_rating_std"] == 1.0
    assert data.info["counts"] == {
        "negative": data.labels.count(0),
        "positive": data.labels.count(1),
    }
    assert len(data.info["lexicon_sha256"]) == 64


def test_vader_custom_thresholds_give_subset() -> None:
    strict = load_dataset(
        {"name": "s", "source": "vader", "min_abs_valence": 3.0, "max_rating_std": 0.8},
        Path("."),
    )
    lexicon = raw_lexicon()
    assert strict.info["min_abs_valence"] == 3.0
    assert all(abs(lexicon[w][0]) >= 3.0 and lexicon[w][1] <= 0.8 for w in strict.texts)
    assert len(strict) < len(load_dataset({"name": "s", "source": "vader"}, Path(".")))


# --- novel ----------------------------------------------------------------------------------


def test_novel_rule() -> None:
    data = load_dataset({"name": "novel", "source": "novel"}, Path("."))
    assert data.texts == sorted(set(raw_lexicon()))
    assert data.classes == ["a-m", "n-z"]
    for word, label in zip(data.texts, data.labels):
        assert label == (0 if word[0] in "abcdefghijklm" else 1)
    assert "a..m" in data.info["rule"]
    assert sum(data.info["counts"].values()) == len(data)


def test_novel_max_items_is_seeded_subsample() -> None:
    cfg = {"name": "novel", "source": "novel", "max_items": 100}
    full = load_dataset({"name": "novel", "source": "novel"}, Path("."))
    a = load_dataset(cfg, Path("."), seed=1)
    b = load_dataset(cfg, Path("."), seed=1)
    c = load_dataset(cfg, Path("."), seed=2)
    assert len(a) == 100 and a == b and a.texts != c.texts
    assert a.texts == sorted(a.texts) and set(a.texts) <= set(full.texts)
    assert a.info["items_before_cap"] == len(full)


# --- files ----------------------------------------------------------------------------------

FRAME = pd.DataFrame(
    {
        "sentence": ["good film", "bad film", "great", "awful", "fine"],
        "gold": ["pos", "neg", "pos", "neg", "pos"],
        "other": [1, 2, 3, 4, 5],
    }
)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_file_formats_with_configured_columns(tmp_path: Path, suffix: str) -> None:
    write(tmp_path / f"d{suffix}", FRAME)
    cfg = {
        "name": "films",
        "source": "file",
        "path": f"d{suffix}",  # relative: resolved against root
        "text_column": "sentence",
        "label_column": "gold",
    }
    data = load_dataset(cfg, tmp_path)
    assert isinstance(data, LabelledData)
    assert data.texts == FRAME["sentence"].tolist()
    assert data.classes == ["neg", "pos"]
    assert data.labels == [1, 0, 1, 0, 1]
    assert data.info["path"] == f"d{suffix}"
    assert data.info["counts"] == {"neg": 2, "pos": 3}


def test_file_pair_task_and_class_order(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"a": ["x", "y", "z"], "b": ["x2", "y2", "z2"], "label": ["yes", "no", "yes"]}
    )
    path = write(tmp_path / "pairs.parquet", frame)
    cfg = {
        "name": "pairs",
        "source": "file",
        "path": str(path),  # absolute
        "text_column": "a",
        "text2_column": "b",
        "classes": ["yes", "no"],
    }
    data = load_dataset(cfg, Path("/nonexistent"))
    assert data.texts2 == ["x2", "y2", "z2"]
    assert data.classes == ["yes", "no"]
    assert data.labels == [0, 1, 0]


def test_file_multiclass_numeric_labels(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": list("abcdefghi"), "label": [2, 10, 1, 2, 10, 1, 1, 2, 10]})
    write(tmp_path / "m.csv", frame)
    data = load_dataset({"name": "m", "source": "file", "path": "m.csv"}, tmp_path)
    assert data.classes == ["1", "2", "10"]  # numeric order, not string order
    assert data.labels == [1, 2, 0, 1, 2, 0, 0, 1, 2]
    write(tmp_path / "m.parquet", frame)
    same = load_dataset({"name": "m", "source": "file", "path": "m.parquet"}, tmp_path)
    assert (same.classes, same.labels) == (data.classes, data.labels)


def test_csv_keeps_na_like_words(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["NA", "null"], "label": ["a", "b"]})
    (tmp_path / "w.csv").write_text(frame.to_csv(index=False))
    data = load_dataset({"name": "w", "source": "file", "path": "w.csv"}, tmp_path)
    assert data.texts == ["NA", "null"]


# --- errors ---------------------------------------------------------------------------------


def test_missing_column_names_dataset_column_and_found(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", FRAME)
    cfg = {"name": "films", "source": "file", "path": "d.csv", "text_column": "sentence"}
    with pytest.raises(TaskError, match=r"'films'.*label column 'label'.*gold.*sentence"):
        load_dataset(cfg, tmp_path)
    cfg = {"name": "films", "source": "file", "path": "d.csv", "label_column": "gold"}
    with pytest.raises(TaskError, match=r"'films'.*text column 'text'"):
        load_dataset(cfg, tmp_path)


def test_one_class_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "one.jsonl", pd.DataFrame({"text": ["a", "b"], "label": [1, 1]}))
    with pytest.raises(TaskError, match=r"'single'.*only one class"):
        load_dataset({"name": "single", "source": "file", "path": "one.jsonl"}, tmp_path)


def test_missing_file_and_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"'gone'.*nope\.csv.*does not exist"):
        load_dataset({"name": "gone", "source": "file", "path": "nope.csv"}, tmp_path)
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(TaskError, match=r"'odd'.*d\.txt.*unsupported suffix"):
        load_dataset({"name": "odd", "source": "file", "path": "d.txt"}, tmp_path)


def test_empty_text_and_unknown_class(tmp_path: Path) -> None:
    write(tmp_path / "e.csv", pd.DataFrame({"text": ["a", " ", "c"], "label": [0, 1, 0]}))
    with pytest.raises(TaskError, match=r"'empty'.*empty text rows.*'text'.*\[1\]"):
        load_dataset({"name": "empty", "source": "file", "path": "e.csv"}, tmp_path)
    write(tmp_path / "u.csv", pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 2]}))
    cfg = {"name": "unk", "source": "file", "path": "u.csv", "classes": ["0", "1"]}
    with pytest.raises(TaskError, match=r"'unk'.*\['2'\].*not in 'classes'"):
        load_dataset(cfg, tmp_path)


def test_unknown_source() -> None:
    with pytest.raises(TaskError, match=r"'x'.*unknown source 'web'"):
        load_dataset({"name": "x", "source": "web"}, Path("."))


@pytest.mark.parametrize(
    "suffix, content, message",
    [
        (".csv", "", "file e.csv is empty (no header, no rows)"),
        (".csv", "text,label\n", "file e.csv has no data rows: only a header (label, text)"),
        (".jsonl", "\n", "file e.jsonl has no data rows: no rows"),
    ],
)
def test_empty_and_header_only_files_are_named_as_such(tmp_path: Path, suffix: str, content: str,
                                                        message: str) -> None:
    """Not misreported as 'only one class'."""
    (tmp_path / f"e{suffix}").write_text(content)
    with pytest.raises(TaskError, match=re.escape(f"dataset 'e': {message}")):
        load_dataset({"name": "e", "source": "file", "path": f"e{suffix}"}, tmp_path)


def test_header_only_parquet_is_named_as_such(tmp_path: Path) -> None:
    write(tmp_path / "e.parquet", pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}))
    with pytest.raises(TaskError, match=r"has no data rows: only a header \(label, text\)"):
        load_dataset({"name": "e", "source": "file", "path": "e.parquet"}, tmp_path)
