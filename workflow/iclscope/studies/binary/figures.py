"""Study A's figures: drawn from its tables only (no statistic is computed here), with
captions filled from the settings that ran."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iclscope.analysis import baselines as bl
from iclscope.analysis import model_selection as ms
from iclscope.figures import no_data, save_figure
from iclscope.studies.binary.settings import MODEL, RANDOM, analysis_settings
from iclscope.tables import read_table

log = logging.getLogger(__name__)

PLOTTED_METRICS = {
    "mean": "mean (fraction of Tails)",
    "alternation": "alternation rate $p_A$",
    "longest_run": "longest run",
    "gzip_net": "gzip length net of header (bytes)",
    "running_std": "std of running average",
}


# --------------------------------------------------------------------------- figures

FIGURES: dict[str, str] = {
    "generation.png": (
        "Randomness metrics of the model's coin-flip sequences ({n_samples} samples per p(Tails) at "
        "temperature {temperature}, {n_flips} flips), one column per generation mode ({modes}: constrained = "
        "only a symbol and the separator may come next, so every sequence reaches {n_flips} flips; free = the "
        "paper's sampling, cropped to {n_flips} flips, shorter ones dropped), against equally many samples from "
        "each baseline fitted to them (Bernoulli, gambler's fallacy with window 5, Markov chain); black crosses "
        "mark the requested p(Tails), n the model's sequences kept."
    ),
    "generation_steps.png": (
        "The model's probability of the second symbol at every step of its constrained sequences ({n_samples} "
        "per p(Tails), {n_flips} flips): left, its mean per requested p(Tails) (crosses: what the prompt asks "
        "for; dots: the fraction actually sampled); right, the probability of continuing the run the sequence "
        "ends with against that run's length (the prompt's flips included; mean and 95% range over sequences' "
        "means): falling with the run's length is the gambler's fallacy, rising a hot hand."
    ),
    "judgment.png": (
        "p(random) = P(r...) / (P(r...) + P(n...)) at the answer position against the sequence length |x| "
        "for the concepts {judgment_concepts} repeated to |x| (mean over the replicate variants), and the mean of "
        "{n_random} Bernoulli(0.5) "
        "controls per length with its {ci_percent}% bootstrap CI; dashed: the fitted soft model-selection curve."
    ),
    "continuation.png": (
        "P(the next d flips continue the concept | its first |x| flips), d = 1..{max_depth}, averaged over the "
        "concept's phase rotations in every replicate variant (symbol pairs x prompt templates; band: range over "
        "them) from one teacher-forced pass over {max_length} flips each; dashed: fitted soft model-selection curve; dotted verticals: |x|* where the logistic fitted to the "
        "implied p(random) crosses 0.5."
    ),
}


def captions(params: Mapping[str, Any]) -> dict[str, str]:
    """:data:`FIGURES` with their placeholders filled from ``params`` (``binary`` section)."""
    from iclscope.config import with_defaults

    cfg = with_defaults("binary", params.get("binary", {}))
    settings = analysis_settings(cfg)
    values = {
        "n_samples": cfg["generation"]["n_samples"],
        "temperature": f"{cfg['generation']['temperature']:g}",
        "n_flips": cfg["generation"]["n_flips"],
        "modes": ", ".join(cfg["generation"]["modes"]),
        "judgment_concepts": ", ".join(f"({c})" for c in cfg["judgment"]["concepts"]),
        "n_random": cfg["judgment"]["n_random"],
        "ci_percent": f"{100 * float(settings['ci_level']):g}",
        "max_depth": cfg["continuation"]["max_depth"],
        "max_length": cfg["continuation"]["max_length"],
    }
    return {name: text.format(**values) for name, text in FIGURES.items()}


def _load(tables: Mapping[str, str], key: str) -> pd.DataFrame:
    path = tables.get(key)
    if path is None or not Path(path).exists():
        log.warning("plot: table %r not given or missing (%s); drawing without it", key, path)
        return pd.DataFrame()
    return read_table(path).to_pandas()


def _no_data(ax: Any, title: str) -> None:
    no_data(ax)
    ax.set_title(title)


def _soft_row(selection: pd.DataFrame, curve: str, concept: str, depth: int) -> pd.Series | None:
    if selection.empty:
        return None
    hit = selection[(selection["curve"] == curve) & (selection["concept"] == concept)
                    & (selection["depth"] == depth) & (selection["account"] == "soft")]
    if hit.empty or not np.isfinite(hit["logit_prior"].iloc[0]):
        return None
    return hit.iloc[0]


def generation_columns(metrics: pd.DataFrame, requested: Sequence[float] = ()) -> dict[float, int]:
    """The generation figure's columns: every requested p(Tails) (and any other in the table),
    sorted, with how many of the model's sequences each holds (0: none long enough)."""
    ps = sorted({float(p) for p in requested} | {float(p) for p in metrics.get("p_tails", [])})
    model = metrics[metrics["source"] == MODEL] if len(metrics) else metrics
    counts = model.groupby("p_tails").size() if len(model) else pd.Series(dtype=int)
    return {p: int(counts.get(p, 0)) for p in ps}


