"""Architectures are tested, not assumed: the extraction engine against plain eager
transformers on tiny random models of each family a user is likely to point it at.

Per family (Llama, Qwen2, Gemma 3 text with sliding-window layers, GPT-2 with absolute
position embeddings): pooled spans = eager hidden states (hooks on the family's own
blocks), attention mass = eager attention weights (window, scaling, norms), readouts =
per-prefix log-probabilities (branches within the window, logit soft-capping), a padded
batch = each prompt alone (left padding must not shift GPT-2's positions), generation =
per-sequence eager decoding. Unsupported architectures are refused by name.
"""

from __future__ import annotations

import json

import numpy as np

import pytest
import torch
from iclscope.architectures import (
    TESTED_MODEL_TYPES,
    check_loaded,
    decoder_layers,
    supported_architecture,
)
from iclscope.config import ConfigError, validate_config
from iclscope.extraction.attention import register
from iclscope.extraction.batching import collate
from iclscope.extraction.engine import extract, prepare_prompts
from iclscope.extraction.generation import GenerationRequest, generate, sample_token
from iclscope.extraction.plan import END, PromptPlan, ReadPoint
from iclscope.extraction.pooling import SpanIndex, pool_spans, pooled_layers
from iclscope.seeding import rng
from transformers import AutoModelForCausalLM

FAMILIES = ["llama", "qwen2", "gemma3", "gpt2"]
POOLINGS = ["max", "mean", "last"]
ATOL = 1e-4
FINAL_NORM = {"gpt2": "ln_f"}  # the base model's final norm, "norm" elsewhere
BLOCKS = {"gpt2": "h"}  # where the decoder blocks live, "layers" elsewhere


def row(pid: str, text: str, **spans: str) -> dict:
    """A task-table row whose spans are the first occurrence of each given substring."""
    out = []
    for name, piece in spans.items():
        start = text.index(piece)
        out.append({"name": name, "start": start, "end": start + len(piece)})
    return {"prompt_id": pid, "text": text, "spans": out}


STORY = ("Story: Mary likes to bake bread. John likes to swim in the lake. Anna likes to read old books. "
         "Tom likes to paint.\nQuestion: What does Mary like to do?\nAnswer:")
LABELS = ("Review: 'a dull film' \nAnswer: negative\n\nReview: 'a lovely day' \nAnswer: positive\n\n"
          "Review: 'what a mess' \nAnswer: negative\n\nReview: 'great fun'\nAnswer:")
ROWS = [
    row("story", STORY, relevant="Mary likes to bake bread", distractor="Tom likes to paint",
        question="What does Mary like to do?"),
    row("labels", LABELS, first="a dull film", label_1="negative", label_3="negative", last="great fun"),
    row("short", "Input: 3\nOutput: 7\nInput: 5\nOutput:", query="Input: 5"),
]
PLANS = [
    PromptPlan(pool=("relevant", "distractor", END), attend=("relevant", "distractor", "question"),
               reads=(ReadPoint("answer", None, ("bake", "swim"), (" bake bread", " swim in the lake")),)),
    PromptPlan(pool=("first", "last", END), attend=("first", "label_3", "last"),
               reads=(ReadPoint("answer_1", "label_1", ("negative", "positive")),
                      ReadPoint("answer_3", "label_3", ("negative", "positive")),
                      ReadPoint("answer", None, ("negative", "very positive"), (" negative", " very positive")))),
    PromptPlan(pool=("query", END), attend=("query",),
               reads=(ReadPoint("answer", None, ("11", "9"), (" 11", " 9")),)),
]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tiny_family_dir, tokenizer):
    """(family, capturing model, eager model, tokenizer), float32 on CPU."""
    path = tiny_family_dir(request.param)
    captured = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=register()).eval()
    eager = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    return request.param, captured, eager, tokenizer


