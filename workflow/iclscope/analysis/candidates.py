"""Renormalising a model's log-probabilities over a set of candidate answers.

Every study reads its behaviour from the log-probabilities of a few candidate answers
(label words, numbers, the two coin symbols) and renormalises them over that set: the one
implementation is :func:`restricted_log_softmax`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = ["restricted_log_softmax"]


def restricted_log_softmax(candidate_logprobs: np.ndarray) -> np.ndarray:
    """Log-probabilities renormalised over the K candidates (the last axis).

    ``candidate_logprobs``: shape (..., K), the model's log-probability of each candidate
    (full-vocabulary log-probs, or any scores: only differences along the last axis matter).
    Returns shape (..., K) whose ``exp`` sums to 1 along the last axis. Computed as
    ``x - logsumexp(x)``, which is stable for very negative log-probs (long multi-token words).
    A candidate with log-prob ``-inf`` keeps ``-inf``; a row that is ``-inf`` everywhere becomes
    NaN (no distribution exists), and NaNs propagate.
    """
    x = np.asarray(candidate_logprobs, dtype=float)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"candidate_logprobs: expected shape (..., K) with K >= 1, got {x.shape}")
    with np.errstate(invalid="ignore"):  # all -inf rows: -inf - -inf = NaN, intended
        return x - logsumexp(x, axis=-1, keepdims=True)
