"""Reading iclscope's tables with the tools researchers already use.

A number in ``embeddings.parquet`` can be checked against pandas, xarray, plain PyTorch
hooks, TransformerLens or nnsight. Layer ``l`` of the table is the residual stream:

* ``l = 0``: what the first decoder block reads (token embeddings plus whatever the family
  adds before the blocks: Gemma's sqrt(d) scaling, GPT-2's position embeddings);
* ``l >= 1``: what decoder block ``l - 1`` (0-based) writes, before the final norm.

So layer ``l`` is TransformerLens' ``blocks.{l}.hook_resid_pre`` (for ``l < L``), which
equals ``blocks.{l-1}.hook_resid_post``, and the input of (or output of) a decoder block in
the Hugging Face module tree, which nnsight addresses by the same path. TransformerLens by
default folds layer norms and centres the residual stream's writing weights, which changes
the residual stream: compare against ``HookedTransformer.from_pretrained_no_processing`` (or
``fold_ln=False, center_writing_weights=False, center_unembed=False``).

Kept light: pandas and pyarrow only; xarray is imported when asked for.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from iclscope.tables import read_table, table_metadata

# where a causal LM's decoder blocks sit, by the attribute path of the loaded model
BLOCKS_PATH = {"gpt2": "transformer.h"}
DEFAULT_BLOCKS_PATH = "model.layers"  # Llama, Qwen2, Gemma 3, Mistral, ...


def transformer_lens_hook(layer: int) -> str:
    """TransformerLens hook name holding table layer ``layer`` (the residual stream)."""
    if layer < 0:
        raise ValueError(f"layer must be >= 0, got {layer}")
    return "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


def blocks_path(model_type: str) -> str:
    """Attribute path of the decoder blocks in a Hugging Face causal LM of ``model_type``."""
    return BLOCKS_PATH.get(model_type, DEFAULT_BLOCKS_PATH)


def nnsight_path(layer: int, model_type: str = "llama") -> str:
    """The nnsight expression (on ``LanguageModel(...)``) whose value is table layer ``layer``.

    Layer 0 is the first block's input (its first positional argument), layers 1..L a
    block's output (a decoder block returns a tuple whose first item is the hidden states).
    """
    if layer < 0:
        raise ValueError(f"layer must be >= 0, got {layer}")
    blocks = blocks_path(model_type)
    return f"model.{blocks}[0].input" if layer == 0 else f"model.{blocks}[{layer - 1}].output[0]"


def hf_block(model: Any, layer: int) -> tuple[Any, str]:
    """The decoder block of a loaded Hugging Face model that holds table layer ``layer``, and
    which side of it: ``("input", block 0)`` for layer 0, ``("output", block l-1)`` otherwise.
    Use it to register a plain PyTorch hook (forward pre-hook for the input, forward hook
    for the output)."""
    obj = model
    for attr in blocks_path(getattr(model.config, "model_type", "")).split("."):
        obj = getattr(obj, attr)
    return (obj[0], "input") if layer == 0 else (obj[layer - 1], "output")


def embeddings_frame(path: str | os.PathLike, span: str | None = None, pooling: str | None = None) -> pd.DataFrame:
    """An ``embeddings.parquet`` as a pandas frame, one row per prompt, layer, span and
    pooling with the vector as a numpy array (optionally only one span and pooling)."""
    frame = read_table(path).to_pandas()
    if span is not None:
        frame = frame[frame["span"] == span]
    if pooling is not None:
        frame = frame[frame["pooling"] == pooling]
    frame = frame.sort_values(["prompt_id", "layer", "span", "pooling"]).reset_index(drop=True)
    frame["vector"] = [np.asarray(v, dtype=np.float32) for v in frame["vector"]]
    return frame


def embeddings_array(path: str | os.PathLike, span: str, pooling: str) -> Any:
    """One span and pooling of an ``embeddings.parquet`` as an ``xarray.DataArray`` with dims
    (``prompt_id``, ``layer``, ``hidden``); the table's provenance is in ``attrs``."""
    try:
        import xarray as xr
    except ImportError as err:  # an optional dependency: only this function needs it
        raise ImportError("embeddings_array needs xarray: pip install xarray") from err
    frame = embeddings_frame(path, span, pooling)
    if frame.empty:
        raise ValueError(f"{path}: no rows with span {span!r} and pooling {pooling!r}")
    prompts = sorted(frame["prompt_id"].unique())
    layers = sorted(int(x) for x in frame["layer"].unique())
    width = len(frame["vector"].iloc[0])
    data = np.full((len(prompts), len(layers), width), np.nan, dtype=np.float32)
    p_index = {p: i for i, p in enumerate(prompts)}
    l_index = {l: i for i, l in enumerate(layers)}
    for pid, layer, vector in zip(frame["prompt_id"], frame["layer"], frame["vector"]):
        data[p_index[pid], l_index[int(layer)]] = vector
    attrs = {"span": span, "pooling": pooling, **table_metadata(path)}
    return xr.DataArray(data, dims=("prompt_id", "layer", "hidden"),
                        coords={"prompt_id": prompts, "layer": layers}, name="embedding", attrs=attrs)
