"""Representational similarity analysis for study B (B4).

Embeddings of prompts are averaged per condition, standardised over conditions, and turned into a
condition x condition cosine similarity matrix. A hypothesis matrix marks which condition pairs
share a task component (same slope, same name, ...). Alignment is a correlation of the two
matrices' upper triangles (the comparator); its significance comes from permuting condition labels.

Comparators (:data:`COMPARATORS`, names as rsatoolbox's ``compare`` methods): ``spearman``;
``pearson``; ``rho_a`` (rsatoolbox "rho-a": Spearman's rho without tie correction, the expected
rho under random tie breaking, 12 * sum(centred ranks a * centred ranks b) / (n^3 - n)); ``tau_a``
(Kendall's tau-a: (concordant - discordant pairs) / (n (n - 1) / 2), ties count as neither).

With a two-valued (share / do not share) hypothesis and untied similarities, all four are
increasing functions of one statistic, how often a sharing pair is more similar than a
non-sharing one (the Mann-Whitney U of the two groups of pairs); Spearman, rho-a and tau-a are
even proportional to each other, so their permutation p-values are identical. What differs is
the scale: a comparator's best attainable value (its *ceiling*, :func:`comparator_ceiling`)
depends on the share of pairs that share the field, so raw alignments of two hypotheses are
not comparable. ``alignment / ceiling`` is: 1 when every sharing pair is more similar than
every non-sharing pair, 0 at chance, whatever the hypothesis.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr

from iclscope.analysis.defaults import N_PERMUTATIONS

COMPARATORS = ("spearman", "pearson", "rho_a", "tau_a")

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


def _check_method(method: str) -> None:
    if method not in COMPARATORS:
        raise ValueError(f"unknown RSA comparator {method!r}; known: {list(COMPARATORS)}")


def rho_a(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho-a of two vectors (n,): ``12 * (ra - mean) . (rb - mean) / (n^3 - n)`` with
    average ranks ``ra``, ``rb`` (rsatoolbox's ``compare_rho_a``; no tie correction)."""
    ra, rb = rankdata(a), rankdata(b)
    n = len(ra)
    return float(12.0 * ((ra - ra.mean()) @ (rb - rb.mean())) / (n**3 - n))


