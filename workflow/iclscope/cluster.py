"""A SLURM profile for a particular cluster: the shipped one with an overlay merged over it.

``profiles/slurm/config.yaml`` holds placeholders (partitions, account, the GPU type to
plan for) and requests sized for a real GPU cluster. An overlay names only what a given
cluster changes; everything else stays as shipped, so the profile a cluster runs is the
one the repository tests. ``cluster/onenode/overlay.yaml`` is the overlay of the CI's
one-machine cluster (``make slurm-check``)::

    iclscope cluster-profile --overlay cluster/onenode/overlay.yaml --out build/slurm-ci
    snakemake --profile build/slurm-ci

Only the standard library and PyYAML: no heavy imports.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

PROFILE_FILE = "config.yaml"
# an unfilled value of the shipped profile, e.g. "<gpu-partition>" or "plan={device: <gpu-type>}"
PLACEHOLDER = re.compile(r"<[A-Za-z][A-Za-z0-9_-]*>")


def overlay_profile(shipped: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` merged over ``shipped`` (neither is modified).

    Mappings are merged key by key, recursively (``default-resources``, and
    ``set-resources`` / ``set-threads`` per rule and per resource); any other value (a
    list such as ``config``, a scalar) replaces the shipped one. A key whose overlay value
    is ``null`` is removed (e.g. ``slurm_account`` on a cluster without accounting).
    """
    merged: dict[str, Any] = copy.deepcopy(dict(shipped))
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = overlay_profile(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def placeholders(profile: Mapping[str, Any]) -> list[str]:
    """Where ``profile`` still holds an unfilled ``<...>`` placeholder, as ``key.path: value``."""

    def walk(value: Any, where: str) -> Iterator[str]:
        if isinstance(value, Mapping):
            for key, item in value.items():
                yield from walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, f"{where}[{i}]")
        elif isinstance(value, str) and PLACEHOLDER.search(value):
            yield f"{where}: {value}"

    return list(walk(profile, ""))


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty mapping)."""
    with open(path) as fh:
        data = yaml.safe_load(fh)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of profile keys, got {type(data).__name__}")
    return data


def write_overlay_profile(
    shipped_dir: str | os.PathLike[str], overlay_yaml: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> Path:
    """Write ``out_dir/config.yaml``: the profile in ``shipped_dir`` with ``overlay_yaml``
    merged over it (:func:`overlay_profile`); returns its path.

    Raises ValueError, writing nothing, when a placeholder of the shipped profile is left
    unfilled (Snakemake would pass it on to sbatch as it is).
    """
    shipped_file = Path(shipped_dir) / PROFILE_FILE
    merged = overlay_profile(read_yaml(shipped_file), read_yaml(overlay_yaml))
    left = placeholders(merged)
    if left:
        raise ValueError(f"{overlay_yaml} leaves placeholders of {shipped_file} unfilled: " + "; ".join(left))
    out = Path(out_dir) / PROFILE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Written by `iclscope cluster-profile`: {shipped_file} with {overlay_yaml} merged over it.\n"
        "# Do not edit: change the overlay and write it again.\n"
    )
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(merged, sort_keys=False, default_flow_style=False))
    os.replace(tmp, out)
    return out
