"""Which model architectures the extraction engine supports, decided from a model's config.

The engine needs a decoder-only causal language model whose attention goes through
transformers' attention interface (so the capturing attention sees every layer's
queries and keys) and whose decoder blocks sit in one module list (so hidden states can
be pooled per layer). The families in :data:`TESTED_MODEL_TYPES` are checked against
plain eager transformers in ``tests/test_architectures.py``; any other causal language
model that meets these requirements is accepted but untested. Everything else is refused
with a message naming the ``model_type``.

Kept free of heavy imports: transformers (and torch) are imported only to look up an
untested ``model_type``.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Mapping

log = logging.getLogger(__name__)

# model_type -> family, each checked against eager transformers in tests/test_architectures.py
TESTED_MODEL_TYPES = {"llama": "Llama", "qwen2": "Qwen2", "gemma3_text": "Gemma 3", "gpt2": "GPT-2"}
# families whose attention ignores ``attn_logit_softcapping`` (transformers never passes it on)
SOFTCAP_IGNORED = {"gemma3", "gemma3_text"}
# attributes of the base model that hold the decoder blocks, tried in order
LAYER_ATTRIBUTES = ("layers", "h")


@lru_cache(maxsize=None)
def _class_problem(model_type: str, is_decoder: bool) -> str | None:
    """Problems of an untested ``model_type`` that transformers' classes reveal."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    version = transformers.__version__
    if model_type not in CONFIG_MAPPING_NAMES:
        return f"model_type {model_type!r} is unknown to transformers {version}"
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if name is None:
        return f"model_type {model_type!r} has no causal language model class in transformers {version}"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not is_decoder:
        return (f"model_type {model_type!r} is a bidirectional encoder (masked language model) and its config "
                "does not set is_decoder; only decoder-only causal language models are supported")
    cls = getattr(transformers, name, None)
    if cls is None:
        return f"model_type {model_type!r}: transformers {version} cannot import {name}"
    if not getattr(cls, "_supports_attention_backend", False):
        return (f"model_type {model_type!r} ({name}) does not route attention through transformers' "
                "attention interface, so attention mass cannot be captured")
    return None


def supported_architecture(config: Mapping[str, Any]) -> str | None:
    """``None`` if the engine supports the model whose ``config.json`` (as a dict) is
    ``config``; otherwise why not, naming the ``model_type``."""
    model_type = config.get("model_type")
    if not model_type:
        return "config.json has no model_type, so its architecture is unknown"
    if config.get("is_encoder_decoder"):
        return (f"model_type {model_type!r} is an encoder-decoder model; "
                "only decoder-only causal language models are supported")
    text = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else {}
    softcap = config.get("attn_logit_softcapping") or text.get("attn_logit_softcapping")
    if softcap and model_type not in SOFTCAP_IGNORED:
        return (f"model_type {model_type!r} soft-caps attention logits (attn_logit_softcapping={softcap}), "
                "which the capturing (SDPA) attention cannot reproduce")
    if model_type in TESTED_MODEL_TYPES:
        return None
    return _class_problem(str(model_type), bool(config.get("is_decoder")))


def check_loaded(model: Any) -> None:
    """Raise ``ValueError`` naming the model_type if a loaded model cannot be extracted."""
    config = model.config
    problem = supported_architecture(config.to_dict())
    if problem is not None:
        raise ValueError(f"unsupported architecture: {problem}")
    decoder_layers(model)  # raises when the blocks cannot be found
    if config.model_type not in TESTED_MODEL_TYPES:
        log.warning("model_type %r is not among the tested families (%s): results are not checked against "
                    "eager transformers for it", config.model_type, ", ".join(TESTED_MODEL_TYPES))


def base_model(model: Any) -> Any:
    """The decoder stack without the LM head (``model.model``, GPT-2's ``transformer`` ...)."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model


def input_device(model: Any) -> Any:
    """Where a forward's inputs go: the device the token embedding runs on. A model
    dispatched with a ``device_map`` (accelerate's hooks; weights may sit on disk or the
    CPU, shown as the ``meta`` device) runs each module on its hook's execution device."""
    import torch

    embedding = model.get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return embedding.weight.device


def decoder_layers(model: Any) -> list[Any]:
    """The decoder blocks of a causal LM, in order (``model.layers``, GPT-2's ``h`` ...).

    Raises ``ValueError`` naming the model_type when no block list is found.
    """
    base = base_model(model)
    n_layers = getattr(model.config, "num_hidden_layers", None)
    for name in LAYER_ATTRIBUTES:
        blocks = getattr(base, name, None)
        if blocks is not None and hasattr(blocks, "__len__") and (n_layers is None or len(blocks) == n_layers):
            return list(blocks)
    model_type = getattr(model.config, "model_type", type(model).__name__)
    raise ValueError(f"unsupported architecture: model_type {model_type!r} ({type(base).__name__}) has none of "
                     f"{list(LAYER_ATTRIBUTES)} holding its {n_layers} decoder blocks")