@pytest.fixture(scope="module")
def extracted(family):
    name, model, _, tokenizer = family
    together = extract(model, tokenizer, ROWS, PLANS, POOLINGS, batch_tokens=10**6, min_efficiency=0.0)
    assert together.stats["batches"] == 1
    return together


def token_offsets(tokenizer, text):
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def span_tokens(offsets, r, name):
    if name == END:
        return len(offsets) - 1, len(offsets)
    span = next(s for s in r["spans"] if s["name"] == name)
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < span["end"] and b > span["start"]]
    return hits[0], hits[-1] + 1


# --------------------------------------------------------------------------- the models are what they claim


def test_families_really_differ_where_it_matters(family):
    name, model, _, tokenizer = family
    cfg = model.config
    assert cfg.model_type in TESTED_MODEL_TYPES and supported_architecture(cfg.to_dict()) is None
    check_loaded(model)
    assert decoder_layers(model) == list(getattr(model.get_decoder(), BLOCKS.get(name, "layers")))
    assert len(decoder_layers(model)) == cfg.num_hidden_layers
    longest = max(len(tokenizer(r["text"])["input_ids"]) for r in ROWS)
    if name == "gemma3":
        assert cfg.sliding_window < longest // 4  # prompts far exceed the window
        assert set(cfg.layer_types) == {"sliding_attention", "full_attention"}
        assert cfg.query_pre_attn_scalar != cfg.head_dim and cfg.final_logit_softcapping
    if name == "gpt2":
        assert hasattr(model.get_decoder(), "wpe")  # absolute positions


# --------------------------------------------------------------------------- pooled spans


def test_pooled_spans_equal_eager_hidden_states(family, extracted):
    name, model, eager, tokenizer = family
    got = {(r["prompt_id"], r["layer"], r["span"], r["pooling"]): torch.tensor(r["vector"])
           for r in extracted.embeddings.to_pylist()}
    base = eager.get_decoder()
    norm = getattr(base, FINAL_NORM.get(name, "norm"))
    setattr(base, FINAL_NORM.get(name, "norm"), torch.nn.Identity())
    try:
        checked = 0
        for r, plan in zip(ROWS, PLANS):
            ids, offsets = token_offsets(tokenizer, r["text"])
            with torch.no_grad():
                out = base(torch.tensor([ids]), output_hidden_states=True)
            states = list(out.hidden_states[:-1]) + [out.last_hidden_state]
            assert len(states) == model.config.num_hidden_layers + 1
            for span in plan.pool:
                a, b = span_tokens(offsets, r, span)
                for layer, hidden in enumerate(states):
                    seg = hidden[0, a:b]
                    for method, vec in {"max": seg.max(0).values, "mean": seg.mean(0), "last": seg[-1]}.items():
                        torch.testing.assert_close(got[(r["prompt_id"], layer, span, method)], vec,
                                                   atol=ATOL, rtol=0, msg=f"{name} {span} {layer} {method}")
                        checked += 1
        assert checked == len(got)
    finally:
        setattr(base, FINAL_NORM.get(name, "norm"), norm)


def test_layer_zero_is_what_the_first_block_reads(family):
    """Gemma scales its embeddings and GPT-2 adds position embeddings: layer 0 is neither
    the raw token embedding nor (for GPT-2) independent of position."""
    name, model, _, tokenizer = family
    ids = torch.tensor([tokenizer("Input: 3\nOutput: 7")["input_ids"]])
    seen = {}
    with torch.no_grad(), pooled_layers(model, lambda layer, h: seen.setdefault(layer, h.clone())):
        model.get_decoder()(ids)
    raw = model.get_input_embeddings().weight[ids[0]]
    if name == "gemma3":
        torch.testing.assert_close(seen[0][0], raw * model.config.hidden_size ** 0.5)
    elif name == "gpt2":
        torch.testing.assert_close(seen[0][0], raw + model.get_decoder().wpe.weight[: ids.shape[1]])
    else:
        torch.testing.assert_close(seen[0][0], raw)


