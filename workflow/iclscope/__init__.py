"""iclscope: look inside in-context learning of causal language models.

The package holds all logic of the pipeline; the Snakemake rules only call its CLI
(`iclscope ...`, see :mod:`iclscope.cli`).

The version is declared once, in ``pyproject.toml``; ``iclscope --version`` prints it and
every table records it in its provenance (``iclscope.version``).
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _source_tree_version() -> str:
    """pyproject.toml's version, for a source tree on PYTHONPATH that was never installed
    (a job of the workflow used as a module from a clone, in an environment without it)."""
    import tomllib

    try:
        with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "0.0.0+unknown"


try:
    __version__ = version("iclscope")
except PackageNotFoundError:  # imported from a source tree without installation
    __version__ = _source_tree_version()

__all__ = ["__version__"]
