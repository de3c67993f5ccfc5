"""Sampling for study A1: flip parsing, inverse-CDF draws, seeded batch-independent
generation, greedy decoding against a by-hand loop, chat prompts and `run_generate`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from iclscope import contracts
from iclscope.config import validate_config
from iclscope.extraction.generation import (
    GenerationRequest,
    chat_text,
    generate,
    parse_flips,
    parse_generation,
    sample_token,
)
from iclscope.extraction.run import run_generate
from iclscope.models import load_prepared
from iclscope.tables import read_table, table_metadata, write_table
from iclscope.tasks import build_task, task_params

HT = ["Heads", "Tails"]

# --------------------------------------------------------------------------- parse_flips


@pytest.mark.parametrize(
    "text, symbols, expected",
    [
        ("[Heads, Tails, Heads]", HT, ("010", True)),
        ("[Heads, Tails, Heads,]", HT, ("010", True)),  # trailing comma before the bracket
        ("A: [Heads, Tails,", HT, ("01", False)),  # trailing comma, list still open
        ("[Heads, Tails, Heads", HT, ("010", False)),  # unclosed
        ("[Heads, Banana, Tails]", HT, ("0", False)),  # parsing stops at the bad item
        ("[Heads,, Tails]", HT, ("0", False)),  # an empty item does not parse
        ("[heads,tails ,  TAILS]", HT, ("011", True)),  # first letter, any case and spacing
        ("[H, T, Tai", HT, ("011", False)),  # a cut-off item still has its first letter
        ("[Heads, Tails] and then [Tails, Heads]", HT, ("10", True)),  # the last list counts
        ("[Heads, Tails] trailing text", HT, ("01", True)),
        ("[]", HT, ("", True)),
        ("no list at all", HT, ("", False)),
        ("[0, 1, 1, 0]", ["0", "1"], ("0110", True)),
        ("[0, 1, 2]", ["0", "1"], ("01", False)),
        ("[Tops, Tails, Tops]", ["Tops", "Tails"], ("010", True)),  # shared first letter: exact
        ("[Tops, T, Tails]", ["Tops", "Tails"], ("0", False)),
    ],
)
def test_parse_flips(text, symbols, expected):
    assert parse_flips(text, symbols) == expected
    # with an empty prompt nothing is forced and parse_generation reads the same flips
    got = parse_generation("", text, symbols)
    assert (got.flips, got.parsed, got.forced_flips) == (*expected, "")


PROMPT = "Q: Generate ... of Tails.\n\nA: [Heads,"


@pytest.mark.parametrize(
    "prompt, generated, flips, forced, parsed, n_clean, clean",
    [
        (PROMPT, " Tails, Heads, Tails]", "101", "0", True, 3, True),  # the prompt's Heads is forced
        (PROMPT, " tails, Heads, Tai", "101", "0", False, 0, False),  # first letter keeps them; strict none
        (PROMPT, " Tails, Heads, Tai", "101", "0", False, 2, False),  # cut off by max_new_tokens
        (PROMPT, " Tails, Heads, Tails,", "101", "0", False, 3, True),  # open list, every item clean
        (PROMPT, " Tails, Banana, Tails]", "1", "0", False, 1, False),
        (PROMPT, "]", "", "0", True, 0, True),
        ("A: [He", "ads, Tails]", "1", "0", True, 1, True),  # an item the prompt started is forced
        (PROMPT, " [Tails, Heads]", "10", "", True, 2, True),  # the model opened a new list
        ("A: [", "Heads, Tails]", "01", "", True, 2, True),
    ],
)
def test_parse_generation_separates_forced_flips_and_counts_clean_items(
    prompt, generated, flips, forced, parsed, n_clean, clean
):
    got = parse_generation(prompt, generated, HT)
    assert (got.flips, got.forced_flips, got.parsed, got.n_clean, got.clean) == (
        flips, forced, parsed, n_clean, clean)
    full, full_parsed = parse_flips(prompt + generated, HT)
    assert got.forced_flips + got.flips == full and got.parsed == full_parsed


# --------------------------------------------------------------------------- sample_token


def inverse_cdf(probs, u):
    """The first token whose cumulative probability exceeds u (of the total)."""
    total = float(np.sum(probs, dtype=np.float64))
    acc = 0.0
    for i, p in enumerate(probs):
        acc += float(p)
        if acc > u * total:
            return i
    return len(probs) - 1


def test_sample_token_is_the_inverse_cdf():
    probs = np.array([0.1, 0.0, 0.2, 0.3, 0.4], dtype=np.float32)
    for u in (0.0, 0.05, 0.0999, 0.1001, 0.2999, 0.3001, 0.5999, 0.6001, 0.9999):
        assert sample_token(probs, u) == inverse_cdf(probs, u), u
    assert [sample_token(probs, u) for u in (0.0999, 0.1001)] == [0, 2]  # never the zero-probability one
    generator = np.random.default_rng(0)
    for _ in range(200):
        p = generator.dirichlet(np.full(50, 0.3)).astype(np.float32)
        u = float(generator.random())
        assert sample_token(p, u) == inverse_cdf(p, u)
    # unnormalised probabilities are scaled by their total
    assert sample_token(np.array([1.0, 1.0, 2.0]), 0.49) == 1
    # frequencies follow the distribution
    draws = [sample_token(probs, u) for u in generator.random(20000)]
    freq = np.bincount(draws, minlength=5) / len(draws)
    np.testing.assert_allclose(freq, probs, atol=0.015)


# --------------------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def tiny(prepared_tiny):
    model, tokenizer, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation="sdpa")
    return model, tokenizer


PROMPTS = [
    "A: [Heads,",
    "Q: Generate a sequence of 1000 random samples from a weighted coin.\n\nA: [Heads, Tails,",
    "x",
    "Q: Flip a coin ten times.\n\nA: [",
]


def requests(n_samples=2):
    return [GenerationRequest(f"p{i}", s, text) for i, text in enumerate(PROMPTS) for s in range(n_samples)]


def test_generation_is_seeded_and_independent_of_the_batch(tiny):
    model, tokenizer = tiny
    reqs = requests()
    kwargs = {"temperature": 1.0, "max_new_tokens": 10}
    batched = generate(model, tokenizer, reqs, seed=0, batch_size=8, **kwargs)
    assert [(g.prompt_id, g.sample) for g in batched] == [(r.prompt_id, r.sample) for r in reqs]
    assert generate(model, tokenizer, reqs, seed=0, batch_size=8, **kwargs) == batched
    alone = generate(model, tokenizer, reqs, seed=0, batch_size=1, **kwargs)
    assert [(g.text, g.n_tokens, g.stopped) for g in alone] == [(g.text, g.n_tokens, g.stopped) for g in batched]
    mixed = generate(model, tokenizer, reqs, seed=0, batch_size=3, **kwargs)
    assert mixed == batched
    # samples of one prompt differ, and another seed gives other draws
    assert batched[0].text != batched[1].text
    other = generate(model, tokenizer, reqs, seed=1, batch_size=8, **kwargs)
    assert [g.text for g in other] != [g.text for g in batched]
    for g in batched:
        assert 1 <= g.n_tokens <= 10
        assert "]" not in g.text or g.text.index("]") == len(g.text) - 1  # nothing after the stop


def test_generation_stops_at_the_stop_string(tiny):
    model, tokenizer = tiny
    reqs = requests()
    kwargs = {"seed": 3, "temperature": 1.0, "batch_size": 8}
    full = generate(model, tokenizer, reqs, max_new_tokens=8, stop="", **kwargs)
    assert all(g.n_tokens == 8 and not g.stopped for g in full)
    # a stop string the sequences do contain: two characters from the middle of one
    middle = len(full[0].text) // 2
    stop = full[0].text[middle : middle + 2]
    stopped = generate(model, tokenizer, reqs, max_new_tokens=8, stop=stop, **kwargs)
    assert any(g.stopped for g in stopped)
    for whole, cut in zip(full, stopped):
        if stop in whole.text:
            assert cut.stopped
            assert cut.text == whole.text[: whole.text.index(stop) + len(stop)]
            assert cut.n_tokens <= whole.n_tokens
        else:
            assert cut == whole


@torch.no_grad()
def greedy_by_hand(model, tokenizer, text, n):
    ids = tokenizer(text)["input_ids"]
    out, tokens = "", 0
    for _ in range(n):
        token = int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax())
        ids.append(token)
        tokens += 1
        if token == tokenizer.eos_token_id:
            break
        out += tokenizer.decode([token])
    return out, tokens


def test_greedy_equals_argmax_decoding_by_hand(tiny, prepared_tiny):
    model, tokenizer = tiny
    eager, _, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation="eager")
    reqs = requests(n_samples=1)
    got = generate(model, tokenizer, reqs, seed=0, temperature=0.0, max_new_tokens=5, stop="", batch_size=8)
    for r, g in zip(reqs, got):
        assert (g.text, g.n_tokens) == greedy_by_hand(eager, tokenizer, r.text, 5), r.text


# --------------------------------------------------------------------------- chat_text


def test_chat_text_applies_the_template_with_a_system_line(tokenizer):
    assert tokenizer.chat_template
    prompt = "Q: Generate a sequence of coin flips.\n\nA: [Heads,"
    system = "Answer only with Heads and Tails."
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": "Q: Generate a sequence of coin flips."}],
        tokenize=False, add_generation_prompt=True) + "[Heads,"
    got = chat_text(tokenizer, prompt, system)
    assert got == expected
    assert got.startswith("<|im_start|>system\n" + system) and got.endswith("<|im_start|>assistant\n[Heads,")
    # without an answer marker the whole prompt is the user turn
    assert chat_text(tokenizer, "Just a question", system).endswith("Just a question<|im_end|>\n<|im_start|>assistant\n")
    # without a system line the prompt is used as written
    assert chat_text(tokenizer, prompt, None) == prompt
    assert chat_text(tokenizer, prompt, "") == prompt


# --------------------------------------------------------------------------- run_generate


def test_run_generate_writes_the_generations_table(prepared_tiny, default_config, repo, tmp_path, tokenizer):
    cfg = validate_config(default_config, root=repo)
    cfg["binary"]["generation"]["p_tails"] = [20, 50]
    table = build_task("binary_generation", task_params("binary_generation", cfg), repo)
    tasks = tmp_path / "tasks.parquet"
    write_table(table, tasks, {})
    params = {"runtime": {"device": "cpu", "seed": 0, "batch_tokens": 512},
              "generation": {"n_samples": 2, "temperature": 1.0, "max_new_tokens": 8},
              "symbols": ["Heads", "Tails"]}
    out = tmp_path / "generations.parquet"
    run_generate(str(prepared_tiny), str(tasks), params, str(out))
    got = read_table(out)
    assert got.schema.names == contracts.GENERATIONS.names
    assert got.schema.remove_metadata() == contracts.GENERATIONS
    rows = got.to_pylist()
    task_rows = table.to_pylist()
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(t["prompt_id"], s) for t in task_rows for s in range(2)]
    assert [r["p_tails"] for r in rows] == [20.0, 20.0, 50.0, 50.0]
    by_id = {t["prompt_id"]: t for t in task_rows}
    for r in rows:
        assert 1 <= r["n_tokens"] <= 8
        full = parse_flips(by_id[r["prompt_id"]]["text"] + r["raw"], HT)
        # the prompt opens the list with "[Heads,": that flip is forced, not the model's
        assert r["forced_flips"] == "0" and (r["forced_flips"] + r["flips"], r["parsed"]) == full
        p = parse_generation(by_id[r["prompt_id"]]["text"], r["raw"], HT)
        assert (r["n_clean"], r["clean"]) == (p.n_clean, p.clean) and 0 <= r["n_clean"] <= len(r["flips"])
    # the raw texts are what `generate` samples from the chat-templated prompts
    model, _, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation="sdpa")
    reqs = [GenerationRequest(t["prompt_id"], s, chat_text(tokenizer, t["text"], t["system"]))
            for t in task_rows for s in range(2)]
    assert all(t["system"] for t in task_rows) and reqs[0].text.startswith("<|im_start|>system")
    # the table stores exactly what the model read, which is not the task's text here
    assert [r["rendered_prompt"] for r in rows] == [q.text for q in reqs]
    assert all(r["rendered_prompt"] != by_id[r["prompt_id"]]["text"] for r in rows)
    expected = generate(model, tokenizer, reqs, seed=0, temperature=1.0, max_new_tokens=8, stop="]")
    assert [r["raw"] for r in rows] == [g.text for g in expected]
    assert [r["n_tokens"] for r in rows] == [g.n_tokens for g in expected]
    meta = table_metadata(out)
    assert meta["kind"] == "generations" and meta["seed"] == "0" and len(meta["weights_sha256"]) == 64


def test_run_generate_refuses_an_empty_task_table(prepared_tiny, default_config, repo, tmp_path):
    from iclscope.extraction.engine import ExtractionError

    cfg = validate_config(default_config, root=repo)
    table = build_task("binary_generation", task_params("binary_generation", cfg), repo)
    tasks = tmp_path / "tasks.parquet"
    write_table(table.slice(0, 0), tasks, {})
    out = tmp_path / "generations.parquet"
    params = {"runtime": {"device": "cpu"}, "generation": {"n_samples": 1, "temperature": 1.0, "max_new_tokens": 2}}
    with pytest.raises(ExtractionError, match="no prompts"):
        run_generate(str(prepared_tiny), str(tasks), params, str(out))
    assert not out.exists()
    assert isinstance(table, pa.Table)