def _plot_generation(metrics: pd.DataFrame, path: Path, requested: Sequence[float] = ()) -> None:
    """Box plots per requested p(Tails), one column per generation mode; every requested p
    gets a column, the model's n above it, and "no sequences" where none was long enough
    (so nothing is dropped silently)."""
    import seaborn as sns
    from matplotlib.figure import Figure

    names = list(PLOTTED_METRICS)
    if metrics.empty and not requested:
        fig = Figure(figsize=(6, 4))
        _no_data(fig.add_subplot(), "Generated sequences: randomness metrics")
        save_figure(fig, path)
        return
    if "mode" not in metrics.columns:
        metrics = metrics.assign(mode="free")
    modes = [m for m in ("constrained", "free") if m in set(metrics["mode"])] or ["free"]
    sources = [MODEL, *[s for s in bl.BASELINES if s in set(metrics.get("source", []))]]
    palette = dict(zip(sources, sns.color_palette("colorblind", len(sources))))
    width = max(8.0, 0.9 * len(generation_columns(metrics, requested)) + 3.0)
    fig = Figure(figsize=(width * len(modes), 2.6 * len(names)))
    grid = fig.subplots(len(names), len(modes), sharex="col", squeeze=False)
    for col, mode in enumerate(modes):
        part = metrics[metrics["mode"] == mode]
        columns = generation_columns(part, requested)
        ps = list(columns)
        order = [f"{p:g}" for p in ps]
        if part.empty:  # only the requested grid: empty boxes, marked below
            part = pd.DataFrame({"p_tails": pd.Series(dtype=float), "source": pd.Series(dtype=str),
                                 **{n: pd.Series(dtype=float) for n in names}})
        data = part.assign(p=part["p_tails"].map(lambda p: f"{p:g}"))
        axes = grid[:, col]
        for i, (ax, name) in enumerate(zip(axes, names)):
            sns.boxplot(data=data, x="p", y=name, hue="source", order=order, hue_order=sources, palette=palette,
                        ax=ax, fliersize=1.5, linewidth=0.8, legend=(i == 0 and col == len(modes) - 1))
            if name == "mean":
                ax.scatter(range(len(ps)), [p / 100 for p in ps], marker="x", color="black", zorder=5,
                           label="requested p(Tails)")
            ax.set_ylabel(PLOTTED_METRICS[name] if col == 0 else "")
            ax.set_xlabel("")
            ax.set_xlim(-0.5, len(ps) - 0.5)
            ax.grid(axis="y", alpha=0.3)
            for j, p in enumerate(ps):
                n = columns[p]
                if n == 0:  # a requested p with no sequence long enough: say so, do not drop it
                    ax.axvspan(j - 0.45, j + 0.45, color="0.92", zorder=0)
                    ax.text(j, 0.5, "no sequences", rotation=90, ha="center", va="center", fontsize=8,
                            color="0.4", transform=ax.get_xaxis_transform())
                elif i == 0:
                    ax.text(j, 1.02, f"n={n}", ha="center", va="bottom", fontsize=8,
                            transform=ax.get_xaxis_transform())
        axes[0].set_title(f"{mode} sampling", pad=16)
        axes[-1].set_xticks(range(len(ps)), order)  # categorical even when no box was drawn
        axes[-1].set_xlabel("p(Tails) requested in the prompt (%)")
    if grid[0, -1].get_legend_handles_labels()[0]:
        grid[0, -1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="source", fontsize=9)
    fig.suptitle("Generated sequences: model vs fitted baselines (n = the model's sequences per p)", y=1.01)
    fig.tight_layout()
    save_figure(fig, path)


