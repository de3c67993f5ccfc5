"""Large models that fit by design: the engine's temporaries stay within their budgets
(chunked computation equals the one-piece one), a model dispatched with ``device_map``
(CPU and disk offload) gives the undispatched model's tables, and a model with
Llama-2-70B's width and head layout (2 layers) extracts within its planned memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from iclscope.config import validate_config
from iclscope.extraction import budgets, engine
from iclscope.extraction.attention import AttentionCapture, register, span_mass
from iclscope.extraction.engine import extract
from iclscope.extraction.plan import plan_for
from iclscope.extraction.pooling import POOLINGS, SpanIndex, pool_spans
from iclscope.models import load_prepared
from iclscope.tasks import build_task, task_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Exact comparisons of tiny-model runs on one thread (see conftest.ONE_THREAD_MODEL_JOBS)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reading_rows(default_config, repo):
    cfg = validate_config(default_config, root=repo)
    cfg["representations"]["reading"].update(n_names=4, n_activities=4, n_variants=2, n_shots=[0, 2])
    return build_task("reading", task_params("reading", cfg), repo).to_pylist()[:8]


def tables_equal(a: engine.Extracted, b: engine.Extracted, rtol: float = 0.0) -> None:
    for name in ("embeddings", "attention", "readouts"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.schema == y.schema and x.num_rows == y.num_rows > 0, name
        for column in x.column_names:
            u, v = x.column(column), y.column(column)
            if pa.types.is_floating(u.type) or pa.types.is_fixed_size_list(u.type):
                flat = lambda c: np.asarray(c.combine_chunks().flatten() if pa.types.is_fixed_size_list(c.type)  # noqa: E731
                                            else c.combine_chunks())
                np.testing.assert_allclose(flat(u), flat(v), rtol=rtol, atol=0, err_msg=f"{name}.{column}")
            else:
                assert u.equals(v), f"{name}.{column}"


# --------------------------------------------------------------------------- chunked = one piece


def test_capture_in_chunks_equals_one_piece():
    torch.manual_seed(0)
    b, h, h_kv, t, d = 3, 8, 2, 40, 16
    query, key = torch.randn(b, h, t, d), torch.randn(b, h_kv, t, d)
    capture = AttentionCapture(torch.tensor([0, 1, 2, 2]), torch.tensor([39, 20, 39, 10]),
                               torch.ones(b, t, dtype=torch.bool), (torch.rand(4, 3, t) > 0.5).float())
    whole = span_mass(query, key, capture, 0.25)
    per_item = 4 * t * (d + 2)
    for budget in (per_item, 3 * per_item, h * per_item + 1):  # one head, three heads, one row at a time
        torch.testing.assert_close(span_mass(query, key, capture, 0.25, budget=budget), whole, atol=1e-6, rtol=0)


def test_pooling_in_chunks_equals_one_piece():
    torch.manual_seed(0)
    hidden = torch.randn(3, 30, 8, dtype=torch.bfloat16)
    spans = SpanIndex.from_lists([0, 0, 1, 2, 2], [0, 5, 3, 0, 29], [10, 6, 30, 30, 30])
    whole = pool_spans(hidden, spans, POOLINGS)
    assert whole.dtype == torch.float32
    for budget in (1, 4 * 8 * 12):  # a span at a time, a few spans at a time
        torch.testing.assert_close(pool_spans(hidden, spans, POOLINGS, budget=budget), whole, atol=0, rtol=0)


def test_lm_head_in_small_chunks_gives_the_same_readouts(prepared_tiny, reading_rows, monkeypatch, one_thread):
    model, tokenizer, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation=register())
    plans = [plan_for("reading", r) for r in reading_rows]
    whole = extract(model, tokenizer, reading_rows, plans, list(POOLINGS), 512)
    monkeypatch.setattr(engine, "HEAD_BYTES", 4 * model.config.vocab_size * 3)  # three rows per chunk
    chunked = extract(model, tokenizer, reading_rows, plans, list(POOLINGS), 512)
    tables_equal(whole, chunked, rtol=1e-6)  # the head's products in other row blocks: float noise


# --------------------------------------------------------------------------- device_map


def test_dispatched_model_with_disk_offload_gives_the_same_tables(prepared_tiny, reading_rows, one_thread):
    plans = [plan_for("reading", r) for r in reading_rows]
    plain, tokenizer, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation=register())
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    dispatched, _, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation=register(),
                                     device_map=device_map)
    assert dispatched.hf_device_map["model.layers.1"] == "disk"
    # really offloaded: the layer's weights are read from the safetensors file when it runs
    assert all(p.device.type == "meta" for p in dispatched.model.layers[1].parameters())
    tables_equal(extract(plain, tokenizer, reading_rows, plans, list(POOLINGS), 512),
                 extract(dispatched, tokenizer, reading_rows, plans, list(POOLINGS), 512))


# --------------------------------------------------------------------------- 70B width

# Llama-2-70B's width and head layout (hidden 8192, 64 heads, 8 key/value heads,
# intermediate 28672) with 2 layers and the SmolLM2 vocabulary: 2.5B parameters, 5 GB in
# bfloat16. Built on the meta device and filled from one random block (fast), run in a
# subprocess so that its peak resident memory is its own.
SEVENTY_B_WIDTH = dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=2, num_attention_heads=64,
                       num_key_value_heads=8, max_position_embeddings=4096, tie_word_embeddings=False)

MEASURE = textwrap.dedent("""
    import json, sys, time
    import torch
    from transformers import AutoTokenizer, LlamaConfig, AutoModelForCausalLM
    from iclscope.extraction.attention import register
    from iclscope.extraction.engine import extract
    from iclscope.extraction.plan import plan_for

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    args = json.loads(sys.argv[1])
    tokenizer = AutoTokenizer.from_pretrained(args["tokenizer"])
    config = LlamaConfig(vocab_size=len(tokenizer), **args["shape"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=register())
    model = model.to_empty(device="cpu")
    block = (torch.randn(1 << 22, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.view(-1)
            if p.dim() == 1:
                flat.fill_(1.0)
                continue
            for start in range(0, flat.numel(), block.numel()):
                part = flat[start:start + block.numel()]
                part.copy_(block[:part.numel()])
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # buffers after to_empty
    model.eval()
    rows = json.load(open(args["rows"]))
    plans = [plan_for("reading", r) for r in rows]
    extract(model, tokenizer, rows[:1], plans[:1], args["poolings"], args["batch_tokens"])  # libraries warmed up
    before = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here on
    start = time.perf_counter()
    result = extract(model, tokenizer, rows, plans, args["poolings"], args["batch_tokens"])
    print(json.dumps({"rss_before": before, "peak": status("VmHWM"), "seconds": time.perf_counter() - start,
                      "stats": result.stats, "rows": result.embeddings.num_rows}))
""")


@pytest.mark.slow
def test_seventy_b_wide_model_extracts_within_its_planned_memory(reading_rows, tokenizer, tmp_path):
    from iclscope.planning.devices import find_device
    from iclscope.planning.estimate import Assumptions, plan_extract
    from iclscope.planning.shape import ModelShape

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak from a point on")
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "rows.json").write_text(json.dumps(reading_rows))
    batch_tokens, poolings = 1024, list(POOLINGS)
    args = {"tokenizer": str(tmp_path / "tokenizer"), "rows": str(tmp_path / "rows.json"), "shape": SEVENTY_B_WIDTH,
            "batch_tokens": batch_tokens, "poolings": poolings}
    proc = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(args)], capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])

    shape = ModelShape.from_config({"model_type": "llama", "vocab_size": len(tokenizer), **SEVENTY_B_WIDTH}, "70b-wide")
    device = find_device("cpu")
    plan = plan_extract(shape, tokenizer, reading_rows, model="70b-wide", task="reading", device=device,
                        dtype="bfloat16", batch_tokens=batch_tokens, poolings=poolings,
                        assume=Assumptions.for_device(device), card={"name": "70b-wide"}, params={}, command="",
                        sizes=False)
    assert plan.prompt_tokens + plan.branch_tokens == measured["stats"]["real_tokens"]
    assert plan.batches == measured["stats"]["batches"] > 1
    weights = plan.parts["weights_bytes"]
    assert weights == pytest.approx(2 * 2.52e9, rel=0.01)  # 2.5B parameters in bfloat16
    # the whole process stays under the plan, which is not loose (what a scheduler is asked for) ...
    assert 0.9 * plan.host_bytes <= measured["peak"] <= plan.host_bytes, (measured, plan.host_bytes, plan.parts)
    # ... and what the extraction adds to the loaded model stays within the plan's working memory
    # and tables held (the allocator reuses some of the warm-up's memory: no lower bound here)
    grown = measured["peak"] - measured["rss_before"]
    assert grown <= 1.3 * (plan.parts["work_bytes"] + plan.parts["held_bytes"]), (grown, plan.parts)
