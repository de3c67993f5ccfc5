"""Bayesian model-selection account of randomness judgments and continuations (study A5).

Hypothesis space for a sequence x of length n that follows a formal concept with k phases:
- "random": Bernoulli(0.5), likelihood 0.5^n;
- "concept": the concept at a phase drawn uniformly from its k rotations, likelihood 1/k for a
  sequence consistent with one rotation (0 otherwise). Short prefixes (n < k) consistent with
  several rotations are treated like longer ones (likelihood 1/k), a simplification.
With prior p(concept) = pi the log posterior odds of "random" are

    L(n) = log(1 - pi) - log(pi) + log(k) - n log(2),

falling linearly in n and crossing 0 at the transition n* = (log k - logit pi) / log 2.
Three accounts map L to p(random):
- "averaging": the exact posterior sigmoid(L) (Bayesian model averaging);
- "hard": 1 if sigmoid(L) > 0.5 else 0 (pick the MAP hypothesis);
- "soft": sigmoid(L / T) with a temperature T > 0 (T = 1 is averaging, T -> 0 is hard).
The continuation probability of the next d flips is (1 - p_random) * 1 + p_random * 0.5^d.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from iclscope import contracts
from iclscope.analysis.defaults import LEVEL, MIN_INTERVAL_UNITS, N_BOOT  # noqa: F401 (MIN_INTERVAL_UNITS: re-exported)
# the logistic fit of a curve and its bootstrap (the lm row of curve_selection)
from iclscope.analysis.logistic import _as_curve, logistic_bootstrap, logistic_curve

log = logging.getLogger(__name__)

ACCOUNTS = ("averaging", "hard", "soft")
# why an account row has no interval: only the logistic of the model's own curve is bootstrapped
ACCOUNT_CI_REASON = "account fits are not bootstrapped; the lm row carries the interval of |x|*"
KINDS = ("judgment", "continuation")
LOG2 = math.log(2.0)
# bounds of the fitted log temperature: T in [e^-10, e^10] covers step-like to flat curves
LOG_T_BOUNDS = (-10.0, 10.0)


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (number of concept phases) must be a positive int, got {k!r}")


def _check_account(account: str) -> None:
    if account not in ACCOUNTS:
        raise ValueError(f"account must be one of {ACCOUNTS}, got {account!r}")


def _check_kind(kind: str, depth: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")


def log_odds_random(lengths: np.ndarray, k: int, logit_prior: float) -> np.ndarray:
    """L(n) = log p(random | x) - log p(concept | x) for each n in ``lengths`` (shape (m,)).

    ``logit_prior`` = log(pi / (1 - pi)) with pi = p(concept); working in logit space keeps
    priors like 1e-30 representable.
    """
    _check_k(k)
    return math.log(k) - logit_prior - np.asarray(lengths, dtype=float) * LOG2


def _logit(prior_concept: float) -> float:
    if not 0.0 < prior_concept < 1.0:
        raise ValueError(f"prior_concept must lie strictly in (0, 1), got {prior_concept!r}")
    return math.log(prior_concept) - math.log1p(-prior_concept)


def posterior_random(n: np.ndarray | float, k: int, prior_concept: float) -> np.ndarray:
    """Exact posterior p(random | x) (model averaging) for concept sequences of length ``n``.

    ``n``: scalar or array of lengths; returns an array of the same shape.
    """
    return expit(log_odds_random(n, k, _logit(prior_concept)))


def p_random_curve(
    lengths: np.ndarray, k: int, logit_prior: float, account: str, temperature: float = 1.0
) -> np.ndarray:
    """p(random | x) under ``account`` for each length, shape (m,). ``temperature`` is used by "soft"."""
    _check_account(account)
    odds = log_odds_random(lengths, k, logit_prior)
    if account == "averaging":
        return expit(odds)
    if account == "hard":
        return (odds > 0).astype(float)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return expit(odds / temperature)


def p_continue(p_random: np.ndarray, depth: int) -> np.ndarray:
    """P(the next ``depth`` flips continue the concept) = (1 - p_random) + p_random * 0.5^depth."""
    _check_kind("continuation", depth)
    p_random = np.asarray(p_random, dtype=float)
    return (1.0 - p_random) + p_random * 0.5**depth


def predict_curve(
    lengths: np.ndarray,
    k: int,
    logit_prior: float,
    account: str,
    kind: str = "judgment",
    depth: int = 1,
    temperature: float = 1.0,
) -> np.ndarray:
    """The account's p(random) ("judgment") or P(continue ``depth`` flips) ("continuation"), shape (m,)."""
    _check_kind(kind, depth)
    pr = p_random_curve(lengths, k, logit_prior, account, temperature)
    return pr if kind == "judgment" else p_continue(pr, depth)


