"""Study B's figures, drawn from its tables only, with captions naming the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iclscope.figures import no_data, save_figure, words
from iclscope.studies.representations.settings import OUTPUTS, TASKS, analysis_settings, task_setting
from iclscope.tables import read_table

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- figures

FIGURES = {
    "rsa_matrices.png": (
        "Study B, RSA at layer {layer}: condition x condition cosine similarity of the embeddings "
        "({pooling} pooling; span {spans}), z-scored over conditions, before and after ICL, next to the "
        "hypothesis matrices (1 = the two conditions share the component)."
    ),
    "alignment.png": (
        "Study B, alignment ({comparator} of similarity and hypothesis matrices, upper "
        "triangles) divided by its ceiling (the comparator's best value against that hypothesis, so "
        "hypotheses compare: 1 = every pair sharing the field more similar than every pair that does not, "
        "0 = chance) by layer, before and after ICL ({pooling} pooling; line style = span); filled "
        "markers: one-sided permutation p < {significance} ({n_permutations} permutations of condition labels)."
    ),
    "probes.png": (
        "Study B, cross-validated linear probes by layer (ridge R^2 for slope/intercept, {classifier} "
        "accuracy for name/activity; {probe_pooling} pooling of span {probe_span}; {n_splits} folds "
        "grouped by condition), before and after ICL; dashed: mean of the same probe over {n_shuffles} "
        "condition-level shuffles of the targets (the control)."
    ),
    "attention_ratio.png": (
        "Study B, attention from the answer position to the relevant sentence divided by attention to "
        "the distractor sentence (head-averaged masses; geometric mean over prompts, i.e. exp of the mean "
        "log ratio, with 95% bootstrap band; masses floored at 1e-12), by layer, before and after ICL, "
        "log scale; thin dashed / dotted: prompts whose relevant sentence comes first / second; "
        "1 = no preference."
    ),
    "behaviour.png": (
        "Study B, left: behaviour by number of in-context examples (mean over prompts, 95% bootstrap "
        "CI). Right: correlation across conditions between the change after ICL in alignment "
        "({pooling} pooling; span {spans}) or attention ratio and the change in error ({behaviours}), by "
        "layer, with 95% bootstrap band; negative = larger representational gains go with larger "
        "error reductions."
    ),
    "effects.png": (
        "Study B, the findings' effects per depth band with 95% intervals over the experimental units "
        "(never over layers): change after ICL of the normalised alignment (readout: {headline}; "
        "variants resampled within conditions), of the head-mean log attention ratio (prompt pairs "
        "resampled), the gain in accuracy (distinct prompts), and the pre-declared correlation of "
        "representation change with behaviour change (conditions resampled); pooled (black) and per "
        "position of the relevant sentence (first / second)."
    ),
}
# how the effects figure marks the story orders: relevant_first -> (label, colour, offset)
_ORDER_STYLE = {None: ("pooled", "black", 0.0), True: ("relevant first", "tab:blue", -0.2),
                False: ("relevant second", "tab:orange", 0.2)}


def _read_frame(tables: Mapping[str, str], name: str) -> pd.DataFrame:
    path = tables.get(name)
    if not path or not Path(path).exists():
        return pd.DataFrame()
    return read_table(path).to_pandas()


def _natural_key(label: str) -> tuple:
    """Sort key reading numbers as numbers: ``a=-3,b=10`` before ``a=-1,b=0`` before ``a=1,b=0``."""
    parts = re.split(r"(-?\d+(?:\.\d+)?)", str(label))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p)


def _shots_label(k: int, before: int) -> str:
    return f"k={k} ({'before' if k == before else 'after'} ICL)"


def _figure_span(settings: Mapping[str, Any], task: str, available: Iterable[str]) -> str | None:
    spans = task_setting(settings, "rsa_spans", task)
    available = set(available)
    for span in spans:
        if span in available:
            return span
    return min(available) if available else None


def _figure_layer(settings: Mapping[str, Any], layers: Sequence[int]) -> int | None:
    layers = sorted({int(x) for x in layers})
    if not layers:
        return None
    wanted = settings.get("figure_layer")
    if wanted is None:
        return layers[len(layers) // 2]
    return int(wanted) if int(wanted) in layers else min(layers, key=lambda x: abs(x - int(wanted)))


@dataclass
class _FigureContext:
    """What every study B figure reads: the tables, the settings and the choices made once
    (figure pooling, span per task, layer of the matrices), and where figures go."""

    frames: dict[str, pd.DataFrame]
    settings: Mapping[str, Any]
    out: Path
    plt: Any
    sns: Any
    pooling: str
    sig: float
    rsa: pd.DataFrame
    comparator: str
    tasks: list[str]
    span_of: dict[str, str | None]
    chosen_layer: int | None

    def save(self, fig: Any, name: str) -> None:
        fig.tight_layout()
        save_figure(fig, self.out / name)


def _draw_rsa_matrices(ctx: _FigureContext) -> None:
    """The condition x condition similarity matrices at the chosen layer, and the hypotheses."""
    frames = ctx.frames
    pooling = ctx.pooling
    rsa = ctx.rsa
    tasks = ctx.tasks
    span_of = ctx.span_of
    chosen_layer = ctx.chosen_layer
    plt = ctx.plt
    save = ctx.save
    sim = frames["similarity"]
    panels = []
    for task in tasks:
        row = []
        if len(sim) and chosen_layer is not None:
            data = sim[(sim["task"] == task) & (sim["layer"] == chosen_layer) & (sim["pooling"] == pooling)
                       & (sim["span"] == span_of[task])]
            shots = sorted(int(k) for k in data["n_shots"].unique())
            for k in shots:
                row.append(("sim", task, k, data[data["n_shots"] == k], shots[0]))
            hyps = rsa.loc[rsa["task"] == task, "hypothesis"].unique() if len(rsa) else []
            if len(data):
                first = data[data["n_shots"] == shots[0]]
                for h in hyps:
                    row.append(("hyp", task, h, first, None))
        panels.append(row or [("none", task, None, None, None)])
    ncols = max(len(r) for r in panels)
    fig, axes = plt.subplots(len(panels), ncols, figsize=(3.6 * ncols + 1, 3.6 * len(panels)), squeeze=False)
    for i, row in enumerate(panels):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(row):
                ax.axis("off")
                continue
            kind, task, what, data, before = row[j]
            if kind == "none":
                no_data(ax, f"{task}: no similarity matrices")
                continue
            labels = sorted(data["row_condition"].unique(), key=_natural_key)
            if kind == "sim":
                matrix = data.pivot(index="row_condition", columns="col_condition", values="similarity")
                title = f"{task}: {_shots_label(what, before)}"
            else:
                shared = data.assign(v=data["shared"].map(lambda s, h=what: float(h in list(s))))
                matrix = shared.pivot(index="row_condition", columns="col_condition", values="v")
                title = f"{task}: hypothesis '{what}'"
            matrix = matrix.reindex(index=labels, columns=labels)
            image = ax.imshow(matrix.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="vlag")
            ax.grid(False)
            size = 8 if len(labels) <= 12 else 7 if len(labels) <= 20 else 5
            ax.set_xticks(np.arange(len(labels)), labels, rotation=60, ha="right", rotation_mode="anchor",
                          fontsize=size)
            ax.set_yticks(np.arange(len(labels)), labels if j == 0 else [], fontsize=size)
            ax.set_title(title, fontsize=10)
            if j == len(row) - 1:
                fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"Similarity matrices at layer {chosen_layer} ({pooling} pooling)")
    save(fig, "rsa_matrices.png")


def _draw_alignment(ctx: _FigureContext) -> None:
    """RSA alignment by layer, one panel per task and hypothesis."""
    pooling = ctx.pooling
    sig = ctx.sig
    rsa = ctx.rsa
    comparator = ctx.comparator
    tasks = ctx.tasks
    plt = ctx.plt
    sns = ctx.sns
    save = ctx.save
    hyps_of = {t: (list(rsa.loc[rsa["task"] == t, "hypothesis"].unique()) if len(rsa) else []) for t in tasks}
    ncols = max(1, max(len(h) for h in hyps_of.values()))
    fig, axes = plt.subplots(len(tasks), ncols, figsize=(5 * ncols, 3.6 * len(tasks)), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for i, task in enumerate(tasks):
        data = rsa[(rsa["task"] == task) & (rsa["pooling"] == pooling)] if len(rsa) else pd.DataFrame()
        for j in range(ncols):
            ax = axes[i][j]
            if data.empty or j >= len(hyps_of[task]):
                if j == 0:
                    no_data(ax)
                else:
                    ax.axis("off")
                continue
            h = hyps_of[task][j]
            d = data[data["hypothesis"] == h]
            shots = sorted(int(k) for k in d["n_shots"].unique())
            colors = dict(zip(shots, sns.color_palette("deep", len(shots))))
            for s_i, span in enumerate(sorted(d["span"].unique(), key=str)):
                for k in shots:
                    line = d[(d["span"] == span) & (d["n_shots"] == k)].sort_values("layer")
                    if line.empty:
                        continue
                    value = "alignment_normalised" if "alignment_normalised" in line.columns else "alignment"
                    ax.plot(line["layer"], line[value], styles[s_i % len(styles)], color=colors[k],
                            label=f"{_shots_label(k, shots[0])}, span {span}")
                    good = line[line["p_value"] < sig]
                    ax.scatter(good["layer"], good[value], color=colors[k], s=18, zorder=3)
                    bad = line[~(line["p_value"] < sig)]
                    ax.scatter(bad["layer"], bad[value], facecolors="white", edgecolors=colors[k], s=18,
                               zorder=3)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set(title=f"{task}: hypothesis '{h}'", xlabel="layer", ylabel=f"{comparator} / its ceiling")
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"RSA alignment by layer ({pooling} pooling; filled: p < {sig})")
    save(fig, "alignment.png")


def _draw_probes(ctx: _FigureContext) -> None:
    """Probe scores by layer against the shuffled-label control (mean ± sd)."""
    frames = ctx.frames
    tasks = ctx.tasks
    plt = ctx.plt
    sns = ctx.sns
    save = ctx.save
    probes = frames["probes"]
    targets_of = {t: (list(probes.loc[probes["task"] == t, "target"].unique()) if len(probes) else []) for t in tasks}
    ncols = max(1, max(len(v) for v in targets_of.values()))
    fig, axes = plt.subplots(len(tasks), ncols, figsize=(5 * ncols, 3.6 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(targets_of[task]):
                if j == 0:
                    no_data(ax)
                else:
                    ax.axis("off")
                continue
            target = targets_of[task][j]
            d = probes[(probes["task"] == task) & (probes["target"] == target)]
            shots = sorted(int(k) for k in d["n_shots"].unique())
            colors = dict(zip(shots, sns.color_palette("deep", len(shots))))
            metric = d["metric"].iloc[0] if len(d) else "score"
            # R² of a useless probe can be far below 0: show [-1, 1] and mark what lies below
            floor = -1.0 if metric == "r2" else None
            for k in shots:
                line = d[d["n_shots"] == k].sort_values("layer")
                shown = line["score"].clip(lower=floor) if floor is not None else line["score"]
                ax.plot(line["layer"], shown, "-o", markersize=3, color=colors[k], label=_shots_label(k, shots[0]))
                low = line["control_score"] - line["control_sd"].fillna(0)
                high = line["control_score"] + line["control_sd"].fillna(0)
                if floor is not None:
                    low, high = low.clip(lower=floor), high.clip(lower=floor)
                ax.fill_between(line["layer"], low, high, color=colors[k], alpha=0.15, linewidth=0,
                                label=f"shuffled control ± sd, k={k}")
                if floor is not None and (line["score"] < floor).any():
                    below = line[line["score"] < floor]
                    ax.scatter(below["layer"], [floor] * len(below), marker="v", color=colors[k], zorder=4,
                               label=f"below {floor:g} (clipped), k={k}")
            if floor is not None:
                ax.set_ylim(floor - 0.05, 1.0)
            ax.set(title=f"{task}: {target}", xlabel="layer", ylabel=words(metric))
            ax.legend(fontsize=7, loc="best")
    n_shuffles = int(probes["n_shuffles"].max()) if len(probes) and "n_shuffles" in probes.columns else 0
    fig.suptitle(f"Probes by layer (band: mean ± sd of {n_shuffles} label shuffles)")
    save(fig, "probes.png")


def _draw_attention_ratio(ctx: _FigureContext) -> None:
    """Attention log ratio (relevant / distractor) by layer."""
    frames = ctx.frames
    plt = ctx.plt
    sns = ctx.sns
    save = ctx.save
    att = frames["attention_ratio"]
    att_tasks = [t for t in TASKS if len(att) and (att["task"] == t).any()] or ["(none)"]
    fig, axes = plt.subplots(1, len(att_tasks), figsize=(6 * len(att_tasks), 4), squeeze=False)
    for j, task in enumerate(att_tasks):
        ax = axes[0][j]
        d = att[(att["task"] == task) & (att["head"] == -1)] if len(att) else pd.DataFrame()
        split = d[d["relevant_first"].notna()] if len(d) else d
        d = d[d["relevant_first"].isna()] if len(d) else d
        if d.empty:
            no_data(ax, "no attention ratio (needs relevant and distractor spans)")
            continue
        shots = sorted(int(k) for k in d["n_shots"].unique())
        colors = dict(zip(shots, sns.color_palette("deep", len(shots))))
        for k in shots:
            line = d[d["n_shots"] == k].sort_values("layer")
            ax.plot(line["layer"], line["ratio"], "-o", markersize=3, color=colors[k], label=_shots_label(k, shots[0]))
            ax.fill_between(line["layer"], line["ci_low"], line["ci_high"], color=colors[k], alpha=0.2, linewidth=0)
            for flag, style in ((True, "--"), (False, ":")):
                part = split[(split["n_shots"] == k) & (split["relevant_first"] == flag)].sort_values("layer")
                if len(part):
                    ax.plot(part["layer"], part["ratio"], style, linewidth=1, color=colors[k],
                            label=f"k={k}, relevant {'first' if flag else 'second'}")
        ax.axhline(1, color="black", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set(title=f"{task}: attention relevant / distractor", xlabel="layer",
               ylabel="geometric mean ratio (head mean)")
        ax.legend(fontsize=8, loc="best")
    save(fig, "attention_ratio.png")


def _draw_behaviour(ctx: _FigureContext) -> list[str]:
    """Behaviour by shot count, and the representation-vs-behaviour correlation by layer;
    returns which behaviour each task's correlation used (for the caption)."""
    frames = ctx.frames
    pooling = ctx.pooling
    tasks = ctx.tasks
    span_of = ctx.span_of
    plt = ctx.plt
    save = ctx.save
    summary, rvb = frames["behaviour_summary"], frames["repr_vs_behaviour"]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 3.8 * len(tasks)), squeeze=False)
    behaviours_used = []
    for i, task in enumerate(tasks):
        ax = axes[i][0]
        d = summary[summary["task"] == task] if len(summary) else pd.DataFrame()
        if len(d) and "relevant_first" in d.columns:
            d = d[d["relevant_first"].isna()]
        if d.empty:
            no_data(ax)
        else:
            metrics = ["error", "expected_error"] if (d["metric"] == "expected_error").any() else ["accuracy"]
            d = d[d["metric"].isin(metrics)]
            shots = sorted(int(k) for k in d["n_shots"].unique())
            width = 0.8 / max(len(metrics), 1)
            for m_i, metric in enumerate(metrics):
                dm = d[d["metric"] == metric].set_index("n_shots").reindex(shots)
                x = np.arange(len(shots)) + (m_i - (len(metrics) - 1) / 2) * width
                ax.bar(x, dm["mean"], width=width, label=words(metric),
                       yerr=[dm["mean"] - dm["ci_low"], dm["ci_high"] - dm["mean"]], capsize=3)
            ax.set_xticks(np.arange(len(shots)), [f"k={k}" for k in shots])
            ax.set(title=f"{task}: behaviour", xlabel="in-context examples",
                   ylabel=" / ".join(words(m) for m in metrics))
            ax.legend(fontsize=8)
        ax = axes[i][1]
        d = rvb[rvb["task"] == task] if len(rvb) else pd.DataFrame()
        if d.empty:
            no_data(ax)
            continue
        behaviour = "expected_error" if (d["behaviour"] == "expected_error").any() else (
            "nll" if (d["behaviour"] == "nll").any() else "error")
        behaviours_used.append(f"{task}: {behaviour}")
        d = d[(d["behaviour"] == behaviour)
              & ((d["measure"] == "attention_log_ratio")
                 | ((d["pooling"] == pooling) & (d["span"] == span_of[task])))]
        afters = sorted(int(k) for k in d["n_shots_after"].unique())
        for measure in sorted(d["measure"].unique()):
            for k in afters:
                line = d[(d["measure"] == measure) & (d["n_shots_after"] == k)].sort_values("layer")
                label = words(measure) if len(afters) == 1 else f"{words(measure)}, k={k}"
                handle = ax.plot(line["layer"], line["mean"], "-o", markersize=3, label=label)[0]
                ax.fill_between(line["layer"], line["ci_low"], line["ci_high"], color=handle.get_color(),
                                alpha=0.15, linewidth=0)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(title=f"{task}: change in representation vs in {words(behaviour)}", xlabel="layer",
               ylabel="correlation across conditions", ylim=(-1.05, 1.05))
        ax.legend(fontsize=7, loc="best")
    save(fig, "behaviour.png")
    return behaviours_used


