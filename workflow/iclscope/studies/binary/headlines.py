"""Study A's headline quantities for the findings (its ``headlines`` hook, :mod:`.plugin`).

Each reads the study's tables under ``results/{model}`` and returns :class:`iclscope.findings.Headline`
rows; :mod:`iclscope.findings` renders them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iclscope.analysis.stats import percentile_ends
from iclscope.findings import Headline, _boot, _read
from iclscope.seeding import rng

def binary_headlines(root: Path, seed: int, n_boot: int, level: float) -> list[Headline]:
    """Study A: p(random) drop of concepts vs random controls, the fitted transition |x|*
    and sharpness per concept (judgment; continuation per depth), and the baseline that
    explains the generated sequences best."""
    out: list[Headline] = []
    src = "binary/judgment.parquet"
    judgment = _read(root, src, ["concept", "length", "sample", "p_random"])
    lo, hi = judgment["length"].min(), judgment["length"].max()
    drops: dict[str, list[float]] = {}
    for (concept, sample), g in judgment.groupby(["concept", "sample"], sort=True):
        by_len = g.set_index("length")["p_random"]
        if lo in by_len.index and hi in by_len.index:
            kind = "controls" if concept == "random" else "concepts"
            drops.setdefault(kind, []).append(float(by_len[lo] - by_len[hi]))
    for kind in ("concepts", "controls"):
        if kind in drops:
            mean, low, high, n = _boot(drops[kind], seed, "p_random_drop", kind, n_boot=n_boot, level=level)
            out.append(Headline("binary", f"p_random_drop_{lo}_to_{hi}", kind, mean, low, high, n, src))
    if "concepts" in drops and "controls" in drops:
        gen = rng(seed, "findings", "p_random_drop", "difference")
        a, b = np.asarray(drops["concepts"]), np.asarray(drops["controls"])
        boots = [gen.choice(a, len(a)).mean() - gen.choice(b, len(b)).mean() for _ in range(n_boot)]
        out.append(Headline("binary", f"p_random_drop_{lo}_to_{hi}", "concepts - controls",
                            float(a.mean() - b.mean()), *percentile_ends(np.asarray(boots), level),
                            len(a) + len(b), src))

    src = "binary/model_selection.parquet"
    sel = _read(root, src, ["curve", "concept", "account", "depth", "transition", "ci_low", "ci_high",
                            "slope", "slope_low", "slope_high", "best"])
    reason_col = next((c for c in ("ci_reason", "transition_ci_reason") if c in sel.columns), None)
    # |x|* and the slope come from the logistic fitted to the model's own curve (account `lm`,
    # with its bootstrap CI); the model-selection accounts only say which explains it best
    keys = ["curve", "concept", "depth"]
    accounts = sel[sel["account"] != "lm"]
    best_account = accounts[accounts["best"].astype(bool)].set_index(keys)["account"]
    for r in sel[sel["account"] == "lm"].sort_values(keys).itertuples(index=False):
        if r.concept == "random":
            continue  # the controls' curve is reported through the p(random) drop above
        unit = f"{r.curve} {r.concept}" + (f" d={int(r.depth)}" if r.curve == "continuation" else "")
        note = f"best account: {best_account.get((r.curve, r.concept, r.depth), 'none')}"
        reason = getattr(r, reason_col) if reason_col else None
        if isinstance(reason, str) and reason:
            note += f"; no interval: `{reason}`"  # quoted from the table's ci_reason
        out.append(Headline("binary", "transition", unit, float(r.transition), float(r.ci_low), float(r.ci_high),
                            0, src, note=note))
        out.append(Headline("binary", "sharpness", unit, float(r.slope), float(r.slope_low), float(r.slope_high),
                            0, src, note=note))

    src = "binary/baselines.parquet"
    base = _read(root, src, ["p_tails", "source", "bic", "bic_rank"])
    if "mode" not in base.columns:
        base = base.assign(mode="free")
    for mode, part in base.groupby("mode", sort=True):
        model_rows = part[part["source"] == "model"]
        if {"n_used", "n_total"} <= set(model_rows.columns) and not model_rows.empty:
            # how much of the generation study stands on data: few kept sequences, no baseline fits
            parse = str(model_rows["parse"].iloc[0]) if "parse" in model_rows.columns else "first_letter"
            unit = "constrained sampling" if mode == "constrained" else f"free sampling, {parse} parse"
            out.append(Headline("binary", "sequences_kept", unit, float(model_rows["n_used"].sum()),
                                n=int(model_rows["n_total"].sum()), source=src,
                                note="sampled sequences long enough to analyse"))
        # per baseline: in how many p(Tails) conditions it ranks first, and its total score;
        # fitted to the samples (BIC summed) and to the per-step probabilities (KL averaged)
        for score, rank, agg, fitted_to, wins_q, total_q in (
                ("bic", "bic_rank", "sum", "samples", "baseline_bic_wins", "baseline_summed_bic"),
                ("prob_kl", "prob_kl_rank", "mean", "probabilities", "baseline_kl_wins", "baseline_mean_kl")):
            if score not in part.columns:
                continue
            fitted = part[part["source"] != "model"].dropna(subset=[score])
            if fitted.empty:
                continue
            wins = fitted[fitted[rank] == 1].groupby("source").size()
            n_conditions = int(fitted["p_tails"].nunique())
            for source, total in fitted.groupby("source")[score].agg(agg).sort_values().items():
                unit = f"{source}, {mode} {fitted_to}"
                out.append(Headline("binary", wins_q, unit, float(wins.get(source, 0)), n=n_conditions,
                                    source=src))
                out.append(Headline("binary", total_q, unit, float(total), n=n_conditions, source=src))
    out += _run_headlines(root, seed, n_boot, level)
    return out


# a run this long or longer against a single flip: the gambler's-fallacy contrast
LONG_RUN = 3


def _run_headlines(root: Path, seed: int, n_boot: int, level: float) -> list[Headline]:
    """The gambler's-fallacy signature of the constrained sequences: per sequence, the mean
    probability of continuing a run of LONG_RUN or more flips less that of continuing a run
    of one, bootstrapped over sequences (negative: the model expects long runs to end)."""
    src = "binary/generation_steps.parquet"
    if not (root / src).exists():
        return []
    steps = _read(root, src, ["p_tails", "sample", "run_length", "p_same"])
    steps = steps[steps["run_length"] > 0]
    if steps.empty:
        return []
    long = steps["run_length"] >= LONG_RUN
    per = steps.assign(long=long).groupby(["p_tails", "sample", "long"])["p_same"].mean().unstack("long")
    if True not in per.columns or False not in per.columns:
        return []
    diffs = (per[True] - per[False]).dropna()
    mean, low, high, n = _boot(diffs.tolist(), seed, "run_continuation", n_boot=n_boot, level=level)
    return [Headline("binary", "run_continuation_change", f"runs of {LONG_RUN}+ - runs of 1", mean, low, high, n,
                     src, note=("per constrained sequence, P(continuing the run) after a long run less "
                                "after a single flip (lengths as the unit says); negative: the gambler's fallacy, "
                                "positive: a hot hand"))]
