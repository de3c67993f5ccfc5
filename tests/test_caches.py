"""What reruns and what does not: speed-only settings, moved projects, shards; damaged
tables are named with how to rebuild them (docs/reproducibility.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import small_config, snakemake
from test_workflow import changed_config, job_counts, planned

from iclscope.audit import manifest, scan
from iclscope.config import validate_config
from iclscope.extraction.run import run_extract
from iclscope.gather import gather
from iclscope.tables import TableError, read_table, table_metadata, write_table
from iclscope.tasks import build_task, task_params

TABLES = ("embeddings", "attention", "readouts")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def outputs(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    return [str(folder / f"{name}.parquet") for name in TABLES]


# --------------------------------------------------------------------------- shards


def test_gathered_tables_are_byte_identical_for_any_number_of_shards(prepared_tiny, default_config, repo,
                                                                    tmp_path, monkeypatch):
    """`shards` is a speed setting: 1, 2 or 3 shards gather to the same bytes (rows in the
    unsharded order, no split-dependent provenance), so nothing downstream sees a change.
    Batches hold several prompts here: a shard runs whole batches of the unsharded plan,
    so each prompt is computed beside the same prompts whatever the number of shards
    (batches composed from a shard's own prompts changed float32 results in the last bits)."""
    import torch

    monkeypatch.setattr(sys, "argv", ["__main__.py", "extract", "--shard", "1", "--shards", "1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see conftest.ONE_THREAD_MODEL_JOBS: the tiny model's products on one thread
    cfg = validate_config(default_config, root=repo)
    table = build_task("reading", task_params("reading", cfg), repo)
    tasks = tmp_path / "tasks.parquet"
    write_table(pa.Table.from_pylist(table.to_pylist()[:7], schema=table.schema), tasks, {})
    params = {"device": "cpu", "dtype": "float32", "batch_tokens": 256, "seed": 0, "pooling": ["mean", "last"]}
    gathered = {}
    try:
        for n in (1, 2, 3):
            shards = []
            for k in range(n):
                out = outputs(tmp_path / f"{n}" / f"shards/{k + 1}-of-{n}")
                stats = run_extract(str(prepared_tiny), str(tasks), params, out, shard=k, n_shards=n)
                assert n == 1 or stats["batches"] >= 1
                shards += out
            gathered[n] = outputs(tmp_path / f"{n}" / "gathered")
            gather(shards, gathered[n])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(table_metadata(gathered[1][0])["stats"])["prompts"] == 7
    for j, name in enumerate(TABLES):
        assert read_table(gathered[1][j]).num_rows > 0
        assert sha256(gathered[1][j]) == sha256(gathered[2][j]) == sha256(gathered[3][j]), name
        meta = table_metadata(gathered[2][j])
        assert meta["shard"] == "gathered" and "--shard" not in meta["command"]
        assert meta["stats"] == table_metadata(gathered[1][j])["stats"] and '"prompts":7' in meta["stats"]


# --------------------------------------------------------------------------- corrupt tables


def test_audit_reports_every_corrupt_table_and_lists_the_rest(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_table(pa.table({"x": list(range(50))}), tmp_path / "sub" / f"{name}.parquet", {"iclscope.kind": name})
    for name in ("b", "d"):
        victim = tmp_path / "sub" / f"{name}.parquet"
        victim.write_bytes(victim.read_bytes()[:-40])
    entries, problems = scan(tmp_path)
    assert [e["path"] for e in entries] == ["sub/a.parquet", "sub/c.parquet"]
    assert len(problems) == 2
    for name, problem in zip(("b", "d"), problems):
        assert f"sub/{name}.parquet is corrupt or truncated" in problem
        assert f"delete it (rm {tmp_path}/sub/{name}.parquet) and run snakemake again" in problem
    with pytest.raises(TableError, match=r"(?s)b\.parquet.*d\.parquet"):
        manifest(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "iclscope", "audit", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "sub/a.parquet" in proc.stdout and "sub/c.parquet" in proc.stdout and "2 tables under" in proc.stdout
    assert proc.stderr.count("CORRUPT: ") == 2 and "2 corrupt table(s)" in proc.stderr


def test_a_step_reading_a_corrupt_input_says_how_to_rebuild_it(tmp_path):
    path = write_table(pa.table({"x": list(range(50))}), tmp_path / "t.parquet", {})
    path.write_bytes(path.read_bytes()[:-40])
    for read in (read_table, table_metadata):
        with pytest.raises(TableError, match=r"t\.parquet is corrupt or truncated .*delete it \(rm .*t\.parquet\) "
                                             "and run snakemake again to rebuild it"):
            read(path)
    gathered = [str(tmp_path / "out" / f"{t}.parquet") for t in ("readouts",)]
    with pytest.raises(TableError, match="delete it"):
        gather([str(path.rename(tmp_path / "readouts.parquet"))], gathered)


# --------------------------------------------------------------------------- reruns, end to end

FILMS = "text,label\n" + "".join(
    f"{word},{label}\n" for word, label in [("good film", "pos"), ("bad film", "neg"), ("great", "pos"),
                                            ("awful", "neg"), ("fine", "pos"), ("dull", "neg"),
                                            ("superb", "pos"), ("boring", "neg"), ("lovely", "pos"),
                                            ("poor", "neg")]
)


@pytest.mark.slow
def test_speed_settings_moves_and_shards_rerun_only_what_they_must(workdir, tiny_model_dir, tmp_path_factory):
    """One tiny run (study C on a local data file), then dry runs: `batch_tokens` plans
    nothing; a copied project plans nothing; `shards: 2` plans extraction and gathering
    only (the analyses that the dry run lists are skipped once the gathered tables come
    out identical: Snakemake compares their checksums)."""
    cfg = small_config(tiny_model_dir)
    cfg["studies"] = ["labels"]
    cfg["labels"]["datasets"] = [{"name": "films", "source": "file", "path": "films.csv",
                                  "label_words": ["bad", "good"]}]
    cfg["labels"]["conditions"] = ["default", "flipped"]
    cfg["models"][0]["batch_tokens"] = 256  # several prompts a batch: shards run whole batches of one plan
    run_dir = workdir(cfg)
    (run_dir / "films.csv").write_text(FILMS)
    snakemake("--cores", "2", cwd=run_dir)
    assert planned(run_dir) == {}

    def faster(c):
        c["models"][0]["batch_tokens"] = 64

    with changed_config(run_dir, faster):
        assert planned(run_dir) == {}  # speed only: neither preparation nor anything else

    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(run_dir, moved, symlinks=True)  # a copy keeps modification times, as cp -a does
    assert planned(moved) == {}  # task inputs are recorded relative to the project
    shutil.rmtree(moved)

    readouts = run_dir / "results/tiny/extract/labels_films/readouts.parquet"
    gathered = {p: sha256(p) for p in readouts.parent.glob("*.parquet")}
    downstream = {p: sha256(p) for p in (run_dir / "results/tiny/labels/films").glob("*.parquet")}

    def sharded(c):
        c["models"][0]["shards"] = 2

    with changed_config(run_dir, sharded):
        counts = planned(run_dir)
        assert counts["extract"] == 2 and counts["gather_extract"] == 1
        assert "prepare_model" not in counts and "build_tasks" not in counts
        snakemake("--cores", "2", "--until", "gather_extract", cwd=run_dir)
        assert {p: sha256(p) for p in gathered} == gathered  # byte-identical, newer
        assert planned(run_dir) == {}  # so no analysis reruns ...
        # ... because Snakemake compares their checksums (the profile's max-checksum-file-size
        # reaches the embeddings tables): comparing none would rerun the analysis
        unchecked = snakemake("-n", "--cores", "1", "--max-checksum-file-size", "1", cwd=run_dir).stdout
        assert "analyse_labels" in job_counts(unchecked)
    assert {p: sha256(p) for p in downstream} == downstream


def test_audit_compares_data_and_names_provenance_only_differences(tmp_path):
    """Two runs at different git commits hold the same data: the audit says so (and which
    provenance keys differ) instead of flagging every table; changed rows are flagged."""
    from iclscope.audit import compare, provenance_differences

    for run, commit, values in (("a", "1" * 40, [1.0, 2.0]), ("b", "2" * 40, [1.0, 2.0]), ("c", "1" * 40, [1.0, 2.5])):
        (tmp_path / run).mkdir()
        write_table(pa.table({"x": values}), tmp_path / run / "t.parquet",
                    {"iclscope.kind": "t", "iclscope.git_commit": commit})
    a, b, c = (manifest(tmp_path / r) for r in "abc")
    assert a[0]["sha256"] != b[0]["sha256"] and a[0]["data_sha256"] == b[0]["data_sha256"]
    assert compare(a, b) == []
    assert provenance_differences(a, b) == ["t.parquet: same data, provenance differs (git_commit)"]
    assert compare(a, c) == [f"t.parquet: contents differ ({a[0]['sha256'][:12]} vs {c[0]['sha256'][:12]})"]
    assert provenance_differences(a, c) == []


def test_audit_data_hash_sees_values_not_how_a_file_encoded_them(tmp_path):
    """The same rows written with and without dictionaries, in one row group or many, hash
    the same (a new encoding is not new data); a changed value or null does not."""
    import pyarrow.parquet as pq

    from iclscope.audit import data_sha256

    table = pa.table({"name": ["a", None, "b", "a"] * 50, "x": [1.5, None, 2.0, 1.5] * 50})
    paths = {}
    for label, options in (("plain", {"use_dictionary": False, "row_group_size": 7}),
                           ("dictionary", {"use_dictionary": True, "row_group_size": 1000})):
        paths[label] = tmp_path / f"{label}.parquet"
        pq.write_table(table, paths[label], **options)
    assert data_sha256(paths["plain"]) == data_sha256(paths["dictionary"])
    for label, column, value in (("value", "x", 9.0), ("null", "name", None)):
        changed = table.set_column(table.schema.get_field_index(column), column,
                                   pa.array([value] + table.column(column).to_pylist()[1:], table.schema.field(column).type))
        paths[label] = tmp_path / f"{label}.parquet"
        pq.write_table(changed, paths[label])
        assert data_sha256(paths[label]) != data_sha256(paths["plain"]), label


# --------------------------------------------------------------------------- quoting


def test_paths_with_spaces_and_shell_metacharacters_reach_commands_as_one_argument(workdir, tiny_model_dir):
    """Folders named with spaces, quotes, `$(...)` and `;` reach every job's command as single
    arguments (each shell command of a dry run splits, as a shell would, into the intended
    arguments), including the comparison job's name=path pairs."""
    resources = "res dir $(touch pwned); it's"
    results = "out `x` & co"
    cfg = small_config(tiny_model_dir)
    cfg["models"] = [{"name": n, "path": str(tiny_model_dir), "batch_tokens": 512} for n in ("tinya", "tinyb")]
    cfg.update(resources_dir=resources, results_dir=results)
    run_dir = workdir(cfg)
    proc = snakemake("-n", "-p", "--cores", "2", cwd=run_dir)
    out = proc.stdout + proc.stderr
    commands = [line.split("Shell command: ", 1)[1] for line in out.splitlines() if "Shell command: " in line]
    assert len(commands) > 20
    import shlex

    seen_cards = False
    for command in commands:
        args = shlex.split(command)
        for token in args:
            # a folder name is never split, and nothing of it becomes a command of its own
            for name, marker in ((resources, "$(touch"), (results, "`x`")):
                if marker in token:
                    assert name in token, f"{token!r} split from {name!r} in: {command}"
        assert "touch" not in args and "pwned);" not in args
        if " compare " in f" {command} ":
            cards = args[args.index("--cards") + 1: args.index("--params")]
            assert cards == [f"tinya={resources}/models/tinya/card.json", f"tinyb={resources}/models/tinyb/card.json"]
            seen_cards = True
    assert seen_cards
    assert not (run_dir / "pwned").exists()


def test_every_shard_runs_whole_batches_of_the_unsharded_plan(prepared_tiny, default_config, repo, tmp_path,
                                                              monkeypatch):
    """The prompts computed together in one forward are the same for any number of shards
    (so float32 results cannot change with `shards`): the shards' batches, together, are
    the unsharded run's batches."""
    from iclscope.extraction import engine

    cfg = validate_config(default_config, root=repo)
    table = build_task("reading", task_params("reading", cfg), repo)
    tasks = tmp_path / "tasks.parquet"
    write_table(pa.Table.from_pylist(table.to_pylist()[:11], schema=table.schema), tasks, {})
    seen: list[tuple[str, ...]] = []
    real = engine._run_batch

    def recording(model, batch, *args, **kwargs):
        seen.append(tuple(p.prompt.prompt_id for p in batch))
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(engine, "_run_batch", recording)
    params = {"device": "cpu", "dtype": "float32", "batch_tokens": 200, "seed": 0, "pooling": ["last"]}
    compositions = {}
    for n in (1, 2, 3):
        seen.clear()
        for k in range(n):
            run_extract(str(prepared_tiny), str(tasks), params, outputs(tmp_path / f"{n}-{k}"), shard=k, n_shards=n)
        compositions[n] = sorted(seen)
    assert len(compositions[1]) >= 3 and max(len(b) for b in compositions[1]) > 1
    assert compositions[1] == compositions[2] == compositions[3]