_EFFECT_PANELS = (
    ("alignment", "alignment change / ceiling"),
    ("attention_log_ratio_change", "log attention ratio change"),
    ("gain", "gain in accuracy"),
    ("repr_behaviour_r", "r (repr. change, behaviour change)"),
)


def _effect_rows(eff: pd.DataFrame, task: str, panel: str) -> pd.DataFrame:
    d = eff[eff["task"] == task]
    if panel == "alignment":
        return d[d["quantity"].isin(["alignment_change", "alignment_after"])]
    if panel == "gain":
        return d[(d["quantity"] == "gain") & (d["measure"] == "correct")]
    d = d[d["quantity"] == panel]
    return d[d["headline"].astype(bool)] if panel == "repr_behaviour_r" else d


def _draw_effects(ctx: _FigureContext) -> str:
    """Forest plots of the effects table: per task and quantity, each band (or the whole task
    for gains) and measure, pooled and per story order, with its interval. Returns the
    headline readout for the caption."""
    eff = ctx.frames["effects"]
    tasks, plt = ctx.tasks, ctx.plt
    fig, axes = plt.subplots(len(tasks), len(_EFFECT_PANELS), figsize=(4.6 * len(_EFFECT_PANELS), 3.8 * len(tasks)),
                             squeeze=False)
    readouts = []
    for i, task in enumerate(tasks):
        for j, (panel, label) in enumerate(_EFFECT_PANELS):
            ax = axes[i][j]
            d = _effect_rows(eff, task, panel) if len(eff) else pd.DataFrame()
            if d.empty:
                no_data(ax, f"{task}: none")
                continue
            if panel == "alignment" and d["pooling"].notna().any():
                readouts.append(f"{task}: {d['pooling'].dropna().iloc[0]} pooling of {d['span'].dropna().iloc[0]}")
            # one measure (the attention ratio) needs no name: its rows are the bands
            measure = d["measure"].astype(str) if d["measure"].nunique() > 1 or d["band"].isna().all() else ""
            d = d.assign(row=(measure + (" " + d["band"].astype(str)).where(d["band"].notna(), "")).str.strip())
            names = list(dict.fromkeys(d.sort_values(["measure", "relative_depth"], na_position="first")["row"]))
            for flag, (name, colour, offset) in _ORDER_STYLE.items():
                part = d[d["relevant_first"].isna()] if flag is None else d[d["relevant_first"] == flag]
                if part.empty:
                    continue
                y = np.array([names.index(r) for r in part["row"]]) + offset
                # (a percentile interval of a correlation need not contain its estimate)
                xerr = [(part["estimate"] - part["ci_low"]).clip(lower=0), (part["ci_high"] - part["estimate"]).clip(lower=0)]
                ax.errorbar(part["estimate"], y, xerr=xerr,
                            fmt="o", color=colour, markersize=4, capsize=2, label=name)
            ax.axvline(0, color="grey", linewidth=0.8)
            ax.set_yticks(np.arange(len(names)), names, fontsize=8)
            ax.invert_yaxis()
            if panel == "alignment" and (d["quantity"] == "alignment_after").all():
                label = "alignment after ICL / ceiling"  # nothing to change from: identical prompts before
            ax.set(title=f"{task}: {label}", xlabel=label)
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("Effects with intervals over prompts, variants or conditions (never layers)")
    ctx.save(fig, "effects.png")
    return "; ".join(readouts) or "none"


