"""Study C's analysis: per-position label metrics, curves over repeats and the paired
summaries (the statistics are in :mod:`iclscope.analysis.label_metrics`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from iclscope import contracts, provenance
from iclscope.analysis.label_metrics import (
    adjusted_pooled_difference,
    calibrated_logprobs,
    label_mass,
    paired_difference,
    pooled_paired_difference,
    pooled_windows,
    position_curves,
    position_metrics,
    summary_positions,
)
from iclscope.analysis.stats import bootstrap_ci
from iclscope.seeding import rng
from iclscope.studies.labels.settings import (
    CALIBRATED_METRICS, DIFFERENCES, METRICS, POOLED_DIFFERENCES, POOLED_VALUE_WINDOWS, SUMMARY_COLUMNS, LabelsSettings,
)
from iclscope.tables import read_table, recorded_model, typed_table, write_table

log = logging.getLogger(__name__)


def positions_table(tasks: pd.DataFrame, readouts: pd.DataFrame, scoring: str, calibrate: bool) -> pd.DataFrame:
    """Per-position metrics for every prompt of a labels task (see the module docstring).

    ``tasks``: the task table (prompt_id, dataset, condition, repeat, label_words,
    true_class, context_class); ``readouts``: prompt_id, readout, candidate, logprob,
    first_token_logprob. With ``calibrate``, a condition with a content-free twin also gets
    its true label's log-likelihood and accuracy after contextual calibration with the twin
    at the same repeat and position (:func:`calibrated_logprobs`); other rows hold NaN/null.
    """
    if scoring not in ("exact", "first_token"):
        raise ValueError(f"labels.analysis.scoring must be 'exact' or 'first_token', not {scoring!r}")
    column = "logprob" if scoring == "exact" else "first_token_logprob"
    by_prompt = {pid: frame for pid, frame in readouts.groupby("prompt_id", sort=False)}
    logps_of: dict[tuple[str, int], np.ndarray] = {}  # (condition, repeat) -> (n positions, K words)
    for row in tasks.itertuples(index=False):
        words = list(row.label_words)
        n = len(row.context_class)
        reads = by_prompt.get(row.prompt_id)
        if reads is None:
            raise ValueError(f"no readouts for prompt {row.prompt_id!r}")
        table = reads.pivot(index="readout", columns="candidate", values=column)
        names = [contracts.answer_name(i) for i in range(1, n + 1)]
        missing = [x for x in names if x not in table.index] + [w for w in words if w not in table.columns]
        if missing:
            raise ValueError(f"prompt {row.prompt_id!r}: readouts lack {missing[:5]}")
        logps_of[(row.condition, int(row.repeat))] = table.loc[names, words].to_numpy(dtype=float)
    frames = []
    for row in tasks.itertuples(index=False):
        words = list(row.label_words)
        n = len(row.context_class)
        logps = logps_of[(row.condition, int(row.repeat))]
        true_class = np.asarray(row.true_class)
        context_class = np.asarray(row.context_class)
        metrics = position_metrics(logps, true_class, context_class)
        metrics["logp_label_mass"] = label_mass(logps)
        twin = logps_of.get((row.condition + contracts.CONTENT_FREE_SUFFIX, int(row.repeat)))
        calibrated = {"logp_true_calibrated": np.full(n, np.nan), "correct_calibrated": np.full(n, None)}
        if calibrate and twin is not None and twin.shape == logps.shape:
            scores = position_metrics(calibrated_logprobs(logps, twin), true_class, context_class)
            calibrated = {"logp_true_calibrated": scores["logp_true"], "correct_calibrated": scores["correct"]}
        frames.append(pd.DataFrame({
            "dataset": row.dataset, "condition": row.condition, "repeat": int(row.repeat),
            "position": np.arange(1, n + 1, dtype=np.int32),
            "true_label": [words[c] for c in true_class], "context_label": [words[c] for c in context_class],
            **{k: metrics[k] for k in METRICS}, "scoring": scoring, **calibrated,
        }))
    if not frames:
        return pd.DataFrame(columns=contracts.LABEL_POSITIONS.names)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["condition", "repeat", "position"], kind="stable").reset_index(drop=True)


def calibrated_conditions(positions: pd.DataFrame) -> set[str]:
    """The conditions whose calibrated scores were computed (those with a twin)."""
    if "logp_true_calibrated" not in positions or positions.empty:
        return set()
    has = positions.groupby("condition")["logp_true_calibrated"].apply(lambda v: v.notna().any())
    return {str(c) for c, ok in has.items() if ok}


def summary_table(positions: pd.DataFrame, curves: pd.DataFrame, n_examples: int, flip_at: int,
                  rng_for, n_boot: int, level: float, control_folds: int) -> pd.DataFrame:
    """Curve values at the named positions, pooled values and paired (pooled) differences
    between conditions, plain, adjusted by the content-free twins (a cross-fitted control
    variate) and calibrated (see the module docstring). ``rng_for(*keys)`` gives the seeded
    generator of one row group, so adding a row never shifts another row's interval."""
    named = summary_positions(n_examples, flip_at)
    windows = pooled_windows(n_examples, flip_at)
    rows = []

    def add(kind: str, metric: str, name: str, position: int, a: str, b: str, d: dict) -> None:
        rows.append({"kind": kind, "metric": metric, "position_name": name, "position": int(position),
                     "condition": a, "condition_b": b, "mean": d["mean"], "ci_low": d["ci_low"],
                     "ci_high": d["ci_high"], "n": int(d["n"]), "beta": d.get("beta", np.nan),
                     "variance_ratio": d.get("variance_ratio", np.nan)})

    calibrated = calibrated_conditions(positions)

    def metrics_of(*conditions: str) -> tuple[str, ...]:
        """The plain metrics, and the calibrated ones where every condition has them."""
        return METRICS + (CALIBRATED_METRICS if set(conditions) <= calibrated else ())

    for name, position in named.items():
        at = curves[curves["position"] == position]
        for r in at.itertuples(index=False):
            add("value", r.metric, name, position, r.condition, "",
                {"mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n})
    present = set(positions["condition"])
    for a, b, name in DIFFERENCES:
        if a not in present or b not in present:
            continue
        for metric in METRICS:
            d = paired_difference(positions, metric, named[name], a, b, rng_for(metric, a, b), n_boot=n_boot,
                                  level=level)
            add("difference", metric, name, named[name], a, b, d)
    for name in POOLED_VALUE_WINDOWS:
        window = windows[name]
        if not window:
            continue
        inside = positions[positions["position"].isin(window)]
        for condition in sorted(present):
            sub = inside[inside["condition"] == condition]
            for metric in metrics_of(condition):
                per_repeat = sub.groupby("repeat", sort=True)[metric].agg(lambda v: np.nanmean(v.astype(float)))
                values = per_repeat.to_numpy(dtype=float)
                interval = bootstrap_ci(values, rng_for("pooled_value", name, metric, condition), n_boot=n_boot,
                                        level=level)
                add("pooled_value", metric, name, window[-1], condition, "",
                    {"mean": interval.mean, "ci_low": interval.low, "ci_high": interval.high,
                     "n": int((~np.isnan(values)).sum())})
    for a, b, name in POOLED_DIFFERENCES:
        window = windows[name]
        if a not in present or b not in present or not window:
            continue
        for metric in metrics_of(a, b):
            d = pooled_paired_difference(positions, metric, window, a, b,
                                         rng_for("pooled", name, metric, a, b), n_boot=n_boot, level=level)
            add("pooled_difference", metric, name, window[-1], a, b, d)
        twins = (a + contracts.CONTENT_FREE_SUFFIX, b + contracts.CONTENT_FREE_SUFFIX)
        if not set(twins) <= present:
            continue
        for metric in METRICS:
            # the twins' own difference (the control, zero in expectation), and the effect adjusted by it
            d = pooled_paired_difference(positions, metric, window, *twins,
                                         rng_for("pooled_cf", name, metric, a, b), n_boot=n_boot, level=level)
            add("pooled_difference_content_free", metric, name, window[-1], a, b, d)
            d = adjusted_pooled_difference(positions, metric, window, a, b,
                                           rng_for("pooled_adjusted", name, metric, a, b), n_boot=n_boot,
                                           level=level, folds=control_folds)
            add("pooled_difference_adjusted", metric, name, window[-1], a, b, d)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def analyse(inputs: Mapping[str, str], params: Mapping[str, Any], outs: Mapping[str, str]) -> None:
    """Read ``inputs`` (``tasks``, ``readouts``), write ``outs`` (``positions``, ``curves``,
    ``summary``). ``params``: ``seed``, ``dataset`` (name), ``labels`` (config section)."""
    settings = LabelsSettings.from_section(params["labels"])
    seed = int(params["seed"])
    dataset = params["dataset"]
    tasks = read_table(inputs["tasks"]).to_pandas()
    readouts = read_table(inputs["readouts"]).to_pandas()
    positions = positions_table(tasks, readouts, settings.scoring, settings.calibrate)
    log.info("%s: %d prompts, %d positions (%s scoring)", dataset, len(tasks), len(positions), settings.scoring)
    curves = position_curves(positions, list(METRICS), rng(seed, "labels", dataset, "curves"), n_boot=settings.n_boot,
                             smooth=settings.smooth, level=settings.level)
    calibrated = sorted(calibrated_conditions(positions))
    if calibrated:  # their own generator: the plain curves stay as they were
        extra_curves = position_curves(positions[positions["condition"].isin(calibrated)], list(CALIBRATED_METRICS),
                                       rng(seed, "labels", dataset, "curves_calibrated"), n_boot=settings.n_boot,
                                       smooth=settings.smooth, level=settings.level)
        curves = pd.concat([curves, extra_curves], ignore_index=True)
    curves.insert(0, "dataset", dataset)
    summary = summary_table(
        positions, curves, settings.n_examples, settings.flip_at,
        lambda *keys: rng(seed, "labels", dataset, "summary", *keys), settings.n_boot, settings.level,
        control_folds=settings.control_folds)
    summary.insert(0, "dataset", dataset)

    extra = {"dataset": dataset, "scoring": settings.scoring, "smooth": settings.smooth, "n_boot": settings.n_boot,
             "level": settings.level, "calibrate": settings.calibrate, "control_folds": settings.control_folds}
    model = recorded_model([inputs["readouts"]])
    schemas = {"positions": contracts.LABEL_POSITIONS, "curves": contracts.CURVE, "summary": contracts.LABEL_SUMMARY}
    for name, frame in (("positions", positions), ("curves", curves), ("summary", summary)):
        table = typed_table(frame, schemas[name])
        write_table(table, outs[name], provenance.metadata(f"labels_{name}", params, seed=seed, model=model,
                                                                extra=extra))
        log.info("%s: %d rows -> %s", name, table.num_rows, outs[name])
