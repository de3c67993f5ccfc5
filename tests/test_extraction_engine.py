"""The extraction engine end to end: batch invariance, pooled values, attention mass and
readouts against direct (eager, one prompt / one prefix at a time) computations, errors,
and the `run_extract` step with shards and provenance."""

from __future__ import annotations

import json

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from iclscope import provenance
from iclscope.config import validate_config
from iclscope.extraction.attention import register
from iclscope.extraction.engine import ExtractionError, distinct_prompts, extract, prepare_prompts
from iclscope.extraction.plan import END, PromptPlan, plan_for
from iclscope.extraction.run import run_extract
from iclscope.gather import gather
from iclscope.models import load_prepared, read_card
from iclscope.tables import read_table, table_metadata, write_table
from iclscope.tasks import build_task, task_params

POOLINGS = ["max", "mean", "last"]
ATOL = 1e-4


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cfg(default_config, repo):
    """The default config with small grids (few, short prompts of every extracted task);
    shrunk after validation, as the builders take any sizes."""
    c = validate_config(default_config, root=repo)
    c["labels"].update(n_examples=4, flip_at=2, repeats=1, conditions=["default", "flipped"])
    c["binary"]["continuation"].update(concepts=["011"], max_length=6)
    c["binary"]["judgment"].update(concepts=["01"], lengths=[4, 8], n_random=1)
    c["representations"]["reading"].update(n_names=4, n_activities=4, n_variants=2, n_shots=[0, 1])
    c["representations"]["regression"].update(slopes=[-3, 1], intercepts=[-10], n_variants=1, n_shots=[0, 2])
    return c


@pytest.fixture(scope="module")
def task_rows(cfg, repo):
    """Rows of each extracted task, built by the real task builders."""

    def rows(name: str) -> list[dict]:
        return build_task(name, task_params(name, cfg), repo).to_pylist()

    return {name: rows(name) for name in
            ("reading", "regression", "labels_novel", "binary_continuation", "binary_judgment")}


@pytest.fixture(scope="module")
def captured(prepared_tiny):
    model, tokenizer, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu",
                                           attn_implementation=register())
    return model, tokenizer


@pytest.fixture(scope="module")
def eager(prepared_tiny):
    model, _, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation="eager")
    return model


def plans_of(rows):
    return [plan_for(row["task"], row) for row in rows]


def mixed_rows(task_rows):
    """Prompts of every extracted task, of different lengths, in one list."""
    return (task_rows["reading"][:6] + task_rows["regression"] + task_rows["labels_novel"]
            + task_rows["binary_continuation"][:1] + task_rows["binary_judgment"][:2])


# --------------------------------------------------------------------------- references


def token_offsets(tokenizer, text):
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def span_tokens(offsets, start, end):
    """Tokens overlapping characters [start, end) (non-zero-width ones), as [first, last + 1)."""
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    assert hits, (start, end)
    return hits[0], hits[-1] + 1


def char_spans(row):
    return {s["name"]: (s["start"], s["end"]) for s in row["spans"]}


@torch.no_grad()
def scored_continuation(model, tokenizer, prefix, continuation):
    """Log-probabilities of the tokens ``continuation`` adds after ``prefix`` (tokenised
    together), from one eager forward of the whole string: (tokens, [logp per token])."""
    head = tokenizer(prefix)["input_ids"]
    whole = tokenizer(prefix + continuation)["input_ids"]
    assert whole[: len(head)] == head, (prefix[-20:], continuation)
    cand = whole[len(head):]
    hidden = model.model(torch.tensor([whole])).last_hidden_state[0, len(head) - 1 : len(whole) - 1]
    logp = torch.log_softmax(model.lm_head(hidden).float(), dim=-1)  # the head only where needed
    return cand, [float(logp[j, t]) for j, t in enumerate(cand)]


def readout_dict(table):
    return {(r["prompt_id"], r["readout"], r["candidate"]): (r["logprob"], r["first_token_logprob"])
            for r in table.to_pylist()}


def sorted_frame(table, keys):
    return table.to_pandas().sort_values(keys, kind="stable").reset_index(drop=True)


