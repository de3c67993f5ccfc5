"""Attention mass from query positions equals what eager attention weights give."""

from __future__ import annotations

import pytest
import torch

from iclscope.extraction.attention import AttentionCapture, capturing, register
from iclscope.extraction.batching import collate
from iclscope.models import load_prepared

TEXTS = ["Story: Mary likes to bake bread. John likes to swim.\nQuestion: What does Mary like to do?\nAnswer:",
         "Story: Ann likes to run.\nQuestion: What does Ann like to do?\nAnswer:"]


def spans_for(n_tokens):
    """Two spans per prompt as token ranges: the first third and the middle third."""
    third = n_tokens // 3
    return [(1, third), (third, 2 * third)]


@pytest.mark.parametrize("side", ["left", "right"])
def test_mass_equals_eager_attention_weights(prepared_tiny, side):
    captured_model, tokenizer, _ = load_prepared(prepared_tiny, device="cpu", attn_implementation=register())
    eager, _, _ = load_prepared(prepared_tiny, device="cpu", attn_implementation="eager")
    seqs = [tokenizer(t)["input_ids"] for t in TEXTS]
    batch = collate(seqs, [0, 1], pad_id=0, side=side)
    width = batch.input_ids.shape[1]
    rows, cols, masks = [], [], []
    for b, seq in enumerate(seqs):
        off = batch.offsets[b]
        for query in (len(seq) - 1, len(seq) - 5):  # the answer position and one before
            rows.append(b)
            cols.append(off + query)
            m = torch.zeros(2, width)
            for s, (a, e) in enumerate(spans_for(len(seq))):
                m[s, off + a : off + e] = 1
            masks.append(m)
    capture = AttentionCapture(torch.tensor(rows), torch.tensor(cols), batch.attention_mask.bool(), torch.stack(masks))
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    with torch.no_grad(), capturing(capture):
        out = captured_model.model(**inputs).last_hidden_state
    with torch.no_grad():
        ref = eager.model(**inputs, output_attentions=True)
    # the forward itself is unchanged by the capture
    real = batch.attention_mask.bool()
    torch.testing.assert_close(out[real], ref.last_hidden_state[real], atol=1e-4, rtol=0)
    n_layers = captured_model.config.num_hidden_layers
    assert sorted(capture.masses) == list(range(1, n_layers + 1))
    for layer in range(1, n_layers + 1):
        weights = ref.attentions[layer - 1]  # (B, H, T, T)
        for k, (b, q) in enumerate(zip(rows, cols)):
            expected = torch.einsum("ht,st->hs", weights[b, :, q], masks[k])
            torch.testing.assert_close(capture.masses[layer][k], expected, atol=1e-5, rtol=0)


def test_no_capture_outside_the_block(prepared_tiny):
    model, tokenizer, _ = load_prepared(prepared_tiny, device="cpu", attn_implementation=register())
    ids = torch.tensor([tokenizer(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        model.model(input_ids=ids)  # runs as plain SDPA
