"""Representational similarity analysis for study B (B4).

Embeddings of prompts are averaged per condition, standardised over conditions, and turned into a
condition x condition cosine similarity matrix. A hypothesis matrix marks which condition pairs
share a task component (same slope, same name, ...). Alignment is the Spearman correlation of the
two matrices' upper triangles; its significance comes from permuting condition labels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

# Permutation statistics within this of the observed one count as ">=": the vectorised path and
# scipy compute the same number by different float operations.
_TIE_TOL = 1e-12


def _sorted_labels(conditions: Sequence[Hashable]) -> list[Hashable]:
    unique = set(conditions)
    try:
        return sorted(unique)  # type: ignore[type-var]
    except TypeError:
        # mixed, unorderable types: fall back to a deterministic order by repr
        return sorted(unique, key=repr)


def condition_means(vectors: np.ndarray, conditions: Sequence[Hashable]) -> tuple[list[Hashable], np.ndarray]:
    """Average the prompts of each condition.

    ``vectors``: (n_prompts, d); ``conditions``: n_prompts hashable labels (repeated prompts of
    one condition share a label). Returns (labels, means): the labels sorted (by ``repr`` when they
    cannot be ordered) and means of shape (n_cond, d) in that order.
    """
    vectors = np.asarray(vectors, dtype=float)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n_prompts, d), got shape {vectors.shape}")
    if len(conditions) != vectors.shape[0]:
        raise ValueError(f"conditions has {len(conditions)} labels but vectors has {vectors.shape[0]} rows")
    labels = _sorted_labels(conditions)
    index = {label: i for i, label in enumerate(labels)}
    codes = np.fromiter((index[c] for c in conditions), dtype=int, count=len(conditions))
    sums = np.zeros((len(labels), vectors.shape[1]))
    np.add.at(sums, codes, vectors)
    counts = np.bincount(codes, minlength=len(labels))
    return labels, sums / counts[:, None]


def similarity_matrix(means: np.ndarray) -> np.ndarray:
    """Cosine similarity between conditions after z-scoring each feature over conditions.

    ``means``: (n_cond, d). Each column is centred and divided by its (population) standard
    deviation; a zero-variance feature becomes 0 rather than NaN. Rows that end up all zero have
    similarity 0 with everything (themselves included) rather than NaN. Returns (n_cond, n_cond).
    """
    means = np.asarray(means, dtype=float)
    if means.ndim != 2:
        raise ValueError(f"means must be 2-D (n_cond, d), got shape {means.shape}")
    centred = means - means.mean(axis=0, keepdims=True)
    std = centred.std(axis=0, keepdims=True)
    # standardising stops a few high-variance features (e.g. massive activations) dominating
    z = np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    unit = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    return unit @ unit.T


def hypothesis_matrix(conditions: Sequence[Mapping[str, Any]], field: str) -> np.ndarray:
    """1.0 where two conditions share the value of ``field``, else 0.0 (diagonal is 1).

    ``conditions``: n_cond mappings, e.g. ``{"slope": 1, "intercept": 0}``. Returns (n_cond, n_cond).
    """
    values = []
    for i, cond in enumerate(conditions):
        try:
            values.append(cond[field])
        except KeyError:
            raise ValueError(
                f"unknown hypothesis field {field!r} in condition {i}; available: {sorted(cond)}"
            ) from None
    n = len(values)
    hyp = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            hyp[i, j] = float(values[i] == values[j])
    return hyp


def upper_triangle(m: np.ndarray) -> np.ndarray:
    """Entries above the diagonal (k=1) of a square matrix, row-major: shape (n*(n-1)/2,)."""
    m = np.asarray(m)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {m.shape}")
    return m[np.triu_indices(m.shape[0], k=1)]


def _check_pair(sim: np.ndarray, hyp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sim = np.asarray(sim, dtype=float)
    hyp = np.asarray(hyp, dtype=float)
    if sim.shape != hyp.shape:
        raise ValueError(f"sim has shape {sim.shape} but hyp has shape {hyp.shape}")
    upper_triangle(sim)  # validates squareness
    return sim, hyp


def alignment(sim: np.ndarray, hyp: np.ndarray) -> float:
    """Spearman correlation of the upper triangles of ``sim`` and ``hyp`` (both (n_cond, n_cond)).

    NaN when either triangle is constant (or has fewer than two entries).
    """
    sim, hyp = _check_pair(sim, hyp)
    a, b = upper_triangle(sim), upper_triangle(hyp)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def permutation_test(
    sim: np.ndarray, hyp: np.ndarray, rng: np.random.Generator, n_permutations: int = 1000
) -> tuple[float, float]:
    """Alignment and its one-sided permutation p-value.

    Condition labels are permuted: ``hyp[perm][:, perm]`` for each random ``perm``; the p-value
    is ``(1 + #{permuted >= observed}) / (1 + n_permutations)``, one-sided because the hypothesis
    predicts *higher* similarity for pairs that share a component. ``hyp`` must be symmetric.
    Returns (spearman, p); both NaN when the alignment is undefined.

    Vectorised: for a symmetric ``hyp`` a relabelling only moves the off-diagonal values between
    pairs, so the multiset of upper-triangle values (hence its average ranks, ties included) is
    unchanged. The ranks of the permuted triangle are therefore the permuted rank matrix, and each
    permuted Spearman is a Pearson correlation of fixed-mean, fixed-norm rank vectors: one matrix
    product per chunk instead of ``n_permutations`` calls to ``spearmanr``.
    """
    sim, hyp = _check_pair(sim, hyp)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    if not np.allclose(hyp, hyp.T):
        raise ValueError("hyp must be symmetric for a permutation test over condition labels")
    observed = alignment(sim, hyp)
    if np.isnan(observed):
        return float("nan"), float("nan")

    n = sim.shape[0]
    n_pairs = n * (n - 1) // 2
    chunk = max(1, min(n_permutations, 2_000_000 // n_pairs))  # bound memory to ~16 MB a chunk
    exceed = 0
    done = 0
    while done < n_permutations:
        size = min(chunk, n_permutations - done)
        perms = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)  # (size, n)
        stats = _permuted_statistics(sim, hyp, perms)
        exceed += int(np.count_nonzero(stats >= observed - _TIE_TOL))
        done += size
    return observed, (1 + exceed) / (1 + n_permutations)


def _permuted_statistics(sim: np.ndarray, hyp: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Spearman of sim vs ``hyp[p][:, p]`` for each row ``p`` of ``perms`` (n_perm, n), vectorised.

    Ranks are computed once per call; the permuted rank vectors all share the mean and norm of
    the unpermuted one. Tested against ``spearmanr`` in the unit tests.
    """
    n = sim.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    sim_rank = rankdata(sim[iu, ju])
    sim_c = sim_rank - sim_rank.mean()
    tri = rankdata(hyp[iu, ju])
    hyp_rank = np.zeros((n, n))
    hyp_rank[iu, ju] = tri
    hyp_rank[ju, iu] = tri
    permuted = hyp_rank[perms[:, iu], perms[:, ju]] - tri.mean()
    return permuted @ sim_c / (np.linalg.norm(sim_c) * np.linalg.norm(tri - tri.mean()))
