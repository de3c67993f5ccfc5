"""Extracted tables read with pandas and xarray, and their layers found again with plain
PyTorch hooks at the module paths docs/outputs.md gives for nnsight and TransformerLens."""

from __future__ import annotations

import re
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from iclscope.config import validate_config
from iclscope.extraction.run import run_extract
from iclscope.interop import (
    embeddings_array, embeddings_frame, hf_block, nnsight_path, transformer_lens_hook,
)
from iclscope.tables import write_table
from iclscope.tasks import build_task, task_params


@pytest.fixture(scope="module")
def extracted(prepared_tiny, default_config, repo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("interop")
    cfg = validate_config(default_config, root=repo)
    table = build_task("reading", task_params("reading", cfg), repo)
    tasks = folder / "tasks.parquet"
    rows = table.to_pylist()[:3]
    write_table(pa.Table.from_pylist(rows, schema=table.schema), tasks, {})
    outs = [str(folder / f"{name}.parquet") for name in ("embeddings", "attention", "readouts")]
    argv, sys.argv = sys.argv, ["iclscope", "extract"]
    try:
        run_extract(str(prepared_tiny), str(tasks), {"device": "cpu", "dtype": "float32", "pooling": ["last", "mean"]},
                    outs)
    finally:
        sys.argv = argv
    return rows, folder / "embeddings.parquet"


def resolve(model, path: str):
    """The module an nnsight path names, and the side (input or output) it reads."""
    body, side = re.fullmatch(r"model\.(.+)\.(input|output\[0\])", path).groups()
    obj = model
    for part in re.findall(r"\w+|\[\d+\]", body):
        obj = obj[int(part[1:-1])] if part.startswith("[") else getattr(obj, part)
    return obj, "input" if side == "input" else "output"


def test_hook_names_follow_the_residual_stream():
    assert [transformer_lens_hook(layer) for layer in range(3)] == [
        "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert nnsight_path(0) == "model.model.layers[0].input"
    assert nnsight_path(3) == "model.model.layers[2].output[0]"
    assert nnsight_path(1, "gpt2") == "model.transformer.h[0].output[0]"
    with pytest.raises(ValueError):
        transformer_lens_hook(-1)


def test_pandas_and_xarray_views_hold_the_same_numbers(extracted):
    import xarray as xr  # a dev dependency: this test must run, not skip
    rows, path = extracted
    frame = embeddings_frame(path, span="end", pooling="last")
    array = embeddings_array(path, "end", "last")
    assert isinstance(array, xr.DataArray) and array.dims == ("prompt_id", "layer", "hidden")
    assert list(array["prompt_id"].values) == sorted(r["prompt_id"] for r in rows)
    assert array.attrs["kind"] == "embeddings" and array.attrs["model"] == "tiny"
    for r in frame.itertuples(index=False):
        np.testing.assert_array_equal(array.sel(prompt_id=r.prompt_id, layer=r.layer).values, r.vector)
    with pytest.raises(ValueError, match="no rows"):
        embeddings_array(path, "end", "median")


def test_every_layer_equals_a_plain_hook_at_the_documented_module(extracted, prepared_tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows, path = extracted
    model = AutoModelForCausalLM.from_pretrained(prepared_tiny, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(prepared_tiny)
    frame = embeddings_frame(path, span="end", pooling="last")  # the prompt's last token
    n_layers = model.config.num_hidden_layers
    assert sorted(frame["layer"].unique()) == list(range(n_layers + 1))
    checked = 0
    for layer in range(n_layers + 1):
        module, side = resolve(model, nnsight_path(layer, model.config.model_type))
        block, block_side = hf_block(model, layer)
        assert module is block and side == block_side
        seen = []
        if side == "input":
            handle = module.register_forward_pre_hook(
                lambda m, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        else:
            handle = module.register_forward_hook(
                lambda m, args, out: seen.append(out[0] if isinstance(out, tuple) else out))
        try:
            for r in rows:
                seen.clear()
                ids = tokenizer(r["text"], return_tensors="pt")["input_ids"]
                with torch.no_grad():
                    model(ids)
                want = frame[(frame["prompt_id"] == r["prompt_id"]) & (frame["layer"] == layer)]["vector"].iloc[0]
                hidden = seen[0][0] if seen[0].dim() == 3 else seen[0]
                torch.testing.assert_close(torch.tensor(want), hidden[-1].float(), atol=1e-4, rtol=1e-4)
                checked += 1
        finally:
            handle.remove()
    assert checked == len(rows) * (n_layers + 1)