def assert_tables_close(a: pa.Table, b: pa.Table, keys, values, atol=ATOL):
    """Same key rows (after sorting) and values within ``atol``."""
    assert a.num_rows == b.num_rows
    fa, fb = sorted_frame(a, keys), sorted_frame(b, keys)
    pd.testing.assert_frame_equal(fa[keys], fb[keys])
    if not len(fa):
        return
    for column in values:
        va, vb = np.stack(fa[column].to_numpy()), np.stack(fb[column].to_numpy())
        assert float(np.abs(va.astype(np.float64) - vb).max(initial=0.0)) <= atol, column


EMB_KEYS = ["prompt_id", "layer", "span", "pooling"]
ATT_KEYS = ["prompt_id", "layer", "head", "query", "span"]
READ_KEYS = ["prompt_id", "readout", "candidate"]


# --------------------------------------------------------------------------- 1. batch invariance


@pytest.mark.parametrize("branches", [True, False], ids=["with-branches", "padding-mask-only"])
def test_padded_batch_equals_each_prompt_alone(captured, task_rows, branches):
    model, tokenizer = captured
    rows = mixed_rows(task_rows)
    plans = plans_of(rows)
    if not branches:  # no readouts: no branch tokens, the plain padding-mask path
        plans = [dataclasses.replace(p, reads=()) for p in plans]
    # one batch mixing every length (no padding floor), against one batch per prompt
    together = extract(model, tokenizer, rows, plans, POOLINGS, batch_tokens=10**6, max_length=2048,
                       min_efficiency=0.0)
    alone = extract(model, tokenizer, rows, plans, POOLINGS, batch_tokens=1, max_length=2048)
    assert together.stats["batches"] == 1 and alone.stats["batches"] == alone.stats["distinct_prompts"]
    lengths = {len(tokenizer(r["text"])["input_ids"]) for r in rows}
    assert len(lengths) > 3  # a really padded batch

    n_layers = model.config.num_hidden_layers
    n_pooled = sum(len(p.pool) for p in plans)
    assert together.embeddings.num_rows == n_pooled * (n_layers + 1) * len(POOLINGS)
    assert set(together.embeddings.column("layer").to_pylist()) == set(range(n_layers + 1))
    assert_tables_close(together.embeddings, alone.embeddings, EMB_KEYS, ["vector"])

    n_attended = sum(len(p.attend) for p in plans)
    n_heads = model.config.num_attention_heads
    assert together.attention.num_rows == n_attended * n_layers * (n_heads + 1)
    assert set(together.attention.column("head").to_pylist()) == set(range(-1, n_heads))
    assert_tables_close(together.attention, alone.attention, ATT_KEYS, ["mass"])

    n_reads = sum(len(r.labels) for p in plans for r in p.reads)
    assert together.readouts.num_rows == n_reads
    assert_tables_close(together.readouts, alone.readouts, READ_KEYS, ["logprob", "first_token_logprob"])
    if branches:
        prepared = prepare_prompts(rows, plans, tokenizer, None)
        assert any(p.sequence.n_branch for p in prepared)  # branch tokens really were in the batch


def test_tables_follow_the_contract_order(captured, task_rows):
    """Embeddings sorted by layer first; readouts in table order, declared order within a prompt."""
    model, tokenizer = captured
    rows = task_rows["reading"][:4] + task_rows["labels_novel"][:1]
    out = extract(model, tokenizer, rows, plans_of(rows), POOLINGS, batch_tokens=64, max_length=None)
    layers = out.embeddings.column("layer").to_pylist()
    assert layers == sorted(layers)
    read = out.readouts.to_pylist()
    order = [r["prompt_id"] for r in rows]
    assert [r["prompt_id"] for r in read] == sorted((r["prompt_id"] for r in read), key=order.index)
    labels_row = rows[-1]
    mine = [(r["readout"], r["candidate"]) for r in read if r["prompt_id"] == labels_row["prompt_id"]]
    n = len(labels_row["context_class"])
    assert mine == [(f"answer_{i}", w) for i in range(1, n + 1) for w in labels_row["label_words"]]


