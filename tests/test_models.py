"""Model preparation: the prepared checkpoint is the source model, described by its card."""

from __future__ import annotations

import json

import pytest
import torch

from iclscope.models import (
    ModelError,
    embedded_gguf,
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


@pytest.mark.slow
def test_embedded_model_prepares_to_identical_logits(tmp_path):
    """The real path of the default run: GGUF (dequantised) -> safetensors."""
    cfg = {"name": "smollm2", "embedded": "smollm2-135m-instruct"}
    card = prepare_model(cfg, tmp_path / "smollm2")
    assert card["n_layers"] == 30 and card["hidden_size"] == 576 and card["n_kv_heads"] == 3
    assert 134_000_000 < card["n_parameters"] < 135_000_000
    source, tokenizer = load_source(resolve_source(cfg))
    model, tok, _ = load_prepared(tmp_path / "smollm2", device="cpu")
    torch.testing.assert_close(logits(model, tok), logits(source, tokenizer), rtol=0, atol=0)