def tau_a(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a of two vectors (n,): the sum over pairs i < j of
    ``sign(a_i - a_j) * sign(b_i - b_j)`` divided by n (n - 1) / 2 (ties contribute 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    sa = np.sign(a[:, None] - a[None, :])
    sb = np.sign(b[:, None] - b[None, :])
    return float((sa * sb).sum() / (n * (n - 1)))


def compare_vectors(a: np.ndarray, b: np.ndarray, method: str = "spearman") -> float:
    """The comparator ``method`` (one of :data:`COMPARATORS`) between two vectors (n,).

    NaN when either vector is constant or has fewer than two entries (alignment with a
    constant matrix is undefined, whatever the comparator would formally return).
    """
    _check_method(method)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D vectors of equal length, got {a.shape} and {b.shape}")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    if method == "spearman":
        return float(spearmanr(a, b).statistic)
    if method == "pearson":
        return float(pearsonr(a, b).statistic)
    if method == "rho_a":
        return rho_a(a, b)
    return tau_a(a, b)


def alignment(sim: np.ndarray, hyp: np.ndarray, method: str = "spearman") -> float:
    """Comparator ``method`` (default Spearman) of the upper triangles of ``sim`` and ``hyp``
    (both (n_cond, n_cond)). NaN when either triangle is constant (or has fewer than two entries).
    """
    sim, hyp = _check_pair(sim, hyp)
    return compare_vectors(upper_triangle(sim), upper_triangle(hyp), method)


def permutation_test(
    sim: np.ndarray,
    hyp: np.ndarray,
    rng: np.random.Generator,
    n_permutations: int = N_PERMUTATIONS,
    method: str = "spearman",
) -> tuple[float, float]:
    """Alignment (comparator ``method``) and its one-sided permutation p-value.

    Condition labels are permuted: ``hyp[perm][:, perm]`` for each random ``perm``; the p-value
    is ``(1 + #{permuted >= observed}) / (1 + n_permutations)``, one-sided because the hypothesis
    predicts *higher* similarity for pairs that share a component. ``hyp`` must be symmetric.
    Returns (alignment, p); both NaN when the alignment is undefined. The permutations drawn
    depend on ``rng`` only, not on ``method``.

    Vectorised: for a symmetric ``hyp`` a relabelling only moves the off-diagonal values between
    pairs, so the multiset of upper-triangle values (hence its average ranks, ties included) is
    unchanged. The ranks of the permuted triangle are therefore the permuted rank matrix, and each
    permuted Spearman / Pearson / rho-a is a dot product with fixed-mean, fixed-norm vectors: one
    matrix product per chunk instead of ``n_permutations`` calls. Tau-a with a two-valued
    hypothesis is linear in it too (``sign(b_i - b_j) = (b_i - b_j) / (hi - lo)``); otherwise it
    takes an (m, m) sign matrix per permutation (m = n (n - 1) / 2).
    """
    _check_method(method)
    sim, hyp = _check_pair(sim, hyp)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    if not np.allclose(hyp, hyp.T):
        raise ValueError("hyp must be symmetric for a permutation test over condition labels")
    observed = alignment(sim, hyp, method)
    if np.isnan(observed):
        return float("nan"), float("nan")

    n = sim.shape[0]
    n_pairs = n * (n - 1) // 2
    per_perm = n_pairs if method != "tau_a" or len(np.unique(upper_triangle(hyp))) <= 2 else n_pairs**2
    chunk = max(1, min(n_permutations, 2_000_000 // per_perm))  # bound memory to ~16 MB a chunk
    exceed = 0
    done = 0
    while done < n_permutations:
        size = min(chunk, n_permutations - done)
        perms = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)  # (size, n)
        stats = _permuted_statistics(sim, hyp, perms, method)
        exceed += int(np.count_nonzero(stats >= observed - _TIE_TOL))
        done += size
    return observed, (1 + exceed) / (1 + n_permutations)


def _permuted_statistics(sim: np.ndarray, hyp: np.ndarray, perms: np.ndarray, method: str = "spearman") -> np.ndarray:
    """Comparator of sim vs ``hyp[p][:, p]`` for each row ``p`` of ``perms`` (n_perm, n), vectorised.

    Ranks are computed once per call; the permuted rank vectors all share the mean and norm of
    the unpermuted one. Tested against a loop over :func:`alignment` in the unit tests.
    """
    n = sim.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    m = len(iu)
    a = sim[iu, ju]
    tri = hyp[iu, ju]
    if method == "tau_a":
        levels = np.unique(tri)
        permuted = hyp[perms[:, iu], perms[:, ju]]  # (n_perm, m)
        if len(levels) == 2:
            # sum_ij sign(a_i - a_j) (b_i - b_j) = 2 b . r with r_i = sum_j sign(a_i - a_j)
            r = np.sign(a[:, None] - a[None, :]).sum(axis=1)
            return 2.0 * ((permuted - levels[0]) / (levels[1] - levels[0])) @ r / (m * (m - 1))
        sa = np.sign(a[:, None] - a[None, :])
        sb = np.sign(permuted[:, :, None] - permuted[:, None, :])
        return np.einsum("ij,pij->p", sa, sb) / (m * (m - 1))
    if method == "pearson":
        x, y = a, tri
    else:  # spearman, rho_a: ranks
        x, y = rankdata(a), rankdata(tri)
    x_c = x - x.mean()
    y_mat = np.zeros((n, n))
    y_mat[iu, ju] = y
    y_mat[ju, iu] = y
    permuted = y_mat[perms[:, iu], perms[:, ju]] - y.mean()
    if method == "rho_a":
        return 12.0 * (permuted @ x_c) / (m**3 - m)
    return permuted @ x_c / (np.linalg.norm(x_c) * np.linalg.norm(y - y.mean()))


def ceiling_similarity(hyp: np.ndarray) -> np.ndarray:
    """The untied similarity matrix that best agrees with ``hyp``: ``hyp`` plus an increasing
    sub-unit offset per pair, so ties of the hypothesis are broken and no sharing pair falls
    below a non-sharing one (the order within a tie does not change any comparator against a
    hypothesis that is constant on that tie)."""
    hyp = np.asarray(hyp, dtype=float)
    n = hyp.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    levels = np.unique(hyp[iu, ju])
    step = float(np.min(np.diff(levels))) if len(levels) > 1 else 1.0
    # tiny offsets: the order breaks ties without moving values (Pearson reaches its sup, 1)
    offsets = np.arange(len(iu)) / (len(iu) + 1) * step * 1e-6
    best = hyp.copy()
    best[iu, ju] += offsets
    best[ju, iu] = best[iu, ju]
    return best


def comparator_ceiling(hyp: np.ndarray, method: str) -> float:
    """The largest alignment ``method`` can reach against ``hyp`` with untied similarities
    (:func:`ceiling_similarity`): e.g. for tau-a with a fraction f of sharing pairs about
    2 f (1 - f), for Pearson 1. NaN when the hypothesis is constant."""
    _check_method(method)
    return alignment(ceiling_similarity(hyp), hyp, method)


def batched_similarity(means: np.ndarray) -> np.ndarray:
    """:func:`similarity_matrix` of each of a batch of condition-mean matrices (b, n_cond, d);
    returns (b, n_cond, n_cond)."""
    means = np.asarray(means, dtype=float)
    centred = means - means.mean(axis=1, keepdims=True)
    std = centred.std(axis=1, keepdims=True)
    z = np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)
    norms = np.linalg.norm(z, axis=2, keepdims=True)
    unit = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    return unit @ unit.transpose(0, 2, 1)


def batched_alignment(sims: np.ndarray, hyp: np.ndarray, method: str) -> np.ndarray:
    """:func:`alignment` of each similarity matrix of a batch (b, n, n) with one ``hyp``
    (n, n); returns (b,), NaN where a triangle is constant (tested against the loop)."""
    _check_method(method)
    sims = np.asarray(sims, dtype=float)
    n = sims.shape[1]
    iu, ju = np.triu_indices(n, k=1)
    a = sims[:, iu, ju]  # (b, m)
    b = np.asarray(hyp, dtype=float)[iu, ju]
    m = len(b)
    constant = np.ptp(a, axis=1) == 0
    if m < 2 or np.ptp(b) == 0:
        return np.full(len(a), np.nan)
    if method == "tau_a":
        sb = np.sign(b[:, None] - b[None, :])
        out = np.einsum("kij,ij->k", np.sign(a[:, :, None] - a[:, None, :]), sb) / (m * (m - 1))
    else:
        x = a if method == "pearson" else rankdata(a, axis=1)
        y = b if method == "pearson" else rankdata(b)
        xc = x - x.mean(axis=1, keepdims=True)
        yc = y - y.mean()
        if method == "rho_a":
            out = 12.0 * (xc @ yc) / (m**3 - m)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                out = (xc @ yc) / (np.linalg.norm(xc, axis=1) * np.linalg.norm(yc))
    return np.where(constant, np.nan, out)
