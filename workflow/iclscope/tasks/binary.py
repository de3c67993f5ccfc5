"""Study A task builders: coin-flip sequences (Bigelow et al., arXiv 2310.17639).

Each builder takes ``cfg = config["binary"]`` and the global seed and returns a task
table (see :mod:`iclscope.tasks.common`) with these extra columns (schemas:
:data:`iclscope.contracts.BINARY_GENERATION_TASK`, ``BINARY_JUDGMENT_TASK``, ``BINARY_CONTINUATION_TASK``):

=====================  ==========================================================
task                   extra columns
=====================  ==========================================================
binary_generation      p_tails (float64), system (string, nullable)
binary_judgment        concept, length (int32), sample (int32), flips, variant (int32),
                       symbols (list<str>)
binary_continuation    concept, rotation (int32), length (int32), flips, max_depth (int32),
                       symbols (list<str>), variant (int32)
=====================  ==========================================================

Judgment and continuation prompts come in replicate variants that change what should not
matter: every symbol pair (``binary.symbols`` first, then ``binary.replicates.symbols``)
with every prompt template (the task's ``prompt``, then its ``prompt_variants``); variant
``v`` = pair index x templates + template index. They are the units a transition's
interval resamples: a judgment concept's curve has one unit per variant (``sample`` = the
variant), a continuation concept's one per (rotation, variant); the judgment's random
controls are units themselves (sample s is written in variant s mod the variants).

Flips are strings of ``'0'``/``'1'``; flip 0 is written ``symbols[0]`` (default
``Heads``), flip 1 ``symbols[1]`` (``Tails``), joined by ``separator`` (``", "``).
Judgment and continuation prompts carry a ``sequence`` span over the rendered flips
and a ``flip_{t}`` span (t = 1..length) over each written symbol.

"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pyarrow as pa

from iclscope.config import with_defaults
from iclscope import contracts
from iclscope.contracts import flip_name
from iclscope.seeding import rng
from iclscope.tasks.common import Piece, TaskError, fill_template, join_pieces, task_table

RANDOM_CONCEPT = "random"



# --------------------------------------------------------------------------- flips


def render_flips(flips: str, symbols: Sequence[str], separator: str) -> str:
    """Write a 0/1 string as symbols, e.g. ``"01"`` -> ``"Heads, Tails"``."""
    return flip_piece(flips, symbols, separator).text


def flip_piece(flips: str, symbols: Sequence[str], separator: str) -> Piece:
    """The rendered flips with a ``flip_{t}`` span (t = 1..len(flips)) over each symbol."""
    if not set(flips) <= {"0", "1"}:
        raise TaskError(f"flips must contain only '0' and '1', got {flips!r}")
    pieces = [Piece(symbols[int(f)]).named(flip_name(t)) for t, f in enumerate(flips, start=1)]
    return join_pieces(pieces, separator)


def repeat_concept(concept: str, length: int, rotation: int = 0) -> str:
    """The concept started at phase ``rotation`` and repeated/cropped to ``length`` flips.

    >>> repeat_concept("011", 7, rotation=1)
    '1101101'
    """
    if not concept:
        raise TaskError("a concept must not be empty")
    r = rotation % len(concept)
    rotated = concept[r:] + concept[:r]
    return (rotated * (length // len(concept) + 1))[:length]


def is_primitive(concept: str) -> bool:
    """True when ``concept`` is not a repetition of a shorter string (``"0101"`` is)."""
    return (concept + concept).find(concept, 1) == len(concept)


def canonical_rotation(concept: str) -> str:
    """The lexicographically smallest phase rotation: equal for concepts that are rotations
    of each other (``"100"``, ``"010"`` and ``"001"`` all give ``"001"``).

    >>> canonical_rotation("110")
    '011'
    """
    if not concept:
        raise TaskError("a concept must not be empty")
    return min(concept[r:] + concept[:r] for r in range(len(concept)))


def rotation_duplicates(concepts: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs ``(earlier, later)`` of ``concepts`` that are phase rotations of each other (identical
    ones included), in order of the later one. Once a curve is averaged or summed over phase
    rotations such a pair is one concept measured twice."""
    first: dict[str, str] = {}
    pairs = []
    for c in concepts:
        key = canonical_rotation(c)
        if key in first:
            pairs.append((first[key], c))
        else:
            first[key] = c
    return pairs


# --------------------------------------------------------------------------- config


def _symbols(cfg: Mapping[str, Any]) -> tuple[tuple[str, str], str]:
    """Validated ``(symbols, separator)``."""
    separator = cfg["separator"]
    if not isinstance(separator, str):
        raise TaskError(f"binary.separator must be a string, got {separator!r}")
    return _pair(cfg["symbols"], separator, "binary.symbols"), separator


