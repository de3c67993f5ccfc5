"""Randomness metrics of binary sequences (study A2).

A sequence is a 1-D array of 0/1 integers or, where a function says so, a string of the
characters "0" and "1". Every function is pure and deterministic.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_WINDOWS = range(5, 26)


def as_flips(x: np.ndarray | Sequence[int] | str) -> np.ndarray:
    """Validate a sequence and return it as a 1-D int8 array of 0/1.

    ``x``: a 0/1 array-like of shape (n,) or a string of "0"/"1" characters.
    Raises ValueError naming the offending value otherwise.
    """
    if isinstance(x, str):
        bad = set(x) - {"0", "1"}
        if bad:
            raise ValueError(f"flips string must contain only '0' and '1', got {sorted(bad)} in {x[:40]!r}")
        return np.frombuffer(x.encode("ascii"), dtype=np.uint8).astype(np.int8) - ord("0")
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"flips must be 1-D, got shape {arr.shape}")
    ok = (arr == 0) | (arr == 1)  # cheaper than np.isin, which dominates on many short sequences
    if not ok.all():
        raise ValueError(f"flips must be 0/1, got values {np.unique(arr[~ok])[:5].tolist()}")
    return arr.astype(np.int8)


def to_string(x: np.ndarray | Sequence[int] | str) -> str:
    """The "0101" string of a sequence (validated)."""
    return "".join("01"[v] for v in as_flips(x))


def _as_str(flips: str) -> str:
    if not isinstance(flips, str):
        raise TypeError(f"expected a '0'/'1' string, got {type(flips).__name__}")
    as_flips(flips)  # validates the characters
    return flips


def mean(x: np.ndarray | str) -> float:
    """Fraction of ones; NaN for an empty sequence."""
    arr = as_flips(x)
    return float(arr.mean()) if arr.size else float("nan")


def alternation_rate(x: np.ndarray | str) -> float:
    """p_A = mean over t of |x_t - x_{t+1}|; NaN with fewer than two flips (no transition)."""
    arr = as_flips(x)
    if arr.size < 2:
        return float("nan")
    return float(np.abs(np.diff(arr)).mean())


def longest_run(x: np.ndarray | str) -> int:
    """Length of the longest block of equal consecutive flips (0 for an empty sequence)."""
    arr = as_flips(x)
    if arr.size == 0:
        return 0
    # run boundaries are where the value changes; run lengths are the gaps between them
    edges = np.flatnonzero(np.diff(arr)) + 1
    bounds = np.concatenate(([0], edges, [arr.size]))
    return int(np.diff(bounds).max())


def gzip_length(flips: str) -> int:
    """Bytes of gzip.compress of the ASCII "0101" string (compresslevel 9, mtime 0: deterministic).

    Includes gzip's fixed header and trailer (:data:`GZIP_EMPTY` bytes for the empty string), which
    dominate for short sequences; :func:`gzip_net` subtracts them.
    """
    return len(gzip.compress(_as_str(flips).encode("ascii"), compresslevel=9, mtime=0))


# bytes gzip writes for the empty string: 10 header + 2 empty deflate block + 8 trailer
GZIP_EMPTY = len(gzip.compress(b"", compresslevel=9, mtime=0))


def gzip_net(flips: str) -> int:
    """Compressed length net of gzip's fixed overhead: ``gzip_length(flips) - gzip_length("")``.

    0 for the empty string; with the header and trailer removed, what is left grows with the
    sequence's information (a constant string stays near 1-3 bytes, a random one near n / 8).
    """
    return gzip_length(flips) - GZIP_EMPTY


def running_average_stats(x: np.ndarray | str) -> tuple[float, float, float]:
    """(std, min, max) over t = 1..n of the running mean (x_1 + ... + x_t) / t.

    The std is the population std (ddof=0). All NaN for an empty sequence.
    """
    arr = as_flips(x)
    if arr.size == 0:
        nan = float("nan")
        return nan, nan, nan
    running = np.cumsum(arr, dtype=float) / np.arange(1, arr.size + 1)
    return float(running.std()), float(running.min()), float(running.max())


def repeated_substrings(flips: str, window: int) -> int | None:
    """Number of length-``window`` windows whose substring already occurred at an earlier start.

    With s = flips, the windows are s[i:i+window] for i = 0..n-window. A window at i counts when
    s[j:j+window] == s[i:i+window] for some j < i (overlap allowed). Hence the count equals
    (number of windows) - (number of distinct windows). ``None`` (missing, not 0) when
    window >= n: fewer than two windows fit, so nothing can repeat and a count would carry no
    information about the sequence.
    """
    s = _as_str(flips)
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    n_windows = len(s) - window + 1
    if n_windows < 2:
        return None
    distinct = {s[i : i + window] for i in range(n_windows)}
    return n_windows - len(distinct)


def _codes(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)


def _edit_distance_batch(a: np.ndarray, b: np.ndarray, substitution_cost: int) -> np.ndarray:
    """Edit distances of P string pairs at once: ``a`` (P, n) and ``b`` (P, m) codes -> (P,).

    Row-by-row dynamic programme over a, vectorised over pairs and over the row.
    """
    n_pairs, m = b.shape
    cols = np.arange(m + 1)
    prev = np.broadcast_to(cols, (n_pairs, m + 1)).copy()
    tmp = np.empty_like(prev)
    for i in range(a.shape[1]):
        cost = np.where(b == a[:, i : i + 1], 0, substitution_cost)
        # best of deletion (prev[j] + 1) and substitution/match (prev[j-1] + cost)
        tmp[:, 0] = i + 1
        np.minimum(prev[:, 1:] + 1, prev[:, :-1] + cost, out=tmp[:, 1:])
        # insertions chain along the row: new[j] = min over k <= j of tmp[k] + (j - k)
        prev = np.minimum.accumulate(tmp - cols, axis=1) + cols
    return prev[:, -1]


def edit_distance(a: str, b: str, substitution_cost: int = 1) -> int:
    """Levenshtein distance (insert/delete cost 1, substitution ``substitution_cost``).

    substitution_cost=2 gives the indel distance (a substitution = delete + insert).
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    return int(_edit_distance_batch(_codes(a)[None, :], _codes(b)[None, :], substitution_cost)[0])