@dataclass(frozen=True)
class FitResult:
    """A least-squares fit of one account to one curve.

    ``transition`` is n* where the account's p(random) crosses 0.5 (independent of T).
    ``temperature`` is 1.0 for "averaging" and 0.0 for "hard" (fixed, not fitted).
    ``predicted`` has the shape of the fitted lengths.
    """

    account: str
    kind: str
    depth: int
    k: int
    logit_prior: float
    temperature: float
    transition: float
    n_params: int
    predicted: np.ndarray
    sse: float
    r2: float

    @property
    def prior_concept(self) -> float:
        return float(expit(self.logit_prior))

    def summary(self) -> dict[str, float | int | str]:
        """Every scalar field plus prior_concept (no predicted curve): one table row."""
        return {
            "account": self.account,
            "kind": self.kind,
            "depth": self.depth,
            "k": self.k,
            "logit_prior": self.logit_prior,
            "prior_concept": self.prior_concept,
            "temperature": self.temperature,
            "transition": self.transition,
            "n_params": self.n_params,
            "sse": self.sse,
            "r2": self.r2,
        }


def _r2(observed: np.ndarray, sse: float) -> float:
    sst = float(np.sum((observed - observed.mean()) ** 2))
    return 1.0 - sse / sst if sst > 0 else float("nan")


def fit_account(
    lengths: np.ndarray,
    observed: np.ndarray,
    k: int,
    account: str,
    kind: str = "judgment",
    depth: int = 1,
) -> FitResult:
    """Fit logit p(concept) (and log T for "soft") to ``observed`` by least squares.

    ``lengths``, ``observed``: shape (m,), the curve's |x| and its values (p(random) for
    "judgment", P(continue ``depth`` flips) for "continuation"); values must be finite.
    A grid over the transition n* (midpoints between the sorted lengths, and beyond both ends)
    and over log T gives the start; "hard" is piecewise constant in n*, so the grid (which holds
    every distinct step position) is its exact optimum; the others are refined with
    scipy.optimize.least_squares.
    """
    _check_k(k)
    _check_account(account)
    _check_kind(kind, depth)
    x, y = _as_curve(lengths, observed, "observed")

    logk = math.log(k)
    ux = np.unique(x)
    n_star = np.concatenate(([ux[0] - 1.0], (ux[:-1] + ux[1:]) / 2.0, [ux[-1] + 1.0]))
    logits = logk - n_star * LOG2  # logit prior placing the transition at each n*
    log_ts = np.linspace(-4.0, 4.0, 17) if account == "soft" else np.zeros(1)

    def curve(logit: float, log_t: float) -> np.ndarray:
        return predict_curve(x, k, logit, account, kind, depth, temperature=math.exp(log_t))

    # grid search: sse for every (n*, log T)
    sse_grid = np.array([[np.sum((curve(lg, lt) - y) ** 2) for lt in log_ts] for lg in logits])
    i, j = np.unravel_index(int(np.argmin(sse_grid)), sse_grid.shape)
    logit, log_t = float(logits[i]), float(log_ts[j])

    if account == "averaging":
        res = least_squares(lambda p: curve(p[0], 0.0) - y, x0=[logit])
        logit = float(res.x[0])
    elif account == "soft":
        res = least_squares(
            lambda p: curve(p[0], p[1]) - y,
            x0=[logit, log_t],
            bounds=([-np.inf, LOG_T_BOUNDS[0]], [np.inf, LOG_T_BOUNDS[1]]),
        )
        logit, log_t = float(res.x[0]), float(res.x[1])

    predicted = curve(logit, log_t)
    sse = float(np.sum((predicted - y) ** 2))
    temperature = {"averaging": 1.0, "hard": 0.0, "soft": math.exp(log_t)}[account]
    return FitResult(
        account=account,
        kind=kind,
        depth=int(depth),
        k=int(k),
        logit_prior=logit,
        temperature=temperature,
        transition=(logk - logit) / LOG2,
        n_params=2 if account == "soft" else 1,
        predicted=predicted,
        sse=sse,
        r2=_r2(y, sse),
    )