def _pair(symbols: Any, separator: str, key: str) -> tuple[str, str]:
    if (
        not isinstance(symbols, (list, tuple))
        or len(symbols) != 2
        or not all(isinstance(s, str) and s for s in symbols)
    ):
        raise TaskError(f"{key} must be two non-empty strings, got {symbols!r}")
    if symbols[0] == symbols[1]:
        raise TaskError(f"{key} must differ, got two times {symbols[0]!r}")
    for s in symbols:
        # a separator inside a symbol would make the rendered sequence ambiguous
        if separator and separator in s:
            raise TaskError(f"{key}: {s!r} contains the separator {separator!r}")
    return symbols[0], symbols[1]


def replicate_variants(cfg: Mapping[str, Any], task: str) -> list[tuple[int, tuple[str, str], str]]:
    """``(variant, symbols, template)`` of every replicate of ``task`` (``judgment`` or
    ``continuation``): each symbol pair (``binary.symbols``, then the distinct pairs of
    ``binary.replicates.symbols``) with each template (``binary.<task>.prompt``, then
    ``binary.<task>.prompt_variants``)."""
    cfg = with_defaults("binary", cfg)
    (first, separator) = _symbols(cfg)
    pairs = [first]
    for k, pair in enumerate((cfg.get("replicates") or {}).get("symbols", [])):
        checked = _pair(pair, separator, f"binary.replicates.symbols[{k}]")
        if checked not in pairs:
            pairs.append(checked)
    task_cfg = cfg[task]
    templates = [task_cfg["prompt"], *task_cfg.get("prompt_variants", [])]
    for k, template in enumerate(templates[1:]):
        if not isinstance(template, str) or "{flips}" not in template:
            raise TaskError(f"binary.{task}.prompt_variants[{k}] must be a template with {{flips}}, got {template!r}")
    return [(i * len(templates) + j, pair, template)
            for i, pair in enumerate(pairs) for j, template in enumerate(templates)]


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TaskError(f"{key} must be a positive integer, got {value!r}")
    return value


def _lengths(values: Any, key: str) -> list[int]:
    if not isinstance(values, (list, tuple)) or not values:
        raise TaskError(f"{key} must be a non-empty list of positive integers, got {values!r}")
    lengths = [_positive_int(v, key) for v in values]
    if len(set(lengths)) != len(lengths):
        raise TaskError(f"{key} has duplicate lengths: {values!r}")
    return lengths


def _concepts(values: Any, key: str, rotations: bool = False) -> list[str]:
    """Validated concepts; with ``rotations`` (curves averaged over phase rotations) concepts
    that are rotations of each other are refused too, naming both."""
    if not isinstance(values, (list, tuple)) or not values:
        raise TaskError(f"{key} must be a non-empty list of 0/1 strings, got {values!r}")
    for c in values:
        if not isinstance(c, str) or not c or not set(c) <= {"0", "1"}:
            raise TaskError(f"{key}: concept {c!r} must be a non-empty string of '0' and '1'")
        if not is_primitive(c):
            # the number of phases of a concept is its length only for primitive ones
            raise TaskError(f"{key}: concept {c!r} repeats a shorter concept; give that one")
    if len(set(values)) != len(values):
        raise TaskError(f"{key} has duplicate concepts: {values!r}")
    if rotations:
        for a, b in rotation_duplicates(values):
            raise TaskError(
                f"{key}: concepts {a!r} and {b!r} are phase rotations of each other, hence one concept "
                "once curves are averaged over rotations; keep one of them"
            )
    return list(values)


def _p_grid(values: Any, key: str) -> list[float]:
    if not isinstance(values, (list, tuple)) or not values:
        raise TaskError(f"{key} must be a non-empty list of percentages, got {values!r}")
    grid = []
    for p in values:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100:
            raise TaskError(f"{key}: {p!r} is not a percentage in [0, 100]")
        grid.append(float(p))
    if len(set(grid)) != len(grid):
        raise TaskError(f"{key} has duplicate values: {values!r}")
    return grid


# --------------------------------------------------------------------------- builders


def build_generation(cfg: Mapping[str, Any], seed: int) -> pa.Table:
    """A1: one prompt per p(Tails) in ``cfg["generation"]["p_tails"]`` (percent).

    ``seed`` is unused (sampling happens at generation time) but kept for a uniform
    builder signature. Extra columns: ``p_tails`` (float64), ``system`` (nullable
    string, the instruct models' system line). One span, ``prompt``, over the text.
    """
    cfg = with_defaults("binary", cfg)
    (heads, tails), _ = _symbols(cfg)
    gen = cfg["generation"]
    grid = _p_grid(gen["p_tails"], "binary.generation.p_tails")
    records = []
    for p in grid:
        values = {"p_tails": f"{p:g}", "p_heads": f"{100 - p:g}", "heads": heads, "tails": tails}
        prompt = fill_template(gen["prompt"], values, "binary.generation.prompt")
        if not prompt.text:
            raise TaskError("binary.generation.prompt must not be empty")
        system = gen["system"]
        if system is not None:
            system = fill_template(system, values, "binary.generation.system").text
        records.append(
            {
                "prompt_id": f"binary_generation:p_tails={p:g}",
                "task": "binary_generation",
                "condition": f"p_tails={p:g}",
                "n_shots": 0,
                "text": prompt.text,
                "spans": list(prompt.named("prompt").spans),
                "p_tails": p,
                "system": system,
            }
        )
    return task_table(records, contracts.BINARY_GENERATION_TASK)


