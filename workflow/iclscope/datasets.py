"""Labelled datasets for study C (label relationships).

:func:`load_dataset` turns one entry of the config's ``labels.datasets`` list into a
:class:`LabelledData`: texts, optional second texts (pair tasks), class indices and class
names. Sources:

``vader``
    Words of the VADER sentiment lexicon (shipped in the ``vaderSentiment`` package) with a
    strong and agreed human valence: ``|mean| >= min_abs_valence`` and
    ``std <= max_rating_std``. Class 0 = ``negative``, 1 = ``positive``. No network needed.
``novel``
    A task no pre-training taught: every alphabetic VADER word, labelled by the position of
    its first letter in the alphabet (class 0 = ``a-m``, 1 = ``n-z``).
``file``
    A local CSV, Parquet or JSONL file with a text column, a label column and, for pair
    tasks, a second text column.
``hf``
    A Hugging Face dataset (needs the optional ``datasets`` package and network).

Every source may be capped with ``max_items`` (a seeded subsample that keeps dataset order).
``info`` records where the data came from, in a form that is the same on every machine
(file paths as configured, content hashes, package versions), for the tables' provenance.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from iclscope.config import resolve_path
from iclscope.provenance import file_sha256

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from iclscope.seeding import rng
from iclscope.tasks.common import TaskError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")  # as in config/schema.yaml
WORD_PATTERN = re.compile(r"^[a-z]+$")
VADER_CLASSES = ["negative", "positive"]
NOVEL_CLASSES = ["a-m", "n-z"]
NOVEL_RULE = "class 0 (a-m) if the word's first letter is in a..m, class 1 (n-z) if in n..z"


@dataclass(frozen=True)
class LabelledData:
    """A labelled dataset: ``len(texts) == len(labels)``, ``labels[i]`` in ``0..K-1``.

    ``texts2`` holds the second sentence of pair tasks (same length as ``texts``), else None.
    ``classes[k]`` names class ``k``; ``info`` describes the source (goes into provenance).
    """

    name: str
    texts: list[str]
    texts2: list[str] | None
    labels: list[int]
    classes: list[str]
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.texts)


def load_dataset(cfg: Mapping[str, Any], root: Path, seed: int = 0) -> LabelledData:
    """Load the dataset described by one ``labels.datasets`` entry.

    ``root`` resolves relative file paths; ``seed`` keys the ``max_items`` subsample.
    Raises :class:`TaskError` naming the dataset on any problem.
    """
    name = str(cfg.get("name", ""))
    if not NAME_PATTERN.match(name):
        raise TaskError(
            f"dataset name {name!r} must match {NAME_PATTERN.pattern} (it becomes labels_<name>)"
        )
    source = cfg.get("source")
    loader = _LOADERS.get(str(source))
    if loader is None:
        raise TaskError(
            f"dataset {name!r}: unknown source {source!r}; expected one of {sorted(_LOADERS)}"
        )
    data = loader(cfg, Path(root))
    data = _cap(data, cfg.get("max_items"), seed)
    _check(data)
    return data


# --- sources -------------------------------------------------------------------------------


def _load_vader(cfg: Mapping[str, Any], root: Path) -> LabelledData:
    """Strong-valence alphabetic VADER words; class 0 negative, class 1 positive."""
    name = cfg["name"]
    min_abs = float(cfg.get("min_abs_valence", 2.0))
    max_std = float(cfg.get("max_rating_std", 1.0))
    path = vader_lexicon_path()
    lexicon = read_vader_lexicon(path)
    words = sorted(
        w for w, (mean, std) in lexicon.items() if abs(mean) >= min_abs and std <= max_std
    )
    labels = [int(lexicon[w][0] > 0) for w in words]
    info = {
        **_vader_info(path),
        "min_abs_valence": min_abs,
        "max_rating_std": max_std,
        "word_pattern": WORD_PATTERN.pattern,
        "duplicates": "last lexicon entry wins, as in vaderSentiment itself",
        "counts": _counts(labels, VADER_CLASSES),
    }
    return LabelledData(name, words, None, labels, list(VADER_CLASSES), info)


def _load_novel(cfg: Mapping[str, Any], root: Path) -> LabelledData:
    """All alphabetic VADER words, labelled by first letter (a..m -> 0, n..z -> 1)."""
    path = vader_lexicon_path()
    words = sorted(read_vader_lexicon(path))
    labels = [int(w[0] > "m") for w in words]
    info = {
        **_vader_info(path),
        "rule": NOVEL_RULE,
        "word_pattern": WORD_PATTERN.pattern,
        "counts": _counts(labels, NOVEL_CLASSES),
    }
    return LabelledData(cfg["name"], words, None, labels, list(NOVEL_CLASSES), info)


def _load_file(cfg: Mapping[str, Any], root: Path) -> LabelledData:
    """A local CSV / Parquet / JSONL file with configurable columns."""
    name = cfg["name"]
    if not cfg.get("path"):
        raise TaskError(f"dataset {name!r}: source 'file' needs a 'path'")
    given = str(cfg["path"])
    path = resolve_path(given, Path(root))
    suffix = path.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise TaskError(
            f"dataset {name!r}: file {given} has an unsupported suffix; "
            f"expected one of {sorted(_READERS)}"
        )
    if not path.is_file():
        raise TaskError(f"dataset {name!r}: file {path} does not exist")
    if path.stat().st_size == 0:
        raise TaskError(f"dataset {name!r}: file {given} is empty (no header, no rows)")
    try:
        columns = reader(path)
    except (OSError, ValueError) as err:
        raise TaskError(f"dataset {name!r}: cannot read file {path}: {err}") from err
    if not any(len(values) for values in columns.values()):
        what = f"only a header ({', '.join(sorted(columns))})" if columns else "no rows"
        raise TaskError(f"dataset {name!r}: file {given} has no data rows: {what}")
    source = {"path": given, "format": suffix.lstrip("."), "sha256": file_sha256(path)}
    return _from_columns(cfg, columns, f"file {given}", source, None)


def _load_hf(cfg: Mapping[str, Any], root: Path) -> LabelledData:
    """A Hugging Face dataset split (optional ``datasets`` package, network on first use)."""
    name = cfg["name"]
    if not cfg.get("hf_name"):
        raise TaskError(f"dataset {name!r}: source 'hf' needs an 'hf_name'")
    try:
        import datasets as hf_datasets  # optional extra: pip install 'iclscope[hub]'
    except ImportError as err:
        raise TaskError(
            f"dataset {name!r}: source 'hf' needs the optional 'datasets' package "
            "(pip install 'iclscope[hub]')"
        ) from err
    hf_name, hf_config = str(cfg["hf_name"]), cfg.get("hf_config")
    split = str(cfg.get("split") or "train")
    where = f"Hugging Face dataset {hf_name}" + (f" ({hf_config})" if hf_config else "")
    try:
        ds = hf_datasets.load_dataset(hf_name, hf_config, split=split)
    except Exception as err:  # the hub raises many types; all mean "cannot load"
        raise TaskError(f"dataset {name!r}: cannot load {where}, split {split!r}: {err}") from err
    columns = {c: list(ds[c]) for c in ds.column_names}
    # A ClassLabel column stores indices (-1 = unlabelled); its names give the class order.
    label_col = str(cfg.get("label_column") or "label")
    names = list(getattr(ds.features.get(label_col), "names", None) or []) or None
    if names is not None:
        columns[label_col] = [
            None if v is None or v < 0 else names[v] for v in columns[label_col]
        ]
    source = {
        "hf_name": hf_name,
        "hf_config": hf_config,
        "split": split,
        "fingerprint": str(getattr(ds, "_fingerprint", "")),
        "datasets_version": _version("datasets"),
    }
    return _from_columns(cfg, columns, where, source, names)


_LOADERS: dict[str, Callable[[Mapping[str, Any], Path], LabelledData]] = {
    "vader": _load_vader,
    "novel": _load_novel,
    "file": _load_file,
    "hf": _load_hf,
}


# --- VADER lexicon ---------------------------------------------------------------------------


def vader_lexicon_path() -> Path:
    """Path of ``vader_lexicon.txt`` inside the installed ``vaderSentiment`` package."""
    spec = importlib.util.find_spec("vaderSentiment")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "vader_lexicon.txt"
        if path.is_file():
            return path
    raise TaskError("vader_lexicon.txt not found: is the vaderSentiment package installed?")


def read_vader_lexicon(path: Path) -> dict[str, tuple[float, float]]:
    """Alphabetic lowercase words of a VADER lexicon file -> (mean valence, rating std).

    Lines are ``token<TAB>mean<TAB>std<TAB>[ratings]``. A word listed twice keeps its last
    entry, as vaderSentiment's own dictionary does.
    """
    words: dict[str, tuple[float, float]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.rstrip("\r").split("\t")
        if not WORD_PATTERN.match(fields[0]):
            continue
        try:
            words[fields[0]] = (float(fields[1]), float(fields[2]))
        except (IndexError, ValueError) as err:
            raise TaskError(f"{path}:{number}: expected token, mean, std: {line!r}") from err
    return words


def _vader_info(path: Path) -> dict[str, str]:
    return {
        "lexicon": "vaderSentiment/vader_lexicon.txt",
        "lexicon_sha256": file_sha256(path),
        "vaderSentiment_version": _version("vaderSentiment"),
    }


# --- tabular sources -------------------------------------------------------------------------


def _read_csv(path: Path) -> dict[str, list[Any]]:
    # All cells as strings, and no NA guessing: "NA" or "null" may be real words.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {str(c): frame[c].tolist() for c in frame.columns}


def _read_parquet(path: Path) -> dict[str, list[Any]]:
    return {str(k): v for k, v in pq.read_table(path).to_pydict().items()}


def _read_jsonl(path: Path) -> dict[str, list[Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"line {number} is not JSON: {err}") from err
        if not isinstance(row, dict):
            raise ValueError(f"line {number} is not a JSON object")
        rows.append(row)
    keys = sorted({k for row in rows for k in row})
    return {k: [row.get(k) for row in rows] for k in keys}


_READERS: dict[str, Callable[[Path], dict[str, list[Any]]]] = {
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".jsonl": _read_jsonl,
    ".json-lines": _read_jsonl,
}


def _from_columns(
    cfg: Mapping[str, Any],
    columns: Mapping[str, Sequence[Any]],
    where: str,
    source: dict[str, Any],
    default_order: list[str] | None,
) -> LabelledData:
    """Build a dataset from named columns (``where`` names the file or hub dataset in errors).

    Class order: ``cfg["classes"]`` if given, else ``default_order`` (a hub ClassLabel's
    names), else the sorted label values (numerically when all are numbers).
    """
    name = cfg["name"]
    text_col = str(cfg.get("text_column") or "text")
    label_col = str(cfg.get("label_column") or "label")
    text2_col = cfg.get("text2_column")
    for role, col in (("text", text_col), ("label", label_col), ("text2", text2_col)):
        if col is not None and col not in columns:
            raise TaskError(
                f"dataset {name!r}: {where} has no {role} column {col!r}; "
                f"columns found: {sorted(columns)}"
            )
    texts = _texts(name, columns[text_col], text_col, where)
    texts2 = None if text2_col is None else _texts(name, columns[text2_col], text2_col, where)
    raw = _label_strings(name, columns[label_col], label_col, where)
    classes = _class_order(name, raw, cfg.get("classes") or default_order, label_col, where)
    index = {c: k for k, c in enumerate(classes)}
    labels = [index[v] for v in raw]
    info = {
        **source,
        "text_column": text_col,
        "text2_column": text2_col,
        "label_column": label_col,
        "rows": len(texts),
        "counts": _counts(labels, classes),
    }
    return LabelledData(name, texts, texts2, labels, classes, info)


def _texts(name: str, values: Sequence[Any], column: str, where: str) -> list[str]:
    """Cells as strings; missing or blank cells are an error (listing the first rows)."""
    texts = ["" if _missing(v) else str(v) for v in values]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise TaskError(
            f"dataset {name!r}: {where} has {len(empty)} empty text rows in column "
            f"{column!r} (first rows, 0-based: {empty[:5]})"
        )
    return texts


def _label_strings(name: str, values: Sequence[Any], column: str, where: str) -> list[str]:
    """Label cells as strings; integral floats (1.0) read as integers (1)."""
    out = []
    for i, v in enumerate(values):
        if _missing(v) or not str(v).strip():
            raise TaskError(
                f"dataset {name!r}: {where} has an empty label in column {column!r}, row {i}"
            )
        out.append(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    return out


def _class_order(
    name: str, raw: list[str], given: Sequence[str] | None, column: str, where: str
) -> list[str]:
    """The class names in index order, checking that every label value is one of them."""
    present = set(raw)
    if given is None:
        return sorted(present, key=_class_key)
    classes = [str(c) for c in given]
    if len(set(classes)) != len(classes):
        raise TaskError(f"dataset {name!r}: 'classes' has duplicates: {classes}")
    unknown = sorted(present - set(classes), key=_class_key)
    if unknown:
        raise TaskError(
            f"dataset {name!r}: {where} column {column!r} has labels {unknown[:10]} "
            f"that are not in 'classes' {classes}"
        )
    return classes


def _class_key(value: str) -> tuple[int, float, str]:
    """Sort numbers numerically (2 before 10) and before other strings."""
    try:
        number = float(value)
    except ValueError:
        return (1, 0.0, value)
    return (0, number, value) if math.isfinite(number) else (1, 0.0, value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- shared checks -------------------------------------------------------------------------


def _cap(data: LabelledData, max_items: int | None, seed: int) -> LabelledData:
    """A seeded subsample of ``max_items`` items in dataset order (all if fewer or None)."""
    if max_items is None:
        return data
    cap = int(max_items)
    if cap < 2:
        raise TaskError(f"dataset {data.name!r}: max_items must be >= 2, got {max_items}")
    if len(data) <= cap:
        return data
    draw = rng(seed, "dataset", data.name, "max_items").choice(len(data), cap, replace=False)
    keep = np.sort(draw).tolist()
    labels = [data.labels[i] for i in keep]
    info = {
        **data.info,
        "max_items": cap,
        "items_before_cap": len(data),
        "counts": _counts(labels, data.classes),
    }
    return LabelledData(
        name=data.name,
        texts=[data.texts[i] for i in keep],
        texts2=None if data.texts2 is None else [data.texts2[i] for i in keep],
        labels=labels,
        classes=data.classes,
        info=info,
    )


def _check(data: LabelledData) -> None:
    """At least two classes, each present; aligned lengths; labels in range."""
    if len(data.classes) < 2 or len(set(data.labels)) < 2:
        raise TaskError(
            f"dataset {data.name!r}: label set has only one class "
            f"(classes {data.classes}, counts {_counts(data.labels, data.classes)}); "
            "at least 2 are needed"
        )
    pair = data.texts if data.texts2 is None else data.texts2
    if not len(data.texts) == len(pair) == len(data.labels):
        raise TaskError(f"dataset {data.name!r}: texts, texts2 and labels differ in length")
    if not all(0 <= y < len(data.classes) for y in data.labels):
        raise TaskError(f"dataset {data.name!r}: label index outside 0..{len(data.classes) - 1}")


def _counts(labels: Sequence[int], classes: Sequence[str]) -> dict[str, int]:
    """Items per class name, in class order."""
    found = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    return {c: int(found[k]) for k, c in enumerate(classes)}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"