def compare_accounts(
    lengths: np.ndarray,
    observed: np.ndarray,
    k: int,
    kind: str = "judgment",
    depth: int = 1,
) -> dict[str, FitResult]:
    """``fit_account`` for every account in ``ACCOUNTS``: {account: FitResult}."""
    return {a: fit_account(lengths, observed, k, a, kind, depth) for a in ACCOUNTS}




# --------------------------------------------------------------------------- one curve, every account


def _bic(sse: float, n: int, n_params: int) -> float:
    if not np.isfinite(sse) or n == 0:
        return float("nan")
    return n * math.log(max(sse, 1e-300) / n) + n_params * math.log(n)


def _nan_row(**fixed: Any) -> dict[str, Any]:
    """A model-selection row (the ``model_selection`` table's columns) with nothing estimated."""
    row = {name: float("nan") for name in contracts.MODEL_SELECTION.names}
    row.update({"ci_method": "none", "ci_reason": ACCOUNT_CI_REASON, "n_params": 0, "best": False})
    row.update(fixed)
    return row


def curve_selection(
    curve: str,
    concept: str,
    lengths: np.ndarray,
    units: np.ndarray,
    k: int,
    depth: int,
    generator: np.random.Generator,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    min_units: int = 1,
) -> list[dict[str, Any]]:
    """Model-selection rows of one curve (the ``model_selection`` table of study A).

    ``curve``: ``judgment`` (values are p_random) or ``continuation`` (values are P(continue
    ``depth`` flips)). ``lengths`` (m,) strictly increasing; ``units`` (n_units, m): the curve
    of each unit (rotation / control sample); the fitted curve is their mean. ``k`` = 0 skips
    the Bayesian accounts (random controls). Returns one ``lm`` row plus, for k >= 1, one row
    per account.
    """
    x = np.asarray(lengths, dtype=float)
    units = np.atleast_2d(np.asarray(units, dtype=float))
    y = units.mean(axis=0)
    kind = "judgment" if curve == "judgment" else "continuation"
    scale = 1.0 if kind == "judgment" else 1.0 - 0.5**depth
    # implied p_random (identity for judgment): inverse of model_selection.p_continue
    pr_units = units if kind == "judgment" else (1.0 - units) / scale
    pr = pr_units.mean(axis=0)
    fixed = {"curve": curve, "concept": concept, "depth": int(depth if kind == "continuation" else 0),
             "k": int(k), "n_points": int(x.size), "n_units": int(units.shape[0])}
    rows: list[dict[str, Any]] = []

    lm = _nan_row(**fixed, account="lm", n_params=2)
    try:
        fit = logistic_bootstrap(x, pr_units, generator, n_boot, level, min_units=min_units)
        lm.update(fit)
        if np.isfinite(fit["midpoint"]):
            logistic = logistic_curve(x, pr, fit["midpoint"], fit["slope"])
            predicted = logistic if kind == "judgment" else 1.0 - scale * logistic
            sse = float(np.sum((predicted - y) ** 2))
            sst = float(np.sum((y - y.mean()) ** 2))
            lm.update(sse=sse, r2=1.0 - sse / sst if sst > 0 else float("nan"), bic=_bic(sse, x.size, 2))
    except ValueError as err:
        log.warning("model selection %s %s depth %d: logistic fit failed: %s", curve, concept, depth, err)
        lm["ci_reason"] = f"logistic fit failed: {err}"
    rows.append(lm)

    if k >= 1:
        try:
            fits = compare_accounts(x, y, int(k), kind, int(max(depth, 1)))
        except ValueError as err:
            log.warning("model selection %s %s depth %d: account fits failed: %s", curve, concept, depth, err)
            fits = {}
        for account in ACCOUNTS:
            if account not in fits:
                rows.append(_nan_row(**fixed, account=account))
                continue
            f = fits[account]
            slope = math.inf if account == "hard" else LOG2 / f.temperature
            rows.append(_nan_row(
                **fixed, account=account, transition=f.transition, slope=slope, n_params=f.n_params,
                sse=f.sse, r2=f.r2, bic=_bic(f.sse, x.size, f.n_params), temperature=f.temperature,
                logit_prior=f.logit_prior, prior_concept=f.prior_concept,
            ))
        bics = [r["bic"] for r in rows[1:]]
        if any(np.isfinite(b) for b in bics):
            rows[1 + int(np.nanargmin(bics))]["best"] = True
    return rows
