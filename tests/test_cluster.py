"""SLURM profiles for one cluster (iclscope.cluster): the shipped profile with an overlay.

Fast, no SLURM needed; the CI cluster's overlay is checked against the shipped profile here,
and run for real by tests/test_slurm.py (`make slurm-check`).
"""

from __future__ import annotations

import copy
from typing import Any, Iterator, Mapping

import pytest
import yaml

from conftest import ONE_THREAD_MODEL_JOBS, REPO, small_config, snakemake
from iclscope import cli
from iclscope.cluster import overlay_profile, placeholders, write_overlay_profile

SHIPPED_DIR = REPO / "profiles" / "slurm"
OVERLAY = REPO / "cluster" / "onenode" / "overlay.yaml"
MODEL_RULES = ("extract", "generate", "bench_extract")


def shipped() -> dict[str, Any]:
    return yaml.safe_load((SHIPPED_DIR / "config.yaml").read_text())


def overlay() -> dict[str, Any]:
    return yaml.safe_load(OVERLAY.read_text())


def leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(key path, value) of every non-mapping value in nested mappings."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    else:
        yield path, value


def lookup(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def named_in(overlay_: Mapping, path: tuple) -> bool:
    """Whether the overlay names ``path`` or one of its parents with a non-mapping value."""
    value: Any = overlay_
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return False
        value = value[key]
        if not isinstance(value, Mapping):
            return True
    return True


def test_mappings_merge_key_by_key_and_other_values_are_replaced():
    base = {"jobs": 100, "config": ["a", "b"], "default-resources": {"mem_mb": 4000, "runtime": 30},
            "set-resources": {"extract": {"slurm_partition": "<gpu>", "cpus_per_gpu": 8}, "report": {"mem_mb": 1}}}
    before = copy.deepcopy(base)
    merged = overlay_profile(base, {"config": ["c"], "default-resources": {"mem_mb": 2000, "slurm_account": None},
                                    "set-resources": {"extract": {"slurm_partition": "gpu"}}, "cores": 2})
    assert merged == {"jobs": 100, "config": ["c"], "default-resources": {"mem_mb": 2000, "runtime": 30},
                      "set-resources": {"extract": {"slurm_partition": "gpu", "cpus_per_gpu": 8},
                                        "report": {"mem_mb": 1}}, "cores": 2}
    assert base == before  # the shipped mapping is left as it was
    merged["set-resources"]["report"]["mem_mb"] = 5
    assert base["set-resources"]["report"]["mem_mb"] == 1  # and shares nothing with the result
    # null removes a key (here a whole section); a mapping over a scalar replaces it
    assert overlay_profile(base, {"default-resources": None, "jobs": {"x": 1}}) == {
        "jobs": {"x": 1}, "config": ["a", "b"], "set-resources": base["set-resources"]}


def test_the_ci_overlay_keeps_every_shipped_key_it_does_not_name():
    base, over = shipped(), overlay()
    merged = overlay_profile(base, over)
    for path, value in leaves(base):
        if not named_in(over, path):
            assert lookup(merged, path) == value, path
    for path, value in leaves(over):
        if value is None:
            parent = lookup(merged, path[:-1])
            assert path[-1] not in parent, path
        else:
            assert lookup(merged, path) == value, path
    assert placeholders(base) and not placeholders(merged)  # every placeholder filled in


def test_the_ci_overlay_changes_only_what_a_one_node_cluster_needs():
    base, over = shipped(), overlay()
    merged = overlay_profile(base, over)
    # no accounting: no account; squeue, not sacct; the plan for this CPU
    assert "slurm_account" in base["default-resources"] and "slurm_account" not in merged["default-resources"]
    assert merged["slurm-status-command"] == "squeue"
    assert merged["config"] == ["plan={device: cpu}"]
    assert merged["cores"] == 2 and merged["default-resources"]["mem_mb"] <= 4000
    # the groups, retries, keep-going and the rest of the run's behaviour are the shipped ones
    for key in ("groups", "group-components", "retries", "keep-going", "rerun-incomplete", "executor", "jobs"):
        assert key not in over and merged[key] == base[key], key
    # the model jobs: the GPU partition instead of its placeholder, their GPU requests kept,
    # one thread (the byte-for-byte comparison's setting), one CPU per GPU to match
    one_thread = dict(item.split("=") for item in ONE_THREAD_MODEL_JOBS[1:])
    gpu_partition = merged["set-resources"]["extract"]["slurm_partition"]
    assert gpu_partition != merged["default-resources"]["slurm_partition"]
    for rule in MODEL_RULES:
        assert base["set-resources"][rule]["slurm_partition"] == "<gpu-partition>"
        resources = merged["set-resources"][rule]
        assert resources["slurm_partition"] == gpu_partition
        assert resources["cpus_per_gpu"] == merged["set-threads"][rule] == 1
        assert resources.get("gpu") == base["set-resources"][rule].get("gpu")
        assert str(merged["set-threads"][rule]) == one_thread.get(rule, "1")
    # extract and generate ask for what their plans say: the overlay sets none of it
    for rule in ("extract", "generate"):
        assert not {"mem_mb", "runtime", "gpu"} & set(merged["set-resources"][rule]), rule


def test_write_overlay_profile_writes_config_yaml(tmp_path):
    out = write_overlay_profile(SHIPPED_DIR, OVERLAY, tmp_path / "profile")
    assert out == tmp_path / "profile" / "config.yaml"
    assert yaml.safe_load(out.read_text()) == overlay_profile(shipped(), overlay())
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]