def test_repeated_prompts_are_computed_once_and_copied(captured, task_rows):
    """Zero-shot regression prompts are the same text under every condition: the engine
    computes each text once and gives every prompt id the same rows, in table order."""
    model, tokenizer = captured
    rows = task_rows["regression"] + task_rows["reading"][:2]
    texts = [r["text"] for r in rows]
    first = {t: rows[texts.index(t)]["prompt_id"] for t in texts}
    repeats = [r["prompt_id"] for r in rows if first[r["text"]] != r["prompt_id"]]
    assert repeats  # the fixture really repeats prompts
    out = extract(model, tokenizer, rows, plans_of(rows), POOLINGS, batch_tokens=10**6)
    assert out.stats["prompts"] == len(rows) and out.stats["distinct_prompts"] == len(set(texts))
    # the distinct prompts alone give the same rows for them (the same batches: exactly)
    distinct = [r for r in rows if first[r["text"]] == r["prompt_id"]]
    alone = extract(model, tokenizer, distinct, plans_of(distinct), POOLINGS, batch_tokens=10**6)
    assert out.stats["real_tokens"] == alone.stats["real_tokens"]
    copy_of = {r["prompt_id"]: first[r["text"]] for r in rows}
    attending = {r["prompt_id"] for r, p in zip(rows, plans_of(rows)) if p.attend}
    for name, keys, values in (("readouts", READ_KEYS, ["logprob", "first_token_logprob"]),
                               ("embeddings", EMB_KEYS, ["vector"]), ("attention", ATT_KEYS, ["mass"])):
        frame = getattr(out, name).to_pandas()
        expected_ids = set(copy_of) if name != "attention" else attending
        assert set(frame["prompt_id"]) == expected_ids, name
        own = pa.Table.from_pandas(frame[frame["prompt_id"].isin(set(copy_of.values()))], preserve_index=False)
        assert_tables_close(own, getattr(alone, name), keys, values, atol=0.0)
        for pid in repeats:  # every repeat's rows are its first occurrence's, renamed
            mine = frame[frame["prompt_id"] == pid].drop(columns="prompt_id").reset_index(drop=True)
            theirs = frame[frame["prompt_id"] == copy_of[pid]].drop(columns="prompt_id").reset_index(drop=True)
            pd.testing.assert_frame_equal(mine.astype(str), theirs.astype(str))
    order = [r["prompt_id"] for r in rows]
    read_ids = out.readouts.column("prompt_id").to_pylist()
    assert read_ids == sorted(read_ids, key=order.index) and set(read_ids) == set(order)


def test_only_identical_text_spans_and_plan_are_merged(task_rows):
    row = task_rows["reading"][0]
    plan = plan_for(row["task"], row)
    same = dict(row, prompt_id="same")
    shifted = dict(row, prompt_id="other-spans", spans=[dict(s, end=s["end"] - 1) for s in row["spans"]])
    fewer_reads = dict(row, prompt_id="other-plan")
    rows = [row, same, shifted, fewer_reads]
    plans = [plan, plan, plan, dataclasses.replace(plan, reads=())]
    computed, copies = distinct_prompts(rows, plans)
    assert computed == [0, 2, 3]
    assert copies == {row["prompt_id"]: [(0, row["prompt_id"]), (1, "same")], "other-spans": [(2, "other-spans")],
                      "other-plan": [(3, "other-plan")]}


# --------------------------------------------------------------------------- 2. pooled values


