"""The task registry and the build-tasks command: names, isolated params, determinism."""

from __future__ import annotations

import copy

import pytest

from iclscope.cli import main
from iclscope.config import validate_config
from iclscope.tables import read_table, table_metadata
from iclscope.tasks import TaskError, build_task, task_data_files, task_names, task_params


@pytest.fixture(scope="module")
def cfg(default_config, repo):
    return validate_config(default_config, root=repo)


def test_task_names_follow_the_studies(cfg):
    assert task_names(cfg) == [
        "binary_generation", "binary_judgment", "binary_continuation",
        "regression", "reading", "labels_sentiment", "labels_novel",
    ]
    only_labels = dict(cfg, studies=["labels"])
    assert task_names(only_labels) == ["labels_sentiment", "labels_novel"]


def test_params_hold_only_what_the_task_uses(cfg):
    changed = copy.deepcopy(cfg)
    changed["labels"]["repeats"] = 7
    changed["binary"]["judgment"]["n_random"] = 1
    changed["models"][0]["batch_tokens"] = 8
    for name in ("binary_generation", "binary_continuation", "regression", "reading"):
        assert task_params(name, changed) == task_params(name, cfg), name
    assert task_params("binary_judgment", changed) != task_params("binary_judgment", cfg)
    assert task_params("labels_novel", changed)["labels"]["repeats"] == 7
    assert task_params("labels_novel", changed)["dataset"]["name"] == "novel"
    with pytest.raises(TaskError, match="no dataset named 'nope'"):
        task_params("labels_nope", cfg)
    with pytest.raises(TaskError, match="unknown task 'vision'"):
        task_params("vision", cfg)


def test_data_files_are_declared(cfg, repo, tmp_path):
    assert task_data_files("reading", cfg, repo) == [repo / "data/names.txt", repo / "data/activities.txt"]
    assert task_data_files("regression", cfg, repo) == []
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\na,x\nb,y\n")
    with_file = copy.deepcopy(cfg)
    with_file["labels"]["datasets"].append({"name": "mine", "source": "file", "path": str(csv)})
    assert task_data_files("labels_mine", with_file, repo) == [csv]


@pytest.mark.parametrize(
    "name, rows",
    [
        ("binary_generation", 13),
        # 8 replicate variants (4 symbol pairs x 2 templates) of each concept and length, 8 controls
        ("binary_judgment", 5 * 18 * 8 + 8 * 18),
        # one row per rotation and variant of concepts of periods 2-5
        ("binary_continuation", (2 + 3 + 4 + 5) * 8),
        ("regression", 4 * 3 * 4 * 2),  # conditions x variants x shot counts
        ("reading", 4 * 4 * 4 * 2),
        # default and flipped and their content-free twins: 40 repeats; random and its twin:
        # 36; arbitrary (both orders of one pair), flip_df, flip_fd, alternating: 10
        ("labels_sentiment", 4 * 40 + 2 * 36 + 5 * 10),
        ("labels_novel", 4 * 40 + 2 * 36 + 5 * 10),
    ],
)
def test_every_default_task_builds(cfg, repo, name, rows):
    table = build_task(name, task_params(name, cfg), repo)
    assert table.num_rows == rows
    assert table.column_names[:6] == ["prompt_id", "task", "condition", "n_shots", "text", "spans"]
    assert set(table.column("task").to_pylist()) == {name}
    ids = table.column("prompt_id").to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_cli_builds_byte_identical_tables_with_provenance(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(repo)
    for out in ("a", "b"):
        assert main(["-q", "build-tasks", "--task", "reading", "--config", "config/config.yaml",
                     "--out", str(tmp_path / out / "reading.parquet")]) == 0
    first = (tmp_path / "a" / "reading.parquet").read_bytes()
    assert first == (tmp_path / "b" / "reading.parquet").read_bytes()
    meta = table_metadata(tmp_path / "a" / "reading.parquet")
    assert meta["kind"] == "tasks" and meta["task"] == "reading" and meta["seed"] == "0"
    assert read_table(tmp_path / "a" / "reading.parquet").num_rows == 128


def test_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: m, embedded: smollm2-135m-instruct}]\nstudies: [vision]\n")
    assert main(["validate-config", "--config", str(bad)]) == 2
    assert "`studies[0]`: 'vision' is not one of" in capsys.readouterr().err


def test_every_task_table_has_its_schema_from_the_contracts(cfg, repo):
    """The builders write the schemas of iclscope.contracts: the binding columns first, then
    the task's own, with the same types and nullability (field by field)."""
    import pyarrow as pa

    from iclscope import contracts
    from iclscope.tasks.common import task_table

    expected = {
        "binary_generation": contracts.BINARY_GENERATION_TASK, "binary_judgment": contracts.BINARY_JUDGMENT_TASK,
        "binary_continuation": contracts.BINARY_CONTINUATION_TASK, "regression": contracts.REGRESSION_TASK,
        "reading": contracts.READING_TASK, "labels_sentiment": contracts.LABELS_TASK,
        "labels_novel": contracts.LABELS_TASK,
    }
    assert set(expected) == set(task_names(cfg))
    for name, schema in expected.items():
        table = build_task(name, task_params(name, cfg), repo)
        assert table.schema.remove_metadata().equals(schema), name
        assert list(schema)[:len(contracts.TASK)] == list(contracts.TASK), name
    with pytest.raises(ValueError, match="TASK_BASE_FIELDS"):
        task_table([], pa.schema([pa.field("prompt_id", pa.string())]))