def test_an_overlay_that_leaves_a_placeholder_is_refused(tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"default-resources": {"slurm_partition": "cpu"}}))
    with pytest.raises(ValueError, match=r"default-resources\.slurm_account: <account>") as err:
        write_overlay_profile(SHIPPED_DIR, partial, tmp_path / "profile")
    assert "set-resources.extract.slurm_partition: <gpu-partition>" in str(err.value)
    assert "config[0]: plan={device: <gpu-type>}" in str(err.value)
    assert not (tmp_path / "profile").exists()


def test_cli_writes_the_profile_and_reports_errors_in_one_line(tmp_path, capsys):
    out = tmp_path / "p"
    assert cli.main(["cluster-profile", "--overlay", str(OVERLAY), "--out", str(out),
                     "--profile", str(SHIPPED_DIR)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "config.yaml")
    with pytest.raises(SystemExit, match="iclscope cluster-profile: error: .*missing.yaml"):
        cli.main(["cluster-profile", "--overlay", str(tmp_path / "missing.yaml"), "--out", str(out),
                  "--profile", str(SHIPPED_DIR)])


def test_the_ci_profile_plans_the_sharded_run_for_the_ci_cluster(tmp_path, tiny_model_dir):
    """A dry run with the written profile: the model jobs on the GPU partition with one GPU
    and one thread, the others on the CPU partition, no account anywhere."""
    profile = write_overlay_profile(SHIPPED_DIR, OVERLAY, tmp_path / "profile").parent
    cfg = small_config(tiny_model_dir)
    cfg["models"][0]["shards"] = 2
    (tmp_path / "run" / "config").mkdir(parents=True)
    (tmp_path / "run" / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--profile", str(profile), cwd=tmp_path / "run").stdout
    blocks = out.split("rule ")[1:]
    extract = [b for b in blocks if b.startswith("extract:")]
    assert len(extract) == 5 * 2
    for block in extract:
        assert "slurm_partition=gpu" in block and "gpu=1" in block and "cpus_per_gpu=1" in block, block
        assert "threads: 1" in block or "threads:" not in block, block
    prepare = next(b for b in blocks if b.startswith("prepare_model:"))
    assert "slurm_partition=cpu" in prepare and "mem_mb=4000" in prepare
    assert "slurm_account" not in out
    assert not [p for p in ("<account>", "<cpu-partition>", "<gpu-partition>", "<gpu-type>") if p in out]
