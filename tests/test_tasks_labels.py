"""Unit tests of the study C task builder iclscope.tasks.labels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from iclscope.tasks.common import TaskError, span_text
from iclscope.config import with_defaults
from iclscope.tasks.labels import arbitrary_name, build_labels

SMALL = {"n_examples": 8, "flip_at": 3, "repeats": 5}


@pytest.fixture()
def binary(tmp_path: Path) -> dict[str, Any]:
    """A 70/30 binary file dataset of 20 items."""
    labels = ["pos"] * 14 + ["neg"] * 6
    frame = pd.DataFrame({"text": [f"item {i}" for i in range(20)], "label": labels})
    frame.to_csv(tmp_path / "bin.csv", index=False)
    return {"name": "bin", "source": "file", "path": str(tmp_path / "bin.csv"),
            "label_words": ["negative", "positive"]}


@pytest.fixture()
def three(tmp_path: Path) -> dict[str, Any]:
    """A 3-class file dataset."""
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(9)], "label": list("abc") * 3})
    frame.to_parquet(tmp_path / "three.parquet", index=False)
    return {"name": "three", "source": "file", "path": str(tmp_path / "three.parquet")}


def build(dataset: dict[str, Any], seed: int = 0, **labels: Any) -> list[dict[str, Any]]:
    return build_labels(dataset, {**SMALL, **labels}, seed, Path(".")).to_pylist()


def by_condition(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["condition"], []).append(row)
    return out


def test_counts_per_condition_and_arbitrary_orders(binary: dict[str, Any]) -> None:
    rows = build(binary, arbitrary_labels=[["bad", "good"], ["A", "B"]])
    counts = Counter(r["condition"] for r in rows)
    expected = {"default", "random", "flipped", "flip_df", "flip_fd", "alternating",
                "arbitrary_bad_good", "arbitrary_good_bad", "arbitrary_a_b", "arbitrary_b_a"}
    assert set(counts) == expected
    assert set(counts.values()) == {SMALL["repeats"]}
    assert [r["prompt_id"] for r in rows] == sorted(r["prompt_id"] for r in rows)
    row = next(r for r in rows if r["condition"] == "arbitrary_good_bad")
    assert row["label_words"] == ["good", "bad"]
    assert row["prompt_id"] == f"labels_bin:arbitrary_good_bad:r{row['repeat']:04d}"
    assert row["task"] == "labels_bin" and row["dataset"] == "bin" and row["n_shots"] == 8


def test_arbitrary_multiclass_uses_list_and_reverse(three: dict[str, Any]) -> None:
    rows = build(three, conditions=["arbitrary"], arbitrary_labels=[["x", "y", "z"]])
    assert {r["condition"] for r in rows} == {"arbitrary_x_y_z", "arbitrary_z_y_x"}
    assert arbitrary_name(["Sea Side", "A"]) == "arbitrary_sea-side_a"


def test_spans_cover_shown_labels_and_examples(binary: dict[str, Any]) -> None:
    for row in build(binary):
        for i, word in enumerate(row["context_labels"], start=1):
            assert span_text(row["text"], row["spans"], f"answer_{i}") == word
            example = span_text(row["text"], row["spans"], f"example_{i}")
            assert example == f"Sentence: 'item {row['example_index'][i - 1]}' \nAnswer: {word}"
        assert row["text"].count("\n\n") == SMALL["n_examples"] - 1


def test_pair_template(tmp_path: Path) -> None:
    frame = pd.DataFrame({"s1": ["a", "b"], "s2": ["c", "d"], "y": ["no", "yes"]})
    frame.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    cfg = {"name": "pair", "source": "file", "path": str(tmp_path / "p.jsonl"),
           "text_column": "s1", "text2_column": "s2", "label_column": "y"}
    row = build(cfg, conditions=["default"])[0]
    first = span_text(row["text"], row["spans"], "example_1")
    i = row["example_index"][0]
    assert first == (f"Sentence 1: '{'ab'[i]}' \nSentence 2: '{'cd'[i]}' \n"
                     f"Answer: {['no', 'yes'][i]}")


def test_default_and_flipped(binary: dict[str, Any], three: dict[str, Any]) -> None:
    conds = by_condition(build(binary, conditions=["default", "flipped"]))
    for row in conds["default"]:
        assert row["context_class"] == row["true_class"]
        assert row["context_labels"] == row["true_labels"]
    for row in conds["flipped"]:
        assert all(c != t for c, t in zip(row["context_class"], row["true_class"]))
        assert all(c == 1 - t for c, t in zip(row["context_class"], row["true_class"]))
    for row in build(three, conditions=["flipped"]):
        assert row["context_class"] == [(t + 1) % 3 for t in row["true_class"]]
        assert row["label_words"] == ["a", "b", "c"]


def test_arbitrary_keeps_true_class(binary: dict[str, Any]) -> None:
    for row in build(binary, conditions=["arbitrary"], arbitrary_labels=[["sea", "chair"]]):
        assert row["context_class"] == row["true_class"]
        words = row["label_words"]
        assert row["context_labels"] == [words[c] for c in row["true_class"]]


@pytest.mark.parametrize(("class_draw", "share"), [("dataset", 0.7), ("balanced", 0.5)])
def test_random_keeps_label_marginal_and_is_independent_of_true_labels(
        binary: dict[str, Any], class_draw: str, share: float) -> None:
    rows = build(binary, conditions=["random"], repeats=200, n_examples=32, class_draw=class_draw)
    shown = np.concatenate([r["context_class"] for r in rows])
    true = np.concatenate([r["true_class"] for r in rows])
    assert shown.size == 6400
    # The true labels' share of class 1 (pos): the dataset's 0.7 or the balanced 0.5; the
    # shown ones keep it. sd of a mean is ~0.006.
    assert abs(true.mean() - share) < 0.03 and abs(shown.mean() - share) < 0.03
    # Shown labels are independent of true ones: agreement ~ share^2 + (1 - share)^2.
    assert abs((shown == true).mean() - (share ** 2 + (1 - share) ** 2)) < 0.03
    # Not a permutation of the prompt's own labels: with one, the labels shown before position
    # i would carry information about label i through the counts (a bias of default - random
    # for a model that follows label frequencies). The shown count of class 1 before the last
    # position must not track the last example's own class.
    # (A permutation gives a difference of 31/32 ~ 0.97; independent draws 0, se ~0.17 here.)
    many = build(binary, conditions=["random"], repeats=1000, n_examples=32, class_draw=class_draw)
    last = np.array([r["true_class"][-1] for r in many])
    before = np.array([sum(r["context_class"][:-1]) for r in many])
    assert abs(before[last == 1].mean() - before[last == 0].mean()) < 0.5
    assert any(sorted(r["context_class"]) != sorted(r["true_class"]) for r in rows)


def test_balanced_draw_gives_uniform_classes_and_uniform_items_within_each(binary: dict[str, Any]) -> None:
    rows = build(binary, conditions=["default"], repeats=400, n_examples=30)
    true = np.concatenate([r["true_class"] for r in rows])
    index = np.concatenate([r["example_index"] for r in rows])
    assert abs(true.mean() - 0.5) < 0.02  # the dataset is 70/30; sd of the mean ~0.004
    # items 0..13 are pos (class 1), 14..19 neg: every item of a class equally often
    for members in (np.arange(14), np.arange(14, 20)):
        counts = np.bincount(index, minlength=20)[members]
        expected = 6000 / len(members)
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    # and the classes of successive examples are independent
    pairs = np.array([(r["true_class"][i], r["true_class"][i + 1]) for r in rows for i in range(29)])
    assert abs((pairs[:, 0] == pairs[:, 1]).mean() - 0.5) < 0.02


@pytest.mark.parametrize(("class_draw", "unbiased"), [("balanced", True), ("dataset", False)])
def test_content_free_control_of_flipped_averages_to_zero_only_with_balanced_draws(
        binary: dict[str, Any], class_draw: str, unbiased: bool) -> None:
    """A model that reads only the label sequence and follows its frequencies scores the
    true label as well after default's labels as after flipped's when classes are drawn
    uniformly, so default_cf - flipped_cf is a control with expectation zero; with the
    dataset's 70/30 draw it is not (the reason for ``class_draw: balanced``)."""
    rows = build(binary, conditions=["default", "flipped"], content_free=["default", "flipped"],
                 repeats=2000, n_examples=10, class_draw=class_draw)

    def follows_frequency(row: dict[str, Any]) -> float:
        shown, true = row["context_class"], row["true_class"]
        logp = [np.log((shown[:i].count(true[i]) + 1) / (i + 2)) for i in range(1, len(true))]
        return float(np.mean(logp))

    per = by_condition(rows)
    diff = np.array([follows_frequency(d) - follows_frequency(f)
                     for d, f in zip(per["default_cf"], per["flipped_cf"], strict=True)])
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    if unbiased:
        assert abs(diff.mean()) < 4 * se
    else:
        assert diff.mean() > 8 * se


