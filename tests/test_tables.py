"""Parquet writing: atomic, with provenance, corrupt files detected."""

from __future__ import annotations

import json

import os

import pyarrow as pa
import pytest

from iclscope import provenance
from iclscope.tables import TableError, read_table, table_metadata, write_table


def small_table() -> pa.Table:
    return pa.table({"a": pa.array([1, 2, 3], pa.int32()), "b": ["x", "y", "z"]})


def test_roundtrip_with_provenance(tmp_path):
    params = {"seed": 3, "grid": [1, 2]}
    meta = provenance.metadata("demo", params, seed=3, model={"name": "m", "weights_sha256": "ab"})
    write_table(small_table(), tmp_path / "t.parquet", meta)
    assert read_table(tmp_path / "t.parquet").equals(small_table())
    got = table_metadata(tmp_path / "t.parquet")
    assert got["kind"] == "demo" and got["seed"] == "3"
    assert got["model"] == "m" and got["weights_sha256"] == "ab"
    assert got["config_hash"] == provenance.config_hash(params)
    assert got["params"] == provenance.canonical_json(params)
    assert {"version", "command", "git_commit", "libraries"} <= set(got)
    assert "torch" in got["libraries"] and "transformers" in got["libraries"]


def test_config_hash_ignores_key_order_only():
    assert provenance.config_hash({"a": 1, "b": [1, 2]}) == provenance.config_hash({"b": [1, 2], "a": 1})
    assert provenance.config_hash({"a": 1, "b": [1, 2]}) != provenance.config_hash({"a": 1, "b": [2, 1]})


def test_same_table_same_bytes(tmp_path):
    meta = provenance.metadata("demo", {"k": 1})
    write_table(small_table(), tmp_path / "1.parquet", meta)
    write_table(small_table(), tmp_path / "2.parquet", meta)
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def crash(table, where, **kwargs):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half")  # a half-written file, then the failure
        raise OSError("interrupted")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="interrupted"):
        write_table(small_table(), tmp_path / "t.parquet", {})
    assert os.listdir(tmp_path) == []


def test_written_files_have_normal_permissions(tmp_path):
    write_table(small_table(), tmp_path / "t.parquet", {})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "t.parquet").stat().st_mode & 0o777 == 0o666 & ~umask


def test_missing_and_corrupt_tables_are_named(tmp_path):
    with pytest.raises(TableError, match="does not exist"):
        read_table(tmp_path / "absent.parquet")
    write_table(small_table(), tmp_path / "t.parquet", {})
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(TableError, match="cut.parquet is corrupt or truncated"):
        read_table(tmp_path / "cut.parquet")
    with pytest.raises(TableError, match="cut.parquet"):
        table_metadata(tmp_path / "cut.parquet")


def test_recorded_model_comes_from_the_first_table_that_has_one(tmp_path):
    from iclscope.provenance import metadata
    from iclscope.tables import recorded_model

    table = pa.table({"x": [1]})
    write_table(table, tmp_path / "tasks.parquet", metadata("tasks", {}))
    write_table(table, tmp_path / "readouts.parquet",
                metadata("readouts", {}, model={"name": "m", "weights_sha256": "ab" * 32}))
    paths = [tmp_path / "tasks.parquet", tmp_path / "readouts.parquet"]
    assert recorded_model(paths) == {"name": "m", "weights_sha256": "ab" * 32}
    assert recorded_model(paths[:1]) is None
    # a card's comparison fields travel on to the tables made from it
    card = {"name": "g", "weights_sha256": "cd" * 32, "family": "Gemma3", "gguf_quantization": "Q4_K_M",
            "n_layers": 18, "sliding_window": 512, "instruct": False, "vocab_size": 262144}
    write_table(table, tmp_path / "extracted.parquet", metadata("readouts", {}, model=card))
    passed_on = recorded_model([tmp_path / "extracted.parquet"])
    write_table(table, tmp_path / "analysis.parquet", metadata("summary", {}, model=passed_on))
    recorded = table_metadata(tmp_path / "analysis.parquet")
    assert json.loads(recorded["model_card"]) == {
        "family": "Gemma3", "gguf_quantization": "Q4_K_M", "n_layers": 18, "sliding_window": 512, "instruct": False}
    assert recorded["model"] == "g" and recorded["weights_sha256"] == "cd" * 32


