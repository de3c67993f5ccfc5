"""Relative-depth bands: layers of models of different depth line up by layer / n_layers."""

from __future__ import annotations

# relative depth bands (layer / n_layers, 0 = embedding output): models of different depth line up
DEPTH_BANDS = (("early", 0.0, 1 / 3), ("middle", 1 / 3, 2 / 3), ("late", 2 / 3, 1.0 + 1e-9))


def depth_band(layer: int, n_layers: int) -> str:
    """The relative-depth band (early/middle/late) of ``layer`` in a model of ``n_layers``
    (layers 0..n_layers, 0 = the embedding output)."""
    rel = layer / max(n_layers, 1)
    for name, low, high in DEPTH_BANDS:
        if low <= rel < high:
            return name
    raise ValueError(f"layer {layer} outside 0..{n_layers}")


def band_centre(name: str) -> float:
    """The relative depth at the middle of band ``name``."""
    for band, low, high in DEPTH_BANDS:
        if band == name:
            return (low + min(high, 1.0)) / 2
    raise ValueError(f"unknown depth band {name!r}; known: {[b for b, _, _ in DEPTH_BANDS]}")