def _ratio(dist: np.ndarray | int, len_a: int, len_b: int, kind: str) -> np.ndarray | float:
    denom = max(len_a, len_b) if kind == "normalized" else len_a + len_b
    return 1.0 - np.asarray(dist) / denom if denom else np.ones_like(np.asarray(dist), dtype=float)


def _substitution_cost(kind: str) -> int:
    if kind not in ("normalized", "indel"):
        raise ValueError(f"levenshtein kind must be 'normalized' or 'indel', got {kind!r}")
    return 1 if kind == "normalized" else 2


def levenshtein_ratio(a: str, b: str, kind: str = "normalized") -> float:
    """Similarity in [0, 1] of two strings (1 = identical; two empty strings give 1).

    kind="normalized": 1 - levenshtein(a, b) / max(len(a), len(b)) (unit substitution cost).
    kind="indel": the python-Levenshtein ``ratio``, 1 - indel(a, b) / (len(a) + len(b)) where a
    substitution costs 2.
    """
    dist = edit_distance(a, b, _substitution_cost(kind))
    return float(_ratio(dist, len(a), len(b), kind))


def mean_pairwise_levenshtein(seqs: Sequence[str], kind: str = "normalized") -> float:
    """Mean ``levenshtein_ratio`` over all unordered pairs i < j of ``seqs`` (NaN with < 2 seqs).

    High values mean sequences of one condition resemble each other (memorisation). Pairs of
    equal lengths are computed in one batch (the usual case: sequences cropped to one length).
    """
    seqs = list(seqs)
    sub = _substitution_cost(kind)
    if len(seqs) < 2:
        return float("nan")
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        by_len.setdefault(len(s), []).append(i)
    codes = {n: np.stack([_codes(seqs[i]) for i in idx]) if n else None for n, idx in by_len.items()}
    ratios: list[np.ndarray] = []
    for (n_a, idx_a), (n_b, idx_b) in itertools.combinations_with_replacement(sorted(by_len.items()), 2):
        if n_a == n_b:
            pairs = np.array(list(itertools.combinations(range(len(idx_a)), 2)), dtype=int).reshape(-1, 2)
        else:
            pairs = np.array(list(itertools.product(range(len(idx_a)), range(len(idx_b)))), dtype=int)
        if len(pairs) == 0:
            continue
        if min(n_a, n_b) == 0:
            dist = np.full(len(pairs), max(n_a, n_b))
        else:
            # the longer string drives the rows (n_b >= n_a after sorting)
            dist = _edit_distance_batch(codes[n_b][pairs[:, 1]], codes[n_a][pairs[:, 0]], sub)
        ratios.append(np.broadcast_to(_ratio(dist, n_a, n_b, kind), (len(pairs),)))
    return float(np.concatenate(ratios).mean())


def sequence_metrics(flips: str, windows: Iterable[int] = DEFAULT_WINDOWS) -> dict[str, float | int | None]:
    """All per-sequence metrics of one "0101" string.

    Keys: mean, alternation, longest_run, gzip_net (:func:`gzip_net`, bytes net of gzip's
    fixed overhead), running_std, running_min, running_max, and repeats_w{w} for every w in
    ``windows`` (default 5..25; ``None`` where w >= len(flips), see :func:`repeated_substrings`).
    """
    s = _as_str(flips)
    arr = as_flips(s)
    r_std, r_min, r_max = running_average_stats(arr)
    out: dict[str, float | int | None] = {
        "mean": mean(arr),
        "alternation": alternation_rate(arr),
        "longest_run": longest_run(arr),
        "gzip_net": gzip_net(s),
        "running_std": r_std,
        "running_min": r_min,
        "running_max": r_max,
    }
    for w in windows:
        out[f"repeats_w{w}"] = repeated_substrings(s, w)
    return out