def test_balanced_draw_needs_every_class(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", "x", "z"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    dataset = {"name": "d", "source": "file", "path": str(tmp_path / "d.csv"), "classes": ["x", "y", "z"]}
    with pytest.raises(TaskError, match=r"'d'.*balanced.*classes \[1\] have none"):
        build(dataset, conditions=["default"])
    assert build(dataset, conditions=["default"], class_draw="dataset")  # the dataset's draw needs none


def test_repeats_by_condition(binary: dict[str, Any]) -> None:
    rows = build(binary, conditions=["default", "random", "arbitrary", "flip_df"], arbitrary_labels=[["A", "B"]],
                 repeats=6, repeats_by_condition={"arbitrary": 2, "flip_df": 3})
    counts = Counter(r["condition"] for r in rows)
    assert counts == {"default": 6, "random": 6, "arbitrary_a_b": 2, "arbitrary_b_a": 2, "flip_df": 3}
    # repeat r is the same draw of examples in every condition that has it
    draws = {}
    for row in rows:
        draws.setdefault(row["repeat"], set()).add(tuple(row["example_index"]))
    assert sorted(draws) == list(range(6)) and all(len(d) == 1 for d in draws.values())
    # and the conditions with fewer repeats hold the same prompts as with the full number
    full = by_condition(build(binary, conditions=["default", "flip_df"], repeats=6))["flip_df"][:3]
    assert by_condition(rows)["flip_df"] == full


def test_repeats_by_condition_may_name_conditions_not_run(binary: dict[str, Any]) -> None:
    """A narrower `conditions` on top of a config that sets repeats for others still builds."""
    rows = build(binary, conditions=["default", "random"], repeats_by_condition={"flipped": 3, "arbitrary": 2})
    assert Counter(r["condition"] for r in rows) == {"default": SMALL["repeats"], "random": SMALL["repeats"]}


def test_flips_change_after_exactly_n(binary: dict[str, Any]) -> None:
    n = SMALL["flip_at"]
    conds = by_condition(build(binary, conditions=["flip_df", "flip_fd"]))
    for row in conds["flip_df"]:
        same = [c == t for c, t in zip(row["context_class"], row["true_class"])]
        assert same == [True] * n + [False] * (SMALL["n_examples"] - n)
    for row in conds["flip_fd"]:
        same = [c == t for c, t in zip(row["context_class"], row["true_class"])]
        assert same == [False] * n + [True] * (SMALL["n_examples"] - n)


def test_flip_needs_a_prediction_after_2n_examples(binary: dict[str, Any]) -> None:
    """n_examples = 2 * flip_at + 1 is the smallest prompt whose last position (2N + 1)
    predicts from exactly N examples of each mapping."""
    rows = build(binary, conditions=["flip_df", "flip_fd"], n_examples=7, flip_at=3)
    for row in rows:
        flipped = [c != t for c, t in zip(row["context_class"], row["true_class"])]
        seen = flipped[: 2 * 3]  # context of position 2N + 1 = 7: examples 1..6
        assert sum(seen) == 3 and len(row["true_class"]) == 7
    with pytest.raises(TaskError, match=r"n_examples \(= 6\) must be >= 2 \* flip_at \+ 1"):
        build(binary, conditions=["flip_df"], n_examples=6, flip_at=3)


def test_alternating_pattern(three: dict[str, Any]) -> None:
    for row in build(three, conditions=["alternating"]):
        for pos, (c, t) in enumerate(zip(row["context_class"], row["true_class"]), start=1):
            assert c == (t if pos % 2 == 1 else (t + 1) % 3)


def test_conditions_are_paired(binary: dict[str, Any]) -> None:
    rows = build(binary)
    per_repeat: dict[int, set[tuple[int, ...]]] = {}
    for row in rows:
        per_repeat.setdefault(row["repeat"], set()).add(tuple(row["example_index"]))
    assert len(per_repeat) == SMALL["repeats"]
    assert all(len(draws) == 1 for draws in per_repeat.values())
    assert len({next(iter(d)) for d in per_repeat.values()}) == SMALL["repeats"]


def test_adding_a_condition_keeps_other_draws(binary: dict[str, Any]) -> None:
    alone = by_condition(build(binary, conditions=["random"]))["random"]
    mixed = by_condition(build(binary, conditions=["default", "random"]))["random"]
    assert alone == mixed


def test_deterministic_and_byte_identical(binary: dict[str, Any], tmp_path: Path) -> None:
    first = build_labels(binary, SMALL, 7, Path("."))
    second = build_labels(binary, SMALL, 7, Path("."))
    assert first.equals(second) and first.schema.metadata == second.schema.metadata
    pq.write_table(first, tmp_path / "a.parquet")
    pq.write_table(second, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    other = build_labels(binary, SMALL, 8, Path("."))
    assert other.column("example_index") != first.column("example_index")


def test_embedded_default_config() -> None:
    table = build_labels(
        {"name": "sentiment", "source": "vader", "label_words": ["negative", "positive"]},
        {**with_defaults("labels"), "repeats": 2}, 0, Path("."),
    )
    assert table.num_rows == 2 * (6 + 8)
    assert b"iclscope.dataset" in table.schema.metadata


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ({"arbitrary_labels": [["x", "y", "z"]]}, r"'bin'.*3 words.*K=2"),
        ({"arbitrary_labels": [["x", " "]]}, r"'bin'.*empty label word"),
        ({"arbitrary_labels": [["x", "x"]]}, r"'bin'.*duplicate label words"),
        ({"arbitrary_labels": [["a", "b"], ["A", "B"]]}, r"'bin'.*same condition name"),
        ({"conditions": ["flip_df"], "flip_at": 8}, r"'bin'.*flip_at=8.*1\.\.3"),
        # n_examples = 8 < 2 * 4 + 1: no prediction after exactly 2N = 8 examples
        ({"conditions": ["flip_fd"], "flip_at": 4}, r"'bin'.*flip_at=4.*1\.\.3.*>= 2 \* flip_at \+ 1"),
        ({"conditions": ["flip_fd"], "flip_at": 0}, r"'bin'.*flip_at=0"),
        ({"conditions": ["sideways"]}, r"'bin'.*unknown label condition 'sideways'"),
        ({"template": "Answer: {label}"}, r"'bin'.*must contain"),
        ({"template": "{text} {label!r}"}, r"'bin'.*allowed are plain"),
    ],
)
def test_config_errors(binary: dict[str, Any], labels: dict[str, Any], match: str) -> None:
    with pytest.raises(TaskError, match=match):
        build(binary, **labels)