def plot(tables: Mapping[str, str], params: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    """Draw :data:`FIGURES` into ``out_dir`` from the tables written by :func:`analyse`
    (``tables``: out key -> path; missing or empty tables give "no data" panels). Returns
    file name -> caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    settings = analysis_settings(params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = {name: _read_frame(tables, name) for name in OUTPUTS}
    pooling = str(settings["figure_pooling"])
    sig = float(settings["significance"])
    rsa = frames["rsa"]
    comparator = str(settings["rsa_comparators"][0])
    if len(rsa) and "comparator" in rsa.columns:
        rsa = rsa[rsa["comparator"] == comparator]
    if len(rsa) and "relevant_first" in rsa.columns:
        rsa = rsa[rsa["relevant_first"].isna()]  # the pooled rows (the effects figure shows the orders)
    tasks = [t for t in TASKS if any(len(f) and "task" in f.columns and (f["task"] == t).any()
                                     for f in frames.values())] or ["(none)"]
    span_of: dict[str, str | None] = {}
    for task in tasks:
        sim = frames["similarity"]
        available = sim.loc[sim["task"] == task, "span"].unique() if len(sim) else (
            rsa.loc[rsa["task"] == task, "span"].unique() if len(rsa) else [])
        span_of[task] = _figure_span(settings, task, available) if task in TASKS else None
    layers_all = frames["similarity"]["layer"].unique() if len(frames["similarity"]) else (
        rsa["layer"].unique() if len(rsa) else [])
    chosen_layer = _figure_layer(settings, layers_all)

    ctx = _FigureContext(frames=frames, settings=settings, out=out, plt=plt, sns=sns, pooling=pooling, sig=sig,
                         rsa=rsa, comparator=comparator, tasks=tasks, span_of=span_of, chosen_layer=chosen_layer)
    _draw_rsa_matrices(ctx)
    _draw_alignment(ctx)
    _draw_probes(ctx)
    _draw_attention_ratio(ctx)
    behaviours_used = _draw_behaviour(ctx)
    headline = _draw_effects(ctx)

    values = {
        "layer": chosen_layer, "pooling": pooling, "significance": sig,
        "n_permutations": settings["n_permutations"], "n_splits": settings["n_splits"],
        "comparator": comparator, "n_shuffles": settings["n_shuffles"],
        "classifier": "ridge-classifier" if settings["classifier"] == "ridge" else "logistic",
        "probe_pooling": settings["probe_pooling"],
        "probe_span": settings["probe_span"] if isinstance(settings["probe_span"], str)
        else "; ".join(f"{t}: {v}" for t, v in settings["probe_span"].items()),
        "spans": "; ".join(f"{t}: {s}" for t, s in span_of.items() if s is not None) or "none",
        "behaviours": "; ".join(behaviours_used) or "none",
        "headline": headline,
    }
    return {name: caption.format(**values) for name, caption in FIGURES.items()}
