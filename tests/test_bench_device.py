"""`iclscope bench device`: the tables of a device run against CPU fp32, held to stated tolerances.

No GPU needed: the comparison is checked on small hand-made tables, and the whole check runs
with ``--device cpu`` (CPU fp32 against CPU fp32 and CPU bf16). No timing is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from iclscope import contracts
from iclscope.bench.device import MEASURES, TOLERANCES, check_device, compare_tables, format_summary, judge
from iclscope.cli import main
from iclscope.config import validate_config
from iclscope.extraction.engine import Extracted
from iclscope.tables import write_table
from iclscope.tasks import build_task, task_params

# two reads with a choice (p1, p2) and one with a single candidate (p3)
READS = [("p1", "answer", " yes", -0.5, -0.5), ("p1", "answer", " no", -2.0, -2.0),
         ("p2", "answer", " yes", -3.0, -1.0), ("p2", "answer", " no", -0.25, -0.25),
         ("p3", "answer", " maybe", -1.0, -1.0)]
VECTORS = [("p1", 0, "example_1", "mean", [3.0, 4.0, 0.0]), ("p1", 1, "example_1", "mean", [1.0, 0.0, 0.0]),
           ("p2", 0, "example_1", "mean", [0.0, 0.0, 0.0])]
MASSES = [("p1", 0, -1, "end", "example_1", 0.5), ("p1", 0, 0, "end", "example_1", 0.25),
          ("p2", 1, 0, "end", "example_1", 0.125)]


def tables(reads=READS, vectors=VECTORS, masses=MASSES) -> Extracted:
    readouts = pa.Table.from_pylist([dict(zip(contracts.READOUTS.names, r)) for r in reads], schema=contracts.READOUTS)
    embeddings = pa.Table.from_pylist([dict(zip(("prompt_id", "layer", "span", "pooling", "vector"), v))
                                       for v in vectors], schema=contracts.embeddings_schema(3))
    attention = pa.Table.from_pylist([dict(zip(contracts.ATTENTION.names, m)) for m in masses],
                                     schema=contracts.ATTENTION)
    return Extracted(embeddings=embeddings, attention=attention, readouts=readouts, stats={})


def replace(rows, index, **changes):
    """``rows`` with row ``index``'s fields (by position of the schema's names) changed."""
    names = {"logprob": 3, "vector": 4, "mass": 5}
    out = [list(r) for r in rows]
    for field, value in changes.items():
        out[index][names[field]] = value
    return [tuple(r) for r in out]


def test_identical_tables_differ_nowhere_and_pass():
    c = compare_tables(tables(), tables())
    for measure, table in MEASURES.items():
        assert c[table][measure] == (1.0 if measure == "top_agreement" else 0.0), measure
    assert c["readouts"]["reads"] == 2  # the single-candidate read offers no choice
    assert all(c[t]["n_only_reference"] == c[t]["n_only_other"] == 0 for t in c)
    verdict = judge(c, TOLERANCES["float32"])
    assert verdict["ok"] and verdict["failures"] == [] and all(v["ok"] for v in verdict["checks"].values())


def test_a_logprob_beyond_tolerance_fails_naming_table_and_measure():
    other = tables(reads=replace(READS, 1, logprob=-2.25))  # the runner-up moves: the top stays
    c = compare_tables(tables(), other)
    assert c["readouts"]["logprob_max"] == 0.25 and c["readouts"]["top_agreement"] == 1.0
    verdict = judge(c, TOLERANCES["float32"])
    assert not verdict["ok"] and not verdict["checks"]["logprob_max"]["ok"]
    assert any(f.startswith("readouts: logprob_max") for f in verdict["failures"])
    assert judge(c, {"logprob_max": 0.3})["ok"]  # within a looser bound


def test_a_flipped_top_candidate_fails_unless_it_was_a_near_tie():
    comparison = compare_tables(tables(), tables(reads=replace(READS, 1, logprob=-0.25)))
    c = comparison["readouts"]
    assert c["top_agreement"] == 0.5 and c["n_top_flipped"] == 1 and c["top_flipped"] == [["p1", "answer"]]
    assert c["top_flipped_margin_max"] == 1.5  # the reference had " yes" 1.5 nats ahead
    verdict = judge(comparison, {"top_flipped_margin_max": TOLERANCES["bfloat16"]["top_flipped_margin_max"]})
    assert verdict["failures"] == ["readouts: top_flipped_margin_max = 1.5 exceeds 0.5"]
    # the same flip where the reference saw a near-tie (0.25 nats) passes bf16's bound
    near = compare_tables(tables(reads=replace(READS, 1, logprob=-0.75)), tables(reads=replace(READS, 1, logprob=-0.2)))
    assert near["readouts"]["n_top_flipped"] == 1 and near["readouts"]["top_flipped_margin_max"] == 0.25
    assert judge(near, {"top_flipped_margin_max": 0.5})["ok"]


def test_missing_and_extra_rows_fail_naming_the_table():
    extra = [*MASSES, ("p3", 0, 0, "end", "example_1", 0.5)]
    c = compare_tables(tables(), tables(vectors=VECTORS[1:], masses=extra))
    assert c["embeddings"]["n_only_reference"] == 1 and c["embeddings"]["only_reference"] == [
        ["p1", 0, "example_1", "mean"]]
    assert c["attention"]["n_only_other"] == 1 and c["attention"]["only_other"] == [["p3", 0, 0, "end", "example_1"]]
    assert c["embeddings"]["rows_compared"] == 2 and c["embeddings"]["embedding_rel_max"] == 0.0
    failures = judge(c, TOLERANCES["bfloat16"])["failures"]
    assert any(f.startswith("embeddings: 1 row(s) only in the reference") for f in failures)
    assert any(f.startswith("attention: 1 row(s) only in the device run") for f in failures)


def test_embedding_error_is_relative_to_the_reference_norm():
    # ||(3,4,1) - (3,4,0)|| / ||(3,4,0)|| = 1/5; the other vectors unchanged (zero stays zero)
    c = compare_tables(tables(), tables(vectors=replace(VECTORS, 0, vector=[3.0, 4.0, 1.0])))["embeddings"]
    assert c["embedding_rel_max"] == pytest.approx(0.2) and c["embedding_rel_median"] == 0.0
    # a zero reference vector is measured against the other one: completely off
    c = compare_tables(tables(), tables(vectors=replace(VECTORS, 2, vector=[0.0, 0.5, 0.0])))["embeddings"]
    assert c["embedding_rel_max"] == 1.0


def test_attention_difference_is_absolute():
    c = compare_tables(tables(), tables(masses=replace(MASSES, 2, mass=0.1875)))["attention"]
    assert c["attention_max"] == 0.0625 and 0 < c["attention_p99"] <= 0.0625


def test_tolerances_are_stated_for_every_measure_and_dtype():
    assert set(TOLERANCES) == {"float32", "bfloat16", "float16"}
    # fp32 is held far tighter than bf16 on every judged measure; agreement is reported only
    judged = set(MEASURES) - {"top_agreement"}
    assert all(set(TOLERANCES[d]) == judged for d in TOLERANCES)
    assert all(TOLERANCES["float32"][m] < TOLERANCES["float16"][m] <= TOLERANCES["bfloat16"][m] for m in judged)


@pytest.fixture(scope="module")
def task_paths(default_config, repo, tmp_path_factory) -> list[Path]:
    cfg = validate_config(default_config, root=repo)
    folder = tmp_path_factory.mktemp("device-tasks")
    paths = []
    for task in ("reading", "labels_sentiment"):
        table = build_task(task, task_params(task, cfg), repo)
        paths.append(folder / f"{task}.parquet")
        write_table(pa.Table.from_pylist(table.to_pylist()[:3], schema=table.schema), paths[-1], {})
    return paths


def test_check_device_on_cpu(prepared_tiny, task_paths, tmp_path):
    out = tmp_path / "deep" / "device.json"
    summary = check_device(str(prepared_tiny), [str(p) for p in task_paths], str(out), device="cpu",
                           dtypes=("float32", "bfloat16"), max_prompts=2, params={"batch_tokens": 512})
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    assert summary["model"] == "tiny" and summary["device"] == "cpu" and summary["device_name"]
    assert summary["tasks"] == ["reading", "labels_sentiment"] and summary["prompts"] == 4
    fp32 = summary["dtypes"]["float32"]
    assert fp32["ok"] and fp32["tolerance"] == TOLERANCES["float32"]
    for task, t in fp32["tasks"].items():  # the same kernels on the same batches: the same numbers
        assert t["ok"] and t["failures"] == [], task
        for measure, check in t["checks"].items():
            assert check["value"] is None or check["value"] <= 1e-6, measure
        assert t["comparison"]["readouts"]["rows_compared"] > 0
        assert t["reference"]["tokens"] == t["device"]["tokens"] > 0 and t["speedup"] > 0
        assert t["device"]["tokens_per_s"] == t["device"]["tokens"] / t["device"]["seconds"]
    assert fp32["tasks"]["reading"]["comparison"]["embeddings"]["rows_compared"] > 0
    # bf16 rounds weights and activations: the tables differ (whether within tolerance is
    # not asserted for a random model)
    bf16 = summary["dtypes"]["bfloat16"]["tasks"]
    assert bf16["reading"]["comparison"]["readouts"]["logprob_max"] > 1e-4
    assert bf16["reading"]["comparison"]["embeddings"]["embedding_rel_max"] > 1e-4
    assert summary["ok"] == (summary["dtypes"]["bfloat16"]["ok"] and fp32["ok"])
    text = format_summary(summary)
    assert "float32   reading" in text and "bfloat16  labels_sentiment" in text and "PASS" in text


def test_cli_bench_device(prepared_tiny, task_paths, tmp_path, capsys):
    out = tmp_path / "device.json"
    assert main(["-q", "bench", "device", "--device", "cpu", "--dtypes", "float32", "--model-dir",
                 str(prepared_tiny), "--tasks", str(task_paths[1]), "--max-prompts", "2", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["ok"] and list(summary["dtypes"]) == ["float32"] and summary["max_prompts"] == 2
    assert "PASS: within tolerance" in capsys.readouterr().out


def test_cli_bench_device_refuses_missing_cuda(prepared_tiny, task_paths, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "device.json"
    assert main(["-q", "bench", "device", "--model-dir", str(prepared_tiny), "--tasks", str(task_paths[0]),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "iclscope bench: error:" in err and "cuda" in err
    assert not out.exists()


def test_a_failed_check_exits_1(prepared_tiny, task_paths, tmp_path, monkeypatch, capsys):
    """Any tolerance exceeded: exit code 1 (here fp32 against itself held to an impossible bound)."""
    from iclscope.bench import device as bench_device

    monkeypatch.setitem(bench_device.TOLERANCES, "float32", {**TOLERANCES["float32"], "logprob_median": -1.0})
    out = tmp_path / "device.json"
    assert main(["-q", "bench", "device", "--device", "cpu", "--dtypes", "float32", "--model-dir",
                 str(prepared_tiny), "--tasks", str(task_paths[1]), "--max-prompts", "1", "--out", str(out)]) == 1
    assert not json.loads(out.read_text())["ok"]
    assert "FAIL" in capsys.readouterr().out


def test_unknown_dtype_is_refused_before_loading(tmp_path):
    from iclscope.errors import ModelError

    with pytest.raises(ModelError, match="float8"):
        check_device(str(tmp_path / "no-model"), [], str(tmp_path / "x.json"), device="cpu", dtypes=("float8",))
