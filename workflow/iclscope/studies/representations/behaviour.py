"""Study B's behaviour (B1, B2): each prompt's answer from its candidates' log-probabilities,
and summaries over distinct prompts (rows that repeat one prompt count once)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from iclscope import contracts
from iclscope.analysis.candidates import restricted_log_softmax
from iclscope.analysis.resampling import distinct_values
from iclscope.analysis.stats import bootstrap_ci
from iclscope.seeding import rng
from iclscope.studies.representations.settings import READOUT


def prompt_behaviour(task: str, tasks: pd.DataFrame, readouts: pd.DataFrame) -> pd.DataFrame:
    """Behaviour per prompt from the candidates' log-probabilities (columns: module docstring).

    ``tasks``: the task table (``prompt_id, condition, n_shots, answer``, numeric tasks also
    ``target``); ``readouts``: ``prompt_id, readout, candidate, logprob`` (rows of readout
    ``answer`` are used). The model's answer is the argmax candidate (first on ties);
    probabilities are renormalised over the candidates. Numeric tasks (a ``target`` column)
    also get the probability-weighted expectation of the candidates' values. Raises
    ValueError naming a prompt without ``answer`` readouts or missing columns.
    """
    for column in ("prompt_id", "condition", "n_shots", "answer"):
        if column not in tasks.columns:
            raise ValueError(f"task table of {task!r} has no column {column!r}")
    for column in ("prompt_id", "readout", "candidate", "logprob"):
        if column not in readouts.columns:
            raise ValueError(f"readouts of {task!r} have no column {column!r}")
    numeric = "target" in tasks.columns
    answers = readouts[readouts["readout"] == READOUT]
    groups = {pid: g for pid, g in answers.groupby("prompt_id", sort=False)}
    rows = []
    for row in tasks.itertuples(index=False):
        pid = row.prompt_id
        if pid not in groups:
            raise ValueError(f"task {task!r}: prompt {pid!r} has no {READOUT!r} readouts")
        g = groups[pid]
        candidates = g["candidate"].astype(str).to_numpy()
        logp = g["logprob"].to_numpy(dtype=float)
        logp = restricted_log_softmax(logp)
        best = int(np.argmax(logp))
        correct_answer = str(row.answer)
        hit = np.flatnonzero(candidates == correct_answer)
        logp_correct = float(logp[hit[0]]) if hit.size else float("nan")
        correct = bool(candidates[best] == correct_answer)
        record = {
            "task": task, "prompt_id": pid, "condition": row.condition, "n_shots": int(row.n_shots),
            "variant": int(getattr(row, "variant", -1)), "answer": str(candidates[best]),
            "correct_answer": correct_answer, "correct": correct, "logp_correct": logp_correct,
            "n_candidates": len(candidates), "expected": float("nan"), "expected_error": float("nan"),
            "relevant_first": (bool(row.relevant_first) if "relevant_first" in tasks.columns
                               and not pd.isna(row.relevant_first) else None),
            "distinct_prompt_id": str(getattr(row, "distinct_prompt_id", pid)),
        }
        if numeric:
            target = float(row.target)
            try:
                values = candidates.astype(float)
            except ValueError:
                raise ValueError(
                    f"task {task!r}: prompt {pid!r} has non-numeric candidates, e.g. {candidates[:3].tolist()}"
                ) from None
            expected = float(np.exp(logp) @ values)
            record.update(error=abs(values[best] - target), expected=expected,
                          expected_error=abs(expected - target))
        else:
            record["error"] = 1.0 - float(correct)
        rows.append(record)
    columns = contracts.BEHAVIOUR.names
    return pd.DataFrame(rows, columns=columns)


def summarise_behaviour(behaviour: pd.DataFrame, seed: int, n_boot: int) -> pd.DataFrame:
    """Mean behaviour with bootstrap CIs over distinct prompts per task, n_shots and metric
    (rows sharing a ``distinct_prompt_id`` are one prompt, counted and resampled once).

    Metrics: accuracy (mean of ``correct``), error, logp_correct, and expected_error where
    defined. Rows with ``relevant_first`` null pool all prompts; tasks whose prompts have a
    story order (``relevant_first`` not null: reading) also get one row per order. Seeded by
    ``rng(seed, "behaviour", task, n_shots, metric)`` (pooled) and ``rng(seed, "behaviour",
    task, n_shots, metric, "first" | "second")``. Columns: ``task, n_shots, metric, mean,
    ci_low, ci_high, n_prompts, relevant_first``.
    """
    rows = []
    order = (behaviour["relevant_first"] if "relevant_first" in behaviour.columns
             else pd.Series([None] * len(behaviour), index=behaviour.index))
    parts: list[tuple[Any, tuple[str, ...], pd.DataFrame]] = [(None, (), behaviour)]
    has_order = order.notna()
    if has_order.any():
        known = order[has_order].astype(bool)
        parts += [(True, ("first",), behaviour.loc[known.index[known]]),
                  (False, ("second",), behaviour.loc[known.index[~known]])]
    for flag, tag, part in parts:
        rows += _behaviour_rows(part, seed, n_boot, flag, tag)
    out = pd.DataFrame(rows, columns=contracts.BEHAVIOUR_SUMMARY.names)
    out["relevant_first"] = out["relevant_first"].astype(object)
    return out


def _behaviour_rows(behaviour: pd.DataFrame, seed: int, n_boot: int, flag: Any, tag: tuple[str, ...]) -> list[dict]:
    rows = []
    for (task, k), g in behaviour.groupby(["task", "n_shots"], sort=True):
        metrics = {"accuracy": g["correct"].astype(float), "error": g["error"],
                   "logp_correct": g["logp_correct"], "expected_error": g["expected_error"]}
        units = (g["distinct_prompt_id"] if "distinct_prompt_id" in g.columns else g["prompt_id"]).to_numpy()
        for metric, values in metrics.items():
            values = values.to_numpy(dtype=float)
            values = distinct_values(values, units)
            values = values[~np.isnan(values)]
            if values.size == 0:
                continue
            ci = bootstrap_ci(values, rng(seed, "behaviour", task, int(k), metric, *tag), n_boot=n_boot)
            rows.append({"task": task, "n_shots": int(k), "metric": metric, "mean": ci.mean,
                         "ci_low": ci.low, "ci_high": ci.high, "n_prompts": int(values.size),
                         "relevant_first": flag})
    return rows


def behaviour_measures(behaviour: pd.DataFrame) -> dict[str, pd.Series]:
    """Per-prompt behavioural errors used in B7 (lower is better), indexed like ``behaviour``:
    ``error`` always, ``expected_error`` where defined (numeric tasks), else ``nll``."""
    out = {"error": behaviour["error"].astype(float)}
    if behaviour["expected_error"].notna().any():
        out["expected_error"] = behaviour["expected_error"].astype(float)
    else:
        out["nll"] = -behaviour["logp_correct"].astype(float)
    return out


def distinct_prompt_ids(tasks: pd.DataFrame) -> pd.Series:
    """Per row of a task table (with ``text``), the first ``prompt_id`` with the same text:
    the prompts that are really one (regression's zero-shot prompt, shared by every condition
    of a variant) then resample and count as one unit."""
    return tasks.groupby("text", sort=False)["prompt_id"].transform("first").astype(str)
