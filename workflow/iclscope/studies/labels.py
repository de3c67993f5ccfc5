"""Study C (label relationships, Kossen, Gal & Rainforth 2024): from readouts to curves.

Input: a ``labels_<dataset>`` task table and its readouts, where readout ``answer_i``
holds the log-probability of every label word of the prompt's verbalisation at the
``Answer:`` of in-context example i (one teacher-forced pass per prompt).

Tables written (one set per dataset):

positions
    One row per (condition, repeat, position): ``dataset, condition, repeat, position``
    (1-based; the prediction for example i from examples 1..i-1), ``true_label`` and
    ``context_label`` (words of the prompt's verbalisation), ``logp_true``,
    ``logp_context`` (log-probabilities renormalised over the label words), ``correct``
    (argmax is the true label), ``correct_context`` (argmax is the in-context label),
    ``entropy`` (nats, over the label words), ``logp_label_mass`` (log of the label words'
    total probability over the full vocabulary, not renormalised: how much of the model's
    prediction the renormalised metrics describe), ``scoring`` (``exact`` or
    ``first_token``, which word log-probs all of these use).
curves
    ``dataset, condition, position, metric, mean, ci_low, ci_high, n``: per position the
    mean over repeats and its percentile-bootstrap interval (repeats resampled), for the
    metrics logp_true, logp_context, correct, correct_context, entropy, logp_label_mass.
    Metadata records the smoothing window and the scoring.
summary
    ``dataset, kind, metric, position_name, position, condition, condition_b, mean,
    ci_low, ci_high, n``, for every metric. Position i is the prediction for example i from
    examples 1..i-1, so "after k examples" is position k + 1.

    * ``kind = "value"``: the curves at named positions ``first`` (1), ``after_N`` (N + 1,
      the last prediction from the first mapping only), ``after_2N`` (2N + 1, from N
      examples of each mapping) and ``last`` (``n_examples``); ``n`` = repeats.
    * ``kind = "difference"``: paired differences (by repeat) at one position: default -
      random and default - flipped at ``last``, flip_df - flip_fd at ``after_2N``.
    * ``kind = "pooled_value"``: a condition's per-repeat mean over a window of positions,
      averaged over repeats (CI over repeats).
    * ``kind = "pooled_difference"``: default - random and default - flipped pooled over
      ``positions_2_N`` (2..n_examples) and ``last_quarter``; flip_df - flip_fd over
      ``second_mapping`` (N + 2 .. 2N + 1). Per repeat the mean over the window of the
      position-wise difference, then the mean over repeats with a paired percentile
      bootstrap over repeats (repeat r of every condition shares its example draws).
      Pooled rows have ``position`` = the window's last position and ``n`` = repeats.

    These pooled effects are the ones to read: one position of a few repeats is noise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from iclscope import contracts, provenance
from iclscope.analysis.label_metrics import (
    label_mass,
    paired_difference,
    pooled_paired_difference,
    pooled_windows,
    position_curves,
    position_metrics,
    summary_positions,
)
from iclscope.analysis.stats import bootstrap_ci
from iclscope.figures import no_data, save_figure, words
from iclscope.seeding import rng
from iclscope.tables import read_table, recorded_model, write_table

log = logging.getLogger(__name__)

METRICS = ("logp_true", "logp_context", "correct", "correct_context", "entropy", "logp_label_mass")
# (condition a, condition b, named position) pairs reported as paired differences
DIFFERENCES = (
    ("default", "random", "last"),
    ("default", "flipped", "last"),
    ("flip_df", "flip_fd", "after_2N"),
)
# (condition a, condition b, window) pairs reported as pooled paired differences
POOLED_DIFFERENCES = (
    ("default", "random", "positions_2_N"),
    ("default", "random", "last_quarter"),
    ("default", "flipped", "positions_2_N"),
    ("default", "flipped", "last_quarter"),
    ("flip_df", "flip_fd", "second_mapping"),
)
# windows over which each condition's pooled value is reported
POOLED_VALUE_WINDOWS = ("positions_2_N", "last_quarter")
SUMMARY_COLUMNS = ["kind", "metric", "position_name", "position", "condition", "condition_b", "mean", "ci_low",
                   "ci_high", "n"]


def positions_table(tasks: pd.DataFrame, readouts: pd.DataFrame, scoring: str = "exact") -> pd.DataFrame:
    """Per-position metrics for every prompt of a labels task (see the module docstring).

    ``tasks``: the task table (prompt_id, dataset, condition, repeat, label_words,
    true_class, context_class); ``readouts``: prompt_id, readout, candidate, logprob,
    first_token_logprob.
    """
    if scoring not in ("exact", "first_token"):
        raise ValueError(f"labels.analysis.scoring must be 'exact' or 'first_token', not {scoring!r}")
    column = "logprob" if scoring == "exact" else "first_token_logprob"
    by_prompt = {pid: frame for pid, frame in readouts.groupby("prompt_id", sort=False)}
    frames = []
    for row in tasks.itertuples(index=False):
        words = list(row.label_words)
        n = len(row.context_class)
        reads = by_prompt.get(row.prompt_id)
        if reads is None:
            raise ValueError(f"no readouts for prompt {row.prompt_id!r}")
        # (n positions, K words) in class order
        table = reads.pivot(index="readout", columns="candidate", values=column)
        names = [contracts.answer_name(i) for i in range(1, n + 1)]
        missing = [x for x in names if x not in table.index] + [w for w in words if w not in table.columns]
        if missing:
            raise ValueError(f"prompt {row.prompt_id!r}: readouts lack {missing[:5]}")
        logps = table.loc[names, words].to_numpy(dtype=float)
        true_class = np.asarray(row.true_class)
        context_class = np.asarray(row.context_class)
        metrics = position_metrics(logps, true_class, context_class)
        metrics["logp_label_mass"] = label_mass(logps)
        frames.append(pd.DataFrame({
            "dataset": row.dataset, "condition": row.condition, "repeat": int(row.repeat),
            "position": np.arange(1, n + 1, dtype=np.int32),
            "true_label": [words[c] for c in true_class], "context_label": [words[c] for c in context_class],
            **{k: metrics[k] for k in METRICS}, "scoring": scoring,
        }))
    if not frames:
        return pd.DataFrame(columns=contracts.LABEL_POSITIONS.names)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["condition", "repeat", "position"], kind="stable").reset_index(drop=True)


def summary_table(positions: pd.DataFrame, curves: pd.DataFrame, n_examples: int, flip_at: int,
                  rng_for, n_boot: int, level: float) -> pd.DataFrame:
    """Curve values at the named positions, pooled values and paired (pooled) differences
    between conditions (see the module docstring). ``rng_for(*keys)`` gives the seeded
    generator of one row group, so adding a row never shifts another row's interval."""
    named = summary_positions(n_examples, flip_at)
    windows = pooled_windows(n_examples, flip_at)
    rows = []

    def add(kind: str, metric: str, name: str, position: int, a: str, b: str, d: dict) -> None:
        rows.append({"kind": kind, "metric": metric, "position_name": name, "position": int(position),
                     "condition": a, "condition_b": b, "mean": d["mean"], "ci_low": d["ci_low"],
                     "ci_high": d["ci_high"], "n": int(d["n"])})

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
            for metric in METRICS:
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
        for metric in METRICS:
            d = pooled_paired_difference(positions, metric, window, a, b,
                                         rng_for("pooled", name, metric, a, b), n_boot=n_boot, level=level)
            add("pooled_difference", metric, name, window[-1], a, b, d)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def analysis_settings(labels: Mapping[str, Any]) -> dict[str, Any]:
    """``labels["analysis"]`` with the schema's defaults filled in and checked against it."""
    from iclscope.config import section_settings

    return section_settings("labels", "analysis", labels.get("analysis"))


