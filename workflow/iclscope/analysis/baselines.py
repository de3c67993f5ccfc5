"""Fitted generative baselines for binary sequences (study A2).

Each baseline is a frozen dataclass with a maximum-likelihood ``fit`` (classmethod), ``sample``,
``loglik`` (total log-likelihood of one sequence, natural log) and ``n_params``. Comparing the
log-likelihood (and BIC) of a language model's sequences under each fitted baseline says which
simple process explains them best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar, Self

import numpy as np
from scipy.optimize import minimize_scalar

from .binary_metrics import as_flips

# probabilities are clipped to [EPS, 1 - EPS] so a deterministic prediction that is violated
# costs log(EPS) instead of -inf
EPS = 1e-6


def _check_seqs(seqs: Sequence[np.ndarray | str]) -> list[np.ndarray]:
    seqs = [as_flips(s) for s in seqs]
    if not seqs or any(s.size == 0 for s in seqs):
        raise ValueError(f"need at least one non-empty sequence, got {len(seqs)} (some may be empty)")
    return seqs


def _check_prob(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _check_sample_args(n_seqs: int, length: int) -> None:
    if n_seqs < 0 or length < 0:
        raise ValueError(f"n_seqs and length must be >= 0, got n_seqs={n_seqs}, length={length}")


def _bernoulli_ll(x: np.ndarray, p: np.ndarray | float) -> float:
    """Sum of log P(x_t) with P(x_t = 1) = p_t (clipped)."""
    p = np.clip(p, EPS, 1.0 - EPS)
    return float(np.sum(np.where(x == 1, np.log(p), np.log1p(-p))))


def _soft_ll(q: np.ndarray, p: np.ndarray | float) -> float:
    """Sum of q_t log p_t + (1 - q_t) log(1 - p_t): the expected log-likelihood of flips drawn
    with P(1) = q_t under a model giving P(1) = p_t (clipped); equals :func:`_bernoulli_ll`
    when q holds the flips themselves."""
    p = np.clip(p, EPS, 1.0 - EPS)
    return float(np.sum(q * np.log(p) + (1.0 - q) * np.log1p(-p)))


def _check_probs(seqs: Sequence[np.ndarray | str], probs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    seqs = _check_seqs(seqs)
    probs = [np.asarray(q, dtype=float) for q in probs]
    if len(probs) != len(seqs) or any(q.shape != s.shape for q, s in zip(probs, seqs)):
        raise ValueError("need one probability per flip of every sequence")
    if any(((q < 0) | (q > 1)).any() for q in probs):
        raise ValueError("probabilities must lie in [0, 1]")
    return seqs, probs


@dataclass(frozen=True)
class Bernoulli:
    """Independent flips with P(1) = p."""

    p: float
    n_params: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_prob(self.p, "p")


    @classmethod
    def fit(cls, seqs: Sequence[np.ndarray | str]) -> Self:
        """MLE: p = fraction of ones over all flips of all sequences."""
        seqs = _check_seqs(seqs)
        return cls(p=float(np.concatenate(seqs).mean()))

    def sample(self, n_seqs: int, length: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n_seqs`` int8 arrays of shape (length,)."""
        _check_sample_args(n_seqs, length)
        draws = (rng.random((n_seqs, length)) < self.p).astype(np.int8)
        return list(draws)

    def loglik(self, seq: np.ndarray | str) -> float:
        """Total log-likelihood of one sequence."""
        x = as_flips(seq)
        return _bernoulli_ll(x, self.p)

    def probs(self, seq: np.ndarray | str) -> np.ndarray:
        """P(x_t = 1 | x_<t) for every t: p throughout."""
        return np.full(as_flips(seq).size, self.p)

    @classmethod
    def fit_probs(cls, seqs: Sequence[np.ndarray | str], probs: Sequence[np.ndarray]) -> Self:
        """Closed form: p = the mean of the per-step probabilities."""
        _, probs = _check_probs(seqs, probs)
        return cls(p=float(np.concatenate(probs).mean()))


def _window_means(x: np.ndarray, window: int) -> np.ndarray:
    """m_t = mean(x_{t-w..t-1}) over the available history, shape (n,); m_0 = NaN (no history)."""
    csum = np.concatenate(([0.0], np.cumsum(x, dtype=float)))
    t = np.arange(x.size)
    lo = np.maximum(0, t - window)
    count = t - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return (csum[t] - csum[lo]) / count


def _history_probs(seqs: Sequence[np.ndarray], window: int):
    """p -> the gambler's-fallacy P(x_t = 1) at every step of the concatenated ``seqs``
    (window means do not depend on p: computed once; a sequence's first step gets p)."""
    m = np.concatenate([_window_means(s, window) for s in seqs])
    first = np.isnan(m)
    m = np.nan_to_num(m)
    return lambda p: np.where(first, p, np.clip(2.0 * p - m, 0.0, 1.0))


