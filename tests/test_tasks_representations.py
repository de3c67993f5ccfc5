"""Unit tests of the study B task builders (iclscope.tasks.representations)."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iclscope.tasks.common import TaskError, span_text
from iclscope.tasks.representations import (
    build_reading,
    build_regression,
    format_number,
    load_items,
)

ROOT = Path(__file__).resolve().parents[1]

CFG = {
    "regression": {
        "slopes": [-1, 2],
        "intercepts": [0, 5],
        "x_min": -10,
        "x_max": 10,
        "noise": 0.0,
        "n_shots": [0, 1, 4],
        "n_variants": 2,
    },
    "reading": {
        "names_file": "data/names.txt",
        "activities_file": "data/activities.txt",
        "n_names": 4,
        "n_activities": 4,
        "n_shots": [0, 2, 4],
        "n_variants": 2,
    },
}


def cfg_with(section: str, **updates) -> dict:
    cfg = copy.deepcopy(CFG)
    cfg[section].update(updates)
    return cfg


def spans_of(row: dict) -> dict[str, str]:
    return {s["name"]: span_text(row["text"], row["spans"], s["name"]) for s in row["spans"]}


def by_variant(rows: list[dict]) -> dict[tuple[str, int], dict[int, dict]]:
    """rows grouped as {(condition, variant): {n_shots: row}}."""
    out: dict[tuple[str, int], dict[int, dict]] = {}
    for r in rows:
        out.setdefault((r["condition"], r["variant"]), {})[r["n_shots"]] = r
    return out


# ---------------------------------------------------------------- data files


def test_data_files():
    for name in ("names.txt", "activities.txt"):
        path = ROOT / "data" / name
        assert path.read_text().startswith("# source:")
        items = load_items(path, "key")
        assert len(items) >= 12 and len(set(items)) == len(items)


def test_format_number():
    assert [format_number(v) for v in (3.0, -0.0, -12, 2.5, 0.1)] == ["3", "0", "-12", "2.5", "0.1"]


# ---------------------------------------------------------------- regression


def test_regression_counts_and_values():
    rows = build_regression(CFG, seed=0).to_pylist()
    counts = Counter(r["condition"] for r in rows)
    assert counts == {c: 2 * 3 for c in ("a=-1,b=0", "a=-1,b=5", "a=2,b=0", "a=2,b=5")}
    for r in rows:
        a, b = r["slope"], r["intercept"]
        assert r["condition"] == f"a={a:g},b={b:g}"
        assert -10 <= r["query_x"] <= 10
        assert r["target"] == a * r["query_x"] + b
        assert r["answer"] == format_number(r["target"])
        assert len(r["examples_x"]) == r["n_shots"] == len(r["examples_y"])
        assert r["query_x"] not in r["examples_x"]
        assert len(set(r["examples_x"])) == len(r["examples_x"])
        assert r["examples_y"] == [a * x + b for x in r["examples_x"]]


def test_regression_spans():
    for r in build_regression(CFG, seed=0).to_pylist():
        spans = spans_of(r)
        assert spans["query"] == str(r["query_x"])
        assert spans["query_line"] == f"Input: {r['query_x']}\nOutput:"
        assert r["text"].endswith(spans["query_line"])
        k = r["n_shots"]
        assert ("examples" in spans) == (k > 0)
        for i, (x, y) in enumerate(zip(r["examples_x"], r["examples_y"]), start=1):
            assert spans[f"example_{i}"] == f"Input: {x}\nOutput: {format_number(y)}\n"
        assert f"example_{k + 1}" not in spans
        assert "instruction" not in spans


def test_regression_nested_shots():
    for shots in by_variant(build_regression(CFG, seed=0).to_pylist()).values():
        assert len({r["query_x"] for r in shots.values()}) == 1
        assert shots[4]["examples_x"][:1] == shots[1]["examples_x"]
        assert shots[4]["text"].startswith(spans_of(shots[1])["examples"])


def test_regression_instruction_and_noise():
    cfg = cfg_with("regression", instruction="Fit the line.", noise=2.0)
    rows = build_regression(cfg, seed=0).to_pylist()
    assert all(spans_of(r)["instruction"] == "Fit the line." for r in rows)
    assert all(r["text"].startswith("Fit the line.\n") for r in rows)
    noisy = [
        y - (r["slope"] * x + r["intercept"])
        for r in rows
        for x, y in zip(r["examples_x"], r["examples_y"])
    ]
    assert all(float(e).is_integer() for e in noisy) and any(e != 0 for e in noisy)


def test_regression_query_x_paired_across_conditions():
    """Issue 11.6: every condition has the same multiset of query x per (variant, n_shots), and
    the same example x's, so conditions differ only in y; before-ICL prompts of one variant are
    identical across conditions (condition means cannot track x)."""
    cfg = cfg_with("regression", n_variants=6, noise=1.5)
    rows = build_regression(cfg, seed=3).to_pylist()
    per_cell: dict[tuple[int, int], dict[str, list]] = {}
    for r in rows:
        per_cell.setdefault((r["variant"], r["n_shots"]), {})[r["condition"]] = (
            r["query_x"], r["examples_x"], [y - r["slope"] * x - r["intercept"]
                                            for x, y in zip(r["examples_x"], r["examples_y"])])
    for cell in per_cell.values():
        assert len(cell) == 4 and len(set(map(repr, cell.values()))) == 1  # x's and noise paired
    by_k: dict[int, dict[str, Counter]] = {}
    for r in rows:
        by_k.setdefault(r["n_shots"], {}).setdefault(r["condition"], Counter())[r["query_x"]] += 1
    for multisets in by_k.values():
        assert len({tuple(sorted(m.items())) for m in multisets.values()}) == 1
    before = {}
    for r in rows:
        if r["n_shots"] == 0:
            before.setdefault(r["variant"], set()).add(r["text"])
    assert all(len(texts) == 1 for texts in before.values())
    assert len({r["query_x"] for r in rows}) > 1  # variants still differ


def test_regression_seed_changes_draws():
    def queries(seed: int) -> list[int]:
        return build_regression(CFG, seed=seed).column("query_x").to_pylist()

    assert queries(0) == queries(0) and queries(0) != queries(1)


def test_regression_condition_draws_independent_of_grid():
    small = build_regression(cfg_with("regression", slopes=[2], n_shots=[0, 1, 9]), seed=0)
    full = build_regression(CFG, seed=0)
    # the query and the first example of a line do not depend on other lines or on max k
    def first_example(table) -> dict:
        return {
            (r["condition"], r["variant"]): (r["query_x"], r["examples_x"][0])
            for r in table.to_pylist()
            if r["n_shots"] == 1 and r["slope"] == 2
        }

    assert first_example(small) == first_example(full)


# ---------------------------------------------------------------- reading


def test_reading_counts_and_columns():
    rows = build_reading(CFG, seed=0, root=ROOT).to_pylist()
    counts = Counter(r["condition"] for r in rows)
    assert len(counts) == 16 and set(counts.values()) == {2 * 3}
    names = load_items(ROOT / "data/names.txt", "k")[:4]
    activities = load_items(ROOT / "data/activities.txt", "k")[:4]
    for r in rows:
        assert r["condition"] == f"{r['name']}|{r['activity']}"
        assert r["name"] in names and r["activity"] in activities
        assert r["distractor_name"] in names and r["distractor_name"] != r["name"]
        assert r["distractor_activity"] in activities
        assert r["distractor_activity"] != r["activity"]
        assert r["answer"] == r["activity"]
        assert r["candidates"] == sorted(activities)


def test_reading_spans():
    for r in build_reading(CFG, seed=0, root=ROOT).to_pylist():
        spans = spans_of(r)
        assert spans["relevant"] == f"{r['name']} likes to {r['activity']}."
        assert spans["distractor"] == f"{r['distractor_name']} likes to {r['distractor_activity']}."
        assert spans["question_name"] == r["name"]
        assert spans["question"] == f"Question: What does {r['name']} like to do?\nAnswer:"
        first, second = (
            (spans["relevant"], spans["distractor"])
            if r["relevant_first"]
            else (spans["distractor"], spans["relevant"])
        )
        assert spans["story"] == f"{first} {second}"
        assert r["text"].endswith(f"Story: {spans['story']}\n{spans['question']}")
        # the query's own spans come after all examples
        starts = {s["name"]: s["start"] for s in r["spans"]}
        assert ("examples" in spans) == (r["n_shots"] > 0)
        for i in range(1, r["n_shots"] + 1):
            example = spans[f"example_{i}"]
            assert example.startswith("Story: ") and "\nAnswer: " in example
            # examples never mention the query's name or activity
            assert r["name"] not in example and r["activity"] not in example
            assert starts[f"example_{i}"] < starts["relevant"]


def test_reading_relevant_first_varies():
    rows = build_reading(CFG, seed=0, root=ROOT).to_pylist()
    assert {r["relevant_first"] for r in rows} == {True, False}


@pytest.mark.parametrize("n_variants", [2, 4, 6])
def test_reading_relevant_first_balanced_within_condition_and_shots(n_variants):
    """Issue 11.7: relevant_first is exactly half within every (condition, n_shots)."""
    rows = build_reading(cfg_with("reading", n_variants=n_variants), seed=1, root=ROOT).to_pylist()
    cells: dict[tuple[str, int], list[bool]] = {}
    for r in rows:
        cells.setdefault((r["condition"], r["n_shots"]), []).append(r["relevant_first"])
    assert len(cells) == 16 * 3
    for flags in cells.values():
        assert len(flags) == n_variants and sum(flags) * 2 == n_variants


def test_reading_odd_variants_refused():
    with pytest.raises(TaskError, match=r"representations\.reading\.n_variants must be even"):
        build_reading(cfg_with("reading", n_variants=3), seed=0, root=ROOT)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reading_examples_never_prime_target_or_distractor(seed):
    """Issue 11.8: the examples contain the query's activity and the distractor's activity
    equally often, namely never (neither as an answer nor in an example's distractor), and
    never the query's or the distractor's name."""
    rows = build_reading(CFG, seed=seed, root=ROOT).to_pylist()
    counts = Counter()
    for r in rows:
        for i in range(1, r["n_shots"] + 1):
            example = spans_of(r)[f"example_{i}"]
            answer = example.rsplit("\nAnswer: ", 1)[1]
            counts["target_answer"] += answer == r["activity"]
            counts["distractor_answer"] += answer == r["distractor_activity"]
            counts["target_mention"] += r["activity"] in example
            counts["distractor_mention"] += r["distractor_activity"] in example
            counts["names"] += r["name"] in example or r["distractor_name"] in example
            counts["examples"] += 1
    assert counts["examples"] > 0
    assert counts["target_answer"] == counts["distractor_answer"] == 0
    assert counts["target_mention"] == counts["distractor_mention"] == 0
    assert counts["names"] == 0


def test_reading_nested_shots():
    for shots in by_variant(build_reading(CFG, seed=0, root=ROOT).to_pylist()).values():
        queries = {r["text"][r["text"].rindex("Story: ") :] for r in shots.values()}
        assert len(queries) == 1
        prefix = spans_of(shots[2])["examples"]
        assert shots[4]["text"].startswith(prefix)
        assert spans_of(shots[4])["example_2"] == spans_of(shots[2])["example_2"]


def test_reading_inline_lists():
    cfg = cfg_with("reading", names=["Ann", "Bob", "Cy", "Di"], activities=["run", "swim", "sing", "cook"])
    rows = build_reading(cfg, seed=0, root=Path("/nonexistent")).to_pylist()
    assert {r["name"] for r in rows} == {"Ann", "Bob", "Cy", "Di"}


# ---------------------------------------------------------------- determinism


def build(task: str):
    if task == "regression":
        return build_regression(CFG, seed=5)
    return build_reading(CFG, seed=5, root=ROOT)


@pytest.mark.parametrize("task", ["regression", "reading"])
def test_deterministic_bytes(task, tmp_path):
    first, second = build(task), build(task)
    assert first.equals(second)
    pq.write_table(first, tmp_path / "a.parquet")
    pq.write_table(second, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_reading_seed_changes_draws():
    def draws(seed: int) -> list:
        return build_reading(CFG, seed=seed, root=ROOT).column("text").to_pylist()

    assert draws(0) != draws(1)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("section", "updates", "key"),
    [
        ("regression", {"slopes": []}, "representations.regression.slopes"),
        ("regression", {"intercepts": [0, 0]}, "representations.regression.intercepts"),
        ("regression", {"n_shots": [0, -1]}, "representations.regression.n_shots"),
        ("regression", {"x_min": 0, "x_max": 3}, "representations.regression.x_min"),
        ("regression", {"noise": -1}, "representations.regression.noise"),
        ("regression", {"query_template": "Input:"}, "representations.regression.query_template"),
        ("reading", {"n_names": 1}, "representations.reading.n_names"),
        ("reading", {"n_activities": 500}, "representations.reading.n_activities"),
        ("reading", {"names": ["Ann", "Ann", "Bob"]}, "representations.reading.names"),
        ("reading", {"names": ["Ann"], "n_names": 1}, "representations.reading.n_names"),
        ("reading", {"n_shots": [0, 5]}, "representations.reading.n_shots"),
        ("reading", {"n_names": 3}, "representations.reading.n_names"),
        ("reading", {"n_variants": 1}, "representations.reading.n_variants"),
        ("reading", {"names_file": "data/missing.txt"}, "data/missing.txt"),
    ],
)
def test_validation_errors_name_the_key(section, updates, key):
    cfg = cfg_with(section, **updates)
    with pytest.raises(TaskError, match=key.replace(".", r"\.")):
        if section == "regression":
            build_regression(cfg, seed=0)
        else:
            build_reading(cfg, seed=0, root=ROOT)


def test_duplicate_in_data_file_names_the_file(tmp_path):
    (tmp_path / "n.txt").write_text("# c\nAnn\nBob\nAnn\n")
    cfg = cfg_with("reading", names_file=str(tmp_path / "n.txt"), n_names=2)
    with pytest.raises(TaskError, match="n.txt.*duplicate"):
        build_reading(cfg, seed=0, root=ROOT)


def test_answer_candidates_follow_the_templates():
    from iclscope.tasks.representations import answer_affixes, number_candidates

    # the end runs from after {y} through the separator to the next example's {x}
    assert answer_affixes("Input: {x}\nOutput: {y}\n", "Input: {x}\nOutput:", "\n") == (" ", "\n\nInput: ")
    assert answer_affixes("x={x} y={y}", "x={x} y=", "; ") == ("", "; x=")
    assert number_candidates([-3.0, 5.0]) == list(range(-5, 8))
    table = build_regression(CFG, 0).to_pylist()
    row = table[0]
    assert len(row["candidates"]) == len(row["candidate_texts"])
    assert all(t == f" {c}" for c, t in zip(row["candidates"], row["candidate_texts"]))
    assert {r["answer_end"] for r in table} == {"\n\nInput: "}
    targets = {r["answer"] for r in table}
    assert targets <= set(row["candidates"])
    reading = build_reading(CFG, 0, ROOT).to_pylist()[0]
    assert reading["candidate_texts"] == [f" {c}" for c in reading["candidates"]]


def test_the_builders_name_exactly_the_spans_and_fields_config_validation_knows(default_config, repo):
    """TASK_SPANS / CONDITION_FIELDS are what config validation checks analysis keys against:
    every span a default table holds is listed, and every listed field is a table column."""
    from iclscope.config import validate_config
    from iclscope.contracts import example_index
    from iclscope.tasks import build_task, task_params
    from iclscope.tasks.representations import CONDITION_FIELDS, TASK_SPANS

    cfg = validate_config(default_config, root=repo)
    for task in ("regression", "reading"):
        table = build_task(task, task_params(task, cfg), repo)
        built = {s["name"] for spans in table.column("spans").to_pylist() for s in spans}
        built = {name for name in built if example_index(name) is None}
        assert built <= set(TASK_SPANS[task]), (task, built - set(TASK_SPANS[task]))
        assert set(TASK_SPANS[task]) - built <= {"instruction"}  # only the optional instruction may be absent
        assert set(CONDITION_FIELDS[task]) <= set(table.column_names)


@pytest.mark.parametrize("seed", [0, 1])
def test_reading_examples_sentence_order_balanced_within_each_prompt(seed):
    """Issue 23.3: within a prompt, the solved examples' queried person comes first in exactly
    half of every even number of examples (read from the text, not only the column), so the
    context cannot teach "the answer is in the first sentence"."""
    cfg = cfg_with("reading", n_shots=[0, 3, 4])
    rows = build_reading(cfg, seed=seed, root=ROOT).to_pylist()
    seen_odd = []
    for r in rows:
        k = r["n_shots"]
        orders = r["examples_relevant_first"]
        assert len(orders) == k
        from_text = []
        for i in range(1, k + 1):
            example = spans_of(r)[f"example_{i}"]
            story, question = example.split("\nQuestion: What does ", 1)
            person = question.split(" like", 1)[0]
            first_sentence = story.removeprefix("Story: ").split(".", 1)[0]
            from_text.append(first_sentence.startswith(person))
        assert from_text == orders
        if k % 2 == 0:
            assert sum(orders) * 2 == k
        else:
            assert abs(2 * sum(orders) - k) == 1
            seen_odd.append(orders[-1])
    # the odd example's order is drawn, not fixed
    assert set(seen_odd) == {True, False}


def test_balanced_example_orders_prefixes():
    import numpy as np

    from iclscope.tasks.representations import balanced_example_orders

    for n in range(0, 9):
        orders = balanced_example_orders(n, np.random.default_rng(n))
        assert len(orders) == n
        for j in range(0, n + 1, 2):
            assert sum(orders[:j]) * 2 == j