# --------------------------------------------------------------------------- attention mass


def test_attention_mass_equals_eager_weights(family, extracted):
    name, model, eager, tokenizer = family
    got = {(r["prompt_id"], r["layer"], r["head"], r["span"]): r["mass"] for r in extracted.attention.to_pylist()}
    checked, windowed = 0, 0
    for r, plan in zip(ROWS, PLANS):
        ids, offsets = token_offsets(tokenizer, r["text"])
        with torch.no_grad():
            weights = eager(torch.tensor([ids]), output_attentions=True).attentions
        assert len(weights) == model.config.num_hidden_layers
        for layer, w in enumerate(weights, start=1):
            query = w[0, :, len(ids) - 1]  # (H, T)
            for span in plan.attend:
                a, b = span_tokens(offsets, r, span)
                per_head = query[:, a:b].sum(-1)
                if name == "gemma3" and model.config.layer_types[layer - 1] == "sliding_attention" \
                        and b <= len(ids) - model.config.sliding_window:
                    assert float(per_head.abs().max()) == 0.0  # out of the window
                    windowed += 1
                for head in range(-1, per_head.shape[0]):
                    expected = float(per_head.mean()) if head == -1 else float(per_head[head])
                    assert got[(r["prompt_id"], layer, head, span)] == pytest.approx(expected, abs=1e-5), \
                        (name, r["prompt_id"], layer, head, span)
                    checked += 1
    assert checked == len(got) > 0
    assert (windowed > 0) == (name == "gemma3")


def test_attention_is_not_trivially_uniform(family, extracted):
    """The random weights are large enough that scaling and masking change the masses."""
    masses = [r["mass"] for r in extracted.attention.to_pylist() if r["head"] >= 0]
    assert max(masses) - min(masses) > 0.05


# --------------------------------------------------------------------------- readouts


@torch.no_grad()
def scored(model, tokenizer, prefix, continuation):
    """Log-probabilities of the tokens ``continuation`` adds after ``prefix``, from the
    model's own forward (LM head and any logit soft-capping included)."""
    head = tokenizer(prefix)["input_ids"]
    whole = tokenizer(prefix + continuation)["input_ids"]
    assert whole[: len(head)] == head
    logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return [float(logp[j - 1, whole[j]]) for j in range(len(head), len(whole))]


def test_readouts_equal_per_prefix_logprobs(family, extracted):
    name, _, eager, tokenizer = family
    got = {(r["prompt_id"], r["readout"], r["candidate"]): (r["logprob"], r["first_token_logprob"])
           for r in extracted.readouts.to_pylist()}
    checked = 0
    for r, plan in zip(ROWS, PLANS):
        ids, offsets = token_offsets(tokenizer, r["text"])
        spans = {s["name"]: s for s in r["spans"]}
        for point in plan.reads:
            if point.before is None:
                prefix, continuations = r["text"], point.texts
            else:  # read at the token before the span: the gap to the span, then the label
                cut = offsets[span_tokens(offsets, r, point.before)[0] - 1][1]
                prefix = r["text"][:cut]
                continuations = tuple(r["text"][cut: spans[point.before]["start"]] + label for label in point.labels)
            for label, text in zip(point.labels, continuations):
                parts = scored(eager, tokenizer, prefix, text)
                logp, first = got[(r["prompt_id"], point.name, label)]
                assert logp == pytest.approx(sum(parts), abs=1e-3), (name, r["prompt_id"], point.name, label)
                assert first == pytest.approx(parts[0], abs=1e-3)
                checked += 1
    assert checked == len(got)
    # multi-token candidates ran as branch tokens, past the sliding window of Gemma 3
    prepared = prepare_prompts(ROWS, PLANS, tokenizer, None)
    assert prepared[0].sequence.n_branch >= 3
    assert min(prepared[0].sequence.positions[prepared[0].sequence.n_prompt:]) > 8


# --------------------------------------------------------------------------- padding