def test_label_word_errors(binary: dict[str, Any]) -> None:
    with pytest.raises(TaskError, match=r"'bin'.*duplicate label words"):
        build({**binary, "label_words": ["same", "same"]})
    with pytest.raises(TaskError, match=r"'bin'.*1 words.*K=2"):
        build({**binary, "label_words": ["only"]})
    with pytest.raises(TaskError, match=r"'bin'.*empty label word"):
        build({**binary, "label_words": ["", "x"]})


def test_flip_at_is_ignored_without_flip_conditions(binary: dict[str, Any]) -> None:
    rows = build(binary, conditions=["default"], flip_at=100)
    assert len(rows) == SMALL["repeats"]


def test_one_class_dataset_is_an_error(tmp_path: Path) -> None:
    pd.DataFrame({"text": ["a", "b"], "label": [1, 1]}).to_csv(tmp_path / "o.csv", index=False)
    with pytest.raises(TaskError, match=r"'one'.*only one class"):
        build({"name": "one", "source": "file", "path": str(tmp_path / "o.csv")})


def test_content_free_twins_share_labels_and_draws_but_not_inputs(binary: dict[str, Any]) -> None:
    rows = build(binary, conditions=["default", "random", "flipped"], content_free=["default", "random"],
                 repeats=4, repeats_by_condition={"random": 3})
    conds = by_condition(rows)
    assert sorted(conds) == ["default", "default_cf", "flipped", "random", "random_cf"]
    assert len(conds["default_cf"]) == 4 and len(conds["random_cf"]) == 3  # a twin has its condition's repeats
    for name in ("default", "random"):
        for row, twin in zip(conds[name], conds[f"{name}_cf"]):
            assert twin["prompt_id"] == f"labels_bin:{name}_cf:r{row['repeat']:04d}"
            for key in ("repeat", "true_class", "context_class", "context_labels", "example_index", "label_words"):
                assert twin[key] == row[key]
            assert "item " not in twin["text"] and twin["text"].count("'N/A'") == SMALL["n_examples"]
            n = len(row["context_labels"])
            answers = [span_text(twin["text"], twin["spans"], f"answer_{i}") for i in range(1, n + 1)]
            assert answers == row["context_labels"]


def test_content_free_ignores_conditions_not_run(binary: dict[str, Any]) -> None:
    rows = build(binary, conditions=["default"], content_free=["default", "random"], content_free_text="--")
    assert sorted({r["condition"] for r in rows}) == ["default", "default_cf"]
    assert all("'--'" in r["text"] for r in rows if r["condition"] == "default_cf")
