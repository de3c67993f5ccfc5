"""`iclscope plan`: shapes, FLOPs, tokens, bytes and scheduler requests against what the
engine really does on the tiny model (no weights needed for a plan)."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, small_config
from iclscope.config import ConfigError, validate_config
from iclscope.extraction.attention import register
from iclscope.extraction.engine import extract
from iclscope.extraction.params import extract_params
from iclscope.extraction.plan import plan_for
from iclscope.extraction.run import run_extract
from iclscope.models import load_prepared, read_card
from iclscope.planning.devices import GPUS, find_device
from iclscope.planning.estimate import Assumptions, plan_extract
from iclscope.planning.requests import COARSE_RUNTIME_MINUTES, MIN_RUNTIME_MINUTES, JobRequests
from iclscope.planning.shape import ModelShape, load_shape, reference_shapes
from iclscope.tasks import build_task, task_params

EXTRACTED = ("reading", "regression", "labels_novel", "binary_continuation", "binary_judgment")


@pytest.fixture(scope="module")
def cfg(default_config, repo):
    c = validate_config(default_config, root=repo)
    c["labels"].update(n_examples=4, flip_at=2, repeats=2, conditions=["default", "flipped"])
    c["binary"]["continuation"].update(concepts=["011"], max_length=12)
    c["binary"]["judgment"].update(concepts=["01"], lengths=[4, 8], n_random=1)
    c["representations"]["reading"].update(n_names=4, n_activities=4, n_variants=2, n_shots=[0, 1])
    c["representations"]["regression"].update(slopes=[-3, 1], intercepts=[-10], n_variants=1, n_shots=[0, 2])
    return c


@pytest.fixture(scope="module")
def rows(cfg, repo):
    return {task: build_task(task, task_params(task, cfg), repo).to_pylist() for task in EXTRACTED}


@pytest.fixture(scope="module")
def tiny(prepared_tiny):
    model, tokenizer, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation=register())
    return model, tokenizer, ModelShape.from_config(model.config.to_dict(), "tiny")


def planned(shape, tokenizer, rows, task, cfg, prepared, command="", batch_tokens=512, device="a100-80gb"):
    params = {**extract_params(cfg["models"][0], task, cfg), "batch_tokens": batch_tokens}
    target = find_device(device)
    return plan_extract(shape, tokenizer, rows, model="tiny", task=task, device=target, dtype="float32",
                        batch_tokens=batch_tokens, poolings=params.get("pooling", ["max", "mean", "last"]),
                        assume=Assumptions.for_device(target), card=read_card(prepared), params=params,
                        command=command)


# --------------------------------------------------------------------------- shapes


def test_reference_shapes_have_the_published_parameter_counts():
    assert {"llama-2-7b", "llama-2-13b", "llama-2-70b", "smollm2-135m-instruct", "gemma3-270m"} <= set(
        reference_shapes())
    # Meta's model cards: 6,738,415,616 / 13,015,864,320 / 68,976,648,192 parameters
    assert load_shape("llama-2-7b").n_params == 6_738_415_616
    assert load_shape("llama-2-13b").n_params == 13_015_864_320
    seventy = load_shape("llama-2-70b")
    assert seventy.n_params == 68_976_648_192
    assert (seventy.hidden, seventy.n_heads, seventy.n_kv_heads, seventy.intermediate) == (8192, 64, 8, 28672)


def test_shape_counts_the_parameters_a_model_has(tiny, tiny_family_dir):
    from transformers import AutoModelForCausalLM

    model, _, shape = tiny
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    for family in ("qwen2", "gemma3", "gpt2"):
        folder = tiny_family_dir(family)
        built = AutoModelForCausalLM.from_pretrained(folder)
        counted = load_shape(folder).n_params
        biases = sum(p.numel() for n, p in built.named_parameters() if n.endswith(".bias"))
        # norms of Qwen2/Gemma (q/k norms) and biases are vectors: under 2% of a tiny model
        assert abs(counted - sum(p.numel() for p in built.parameters())) <= biases + 0.02 * counted, family


def test_a_shape_needs_its_keys():
    from iclscope.errors import ModelError

    with pytest.raises(ModelError, match="lacks num_hidden_layers"):
        ModelShape.from_config({"hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10}, "broken")
    with pytest.raises(ModelError, match="reference shape: "):
        load_shape("no-such-model")


# --------------------------------------------------------------------------- what the engine does


def test_tokens_and_batches_are_the_engines_own(tiny, rows, cfg, prepared_tiny):
    model, tokenizer, shape = tiny
    for task in EXTRACTED:
        plan = planned(shape, tokenizer, rows[task], task, cfg, prepared_tiny)
        stats = extract(model, tokenizer, rows[task], [plan_for(task, r) for r in rows[task]],
                        ["max", "mean", "last"], 512).stats
        assert plan.prompts == stats["prompts"] and plan.distinct_prompts == stats["distinct_prompts"], task
        assert plan.prompt_tokens + plan.branch_tokens == stats["real_tokens"], task
        assert plan.padded_tokens == stats["padded_tokens"] and plan.batches == stats["batches"], task


def test_flops_match_what_the_forward_multiplies(tiny, rows, cfg, prepared_tiny):
    """FLOPs counted by torch's FlopCounterMode over a real extraction (matrix products,
    attention) agree with the plan's count from the shape alone."""
    from torch.utils.flop_counter import FlopCounterMode

    model, tokenizer, shape = tiny
    for task in ("reading", "labels_novel", "binary_continuation"):
        plan = planned(shape, tokenizer, rows[task], task, cfg, prepared_tiny)
        with FlopCounterMode(display=False) as counter:
            extract(model, tokenizer, rows[task], [plan_for(task, r) for r in rows[task]], ["max", "mean", "last"], 512)
        counted = counter.get_total_flops()
        # the capture's few softmax rows are not in the plan; attention over padding is
        assert plan.flops == pytest.approx(counted, rel=0.05), task