def test_pooled_values_equal_direct_hidden_states(captured, prepared_tiny, task_rows):
    model, tokenizer = captured
    rows = [task_rows["reading"][1], task_rows["regression"][-1]]
    assert {r["n_shots"] for r in rows} != {0}
    out = extract(model, tokenizer, rows, plans_of(rows), POOLINGS, batch_tokens=10**6)
    got = {(r["prompt_id"], r["layer"], r["span"], r["pooling"]): np.asarray(r["vector"])
           for r in out.embeddings.to_pylist()}
    # the residual stream after each block, before the final norm: a copy without the norm
    plain, _, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation="eager")
    plain.model.norm = torch.nn.Identity()
    n_layers = model.config.num_hidden_layers
    checked = 0
    for row, plan in zip(rows, plans_of(rows)):
        ids, offsets = token_offsets(tokenizer, row["text"])
        with torch.no_grad():
            ref = plain.model(torch.tensor([ids]), output_hidden_states=True)
        states = [ref.hidden_states[layer][0] for layer in range(n_layers)] + [ref.last_hidden_state[0]]
        spans = char_spans(row)
        for name in plan.pool:
            a, b = (len(ids) - 1, len(ids)) if name == END else span_tokens(offsets, *spans[name])
            for layer, hidden in enumerate(states):
                seg = hidden[a:b]
                expected = {"max": seg.max(0).values, "mean": seg.mean(0), "last": seg[-1]}
                for method, vec in expected.items():
                    np.testing.assert_allclose(got[(row["prompt_id"], layer, name, method)], vec.numpy(),
                                               atol=ATOL, rtol=0, err_msg=f"{name} {layer} {method}")
                    checked += 1
    assert checked == len(got)


# --------------------------------------------------------------------------- 3. attention mass


def test_attention_mass_equals_eager_weights(captured, eager, task_rows):
    model, tokenizer = captured
    rows = task_rows["reading"][:4]
    out = extract(model, tokenizer, rows, plans_of(rows), POOLINGS, batch_tokens=10**6)
    got = {(r["prompt_id"], r["layer"], r["head"], r["span"]): r["mass"] for r in out.attention.to_pylist()}
    assert {r["query"] for r in out.attention.to_pylist()} == {END}
    checked = 0
    for row, plan in zip(rows, plans_of(rows)):
        assert {"relevant", "distractor"} <= set(plan.attend)
        ids, offsets = token_offsets(tokenizer, row["text"])
        with torch.no_grad():
            weights = eager.model(torch.tensor([ids]), output_attentions=True).attentions
        spans = char_spans(row)
        for layer, w in enumerate(weights, start=1):
            query = w[0, :, len(ids) - 1]  # (H, T): the end query's rows
            for name in plan.attend:
                a, b = span_tokens(offsets, *spans[name])
                per_head = query[:, a:b].sum(-1)
                for head in range(-1, per_head.shape[0]):
                    expected = float(per_head.mean()) if head == -1 else float(per_head[head])
                    assert got[(row["prompt_id"], layer, head, name)] == pytest.approx(expected, abs=1e-5)
                    checked += 1
    assert checked == len(got)


# --------------------------------------------------------------------------- 4. per-position readouts


def test_per_position_readouts_equal_scoring_each_prefix(captured, eager, task_rows):
    model, tokenizer = captured
    rows = task_rows["labels_novel"] + task_rows["binary_continuation"][:1]
    plans = plans_of(rows)
    # the label words take two tokens: branches carry the label not shown in context
    assert all(len(tokenizer(" " + w)["input_ids"]) == 2 for w in rows[0]["label_words"])
    prepared = prepare_prompts(rows, plans, tokenizer, None)
    assert all(p.sequence.n_branch > 0 for p in prepared[:2])
    got = readout_dict(extract(model, tokenizer, rows, plans, POOLINGS, batch_tokens=10**6).readouts)
    assert len(got) == sum(len(r.labels) for p in plans for r in p.reads)
    checked = 0
    for row, plan in zip(rows, plans):
        _, offsets = token_offsets(tokenizer, row["text"])
        spans = char_spans(row)
        for read in plan.reads:
            start = spans[read.before][0]
            first, _ = span_tokens(offsets, start, spans[read.before][1])
            read_end = offsets[first - 1][1]  # where the read token (the one before the span) ends
            prefix, gap = row["text"][:read_end], row["text"][read_end:start]
            texts = read.texts if read.texts is not None else read.labels
            for label, text in zip(read.labels, texts):
                _, parts = scored_continuation(eager, tokenizer, prefix, gap + text)
                logprob, first_logprob = got[(row["prompt_id"], read.name, label)]
                assert logprob == pytest.approx(sum(parts), abs=ATOL), (row["prompt_id"], read.name, label)
                assert first_logprob == pytest.approx(parts[0], abs=ATOL)
                checked += 1
    assert checked == len(got)


# --------------------------------------------------------------------------- 5. multi-token candidates