def test_typed_table_is_the_one_way_rows_become_tables():
    import pandas as pd

    from iclscope.tables import typed_table

    schema = pa.schema([("a", pa.int32()), ("b", pa.string())])
    expected = pa.table({"a": pa.array([1, 2], pa.int32()), "b": ["x", "y"]})
    rows = [{"b": "x", "a": 1, "extra": 0}, {"b": "y", "a": 2, "extra": 0}]  # order and extras do not matter
    assert typed_table(rows, schema).equals(expected)
    assert typed_table(pd.DataFrame(rows), schema).equals(expected)
    assert typed_table([pd.DataFrame(rows[:1]), pd.DataFrame(rows[1:])], schema).equals(expected)
    empty = typed_table([], schema)
    assert empty.num_rows == 0 and empty.schema.equals(schema)


def mixed_table(n: int = 400) -> pa.Table:
    """Numbers, floats, strings and vectors: every kind of page the pipeline writes."""
    import numpy as np

    g = np.random.default_rng(0)
    return pa.table({
        "id": pa.array([f"prompt_{i:04d}" for i in range(n)]),
        "layer": pa.array(np.arange(n) % 7, pa.int32()),
        "logprob": pa.array(g.normal(size=n)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(g.normal(size=n * 8).astype(np.float32)), 8),
    })


def flip(path, offset: int, n: int = 16) -> bytes:
    data = bytearray(path.read_bytes())
    for i in range(offset, min(offset + n, len(data))):
        data[i] ^= 0xFF
    return bytes(data)


def test_flipped_bytes_anywhere_never_read_as_data(tmp_path):
    """XOR 16 bytes at offsets across the whole file: reading either fails, naming the file,
    the command that wrote it and how to rebuild it, or returns exactly the data written
    (the bytes hit provenance text, not data). ``iclscope audit`` says the same."""
    from iclscope.audit import data_sha256, scan

    original = mixed_table()
    path = write_table(original, tmp_path / "good" / "t.parquet", provenance.metadata("demo", {"k": 1}))
    good_hash = data_sha256(path)
    size = path.stat().st_size
    caught = 0
    for offset in range(0, size - 8, 97):
        bad = tmp_path / "bad" / "t.parquet"
        bad.parent.mkdir(exist_ok=True)
        bad.write_bytes(flip(path, offset))
        try:
            got = read_table(bad)
        except TableError as err:
            caught += 1
            assert str(bad) in str(err) and f"rm {bad}" in str(err)
        else:
            assert got.equals(original), f"offset {offset}: damaged data read without an error"
        entries, problems = scan(bad.parent)
        assert problems or entries[0]["data_sha256"] == good_hash, f"offset {offset}: audit missed it"
    assert caught > size // 97 // 2  # most of the file is data


def test_a_damaged_column_names_the_command_that_wrote_it(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr("sys.argv", ["iclscope", "extract", "--out", "x"])
    path = write_table(mixed_table(), tmp_path / "t.parquet", provenance.metadata("demo", {"k": 1}))
    # the same file with one value changed but every page intact: only the column checksum sees it
    table = pq.read_table(path)
    changed = table.set_column(2, "logprob", pa.array([0.0] + table.column("logprob").to_pylist()[1:]))
    pq.write_table(changed, path, write_page_checksum=True)
    with pytest.raises(TableError, match=r"column 'logprob' does not match its checksum") as err:
        read_table(path)
    assert "written by `iclscope extract --out x`" in str(err.value)
    assert read_table(path, columns=["id", "layer"]).num_rows == 400  # the intact columns still read