def test_table_bytes_within_ten_percent_of_the_tables_written(tiny, rows, cfg, prepared_tiny, tmp_path):
    """The plan's bytes of each table against the tables a run keeps: run_extract's, gathered
    as the pipeline gathers them (which leaves out the job's own throughput record; the
    provenance's command is this process's, as the tables record it)."""
    from iclscope.gather import gather
    from iclscope.tables import write_table

    _, tokenizer, shape = tiny
    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    for task in EXTRACTED:
        table = build_task(task, task_params(task, cfg), REPO)
        tasks = tmp_path / f"{task}.parquet"
        write_table(table, tasks, {})
        shards = [str(tmp_path / task / "shards" / f"{t}.parquet") for t in ("embeddings", "attention", "readouts")]
        outs = [str(tmp_path / task / f"{t}.parquet") for t in ("embeddings", "attention", "readouts")]
        params = {**extract_params(cfg["models"][0], task, cfg), "batch_tokens": 512}
        run_extract(str(prepared_tiny), str(tasks), params, shards)
        gather(shards, outs)
        plan = planned(shape, tokenizer, rows[task], task, cfg, prepared_tiny, command=command)
        written = {Path(o).stem: Path(o).stat().st_size for o in outs}
        assert plan.total_output_bytes == pytest.approx(sum(written.values()), rel=0.10), (task, plan.output_bytes,
                                                                                            written)


def test_cpu_plan_counts_the_model_in_host_memory(tiny, rows, cfg, prepared_tiny):
    _, tokenizer, shape = tiny
    gpu = planned(shape, tokenizer, rows["reading"], "reading", cfg, prepared_tiny)
    cpu = planned(shape, tokenizer, rows["reading"], "reading", cfg, prepared_tiny, device="cpu")
    assert cpu.host_bytes >= cpu.device_bytes + Assumptions.for_device(find_device("cpu")).base_host_bytes
    assert gpu.host_bytes > gpu.parts["weights_bytes"] and gpu.device_bytes > gpu.parts["weights_bytes"]
    assert cpu.seconds > 0 and gpu.seconds > 0


# --------------------------------------------------------------------------- big models


def test_seventy_b_needs_two_eighty_gigabyte_gpus_and_fits_one_h200_not():
    from iclscope.planning.run import plan_shapes

    cfg = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), root=REPO)
    cfg["studies"] = ["representations"]
    cfg["representations"]["regression"].update(slopes=[1], intercepts=[0], n_variants=1)
    cfg["representations"]["reading"].update(n_names=4, n_activities=4, n_variants=2)
    plans = plan_shapes(cfg, REPO, ["llama-2-70b", "llama-2-7b"], device="a100-80gb")
    by_model = {(p.model, p.task): p for p in plans}
    big, small = by_model[("llama-2-70b", "reading")], by_model[("llama-2-7b", "reading")]
    assert big.dtype == "bfloat16"
    assert big.parts["weights_bytes"] == 2 * 68_976_648_192
    assert big.gpus == 2 and small.gpus == 1  # 138 GB of weights on 80 GB GPUs
    assert big.flops == pytest.approx(small.flops * big.parts["weights_bytes"] / small.parts["weights_bytes"], rel=0.3)
    # the embeddings grow with width and depth: 81 layers x 8192 against 33 x 4096
    assert big.output_bytes["embeddings"] == pytest.approx(small.output_bytes["embeddings"] * 81 * 8192 / (33 * 4096),
                                                           rel=0.15)


# --------------------------------------------------------------------------- scheduler requests