def test_padded_batch_equals_each_prompt_alone(family, extracted):
    name, model, _, tokenizer = family
    alone = extract(model, tokenizer, ROWS, PLANS, POOLINGS, batch_tokens=1)
    assert alone.stats["batches"] == len(ROWS)
    for table in ("embeddings", "attention", "readouts"):
        a, b = getattr(extracted, table).to_pandas(), getattr(alone, table).to_pandas()
        value = {"embeddings": "vector", "attention": "mass", "readouts": "logprob"}[table]
        keys = [c for c in a.columns if c not in (value, "first_token_logprob")]
        a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
        assert a[keys].equals(b[keys]), table
        diff = (torch.tensor(np.stack(a[value].to_numpy())) - torch.tensor(np.stack(b[value].to_numpy()))).abs().max()
        assert float(diff) <= ATOL, (name, table)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_shift_positions(family, side):
    """Left or right padding with position ids counting real tokens: every prompt's hidden
    states equal its own, unpadded forward (for GPT-2: ``wpe`` is not shifted)."""
    name, model, _, tokenizer = family
    seqs = [tokenizer(r["text"])["input_ids"] for r in ROWS]
    batch = collate(seqs, range(len(seqs)), pad_id=0, side=side)
    spans = SpanIndex.from_lists(range(len(seqs)), batch.offsets, [o + len(s) for o, s in zip(batch.offsets, seqs)])
    padded, alone = {}, {}
    with torch.no_grad():
        with pooled_layers(model, lambda layer, h: padded.setdefault(layer, pool_spans(h, spans, POOLINGS))):
            model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                position_ids=batch.position_ids)
        for b, s in enumerate(seqs):
            one = SpanIndex.from_lists([0], [0], [len(s)])
            with pooled_layers(model, lambda layer, h: alone.setdefault((b, layer), pool_spans(h, one, POOLINGS))):
                model.get_decoder()(input_ids=torch.tensor([s]))
    for (b, layer), value in alone.items():
        torch.testing.assert_close(padded[layer][b], value[0], atol=ATOL, rtol=0)
    if name == "gpt2" and side == "left":  # the test can see a shift: without position ids there is one
        shifted = {}
        with torch.no_grad(), pooled_layers(model, lambda layer, h: shifted.setdefault(layer, h.clone())):
            model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        row = min(range(len(seqs)), key=lambda b: len(seqs[b]))
        first = batch.offsets[row]
        reference = padded_first(model, seqs[row])
        torch.testing.assert_close(padded_first(model, batch.input_ids[row:row + 1], batch.position_ids[row:row + 1],
                                                first), reference)
        assert float((shifted[0][row, first] - reference).abs().max()) > 1e-3


def padded_first(model, seq, positions=None, first=0):
    """Layer-0 state of a sequence's first real token (at index ``first``)."""
    seen = {}
    ids = seq if isinstance(seq, torch.Tensor) else torch.tensor([seq])
    with torch.no_grad(), pooled_layers(model, lambda layer, h: seen.setdefault(layer, h.clone())):
        model.get_decoder()(input_ids=ids, position_ids=positions)
    return seen[0][0, first]


# --------------------------------------------------------------------------- generation


GEN_PROMPTS = ["A: [Heads,", STORY, "Q: Flip a coin ten times.\n\nA: [Heads, Tails, Tails, Heads,"]


