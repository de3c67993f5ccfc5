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
    sample_tokens,
)
from iclscope.extraction.constrained import generate_constrained
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
        ("[Heads, Tails] and then [Tails, Heads]", HT, ("01", True)),  # the list the text opens, not a later one
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
        # the list is the one the prompt opened: a "[" the model writes is an item's text
        (PROMPT, " [Tails, Heads]", "", "0", False, 0, False),
        (PROMPT, " 49.5% [Tails]", "", "0", False, 0, False),
        (PROMPT, " Tails, Each flip is [random]", "1", "0", False, 1, False),
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


def test_sampling_every_row_at_once_draws_each_rows_token():
    """The batched draw is the per-row draw, token for token (the same float64 running sums),
    on peaked and flat rows, zero-probability entries and uniforms at the edges."""
    import torch

    generator = np.random.default_rng(1)
    rows = [generator.dirichlet(np.full(3000, alpha)).astype(np.float32) for alpha in (0.01, 0.3, 5.0)] * 4
    rows[0][:100] = 0.0
    probs = np.stack(rows)
    draws = [0.0, 0.9999999, *generator.random(len(rows) - 2)]
    expected = [sample_token(p, u) for p, u in zip(probs, draws)]
    assert sample_tokens(torch.from_numpy(probs), draws) == expected
    assert len(set(expected)) > 3  # the rows draw different tokens: the test can tell rows apart


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


# --------------------------------------------------------------------------- constrained sampling

CONSTRAINED_PROMPT = ("Q: Generate a sequence of 1000 random samples from a weighted coin, with 70% probability of "
                      "Heads and 30% probability of Tails.\n\nA: [Heads,")


def piece_logp(model, tokenizer, prefix: str, piece: str) -> float:
    """log P(piece | prefix) from one plain forward over prefix + piece (tokens in context)."""
    head = tokenizer(prefix, add_special_tokens=True)["input_ids"]
    whole = tokenizer(prefix + piece, add_special_tokens=True)["input_ids"]
    assert whole[:len(head)] == head
    with torch.no_grad():
        logp = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return sum(float(logp[len(head) - 1 + k, t]) for k, t in enumerate(whole[len(head):]))


def test_constrained_sequences_are_well_formed_and_reach_n_flips(tiny):
    model, tokenizer = tiny
    reqs = [GenerationRequest("a", s, CONSTRAINED_PROMPT) for s in range(3)] + [GenerationRequest("b", 0, "Go: [")]
    got = generate_constrained(model, tokenizer, reqs, seed=0, temperature=1.0, n_flips=7, symbols=HT,
                               separator=", ")
    for r, g in zip(reqs, got):
        assert len(g.flips) == 7 and set(g.flips) <= {"0", "1"} and g.logp.shape == (7, 2)
        parsed = parse_generation(r.text, g.text + "]", HT)  # the list holds exactly the sampled flips
        assert parsed.flips == g.flips and parsed.parsed and parsed.clean and parsed.n_clean == 7
    assert got[3].text.startswith(HT[int(got[3].flips[0])])  # after "[" no blank opens the first item
    assert got[0].text.startswith(" ")


@pytest.mark.parametrize("symbols", [HT, ["yes", "no"]])
def test_constrained_probabilities_equal_a_per_prefix_forward(tiny, symbols):
    """Each step's recorded log P(symbol | prefix) is the product over the symbol's tokens in
    context (" Tails" is two tokens for this tokenizer) of a plain forward's probabilities."""
    model, tokenizer = tiny
    reqs = [GenerationRequest("a", 0, CONSTRAINED_PROMPT), GenerationRequest("b", 1, "Short: [Heads,")]
    got = generate_constrained(model, tokenizer, reqs, seed=3, temperature=1.0, n_flips=5, symbols=symbols,
                               separator=", ")
    for r, g in zip(reqs, got):
        text = r.text
        for t in range(5):
            base = text + ("" if t == 0 else ",")
            for j, symbol in enumerate(symbols):
                assert g.logp[t, j] == pytest.approx(piece_logp(model, tokenizer, base, " " + symbol), abs=1e-4)
            text = base + " " + symbols[int(g.flips[t])]
        assert text == r.text + g.text
        assert g.p_second == pytest.approx(np.exp(g.logp[:, 1]) / np.exp(g.logp).sum(axis=1))


def test_constrained_sampling_is_seeded_and_independent_of_the_batch(tiny):
    model, tokenizer = tiny
    reqs = [GenerationRequest(pid, s, prompt) for pid, prompt in (("a", CONSTRAINED_PROMPT), ("b", "Hi [Heads,"))
            for s in range(3)]
    kwargs = dict(seed=5, temperature=1.0, n_flips=6, symbols=["yes", "no"], separator=", ")
    whole = generate_constrained(model, tokenizer, reqs, batch_size=8, **kwargs)
    apart = generate_constrained(model, tokenizer, reqs[::-1], batch_size=2, **kwargs)[::-1]
    assert [g.flips for g in whole] == [g.flips for g in apart]
    for a, b in zip(whole, apart):
        np.testing.assert_allclose(a.logp, b.logp, atol=1e-4)


def test_constrained_flips_follow_the_recorded_probabilities(tiny_family_dir):
    """Pearson's chi-square of the sampled second symbols against the recorded
    probabilities, over 3200 steps binned by probability (a peaked tiny model, fixed seed)."""
    from scipy.stats import chi2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_family_dir("llama")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reqs = [GenerationRequest(f"p{k}", s, f"Round {k}: [yes,") for k in range(4) for s in range(40)]
    got = generate_constrained(model, tokenizer, reqs, seed=11, temperature=1.0, n_flips=20, symbols=["yes", "no"],
                               separator=", ", batch_size=40)
    p = np.concatenate([g.p_second for g in got])
    x = np.concatenate([[int(c) for c in g.flips] for g in got])
    assert 0.05 < p.mean() < 0.95 and p.std() > 0.05  # probabilities that vary: a test with teeth
    edges = np.quantile(p, np.linspace(0, 1, 9))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 7)
    stat = 0.0
    for b in range(8):
        expected, n = p[bins == b].sum(), (bins == b).sum()
        observed = x[bins == b].sum()
        stat += (observed - expected) ** 2 / expected + ((n - observed) - (n - expected)) ** 2 / (n - expected)
    assert chi2.sf(stat, df=8) > 0.01, stat


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
              "generation": {"n_samples": 2, "temperature": 1.0, "max_new_tokens": 8, "n_flips": 4,
                             "modes": ["constrained", "free"]},
              "symbols": ["Heads", "Tails"], "separator": ", "}
    out = tmp_path / "generations.parquet"
    run_generate(str(prepared_tiny), str(tasks), params, str(out))
    got = read_table(out)
    assert got.schema.names == contracts.GENERATIONS.names
    assert got.schema.remove_metadata() == contracts.GENERATIONS
    every = got.to_pylist()
    assert [r["mode"] for r in every] == ["constrained"] * 4 + ["free"] * 4
    for r in every[:4]:  # constrained: n_flips flips, well formed, per-step probabilities
        assert len(r["flips"]) == 4 and r["parsed"] and r["clean"] and r["n_clean"] == 4 and r["forced_flips"] == "0"
        assert len(r["step_logp_first"]) == len(r["step_logp_second"]) == len(r["step_p_second"]) == 4
        assert r["raw"].startswith(" ") and r["n_tokens"] > 4
    rows = every[4:]
    assert all(r["step_p_second"] == [] for r in rows)
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
