"""Extraction foundations: span -> token mapping, batching, pooling on the fly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iclscope.extraction.batching import collate, plan_batches
from iclscope.extraction.pooling import POOLINGS, SpanIndex, pool_spans, pooled_layers
from iclscope.extraction.tokens import SpanError, token_range, tokenize_prompts
from iclscope.models import load_prepared


def test_token_range_covers_overlapping_tokens():
    offsets = [(0, 0), (0, 1), (1, 5), (5, 6), (6, 9), (9, 13)]  # special, "[", "Head", "s", " Ta", "ils"
    assert token_range(offsets, 1, 6) == (2, 4)
    assert token_range(offsets, 7, 13) == (4, 6)  # " Ta" straddles the span's start
    assert token_range(offsets, 0, 1) == (1, 2)  # the zero-width special token never counts
    assert token_range(offsets, 20, 25) is None


def test_tokenize_prompts_maps_spans_and_names_errors(tokenizer):
    text = "[Heads, Tails, Heads"
    rows = [{"prompt_id": "p", "text": text, "spans": [{"name": "flip_2", "start": 8, "end": 13}]}]
    (prompt,) = tokenize_prompts(tokenizer, rows)
    a, b = prompt.spans["flip_2"]
    pieces = "".join(text[s:e] for s, e in prompt.offsets[a:b])
    assert "Tails" in pieces and "Heads" not in pieces
    bad = [{"prompt_id": "q", "text": text, "spans": [{"name": "gone", "start": 30, "end": 31}]}]
    with pytest.raises(SpanError, match="prompt 'q': span 'gone'"):
        tokenize_prompts(tokenizer, bad)
    with pytest.raises(ValueError, match="prompt 'p' has .* tokens, more than the model's context of 3"):
        tokenize_prompts(tokenizer, rows, max_length=3)


def test_plan_batches_respects_the_budget_and_covers_every_prompt():
    lengths = [5, 40, 12, 12, 3, 80, 7, 30, 30, 9]
    plan = plan_batches(lengths, batch_tokens=64)
    assert sorted(i for batch in plan for i in batch) == list(range(len(lengths)))
    for batch in plan:
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= 64 or len(batch) == 1
    flat = [lengths[i] for batch in plan for i in batch]
    assert flat == sorted(flat, reverse=True)  # longest first: little padding
    assert plan == plan_batches(lengths, batch_tokens=64)
    assert plan[0] == [5]  # 80 tokens > budget: alone


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_positions_count_real_tokens(side):
    batch = collate([[5, 6, 7], [8]], index=[0, 1], pad_id=0, side=side)
    assert batch.input_ids.shape == (2, 3) and batch.real_tokens == 4 and batch.padded_tokens == 6
    row = batch.offsets[1]
    assert batch.input_ids[1, row] == 8 and batch.position_ids[1, row] == 0
    assert batch.position_ids[0].tolist() == [0, 1, 2]


def test_pool_spans_matches_brute_force():
    torch.manual_seed(0)
    hidden = torch.randn(3, 10, 4)
    rows, starts, ends = [0, 0, 2, 1], [0, 3, 5, 9], [4, 4, 10, 10]
    pooled = pool_spans(hidden, SpanIndex.from_lists(rows, starts, ends), POOLINGS)
    for k, (r, s, e) in enumerate(zip(rows, starts, ends)):
        seg = hidden[r, s:e]
        torch.testing.assert_close(pooled[k, 0], seg.max(0).values)
        torch.testing.assert_close(pooled[k, 1], seg.mean(0))
        torch.testing.assert_close(pooled[k, 2], seg[-1])
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_spans(hidden, SpanIndex.from_lists([0], [0], [1]), ["median"])
    with pytest.raises(ValueError, match="at least one token"):
        SpanIndex.from_lists([0], [2], [2])


@pytest.fixture(scope="module")
def tiny(prepared_tiny):
    model, tokenizer, _ = load_prepared(prepared_tiny, device="cpu", attn_implementation="sdpa")
    return model, tokenizer


def pooled_for(model, prompts, side):
    """Pool every span of ``prompts`` in one padded batch: {(prompt, span, layer): (P, d)}."""
    batch = collate([p.input_ids for p in prompts], range(len(prompts)), pad_id=0, side=side)
    items = [(b, name, a + batch.offsets[b], e + batch.offsets[b])
             for b, p in enumerate(prompts) for name, (a, e) in sorted(p.spans.items())]
    index = SpanIndex.from_lists([i[0] for i in items], [i[2] for i in items], [i[3] for i in items])
    out = {}

    def on_layer(layer, hidden):
        for (b, name, _, _), vec in zip(items, pool_spans(hidden, index, POOLINGS)):
            out[(prompts[b].prompt_id, name, layer)] = vec

    with torch.no_grad(), pooled_layers(model, on_layer):
        model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids)
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_pools_like_each_prompt_alone(tiny, side):
    model, tokenizer = tiny
    texts = ["Story: Mary likes to bake bread. John likes to swim.\nQuestion: What does Mary like to do?",
             "Input: 3\nOutput: 7", "Sentence: 'happy' \nAnswer: positive\n\nSentence: 'sad' \nAnswer: negative"]
    rows = [{"prompt_id": f"p{i}", "text": t, "spans": [
        {"name": "head", "start": 0, "end": 5}, {"name": "tail", "start": len(t) - 6, "end": len(t)}]}
        for i, t in enumerate(texts)]
    prompts = tokenize_prompts(tokenizer, rows)
    together = pooled_for(model, prompts, side)
    alone = {k: v for p in prompts for k, v in pooled_for(model, [p], side).items()}
    assert together.keys() == alone.keys() and len(together) == 3 * 2 * (model.config.num_hidden_layers + 1)
    worst = max(float((together[k] - alone[k]).abs().max()) for k in together)
    assert worst <= 1e-4


def test_hooked_layers_are_the_residual_stream(tiny):
    model, tokenizer = tiny
    (prompt,) = tokenize_prompts(tokenizer, [{"prompt_id": "p", "text": "Input: 3\nOutput: 7",
                                              "spans": [{"name": "all", "start": 0, "end": 18}]}])
    got = pooled_for(model, [prompt], "right")
    ids = torch.tensor([prompt.input_ids])
    with torch.no_grad():
        reference = model.model(input_ids=ids, output_hidden_states=True).hidden_states
    a, b = prompt.spans["all"]
    for layer in range(model.config.num_hidden_layers):  # the last entry is after the final norm
        torch.testing.assert_close(got[("p", "all", layer)][1], reference[layer][0, a:b].mean(0))


def test_plan_batches_keeps_padding_within_the_efficiency_floor():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 400, size=200).tolist()
    plan = plan_batches(lengths, batch_tokens=4096, min_efficiency=0.9)
    assert sorted(i for batch in plan for i in batch) == list(range(len(lengths)))
    for batch in plan:
        real = sum(lengths[i] for i in batch)
        padded = len(batch) * max(lengths[i] for i in batch)
        assert real >= 0.9 * padded and (padded <= 4096 or len(batch) == 1)
    total = sum(lengths) / sum(len(b) * max(lengths[i] for i in b) for b in plan)
    assert total >= 0.9


def test_attention_table_is_the_row_by_row_listing():
    """The column-built attention table lists, per layer, prompt (table order, a repeated
    prompt's copies at their own positions), head (-1: the mean over heads first) and span,
    every mass of every attending prompt, and nothing for prompts that attend to nothing."""
    import types

    import numpy as np

    from iclscope.extraction.assemble import attention_table

    rng = np.random.default_rng(0)
    names = ["story", "distractor", "relevant", "question"]
    results, copies, rank = [], {}, 0
    for b in range(3):
        batch = []
        for k in range(4):
            pid = f"p{b}{k}"
            attend = tuple(names[: (b + k) % 5])  # 0 to 4 spans: some prompts attend to nothing
            batch.append(types.SimpleNamespace(prompt=types.SimpleNamespace(prompt_id=pid),
                                               plan=types.SimpleNamespace(attend=attend)))
            copies[pid] = [(rank, pid)] + ([(rank + 1, f"{pid}-again")] if k % 2 else [])
            rank += 2
        attending = [p for p in batch if p.plan.attend]
        width = max(len(p.plan.attend) for p in attending)
        masses = {layer: torch.from_numpy(rng.random((len(attending), 3, width), dtype=np.float32)) for layer in (2, 1)}
        results.append((batch, types.SimpleNamespace(masses=masses)))
    expected = []
    for batch, res in results:
        attending = [p for p in batch if p.plan.attend]
        for layer, m in res.masses.items():
            for k, p in enumerate(attending):
                per_head = np.vstack([m[k].numpy().mean(axis=0, keepdims=True), m[k].numpy()])
                for r, pid in copies[p.prompt.prompt_id]:
                    for h in range(per_head.shape[0]):
                        for s, span in enumerate(p.plan.attend):
                            expected.append(((layer, r, h - 1, s), (pid, layer, h - 1, "end", span,
                                                                    float(per_head[h, s]))))
    expected = [row for _, row in sorted(expected, key=lambda e: e[0])]
    table = attention_table(results, copies)
    got = list(zip(*(table.column(c).to_pylist() for c in table.column_names)))
    assert got == expected and len(got) > 100