# runs this long or longer are pooled in the run-length panel
LONGEST_RUN_SHOWN = 6


def _plot_generation_steps(steps: pd.DataFrame, path: Path, requested: Sequence[float] = ()) -> None:
    """Draws the ``generation_steps`` table: mean p(second symbol) per requested p(Tails),
    and p(continuing the run) against the run's length."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    if steps.empty:
        _no_data(left, "p(second symbol) per step")
        _no_data(right, "continuing a run")
        save_figure(fig, path)
        return
    by_p = steps.groupby("p_tails").agg(p=("p_second", "mean"), sampled=("flip", "mean")).reset_index()
    left.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="p = requested")
    left.plot(by_p["p_tails"] / 100, by_p["p"], marker="o", label="model's p(second symbol), mean over steps")
    left.scatter(by_p["p_tails"] / 100, by_p["sampled"], color="black", s=12, zorder=5, label="fraction sampled")
    left.scatter([p / 100 for p in requested], [p / 100 for p in requested], marker="x", color="black", zorder=4)
    left.set_xlabel("p(Tails) requested in the prompt")
    left.set_ylabel("p(second symbol)")
    left.set_xlim(0, 1)
    left.set_ylim(0, 1)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="upper left")
    seen = steps[steps["run_length"] > 0].assign(run=lambda d: d["run_length"].clip(upper=LONGEST_RUN_SHOWN))
    per_seq = seen.groupby(["run", "p_tails", "sample"])["p_same"].mean().reset_index()
    stats = per_seq.groupby("run")["p_same"].agg(["mean", lambda x: x.quantile(0.025), lambda x: x.quantile(0.975),
                                                  "size"])
    stats.columns = ["mean", "low", "high", "n"]
    x = stats.index.to_numpy()
    right.fill_between(x, stats["low"], stats["high"], alpha=0.2)
    right.plot(x, stats["mean"], marker="o")
    for xi, n in zip(x, stats["n"]):
        right.text(xi, 1.02, f"n={n}", ha="center", fontsize=7, transform=right.get_xaxis_transform())
    right.set_xticks(x, [f"{int(v)}" if v < LONGEST_RUN_SHOWN else f"{LONGEST_RUN_SHOWN}+" for v in x])
    right.set_xlabel("length of the run the history ends with")
    right.set_ylabel("p(continuing the run)")
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    fig.suptitle("Constrained sampling: the model's probabilities step by step", y=1.02)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_judgment(summary: pd.DataFrame, selection: pd.DataFrame, path: Path) -> None:
    """Draws the ``judgment_summary`` table: concepts' mean curves, the controls' mean and CI."""
    import seaborn as sns
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    title = "Randomness judgment: p(random) vs |x|"
    if summary.empty:
        _no_data(ax, title)
        save_figure(fig, path)
        return
    concepts = sorted(c for c in summary["concept"].unique() if c != RANDOM)
    colours = dict(zip(concepts, sns.color_palette("colorblind", max(len(concepts), 1))))
    for concept in concepts:
        g = summary[summary["concept"] == concept].set_index("length")["mean"].sort_index()
        ax.plot(g.index, g.to_numpy(), marker="o", ms=3.5, color=colours[concept], label=f"({concept})")
        soft = _soft_row(selection, "judgment", concept, 0)
        if soft is not None:
            dense = np.geomspace(max(g.index.min(), 1), g.index.max(), 200)
            fitted = ms.p_random_curve(dense, int(soft["k"]), float(soft["logit_prior"]), "soft",
                                       float(soft["temperature"]))
            ax.plot(dense, fitted, ls="--", lw=1.0, color=colours[concept])
    controls = summary[summary["concept"] == RANDOM].sort_values("length")
    if not controls.empty:
        ax.plot(controls["length"], controls["mean"], color="black", lw=1.5,
                label=f"random controls (n = {int(controls['n'].max())} per |x|)")
        ax.fill_between(controls["length"], controls["ci_low"], controls["ci_high"], color="grey", alpha=0.3, lw=0)
    ax.axhline(0.5, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("sequence length |x| (flips)")
    ax.set_ylabel("p(random)")
    ax.set_title(title)
    ax.legend(title="concept", fontsize=9, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_continuation(continuation: pd.DataFrame, selection: pd.DataFrame, path: Path) -> None:
    import seaborn as sns
    from matplotlib.figure import Figure

    title = "Concept continuation: P(next d flips continue) vs |x|"
    if continuation.empty:
        fig = Figure(figsize=(7, 4.5))
        _no_data(fig.add_subplot(), title)
        save_figure(fig, path)
        return
    concepts = sorted(continuation["concept"].unique())
    depths = sorted(continuation["depth"].unique())
    ncols = min(2, len(concepts))
    nrows = math.ceil(len(concepts) / ncols)
    fig = Figure(figsize=(6.0 * ncols, 4.2 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    colours = dict(zip(depths, sns.color_palette("viridis", len(depths))))
    for ax, concept in zip(axes, concepts):
        g = continuation[continuation["concept"] == concept]
        for d in depths:
            c = g[g["depth"] == d].sort_values("length")
            if c.empty:
                continue
            ax.plot(c["length"], c["p_continue"], color=colours[d], lw=1.4, label=f"d = {d}")
            ax.fill_between(c["length"], c["p_continue_min"], c["p_continue_max"], color=colours[d], alpha=0.15,
                            lw=0)
            soft = _soft_row(selection, "continuation", concept, int(d))
            if soft is not None:
                fitted = ms.predict_curve(c["length"].to_numpy(float), int(soft["k"]), float(soft["logit_prior"]),
                                          "soft", "continuation", int(d), float(soft["temperature"]))
                ax.plot(c["length"], fitted, ls="--", lw=1.0, color=colours[d])
            if not selection.empty:
                lm = selection[(selection["curve"] == "continuation") & (selection["concept"] == concept)
                               & (selection["depth"] == d) & (selection["account"] == "lm")]
                if not lm.empty and np.isfinite(lm["transition"].iloc[0]):
                    ax.axvline(lm["transition"].iloc[0], color=colours[d], ls=":", lw=1.0)
        ax.set_title(f"concept ({concept})")
        ax.set_xlabel("|x| (flips of the concept seen)")
        ax.set_ylabel("P(continue d flips)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes[len(concepts):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot(tables: Mapping[str, str], params: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    """Draw :data:`FIGURES` into ``out_dir``; returns {file name: filled caption}.

    ``tables``: paths keyed like :func:`analyse`'s outs (generation_metrics, judgment_summary,
    continuation, model_selection; the others are not drawn). Figures draw what the tables
    hold and compute no statistic. A missing or empty table gives a figure that says "no
    data". ``params`` as for :func:`analyse`.
    """
    from iclscope.config import with_defaults

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    selection = _load(tables, "model_selection")
    requested = with_defaults("binary", params.get("binary", {}))["generation"]["p_tails"]
    _plot_generation(_load(tables, "generation_metrics"), out / "generation.png", requested)
    _plot_generation_steps(_load(tables, "generation_steps"), out / "generation_steps.png", requested)
    _plot_judgment(_load(tables, "judgment_summary"), selection, out / "judgment.png")
    _plot_continuation(_load(tables, "continuation"), selection, out / "continuation.png")
    filled = captions(params)
    log.info("wrote %d figures to %s", len(filled), out)
    return filled
