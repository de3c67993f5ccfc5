"""A model's shape read from its ``config.json`` alone: parameters, FLOPs and bytes.

No weights are needed, so a 70B run can be planned on a laptop. Reference shapes of
models the papers used ship in ``shapes/`` (``llama-2-7b``, ``llama-2-13b``,
``llama-2-70b``: the shape keys of their public ``config.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from iclscope.errors import ModelError

# bytes per element of the dtypes a model runs in
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the cost of a forward depends on (decoder-only transformer)."""

    name: str
    model_type: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    gated_mlp: bool  # three MLP matrices (SwiGLU / GeGLU) instead of two (GPT-2)
    context_length: int | None
    position_table: int = 0  # rows of a learned position embedding (GPT-2); 0 with rotary positions

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str = "") -> "ModelShape":
        """The shape of a Hugging Face ``config.json`` (Llama, Qwen2, Mistral, Gemma 3 and
        other Llama-like configs; GPT-2's ``n_embd``/``n_layer`` names)."""
        cfg = dict(config.get("text_config") or config)  # multimodal configs nest the text model
        model_type = str(cfg.get("model_type", config.get("model_type", "")))
        get = lambda *keys: next((cfg[k] for k in keys if cfg.get(k) is not None), None)  # noqa: E731
        hidden = get("hidden_size", "n_embd", "d_model")
        layers = get("num_hidden_layers", "n_layer", "num_layers")
        heads = get("num_attention_heads", "n_head")
        vocab = get("vocab_size")
        missing = [k for k, v in (("hidden_size", hidden), ("num_hidden_layers", layers),
                                  ("num_attention_heads", heads), ("vocab_size", vocab)) if v is None]
        if missing:
            raise ModelError(f"model config {name or '?'} lacks {', '.join(missing)}: cannot plan its cost")
        gpt2 = model_type == "gpt2" or "n_embd" in cfg
        return cls(
            name=name, model_type=model_type, n_layers=int(layers), hidden=int(hidden), n_heads=int(heads),
            n_kv_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(get("head_dim") or hidden // heads),
            intermediate=int(get("intermediate_size", "n_inner") or 4 * hidden),
            vocab=int(vocab), tied_embeddings=bool(cfg.get("tie_word_embeddings", gpt2)),
            gated_mlp=not gpt2, context_length=get("max_position_embeddings", "n_positions"),
            position_table=int(get("n_positions") or 0) if gpt2 else 0,
        )

    @property
    def attention_width(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """Matrix parameters of one decoder block (q, k, v, o and the MLP)."""
        attention = 2 * self.hidden * self.attention_width + 2 * self.hidden * self.kv_width
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.intermediate
        return attention + mlp

    @property
    def body_params(self) -> int:
        """Parameters every token is multiplied by (the blocks, without embedding or head)."""
        return self.n_layers * self.layer_params

    @property
    def n_params(self) -> int:
        """All parameters (tied embeddings counted once; norms included)."""
        embedding = (self.vocab + self.position_table) * self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        norms = (2 * self.n_layers + 1) * self.hidden
        return self.body_params + embedding + head + norms

    def weight_bytes(self, dtype: str) -> int:
        return self.n_params * DTYPE_BYTES[dtype]

    def linear_flops(self, tokens: float) -> float:
        """Matrix FLOPs of the blocks over ``tokens`` tokens (2 per multiply-add)."""
        return 2.0 * self.body_params * tokens

    def attention_flops(self, pairs: float) -> float:
        """FLOPs of scores and weighted values over ``pairs`` (query, key) pairs per layer."""
        return 4.0 * self.n_layers * self.attention_width * pairs

    def head_flops(self, rows: float) -> float:
        """FLOPs of the LM head at ``rows`` positions."""
        return 2.0 * self.hidden * self.vocab * rows

    def kv_bytes(self, tokens: float, dtype: str) -> float:
        """Bytes of the key/value cache for ``tokens`` cached tokens (every layer)."""
        return 2.0 * self.n_layers * self.kv_width * tokens * DTYPE_BYTES[dtype]


def reference_shapes() -> list[str]:
    """Names of the shipped reference shapes (``iclscope plan --model NAME``)."""
    folder = resources.files("iclscope.planning") / "shapes"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_shape(where: str | Path, name: str = "") -> ModelShape:
    """A shape from a reference name, a ``config.json`` file or a folder holding one (a
    prepared model, a Hugging Face snapshot)."""
    text = None
    if str(where) in reference_shapes():
        text = (resources.files("iclscope.planning") / "shapes" / f"{where}.json").read_text()
        name = name or str(where)
    else:
        path = Path(where)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            known = ", ".join(reference_shapes())
            raise ModelError(f"no model config at {path} (give a config.json, a folder holding one, "
                             f"or a reference shape: {known})")
        text = path.read_text()
        name = name or (path.parent.name if path.name == "config.json" else path.stem)
    try:
        config = json.loads(text)
    except ValueError as err:
        raise ModelError(f"model config {where} is not valid JSON: {err}") from err
    return ModelShape.from_config(config, name)
