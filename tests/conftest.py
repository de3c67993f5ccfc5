"""Shared fixtures: a tiny random Llama model with the embedded tokenizer, built once."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from iclscope.models import embedded_tokenizer

    return embedded_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A 2-layer, 32-wide Llama with the SmolLM2 tokenizer (random weights, no download)."""
    from iclscope.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tokenizer, seed=0)


@pytest.fixture(scope="session")
def prepared_tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after `prepare_model` (as every pipeline job loads it)."""
    from iclscope.models import prepare_model

    out = tmp_path_factory.mktemp("prepared") / "tiny"
    prepare_model({"name": "tiny", "path": str(tiny_model_dir)}, out)
    return out


def tiny_family_config(family: str, tokenizer: Any) -> Any:
    """A tiny config of one architecture family (vocabulary of ``tokenizer``): Llama, Qwen2,
    Gemma 3 (text; 8-token sliding window on layers 1 and 3, query_pre_attn_scalar != head_dim,
    final logit soft-capping) or GPT-2 (absolute position embeddings)."""
    import transformers

    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  tie_word_embeddings=True, initializer_range=0.2)  # peaked attention: scaling and masks matter
    llama_like = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048)
    if family == "llama":
        return transformers.LlamaConfig(num_hidden_layers=2, **llama_like, **common)
    if family == "qwen2":
        return transformers.Qwen2Config(num_hidden_layers=2, **llama_like, **common)
    if family == "gemma3":
        return transformers.Gemma3TextConfig(
            num_hidden_layers=3, head_dim=8, query_pre_attn_scalar=16, sliding_window=8,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            final_logit_softcapping=3.0, **llama_like, **common)
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=1024, **common)
    raise ValueError(f"no tiny config for family {family!r}")


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any):
    """``tiny_family_dir(family)``: a saved tiny random model of that family with the
    SmolLM2 tokenizer (built once per family)."""
    import torch
    from transformers import AutoModelForCausalLM

    built: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in built:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_family_config(family, tokenizer)).eval()
            out = tmp_path_factory.mktemp(f"tiny-{family}") / "model"
            model.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
            built[family] = out
        return built[family]

    return build


@pytest.fixture(scope="session")
def default_config() -> dict[str, Any]:
    with open(REPO / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def small_config(model_path: Path) -> dict[str, Any]:
    """A quick config for whole-pipeline runs on the tiny model: every study, small grids."""
    return {
        "seed": 0,
        "models": [{"name": "tiny", "path": str(model_path), "batch_tokens": 512}],
        "binary": {
            "generation": {"p_tails": [20, 50], "n_samples": 2},
            "judgment": {"concepts": ["01", "011"], "lengths": [2, 8], "n_random": 1},
            "continuation": {"concepts": ["011"], "max_length": 12},
            "analysis": {"n_boot": 100},
        },
        "representations": {
            "regression": {"slopes": [-1, 1], "intercepts": [0, 5], "n_variants": 1, "n_shots": [0, 2]},
            "reading": {"n_names": 4, "n_activities": 4, "n_variants": 2, "n_shots": [0, 1]},
            "analysis": {"n_permutations": 200, "n_boot": 200, "n_shuffles": 20},
        },
        "labels": {
            "datasets": [{"name": "sentiment", "source": "vader", "label_words": ["negative", "positive"]}],
            "conditions": ["default", "flipped", "flip_df"],
            "content_free": ["default", "flipped"],
            "n_examples": 7,  # 2 * flip_at + 1
            "flip_at": 3,
            "repeats": 2,
            "analysis": {"n_boot": 200},
        },
    }


@pytest.fixture
def workdir(tmp_path: Path, tiny_model_dir: Path):
    """A run directory holding config/config.yaml for the tiny model; returns a writer."""

    def write(cfg: dict[str, Any] | None = None) -> Path:
        cfg = copy.deepcopy(cfg if cfg is not None else small_config(tiny_model_dir))
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
        return tmp_path

    return write


BIN = Path(sys.executable).parent


# The tiny model's 32-wide matrix products come out different in the last bit in about one
# process in four when MKL runs them on two threads (measured: 4 of 16 runs of the same
# extraction; never on one thread, never for SmolLM2's 576-wide ones). Runs whose tables
# are compared byte for byte give the model jobs one thread each (two run side by side).
ONE_THREAD_MODEL_JOBS = ("--set-threads", "extract=1", "generate=1")


def snakemake(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``cwd`` (with this environment's commands on PATH;
    a run that is not a dry run gives model jobs one thread, see :data:`ONE_THREAD_MODEL_JOBS`)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    threads = () if "-n" in args or "--dry-run" in args else ONE_THREAD_MODEL_JOBS
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd),
         *threads, *args],
        capture_output=True, text=True, env=env, timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The whole pipeline run once on the tiny model (small config), shared by the test
    modules that read a real run's tables."""
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "config").mkdir()
    (run_dir / "config" / "config.yaml").write_text(yaml.safe_dump(small_config(tiny_model_dir)))
    snakemake("--cores", "2", cwd=run_dir)
    return run_dir