def test_requests_come_from_the_plan_once_the_inputs_exist(workdir, tiny_model_dir, tmp_path):
    from iclscope.models import prepare_model
    from iclscope.tables import write_table

    run_dir = workdir()
    cfg = validate_config(yaml.safe_load((run_dir / "config" / "config.yaml").read_text()), root=run_dir)
    requests = JobRequests(cfg, run_dir)
    # before the task table and the prepared model exist: the coarse figure a dry run shows
    assert requests.runtime("tiny", "reading") == COARSE_RUNTIME_MINUTES
    assert requests.runtime("tiny", "reading", attempt=2) == 2 * COARSE_RUNTIME_MINUTES
    coarse = requests.mem_mb("tiny", "reading")
    prepare_model(cfg["models"][0], run_dir / "resources/models/tiny")
    table = build_task("reading", task_params("reading", cfg), run_dir)
    write_table(table, run_dir / "results/tasks/reading.parquet", {})
    requests = JobRequests(cfg, run_dir)
    plan = requests.plan("tiny", "reading")
    assert plan is not None and plan.task == "reading" and plan.device == "cpu"
    margin = cfg["plan"]["margin"]
    for attempt in (1, 2, 3):  # a retried job asks for more
        wanted = math.ceil(plan.host_bytes * margin * attempt / 1e6)
        assert requests.mem_mb("tiny", "reading", attempt=attempt) == max(1000, wanted)
    assert requests.mem_mb("tiny", "reading") != coarse
    assert requests.runtime("tiny", "reading") == MIN_RUNTIME_MINUTES  # seconds of work: the floor
    assert requests.gpus("tiny", "reading") == 1
    # a shard plans its own prompts only
    half = requests.plan("tiny", "reading", 2, 2)
    assert half.prompts == len(table) // 2 and half.shard == "2/2"
    # inside a cluster job nothing is planned again: the GPUs are the allocation's
    remote = JobRequests(cfg, run_dir, remote=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_GPUS_ON_NODE", "4")
        assert remote.gpus("tiny", "reading") == 4
        assert remote.runtime("tiny", "reading") == COARSE_RUNTIME_MINUTES and not remote._plans


def test_unknown_plan_device_is_refused(tiny_model_dir):
    cfg = small_config(tiny_model_dir)
    cfg["plan"] = {"device": "<gpu-type>"}
    with pytest.raises(ConfigError, match=r"`plan.device`: unknown device '<gpu-type>'; known: cpu, a100-40gb"):
        validate_config(cfg)


def test_device_table_holds_datasheet_peaks():
    assert GPUS["h100-sxm"].peak("bfloat16") == 989e12 and GPUS["a100-80gb"].peak("bfloat16") == 312e12
    assert GPUS["h200"].memory_bytes == 141 * 1024**3
    with pytest.raises(ValueError, match="no bfloat16 peak"):
        GPUS["v100-32gb"].peak("bfloat16")
    cpu = find_device("cpu")
    assert cpu.kind == "cpu" and cpu.peak("float32") > 1e9  # measured: at least a GFLOP/s


def test_a_slow_dtype_is_measured_on_smaller_matrices():
    """The peak's matrices shrink where the full measurement would outrun its budget (bf16 on
    an AVX2-only CPU took six minutes at 2048, inside Snakemake's scheduler)."""
    from iclscope.planning.peak import PEAK_BUDGET_S, gemm_peak, peak_size

    # fast enough: the size asked for
    assert peak_size(1e-4, 2048, 6, budget_s=4.0, probe=256) == 2048  # 0.3 s projected
    # 57 s a product at 2048 (0.11 s at 256): about 4 s of products at 384
    size = peak_size(0.11, 2048, 6, budget_s=4.0, probe=256)
    assert size % 64 == 0 and 256 <= size < 2048 and 0.11 * (size / 256) ** 3 * 6 <= 4.0
    assert peak_size(100.0, 2048, 6, budget_s=4.0, probe=256) == 256  # never below the probe
    assert PEAK_BUDGET_S > 0 and gemm_peak(torch.float32, torch.device("cpu"), size=512, repeats=1) > 1e9


# --------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_plan_command_prints_every_job_and_checks_a_finished_run(finished_run, tmp_path):
    env_bin = Path(sys.executable).parent
    out = tmp_path / "plan.json"
    proc = subprocess.run([str(env_bin / "iclscope"), "-q", "plan", "--json", str(out), "--against", "results"],
                          cwd=finished_run, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    summary = json.loads(out.read_text())
    jobs = {(j["job"], j["task"]) for j in summary["jobs"]}
    assert ("generate", "binary_generation") in jobs and ("extract", "reading") in jobs and len(jobs) == 6
    for row in summary["against"]:
        assert row["seconds"]["measured"] > 0 and row["memory"]["measured"] > 0
        if row["job"] != "generate":  # a sample's text is what the model writes; tables are known
            assert row["bytes"]["within"], row  # deterministic: within 10% on any machine
    assert "plan / measured in results" in proc.stdout
    seventy = subprocess.run([str(env_bin / "iclscope"), "-q", "plan", "--model", "llama-2-70b", "--device", "h100-sxm"],
                             cwd=finished_run, capture_output=True, text=True)
    assert seventy.returncode == 0, seventy.stderr
    assert "llama-2-70b (bfloat16)" in seventy.stdout and "does not fit one h100-sxm" in seventy.stdout