def test_multi_token_candidates_are_exact_sums(captured, eager, task_rows):
    model, tokenizer = captured
    rows = task_rows["reading"][:3] + task_rows["regression"]
    got = readout_dict(extract(model, tokenizer, rows, plans_of(rows), POOLINGS, batch_tokens=10**6).readouts)
    lengths = set()
    for row in rows:
        step = max(1, len(row["candidates"]) // 6)  # a spread of the (many) regression candidates
        end = row.get("answer_end", "")  # regression: the candidate and the first token after it
        for label, text in list(zip(row["candidates"], row["candidate_texts"]))[::step]:
            tokens, parts = scored_continuation(eager, tokenizer, row["text"], text + end)
            if end:
                n = len(tokenizer(row["text"] + text)["input_ids"]) - len(tokenizer(row["text"])["input_ids"])
                tokens, parts = tokens[: n + 1], parts[: n + 1]
            lengths.add(len(tokens))
            logprob, first = got[(row["prompt_id"], "answer", label)]
            assert logprob == pytest.approx(sum(parts), abs=ATOL), (row["prompt_id"], label)
            assert first == pytest.approx(parts[0], abs=ATOL)
    assert min(lengths) >= 2 and max(lengths) >= 4  # " bake bread" (2), " -34" + "\n" (4)


# --------------------------------------------------------------------------- 6. initials


def test_initials_readouts_sum_over_vocabulary_tokens(captured, eager, task_rows):
    model, tokenizer = captured
    rows = task_rows["binary_judgment"]
    got = readout_dict(extract(model, tokenizer, rows, plans_of(rows), POOLINGS, batch_tokens=10**6).readouts)
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    sets = {letter: torch.tensor([i for i, t in enumerate(texts) if t.lstrip()[:1].lower() == letter])
            for letter in ("r", "n")}
    for row in rows:
        ids = tokenizer(row["text"])["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(eager(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
        for letter, members in sets.items():
            expected = float(torch.logsumexp(logp[members], dim=0))
            logprob, first = got[(row["prompt_id"], "judgment", letter)]
            assert logprob == pytest.approx(expected, abs=ATOL)
            assert first == logprob
    assert len(got) == 2 * len(rows)


# --------------------------------------------------------------------------- 7. errors


def test_too_long_prompt_names_the_prompt(captured, task_rows):
    model, tokenizer = captured
    short = task_rows["regression"][0]  # "Input: 8\nOutput:" and three shots
    long = task_rows["reading"][1]
    rows = [short, long]
    limit = len(tokenizer(long["text"])["input_ids"]) - 1
    assert len(tokenizer(short["text"])["input_ids"]) < limit
    with pytest.raises(ExtractionError, match=f"prompt {long['prompt_id']!r} has .* more than .* {limit}"):
        extract(model, tokenizer, rows, plans_of(rows), POOLINGS, batch_tokens=4096, max_length=limit)
    # the prompt fits, but not with its candidate branches
    fits = len(tokenizer(long["text"])["input_ids"])
    with pytest.raises(ExtractionError, match=f"prompt {long['prompt_id']!r} with its candidates"):
        extract(model, tokenizer, [long], plans_of([long]), POOLINGS, batch_tokens=4096, max_length=fits)


def test_empty_input_is_an_error(captured):
    model, tokenizer = captured
    with pytest.raises(ExtractionError, match="no prompts"):
        extract(model, tokenizer, [], [], POOLINGS, batch_tokens=4096)


@pytest.mark.parametrize("reads", [True, False], ids=["with-readouts", "pooling-only"])
def test_non_finite_activations_are_an_error(prepared_tiny, tokenizer, task_rows, reads):
    model, _, _ = load_prepared(prepared_tiny, dtype="float32", device="cpu", attn_implementation=register())
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    rows = task_rows["reading"][:2]
    plans = plans_of(rows)
    if not reads:
        plans = [PromptPlan(pool=p.pool) for p in plans]
    with pytest.raises(ExtractionError, match="non-finite") as info:
        extract(model, tokenizer, rows, plans, POOLINGS, batch_tokens=4096, min_efficiency=0.0)
    assert rows[0]["prompt_id"] in str(info.value)


def write_tasks(rows, schema, path):
    write_table(pa.Table.from_pylist(rows, schema=schema), path, {})
    return path


RUN_PARAMS = {"device": "cpu", "dtype": "float32", "batch_tokens": 256, "seed": 0, "pooling": POOLINGS}


def outputs(folder: Path, prefix: str = "") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    return [str(folder / f"{prefix}{name}.parquet") for name in ("embeddings", "attention", "readouts")]


@pytest.mark.parametrize("case", ["too-long", "empty"])
def test_run_extract_failures_leave_no_outputs(prepared_tiny, cfg, repo, tmp_path, case):
    table = build_task("reading", task_params("reading", cfg), repo)
    rows = table.to_pylist()[:3]
    if case == "too-long":
        rows[1]["text"] += " Mary likes to bake bread." * 400  # > 2048 tokens; spans stay valid
        match = f"{rows[1]['prompt_id']!r}.*more than the model's context of 2048"
    else:
        rows = []
        match = "no prompts"
    tasks = write_tasks(rows, table.schema, tmp_path / "tasks.parquet")
    outs = outputs(tmp_path / "out")
    with pytest.raises(ExtractionError, match=match):
        run_extract(str(prepared_tiny), str(tasks), RUN_PARAMS, outs)
    assert not any(Path(o).exists() for o in outs)
    assert list((tmp_path / "out").iterdir()) == []  # no temporary files either


def test_run_extract_needs_one_output_per_table(prepared_tiny, cfg, repo, tmp_path):
    table = build_task("regression", task_params("regression", cfg), repo)
    tasks = write_tasks(table.to_pylist(), table.schema, tmp_path / "tasks.parquet")
    with pytest.raises(ExtractionError, match="outputs must be one each of"):
        run_extract(str(prepared_tiny), str(tasks), RUN_PARAMS, outputs(tmp_path)[:2])


# --------------------------------------------------------------------------- 8. shards


@pytest.fixture(scope="module")
def sharded_run(prepared_tiny, cfg, repo, tmp_path_factory):
    """The reading task (7 prompts) extracted whole, as shards 0 and 1 of 2, and gathered."""
    tmp = tmp_path_factory.mktemp("shards")
    table = build_task("reading", task_params("reading", cfg), repo)
    tasks = write_tasks(table.to_pylist()[:7], table.schema, tmp / "tasks.parquet")
    whole = outputs(tmp / "whole")
    stats = run_extract(str(prepared_tiny), str(tasks), RUN_PARAMS, whole)
    shards = [outputs(tmp / f"shard{k}") for k in range(2)]
    shard_stats = [run_extract(str(prepared_tiny), str(tasks), RUN_PARAMS, shards[k], shard=k, n_shards=2)
                   for k in range(2)]
    gathered = outputs(tmp / "gathered")
    gather(shards[0] + shards[1], gathered)  # each output takes the shard files of its name
    return {"whole": whole, "shards": shards, "gathered": gathered, "stats": stats, "shard_stats": shard_stats}


def test_sharded_run_gathers_to_the_unsharded_tables(sharded_run):
    assert sharded_run["stats"]["prompts"] == 7
    # every other batch of the unsharded plan: the shards' prompts add up, each has some
    assert sum(s["prompts"] for s in sharded_run["shard_stats"]) == 7
    assert all(s["prompts"] > 0 for s in sharded_run["shard_stats"])
    keys_values = [(EMB_KEYS, ["vector"]), (ATT_KEYS, ["mass"]), (READ_KEYS, ["logprob", "first_token_logprob"])]
    for j, (keys, values) in enumerate(keys_values):
        a, b = read_table(sharded_run["whole"][j]), read_table(sharded_run["gathered"][j])
        assert a.schema.remove_metadata() == b.schema.remove_metadata()
        assert a.num_rows > 0
        assert_tables_close(a, b, keys, values)
        if "layer" in a.column_names:
            layers = b.column("layer").to_pylist()
            assert layers == sorted(layers)
        shard_ids = [set(read_table(s[j]).column("prompt_id").to_pylist()) for s in sharded_run["shards"]]
        assert not shard_ids[0] & shard_ids[1]
        assert shard_ids[0] | shard_ids[1] == set(a.column("prompt_id").to_pylist())


def test_extracted_tables_carry_provenance(sharded_run, prepared_tiny):
    card = read_card(prepared_tiny)
    assert len(card["weights_sha256"]) == 64
    whole, shards = sharded_run["whole"], sharded_run["shards"]
    for j, name in enumerate(("embeddings", "attention", "readouts")):
        for path, shard in [(whole[j], "1/1"), (shards[0][j], "1/2"), (shards[1][j], "2/2")]:
            meta = table_metadata(path)
            assert meta["weights_sha256"] == card["weights_sha256"], path
            assert meta["task"] == "reading"
            assert meta["config_hash"] == provenance.config_hash(RUN_PARAMS)
            assert meta["kind"] == name
            assert meta["shard"] == shard


def test_each_job_records_its_throughput_and_the_gathered_table_does_not(sharded_run):
    """A job's tables carry its speed against its compute bound; a gathered table, which must
    not depend on timings, leaves it out."""
    for shard, paths in zip(("1/2", "2/2"), sharded_run["shards"]):
        records = [json.loads(table_metadata(p)["throughput"]) for p in paths]
        assert all(r == records[0] for r in records)  # the same job: one record on its three tables
        r = records[0]
        assert r["shard"] == shard and r["task"] == "reading" and r["threads"] >= 1
        assert r["prompt_tokens"] > 0 and r["seconds"] > 0 and r["gemm_peak"] > 0 and r["flops"] > 0
        assert r["tokens_per_s"] == pytest.approx(r["prompt_tokens"] / r["seconds"])
        assert r["mfu"] == pytest.approx(r["flops"] / r["seconds"] / r["gemm_peak"])
        assert r["bound_ratio"] == pytest.approx(r["seconds"] / (r["flops"] / r["gemm_peak"]))
        assert r["write_seconds"] is None  # written after the provenance was: the log's record has it
    for path in sharded_run["gathered"]:
        assert "throughput" not in table_metadata(path)


def test_gathered_tables_keep_the_provenance(sharded_run, prepared_tiny):
    card = read_card(prepared_tiny)
    first = sharded_run["shards"][0]
    for j, path in enumerate(sharded_run["gathered"]):
        meta = table_metadata(path)
        assert meta["shard"] == "gathered"  # not the count: the same table whatever `shards`
        assert meta.get("weights_sha256") == card["weights_sha256"], (path, sorted(meta))
        assert meta.get("task") == "reading"
        assert meta.get("config_hash") == provenance.config_hash(RUN_PARAMS)
        # what depends on the split or the job's speed, and the data's checksums
        split = ("shard", "command", "stats", "throughput", "column_sha256")
        assert {k: v for k, v in meta.items() if k not in split} == {
            k: v for k, v in table_metadata(first[j]).items() if k not in split}
        # the shard-independent counts are the sums over the shards
        stats = [json.loads(table_metadata(s[j])["stats"]) for s in sharded_run["shards"]]
        assert json.loads(meta["stats"]) == {
            k: sum(s[k] for s in stats) for k in ("prompts", "real_tokens")}
        assert "--shard" not in meta["command"] and "shards/" not in meta["command"]


def test_cuda_out_of_memory_halves_the_batch_and_retries(caplog):
    """A CUDA OOM splits the batch in two and retries each half (down to one prompt);
    other errors, and OOM on the CPU, propagate."""
    import torch

    from iclscope.extraction.engine import _run_with_retry

    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return f"ran {len(batch)}"

    with caplog.at_level("WARNING"):
        results = _run_with_retry(run, list(range(5)), torch.device("cuda"))
    assert [r for _, r in results] == ["ran 2", "ran 1", "ran 2"]
    assert [list(b) for b, _ in results] == [[0, 1], [2], [3, 4]]  # order kept
    assert calls == [5, 2, 3, 1, 2]
    assert "retrying as 2 + 3" in caplog.text
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _run_with_retry(run, list(range(5)), torch.device("cpu"))

    def broken(batch):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        _run_with_retry(broken, [0, 1], torch.device("cuda"))