@torch.no_grad()
def sample_by_hand(model, tokenizer, request, seed, temperature, n):
    """One sequence, no cache, no padding: the full prefix re-read at every step."""
    ids = tokenizer(request.text)["input_ids"]
    draws = rng(seed, "generation", request.prompt_id, request.sample).random(n)
    out, tokens = "", []
    for step in range(n):
        logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        if temperature > 0:
            token = sample_token(torch.softmax(logits / temperature, dim=-1).numpy(), float(draws[step]))
        else:
            token = int(logits.argmax())
        ids.append(token)
        tokens.append(token)
        if token == tokenizer.eos_token_id:
            break
        out += tokenizer.decode([token])
    return out, len(tokens)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_equals_per_sequence_eager_decoding(family, tiny_family_dir, temperature):
    name, _, eager, tokenizer = family
    model = AutoModelForCausalLM.from_pretrained(tiny_family_dir(name), dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    reqs = [GenerationRequest(f"p{i}", s, text) for i, text in enumerate(GEN_PROMPTS) for s in range(2)]
    got = generate(model, tokenizer, reqs, seed=0, temperature=temperature, max_new_tokens=6, stop="",
                   batch_size=len(reqs))
    for r, g in zip(reqs, got):
        assert (g.text, g.n_tokens) == sample_by_hand(eager, tokenizer, r, 0, temperature, 6), (name, r.prompt_id)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("config, named, reason", [
    ({"model_type": "t5", "is_encoder_decoder": True}, "t5", "encoder-decoder"),
    ({"model_type": "bart", "is_encoder_decoder": True}, "bart", "encoder-decoder"),
    ({"model_type": "mamba"}, "mamba", "attention interface"),
    ({"model_type": "bloom"}, "bloom", "attention interface"),
    ({"model_type": "bert"}, "bert", "bidirectional encoder"),
    ({"model_type": "clip"}, "clip", "no causal language model"),
    ({"model_type": "no-such-model"}, "no-such-model", "unknown to transformers"),
    ({"model_type": "gemma2", "attn_logit_softcapping": 50.0}, "gemma2", "soft-caps attention"),
    ({}, "", "no model_type"),
])
def test_unsupported_architectures_are_refused_by_name(config, named, reason):
    problem = supported_architecture(config)
    assert problem is not None and reason in problem and repr(named) * bool(named) in problem


@pytest.mark.parametrize("model_type", sorted(TESTED_MODEL_TYPES) + ["mistral", "qwen3", "gemma3", "phi3"])
def test_decoder_only_families_are_accepted(model_type):
    assert supported_architecture({"model_type": model_type}) is None
    # Gemma 3 ignores attn_logit_softcapping (transformers never passes it on)
    assert supported_architecture({"model_type": "gemma3_text", "attn_logit_softcapping": 50.0}) is None


def test_config_validation_names_an_unsupported_architecture(tmp_path, default_config, repo, tiny_family_dir):
    model_dir = tmp_path / "seq2seq"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "t5", "is_encoder_decoder": True}))
    cfg = dict(default_config, models=[{"name": "s2s", "path": str(model_dir)}])
    with pytest.raises(ConfigError, match=r"models\[0\]\.path.*'s2s'.*model_type 't5' is an encoder-decoder"):
        validate_config(cfg, root=repo)
    for name in FAMILIES:  # every tested family's saved config passes
        validate_config(dict(default_config, models=[{"name": name, "path": str(tiny_family_dir(name))}]), root=repo)


def test_loaded_model_without_decoder_blocks_is_refused():
    from transformers import LlamaConfig

    class Odd(torch.nn.Module):
        config = LlamaConfig(num_hidden_layers=2)

        def get_decoder(self):
            return torch.nn.Linear(1, 1)

    with pytest.raises(ValueError, match="model_type 'llama'.*decoder blocks"):
        decoder_layers(Odd())


def test_attention_that_bypasses_the_capture_is_refused(tiny_family_dir, tokenizer):
    """A model whose attention never reaches the capturing function (here: loaded with plain
    SDPA) gives no attention mass; the engine says so instead of writing an empty table."""
    from iclscope.errors import ExtractionError

    model = AutoModelForCausalLM.from_pretrained(tiny_family_dir("llama"), dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    with pytest.raises(ExtractionError, match=r"capturing attention saw layers \[\] of 1..2 of model_type 'llama'"):
        extract(model, tokenizer, ROWS[2:], PLANS[2:], POOLINGS, batch_tokens=10**6)