def analyse(inputs: Mapping[str, str], params: Mapping[str, Any], outs: Mapping[str, str]) -> None:
    """Read ``inputs`` (``tasks``, ``readouts``), write ``outs`` (``positions``, ``curves``,
    ``summary``). ``params``: ``seed``, ``dataset`` (name), ``labels`` (config section)."""
    labels = params["labels"]
    settings = analysis_settings(labels)
    scoring = settings["scoring"]
    smooth = int(settings["smooth"])
    n_boot = int(settings["n_boot"])
    level = float(settings["level"])
    seed = int(params["seed"])
    dataset = params["dataset"]
    tasks = read_table(inputs["tasks"]).to_pandas()
    readouts = read_table(inputs["readouts"]).to_pandas()
    positions = positions_table(tasks, readouts, scoring)
    log.info("%s: %d prompts, %d positions (%s scoring)", dataset, len(tasks), len(positions), scoring)
    curves = position_curves(positions, list(METRICS), rng(seed, "labels", dataset, "curves"), n_boot=n_boot,
                             smooth=smooth, level=level)
    curves.insert(0, "dataset", dataset)
    summary = summary_table(
        positions, curves, int(labels["n_examples"]), int(labels["flip_at"]),
        lambda *keys: rng(seed, "labels", dataset, "summary", *keys), n_boot, level)
    summary.insert(0, "dataset", dataset)

    extra = {"dataset": dataset, "scoring": scoring, "smooth": smooth, "n_boot": n_boot, "level": level,
}
    model = recorded_model([inputs["readouts"]])
    schemas = {"positions": contracts.LABEL_POSITIONS, "curves": contracts.CURVE, "summary": contracts.LABEL_SUMMARY}
    for name, frame in (("positions", positions), ("curves", curves), ("summary", summary)):
        table = pa.Table.from_pandas(frame, schema=schemas[name], preserve_index=False)
        write_table(table, outs[name], provenance.metadata(f"labels_{name}", params, seed=seed, model=model,
                                                                extra=extra))
        log.info("%s: %d rows -> %s", name, table.num_rows, outs[name])



