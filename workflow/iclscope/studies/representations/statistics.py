"""Study B's statistics of one set of prompts: the conditions' fields, RSA (B4) with each
comparator's ceiling, probes (B5) and the per-condition changes B7 correlates (the numerics
are in :mod:`iclscope.analysis`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from iclscope.analysis import rsa as rsa_math
from iclscope.analysis.attention_ratio import change_correlation
from iclscope.analysis.probes import probe_permutation_control
from iclscope.seeding import rng
from iclscope.studies.representations.settings import _NOT_FIELDS


log = logging.getLogger(__name__)


def _scalar_column(series: pd.Series) -> bool:
    return not series.map(lambda v: isinstance(v, (list, tuple, np.ndarray, dict))).any()


def known_fields(tasks: pd.DataFrame) -> list[str]:
    """Columns of a task table that are constant within every condition (usable hypotheses)."""
    out = []
    for column in tasks.columns:
        if column in _NOT_FIELDS or not _scalar_column(tasks[column]):
            continue
        if tasks.groupby("condition")[column].nunique(dropna=False).max() <= 1:
            out.append(column)
    return out


def condition_fields(tasks: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    """One row per condition (index: condition, sorted) with the value of each field.

    ``tasks``: a task table with ``condition`` and the ``fields`` columns. Raises ValueError
    naming a field that is not a column (with the known fields) or that varies within a
    condition.
    """
    if "condition" not in tasks.columns:
        raise ValueError(f"the task table has no 'condition' column (columns: {list(tasks.columns)})")
    known = known_fields(tasks)
    for name in fields:
        if name not in tasks.columns:
            raise ValueError(f"unknown condition field {name!r}; known fields: {known}")
        if name not in known:
            raise ValueError(
                f"condition field {name!r} varies within conditions, so it cannot label them; "
                f"known fields: {known}"
            )
    return tasks.groupby("condition")[list(fields)].first().sort_index()


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


@dataclass(frozen=True)
class RSAResult:
    """RSA of one set of embeddings: sorted condition ``labels``, the (n_cond, n_cond)
    ``similarity`` matrix, per hypothesis and comparator ``(alignment, p_value)`` and per
    hypothesis the Spearman alignment."""

    labels: list[str]
    similarity: np.ndarray
    alignments: dict[str, dict[str, tuple[float, float]]]
    spearman: dict[str, float]
    ceilings: dict[str, dict[str, float]]  # hypothesis -> comparator -> its best attainable value


def _check_conditions(labels: Sequence[Any], fields: pd.DataFrame, hypotheses: Sequence[str], what: str) -> None:
    if len(labels) < 3:
        raise ValueError(f"{what} needs at least 3 conditions, got {len(labels)}: {list(labels)}")
    for name in hypotheses:
        if name not in fields.columns:
            raise ValueError(f"unknown hypothesis field {name!r}; known fields: {list(fields.columns)}")
    missing = [c for c in labels if c not in fields.index]
    if missing:
        raise ValueError(f"conditions {missing[:5]} have no field values (known: {list(fields.index)[:5]} ...)")


def rsa_by_condition(
    vectors: np.ndarray,
    conditions: Sequence[str],
    fields: pd.DataFrame,
    hypotheses: Sequence[str],
    seed: int,
    key: Sequence[Any] = (),
    *,
    n_permutations: int,
    comparators: Sequence[str],
) -> RSAResult:
    """Condition means -> similarity matrix -> alignment with each hypothesis field.

    One permutation test per hypothesis and comparator (:data:`iclscope.analysis.rsa.COMPARATORS`);
    the comparators of one hypothesis share its permutations.

    ``vectors``: (n_prompts, d); ``conditions``: n_prompts labels; ``fields``: one row per
    condition (:func:`condition_fields`) holding the hypothesis fields. The permutation test of
    hypothesis ``h`` is seeded by ``rng(seed, "rsa", *key, h)`` (``key`` = task, layer,
    pooling, span, n_shots in :func:`analyse`). Raises ValueError with fewer than 3
    conditions or an unknown hypothesis field.
    """
    labels, means = rsa_math.condition_means(vectors, list(conditions))
    _check_conditions(labels, fields, hypotheses, "RSA")
    sim = rsa_math.similarity_matrix(means)
    records = fields.loc[labels].to_dict("records")
    alignments: dict[str, dict[str, tuple[float, float]]] = {}
    spearman = {}
    ceilings: dict[str, dict[str, float]] = {}
    for name in hypotheses:
        hyp = rsa_math.hypothesis_matrix(records, name)
        spearman[name] = rsa_math.alignment(sim, hyp, "spearman")
        alignments[name] = {
            method: rsa_math.permutation_test(sim, hyp, rng(seed, "rsa", *key, name), n_permutations, method)
            for method in comparators
        }
        ceilings[name] = {method: _ceiling(hyp, method) for method in comparators}
    return RSAResult([str(c) for c in labels], sim, alignments, spearman, ceilings)


_CEILINGS: dict[tuple[bytes, str], float] = {}


def _ceiling(hyp: np.ndarray, method: str) -> float:
    """:func:`iclscope.analysis.rsa.comparator_ceiling`, computed once per hypothesis matrix."""
    key = (np.asarray(hyp, dtype=np.int8).tobytes() + bytes([len(hyp)]), method)
    if key not in _CEILINGS:
        _CEILINGS[key] = rsa_math.comparator_ceiling(hyp, method)
    return _CEILINGS[key]


def condition_alignment(similarity: np.ndarray, labels: Sequence[str], fields: pd.DataFrame, field: str) -> np.ndarray:
    """Per-condition alignment with hypothesis ``field``: for each condition (row of
    ``similarity``, (n_cond, n_cond)) the mean similarity to the *other* conditions sharing the
    field's value minus the mean similarity to those that do not; NaN when either set is empty.
    Returns (n_cond,) in the order of ``labels``."""
    values = fields[field].reindex(list(labels)).to_numpy()
    similarity = np.asarray(similarity, dtype=float)
    other = ~np.eye(len(values), dtype=bool)
    same = (values[:, None] == values[None, :]) & other
    differ = ~same & other
    n_same, n_differ = same.sum(axis=1), differ.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (similarity * same).sum(axis=1) / n_same - (similarity * differ).sum(axis=1) / n_differ
    return np.where((n_same > 0) & (n_differ > 0), out, np.nan)


def probe_fields(
    vectors: np.ndarray,
    conditions: Sequence[str],
    fields: pd.DataFrame,
    targets: Sequence[str],
    seed: int,
    key: Sequence[Any] = (),
    *,
    n_splits: int,
    alpha: float,
    C: float,
    n_shuffles: int,
    classifier: str,
    n_shuffles_max: int | None,
) -> list[dict[str, Any]]:
    """Probe each field of ``targets`` from single prompts' ``vectors`` (n_prompts, d).

    Numeric fields: ridge regression (R^2); others: a classifier (accuracy; ``classifier``
    "ridge" = closed-form ridge classifier with ``alpha``, or "logistic" with ``C``). Folds are
    grouped by condition; the control repeats the probe on ``n_shuffles`` shuffles of the
    targets between conditions (:func:`iclscope.analysis.probes.probe_permutation_control`),
    seeded by ``rng(seed, "probe", *key, target)``, continued up to ``n_shuffles_max`` where p
    sits at its resolution. Returns one dict per target with ``target, probe, metric, score,
    control_score`` (mean over shuffles), ``control_sd``, ``p_value``, ``n_shuffles``,
    ``chance``, ``selectivity`` (chance-floored,
    :func:`iclscope.analysis.probes.chance_selectivity`) and ``p_resolution``. Raises
    ValueError with fewer than 3 conditions or an unknown field.
    """
    conditions = [str(c) for c in conditions]
    _check_conditions(sorted(set(conditions)), fields, targets, "probing")
    out = []
    for target in targets:
        numeric = _numeric(fields[target])
        y = fields[target].reindex(conditions).to_numpy()
        res = probe_permutation_control(
            "ridge" if numeric else "classifier", vectors, y.astype(float) if numeric else y.astype(str),
            conditions, rng(seed, "probe", *key, target), n_shuffles=n_shuffles, n_splits=n_splits,
            alpha=alpha, C=C, classifier=classifier, n_shuffles_max=n_shuffles_max,
        )
        kind = "ridge" if numeric else ("ridge_classifier" if classifier == "ridge" else "logistic")
        out.append({"target": target, "probe": kind, "metric": "r2" if numeric else "accuracy",
                    "score": res.score, "control_score": res.control_mean, "control_sd": res.control_sd,
                    "p_value": res.p_value, "n_shuffles": res.n_shuffles, "chance": res.chance,
                    "selectivity": res.selectivity, "p_resolution": 1.0 / (1 + res.n_shuffles)})
    return out


def condition_change(values: pd.Series, conditions: pd.Series, n_shots: pd.Series, before: int, after: int) -> pd.Series:
    """Per condition: mean of ``values`` over prompts with ``n_shots == after`` minus the mean
    with ``n_shots == before`` (all three series aligned). Indexed by condition, sorted;
    conditions missing on either side are dropped."""
    frame = pd.DataFrame({"v": values.to_numpy(dtype=float), "c": conditions.to_numpy(),
                          "k": n_shots.to_numpy()})
    means = frame.groupby(["k", "c"])["v"].mean()
    if before not in means.index.get_level_values(0) or after not in means.index.get_level_values(0):
        return pd.Series(dtype=float)
    delta = means.loc[after] - means.loc[before]
    return delta.dropna().sort_index()


def change_row(
    delta_measure: np.ndarray, delta_behaviour: np.ndarray, gen: np.random.Generator, n_boot: int, method: str
) -> dict[str, Any]:
    """Correlate two per-condition changes, (n_cond,) arrays in the same condition order (NaN
    = condition missing on a side): ``mean`` (the correlation), ``ci_low``, ``ci_high``,
    ``n_conditions`` (pairs used), ``delta_measure``, ``delta_behaviour`` (mean changes)."""
    x = np.asarray(delta_measure, dtype=float)
    y = np.asarray(delta_behaviour, dtype=float)
    r, low, high = change_correlation(x, y, gen, n_boot=n_boot, method=method)  # type: ignore[arg-type]
    keep = ~(np.isnan(x) | np.isnan(y))
    return {"mean": r, "ci_low": low, "ci_high": high, "n_conditions": int(keep.sum()),
            "delta_measure": float(np.mean(x[keep])) if keep.any() else float("nan"),
            "delta_behaviour": float(np.mean(y[keep])) if keep.any() else float("nan")}