def random_flips(seed: int, length: int, sample: int) -> str:
    """A fair Bernoulli control of ``length`` flips, seeded by length and sample index."""
    draws = rng(seed, "binary_judgment", RANDOM_CONCEPT, length, sample).integers(0, 2, size=length)
    return "".join(str(int(d)) for d in draws)


def _flip_prompt(
    template: str, flips: str, symbols: Sequence[str], separator: str, key: str
) -> Piece:
    """The prompt with ``{flips}`` rendered, spans ``sequence`` and ``flip_{t}``."""
    values = {
        "flips": flip_piece(flips, symbols, separator),
        "heads": symbols[0],
        "tails": symbols[1],
    }
    return fill_template(template, values, key, spans={"flips": "sequence"})


def build_judgment(cfg: Mapping[str, Any], seed: int) -> pa.Table:
    """A3: each concept repeated to each length in every replicate variant, plus
    ``n_random`` Bernoulli(0.5) controls per length (concept ``"random"``).

    Extra columns: ``concept``, ``length`` (int32), ``sample`` (int32; a concept's variant,
    a control's draw), ``flips`` (0/1 string), ``variant`` (int32), ``symbols``. Condition =
    concept. Spans ``sequence`` and ``flip_{t}``.
    """
    cfg = with_defaults("binary", cfg)
    _, separator = _symbols(cfg)
    variants = replicate_variants(cfg, "judgment")
    jud = cfg["judgment"]
    concepts = _concepts(jud["concepts"], "binary.judgment.concepts")
    lengths = _lengths(jud["lengths"], "binary.judgment.lengths")
    n_random = jud["n_random"]
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise TaskError(
            f"binary.judgment.n_random must be a non-negative integer, got {n_random!r}"
        )
    # a concept's units are its variants (sample = variant); a random control is a unit itself
    items = [(c, L, v, v, repeat_concept(c, L)) for c in concepts for L in lengths for v, _, _ in variants]
    items += [
        (RANDOM_CONCEPT, L, s, s % len(variants), random_flips(seed, L, s))
        for L in lengths for s in range(n_random)
    ]
    records = []
    for concept, length, sample, variant, flips in items:
        _, symbols, template = variants[variant]
        prompt = _flip_prompt(template, flips, symbols, separator, "binary.judgment.prompt")
        records.append(
            {
                "prompt_id": f"binary_judgment:{concept}:L{length:04d}:s{sample:02d}",
                "task": "binary_judgment",
                "condition": concept,
                "n_shots": 0,
                "text": prompt.text,
                "spans": list(prompt.spans),
                "concept": concept,
                "length": length,
                "sample": sample,
                "flips": flips,
                "variant": variant,
                "symbols": list(symbols),
            }
        )
    return task_table(records, contracts.BINARY_JUDGMENT_TASK)


def build_continuation(cfg: Mapping[str, Any], seed: int) -> pa.Table:
    """A4: each concept at each phase rotation in every replicate variant, repeated to
    ``max_length`` flips.

    The analysis averages (and sums) over phase rotations, so concepts that are rotations of
    each other are refused (:func:`rotation_duplicates`).

    One teacher-forced pass over a row gives the next-flip conditional at every
    position, hence the continuation curve for every |x| <= max_length at once.
    ``seed`` is unused (nothing is random) but kept for a uniform signature.

    Extra columns: ``concept``, ``rotation`` (int32), ``length`` (int32, = max_length),
    ``flips``, ``max_depth`` (int32), ``symbols`` (list<str>: how 0 and 1 are written,
    the candidates read before every flip), ``variant`` (int32). Condition = concept.
    Spans ``sequence``, ``flip_{t}``.
    """
    cfg = with_defaults("binary", cfg)
    _, separator = _symbols(cfg)
    variants = replicate_variants(cfg, "continuation")
    con = cfg["continuation"]
    concepts = _concepts(con["concepts"], "binary.continuation.concepts", rotations=True)
    max_length = _positive_int(con["max_length"], "binary.continuation.max_length")
    max_depth = _positive_int(con["max_depth"], "binary.continuation.max_depth")
    records = []
    for concept in concepts:
        for rotation in range(len(concept)):
            flips = repeat_concept(concept, max_length, rotation)
            for variant, symbols, template in variants:
                prompt = _flip_prompt(template, flips, symbols, separator, "binary.continuation.prompt")
                records.append(
                    {
                        "prompt_id": f"binary_continuation:{concept}:r{rotation:02d}:v{variant:02d}",
                        "task": "binary_continuation",
                        "condition": concept,
                        "n_shots": 0,
                        "text": prompt.text,
                        "spans": list(prompt.spans),
                        "concept": concept,
                        "rotation": rotation,
                        "length": max_length,
                        "flips": flips,
                        "max_depth": max_depth,
                        "symbols": list(symbols),
                        "variant": variant,
                    }
                )
    return task_table(records, contracts.BINARY_CONTINUATION_TASK)