def _minimise_on_unit(negll) -> float:
    """argmin of ``negll`` over p in [0, 1]: the function need not be unimodal (it is
    clipped), so a 201-point grid picks the bracket and a bounded Brent search refines it."""
    grid = np.linspace(0.0, 1.0, 201)
    best = int(np.argmin([negll(p) for p in grid]))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    res = minimize_scalar(negll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(res.x) if res.fun <= negll(grid[best]) else float(grid[best])


@dataclass(frozen=True)
class GamblersFallacy:
    """p_t = clip(p + (p - mean(x_{t-w..t-1})), 0, 1): recent excess of ones lowers P(1).

    For t < w the mean runs over the available history x_0..x_{t-1}; at t = 0, p_t = p.
    ``window`` is fixed (not fitted), so n_params = 1.
    """

    p: float
    window: int = 5
    n_params: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_prob(self.p, "p")
        if not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise ValueError(f"window must be a positive int, got {self.window!r}")


    def probs(self, seq: np.ndarray | str) -> np.ndarray:
        """P(x_t = 1 | x_<t) for every t, shape (n,)."""
        x = as_flips(seq)
        m = _window_means(x, self.window)
        if x.size:
            m[0] = self.p  # no history: p_0 = p
        return np.clip(2.0 * self.p - m, 0.0, 1.0)

    @classmethod
    def fit(cls, seqs: Sequence[np.ndarray | str], window: int = 5) -> Self:
        """MLE of p for a fixed window: bounded scalar search on the log-likelihood.

        The clipped likelihood need not be unimodal, so a 201-point grid picks the bracket and
        a bounded Brent search refines within it.
        """
        seqs = _check_seqs(seqs)
        x = np.concatenate(seqs)
        steps = _history_probs(seqs, window)
        return cls(p=_minimise_on_unit(lambda p: -_bernoulli_ll(x, steps(p))), window=window)

    @classmethod
    def fit_probs(cls, seqs: Sequence[np.ndarray | str], probs: Sequence[np.ndarray], window: int = 5) -> Self:
        """p maximising the expected log-likelihood of the per-step probabilities given the
        sampled history (the same grid and bounded search as :meth:`fit`)."""
        seqs, probs = _check_probs(seqs, probs)
        q = np.concatenate(probs)
        steps = _history_probs(seqs, window)
        return cls(p=_minimise_on_unit(lambda p: -_soft_ll(q, steps(p))), window=window)

    def sample(self, n_seqs: int, length: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n_seqs`` int8 arrays of shape (length,), generated flip by flip (vectorised over seqs)."""
        _check_sample_args(n_seqs, length)
        out = np.zeros((n_seqs, length), dtype=np.int8)
        for t in range(length):
            if t == 0:
                pt = np.full(n_seqs, self.p)
            else:
                recent = out[:, max(0, t - self.window) : t].mean(axis=1)
                pt = np.clip(2.0 * self.p - recent, 0.0, 1.0)
            out[:, t] = rng.random(n_seqs) < pt
        return list(out)

    def loglik(self, seq: np.ndarray | str) -> float:
        """Total log-likelihood of one sequence."""
        x = as_flips(seq)
        return _bernoulli_ll(x, self.probs(x))


@dataclass(frozen=True)
class MarkovChain:
    """Symmetric two-state chain: x_0 ~ Bernoulli(p0), then P(x_t != x_{t-1}) = p_alt.

    p0 is P(first flip = 1). The switch probability does not depend on the current state, so the
    long-run fraction of ones tends to 1/2 whatever p0 (the model captures alternation, not bias).
    """

    p0: float
    p_alt: float
    n_params: ClassVar[int] = 2

    def __post_init__(self) -> None:
        _check_prob(self.p0, "p0")
        _check_prob(self.p_alt, "p_alt")


    @classmethod
    def fit(cls, seqs: Sequence[np.ndarray | str]) -> Self:
        """Closed-form MLE: p0 = mean of the first flips; p_alt = switches / transitions.

        With no transitions at all (every sequence of length 1) p_alt is set to 0.5.
        """
        seqs = _check_seqs(seqs)
        p0 = float(np.mean([s[0] for s in seqs]))
        switches = sum(int(np.abs(np.diff(s)).sum()) for s in seqs)
        transitions = sum(s.size - 1 for s in seqs)
        p_alt = switches / transitions if transitions else 0.5
        return cls(p0=p0, p_alt=float(p_alt))

    def sample(self, n_seqs: int, length: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n_seqs`` int8 arrays of shape (length,)."""
        _check_sample_args(n_seqs, length)
        if length == 0:
            return [np.zeros(0, dtype=np.int8) for _ in range(n_seqs)]
        first = (rng.random((n_seqs, 1)) < self.p0).astype(np.int8)
        switch = (rng.random((n_seqs, length - 1)) < self.p_alt).astype(np.int8)
        # x_t = x_0 xor (number of switches so far mod 2)
        parity = np.concatenate([np.zeros((n_seqs, 1), np.int8), np.cumsum(switch, axis=1) % 2], axis=1)
        return list((first ^ parity).astype(np.int8))

    def loglik(self, seq: np.ndarray | str) -> float:
        """Total log-likelihood of one sequence."""
        x = as_flips(seq)
        if x.size == 0:
            return 0.0
        return _bernoulli_ll(x[:1], self.p0) + _bernoulli_ll(np.abs(np.diff(x)), self.p_alt)

    def probs(self, seq: np.ndarray | str) -> np.ndarray:
        """P(x_t = 1 | x_<t): p0 first, then p_alt after a 0 and 1 - p_alt after a 1."""
        x = as_flips(seq)
        if x.size == 0:
            return np.zeros(0)
        return np.concatenate([[self.p0], np.where(x[:-1] == 1, 1.0 - self.p_alt, self.p_alt)])

    @classmethod
    def fit_probs(cls, seqs: Sequence[np.ndarray | str], probs: Sequence[np.ndarray]) -> Self:
        """Closed form: p0 = mean first-step probability; p_alt = the expected switches
        (probability of the other symbol than the sampled previous flip) per transition."""
        seqs, probs = _check_probs(seqs, probs)
        p0 = float(np.mean([q[0] for q in probs]))
        switches = sum(float(np.sum(np.where(s[:-1] == 1, 1.0 - q[1:], q[1:]))) for s, q in zip(seqs, probs))
        transitions = sum(s.size - 1 for s in seqs)
        return cls(p0=p0, p_alt=float(switches / transitions) if transitions else 0.5)


BASELINES: dict[str, type[Bernoulli | GamblersFallacy | MarkovChain]] = {
    "bernoulli": Bernoulli,
    "gamblers_fallacy": GamblersFallacy,
    "markov": MarkovChain,
}


def compare_baselines(seqs: Sequence[np.ndarray | str]) -> list[dict]:
    """Fit every baseline to ``seqs`` and score them on the same sequences.

    Returns one dict per baseline, in ``BASELINES`` order, with keys: baseline, params (dict of the
    fitted fields), n_params, loglik (total over all sequences), loglik_per_flip (loglik / total
    flips), bic (n_params * ln(total flips) - 2 * loglik) and bic_rank (1 = lowest BIC = best).
    """
    seqs = _check_seqs(seqs)
    n_flips = sum(s.size for s in seqs)
    rows = []
    for name, cls in BASELINES.items():
        model = cls.fit(seqs)
        ll = float(sum(model.loglik(s) for s in seqs))
        rows.append(
            {
                "baseline": name,
                "params": asdict(model),
                "n_params": model.n_params,
                "loglik": ll,
                "loglik_per_flip": ll / n_flips,
                "bic": model.n_params * math.log(n_flips) - 2.0 * ll,
            }
        )
    order = np.argsort([r["bic"] for r in rows], kind="stable")
    for rank, i in enumerate(order, start=1):
        rows[i]["bic_rank"] = rank
    return rows


def compare_baselines_on_probs(seqs: Sequence[np.ndarray | str], probs: Sequence[np.ndarray]) -> list[dict]:
    """Fit every baseline to a model's per-step probabilities (``probs[i][t]`` = the model's
    P(x_t = 1 | the sampled x_<t) of sequence i) instead of to its sampled flips, and score
    them by cross-entropy: which account predicts the model's probabilities best.

    Returns one dict per baseline, in ``BASELINES`` order: baseline, params, n_params,
    cross_entropy (mean over steps of -[q log p + (1 - q) log(1 - p)], nats), kl (mean
    KL(q || p) per step: the cross-entropy less the model's own entropy, 0 when the baseline
    reproduces every probability), mae (mean |q - p|) and kl_rank (1 = smallest KL).
    """
    from scipy.special import xlogy

    seqs, probs = _check_probs(seqs, probs)
    q = np.concatenate(probs)
    entropy = float(-np.mean(xlogy(q, q) + xlogy(1.0 - q, 1.0 - q)))  # 0 log 0 = 0
    rows = []
    for name, cls in BASELINES.items():
        model = cls.fit_probs(seqs, probs)
        predicted = np.concatenate([model.probs(s) for s in seqs])
        xent = -_soft_ll(q, predicted) / q.size
        rows.append({"baseline": name, "params": asdict(model), "n_params": model.n_params, "cross_entropy": xent,
                     "kl": max(0.0, xent - entropy), "mae": float(np.mean(np.abs(q - predicted)))})
    order = np.argsort([r["kl"] for r in rows], kind="stable")
    for rank, i in enumerate(order, start=1):
        rows[i]["kl_rank"] = rank
    return rows