# ----------------------------------------------------------------------------- figures

FIGURES = {
    "curves.png": (
        "Study C, dataset {dataset}: accuracy against the true labels, log-likelihood of the true "
        "label (renormalised over the label words, {scoring} scoring) and the label words' total "
        "log-probability over the full vocabulary (un-renormalised; the renormalised metrics are "
        "ratios within this mass) at every in-context position (position i predicts example i "
        "from examples 1..i-1), mean over {repeats} repeats with {level:.0%} bootstrap bands, for "
        "the conditions {main_conditions}{arbitrary}."
    ),
    "halfway.png": (
        "Study C, dataset {dataset}: label mappings that change within the context (D->F, F->D: "
        "flipped after N = {flip_at} examples; alternating), drawn for the conditions of this run: "
        "{halfway_conditions}. Dashed line at the first flipped label, dotted line at position 2N + 1, "
        "the prediction after N examples of each mapping, where D->F and F->D are compared. Left: "
        "agreement with the true labels; right: with the in-context labels. Following the most recent "
        "mapping shows as a switch after N."
    ),
}
MAIN_CONDITIONS = ("default", "random", "flipped")
HALFWAY_CONDITIONS = ("default", "flip_df", "flip_fd", "alternating")


def _band(ax, frame: pd.DataFrame, label: str, **style: Any) -> None:
    frame = frame.sort_values("position")
    line = ax.plot(frame["position"], frame["mean"], label=label, **style)[0]
    ax.fill_between(frame["position"], frame["ci_low"], frame["ci_high"], color=line.get_color(), alpha=0.15,
                    linewidth=0)


def plot(tables: Mapping[str, str], params: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    """Draw FIGURES into ``out_dir`` from the ``curves`` table; returns file -> caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    labels = params["labels"]
    settings = analysis_settings(labels)
    curves = read_table(tables["curves"]).to_pandas()
    dataset = params["dataset"]
    flip_at = int(labels["flip_at"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    palette = dict(zip((*MAIN_CONDITIONS, "flip_df", "flip_fd", "alternating"), sns.color_palette("deep", 6)))

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    for ax, metric, title in ((axes[0], "correct", "accuracy vs true labels"),
                              (axes[1], "logp_true", "log p(true label), renormalised"),
                              (axes[2], "logp_label_mass", "log total p(label words), full vocabulary")):
        data = curves[curves["metric"] == metric]
        arbitrary = sorted(c for c in data["condition"].unique() if c.startswith("arbitrary"))
        for k, condition in enumerate(arbitrary):
            _band(ax, data[data["condition"] == condition], "arbitrary words (each)" if k == 0 else None,
                  color="0.6", linewidth=0.8)
        for condition in MAIN_CONDITIONS:
            frame = data[data["condition"] == condition]
            if len(frame):
                _band(ax, frame, condition, color=palette[condition], linewidth=2)
        if metric == "correct":
            ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set(title=title, xlabel="in-context example (position)", ylabel=words(metric))
        if len(data) == 0:
            no_data(ax)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{dataset}: what ICL learns from labels")
    fig.tight_layout()
    save_figure(fig, out / "curves.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, metric, title in ((axes[0], "correct", "agreement with true labels"),
                              (axes[1], "correct_context", "agreement with in-context labels")):
        data = curves[curves["metric"] == metric]
        for condition in HALFWAY_CONDITIONS:
            frame = data[data["condition"] == condition]
            if len(frame):
                _band(ax, frame, condition, color=palette[condition], linewidth=2)
        ax.axvline(flip_at + 1, color="black", linestyle="--", linewidth=1)
        ax.axvline(2 * flip_at + 1, color="black", linestyle=":", linewidth=1)
        ax.set(title=title, xlabel="in-context example (position)", ylabel="accuracy", ylim=(-0.02, 1.02))
        if len(data) == 0:
            no_data(ax)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{dataset}: flipping labels halfway (first flipped label at example {flip_at + 1})")
    fig.tight_layout()
    save_figure(fig, out / "halfway.png")

    # captions name what this run drew, not every condition the study knows
    ran = set(curves["condition"].unique()) if len(curves) else set()
    arbitrary = sorted(c for c in ran if c.startswith("arbitrary"))
    values = {"dataset": dataset, "scoring": settings["scoring"], "repeats": labels.get("repeats"),
              "level": float(settings["level"]), "flip_at": flip_at,
              "main_conditions": ", ".join(c for c in MAIN_CONDITIONS if c in ran) or "none",
              "arbitrary": (f"; arbitrary replacement words in grey ({', '.join(arbitrary)})" if arbitrary else ""),
              "halfway_conditions": ", ".join(c for c in HALFWAY_CONDITIONS if c in ran) or "none"}
    return {name: caption.format(**values) for name, caption in FIGURES.items()}
