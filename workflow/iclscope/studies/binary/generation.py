"""Study A's generation analyses (A1, A2): the model's sampled sequences cropped and
measured, every baseline fitted to them and sampled, and the constrained sequences' steps.
Pure: DataFrames in, DataFrames out (:mod:`.analyse` reads and writes the tables)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from iclscope import contracts
from iclscope.analysis import baselines as bl
from iclscope.analysis import binary_metrics as bm
from iclscope.seeding import rng
from iclscope.studies.binary.frames import require_columns, schema_frame
from iclscope.studies.binary.settings import MODEL, PARSE_MODES

log = logging.getLogger(__name__)


def crop_generations(
    generations: pd.DataFrame, n_flips: int, parse: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crop every generated sequence to its first ``n_flips`` generated flips, dropping shorter ones.

    ``generations``: prompt_id, p_tails, sample, flips (the generated flips only; may be shorter
    or empty/null), parsed, forced_flips (the prompt's own flips), n_clean (leading generated
    items that are exactly a symbol word), clean (every generated item is). ``parse``:
    ``first_letter`` (the paper: every item matched by its first letter) or ``strict`` (only the
    leading clean items, ``flips[:n_clean]``, count). Returns (kept: p_tails, sample, flips,
    forced_flips; counts: p_tails, n_total, n_short, n_unparsed, n_used, n_clean, n_used_strict,
    n_used_first_letter), counts sorted by p_tails. ``n_short`` / ``n_used`` follow ``parse``;
    ``n_used_<mode>`` say what each mode keeps. ``n_unparsed`` counts ``parsed == False`` whether
    or not the sequence is long enough to be used.
    """
    require_columns(generations, ["p_tails", "sample", "flips", "parsed", "forced_flips", "n_clean", "clean"],
                    "generations")
    if not isinstance(n_flips, (int, np.integer)) or n_flips < 1:
        raise ValueError(f"binary.generation.n_flips must be a positive int, got {n_flips!r}")
    if parse not in PARSE_MODES:
        raise ValueError(f"binary.generation.parse must be one of {PARSE_MODES}, got {parse!r}")
    g = generations.assign(flips=generations["flips"].fillna("").astype(str),
                           forced_flips=generations["forced_flips"].fillna("").astype(str),
                           parsed=generations["parsed"].fillna(False).astype(bool),
                           clean=generations["clean"].fillna(False).astype(bool),
                           n_clean=generations["n_clean"].fillna(0).astype(int))
    strict_len = np.minimum(g["n_clean"].to_numpy(), g["flips"].str.len().to_numpy())
    enough = {"first_letter": g["flips"].str.len().to_numpy() >= n_flips, "strict": strict_len >= n_flips}
    long_enough = pd.Series(enough[parse], index=g.index)
    kept = g.loc[long_enough, ["p_tails", "sample", "forced_flips"]].assign(
        flips=g.loc[long_enough, "flips"].str[:n_flips])
    kept = kept.sort_values(["p_tails", "sample"], kind="stable").reset_index(drop=True)
    counts = (
        g.assign(short=~long_enough, unparsed=~g["parsed"], strict=enough["strict"],
                 first_letter=enough["first_letter"])
        .groupby("p_tails", sort=True)
        .agg(n_total=("flips", "size"), n_short=("short", "sum"), n_unparsed=("unparsed", "sum"),
             n_clean=("clean", "sum"), n_used_strict=("strict", "sum"),
             n_used_first_letter=("first_letter", "sum"))
        .reset_index()
    )
    counts["n_used"] = counts["n_total"] - counts["n_short"]
    for p, row in counts.set_index("p_tails").iterrows():
        if row["n_short"]:
            log.warning("generation p_tails=%g: %d of %d sequences have fewer than %d generated flips (parse %s); "
                        "dropped", p, row["n_short"], row["n_total"], n_flips, parse)
    ints = ("n_total", "n_short", "n_unparsed", "n_used", "n_clean", "n_used_strict", "n_used_first_letter")
    counts = counts[["p_tails", "n_total", "n_short", "n_unparsed", "n_used", "n_clean", "n_used_strict",
                     "n_used_first_letter"]]
    return kept[["p_tails", "sample", "flips", "forced_flips"]], counts.astype({c: "int32" for c in ints})


def metrics_frame(seqs: pd.DataFrame, source: str, windows: Sequence[int], mode: str = "free") -> pd.DataFrame:
    """:func:`binary_metrics.sequence_metrics` of every row of ``seqs`` (p_tails, sample, flips,
    optional forced_flips: kept as a column, never part of the metrics).

    Returns the ``generation_metrics`` columns with ``source`` and ``mode`` set; ``repeats_w{w}``
    are nullable Int32 (missing where w >= the sequence length).
    """
    schema = contracts.binary_generation_metrics_schema(tuple(windows))
    if seqs.empty:
        return schema.empty_table().to_pandas()
    forced = seqs["forced_flips"] if "forced_flips" in seqs.columns else [None] * len(seqs)
    rows = [
        {"source": source, "p_tails": float(p), "sample": int(s), "flips": f, **bm.sequence_metrics(f, windows),
         "forced_flips": ff, "mode": mode}
        for p, s, f, ff in zip(seqs["p_tails"], seqs["sample"], seqs["flips"], forced)
    ]
    df = pd.DataFrame(rows)
    for w in windows:
        df[f"repeats_w{w}"] = df[f"repeats_w{w}"].astype("Int32")
    return schema_frame(schema, df)


def analyse_generations(
    generations: pd.DataFrame,
    n_flips: int,
    seed: int,
    windows: Sequence[int],
    levenshtein: str,
    parse: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Randomness metrics of the model's sequences and of fitted baselines' samples (A1, A2),
    for each generation mode apart (column ``mode``; a table without one is ``free``).

    Per mode and p_tails: crop (:func:`crop_generations` with ``parse``), fit every baseline to
    the used sequences (:func:`baselines.compare_baselines`, log-likelihood of the model's
    sequences under each), draw n_used sequences of n_flips flips from each fitted baseline with
    ``rng(seed, "baseline", name, p_tails)`` (and the mode, for constrained) and compute the
    same metrics, plus the mean pairwise Levenshtein ratio of each set. For constrained
    sequences every baseline is also fitted to the model's per-step probabilities
    (:func:`baselines.compare_baselines_on_probs`: the ``prob_*`` columns).
    Returns (generation_metrics, baselines) as documented in the module docstring.
    """
    if "mode" not in generations.columns:
        generations = generations.assign(mode="free")
    present = set(generations["mode"])
    windows = tuple(int(w) for w in windows)
    metric_parts, rows = [], []
    for mode in [m for m in contracts.GENERATION_MODES if m in present]:
        part = generations[generations["mode"] == mode]
        metrics, baselines = _analyse_mode(part, mode, n_flips, seed, windows, levenshtein, parse)
        metric_parts.append(metrics)
        rows += baselines
    schema = contracts.binary_generation_metrics_schema(windows)
    kept = [m for m in metric_parts if not m.empty]
    metrics = pd.concat(kept, ignore_index=True) if kept else schema.empty_table().to_pandas()
    return schema_frame(schema, metrics), schema_frame(contracts.BINARY_BASELINES, rows)


def _step_probs(part: pd.DataFrame, n_flips: int) -> dict[tuple[float, int], np.ndarray]:
    """(p_tails, sample) -> the first ``n_flips`` per-step probabilities of the second symbol."""
    if "step_p_second" not in part.columns:
        return {}
    return {(float(p), int(s)): np.asarray(list(q)[:n_flips], dtype=float)
            for p, s, q in zip(part["p_tails"], part["sample"], part["step_p_second"]) if q is not None and len(q)}


def _analyse_mode(part: pd.DataFrame, mode: str, n_flips: int, seed: int, windows: tuple[int, ...],
                  levenshtein: str, parse: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """:func:`analyse_generations` for the sequences of one mode."""
    kept, counts = crop_generations(part, n_flips, parse)
    probs = _step_probs(part, n_flips) if mode == "constrained" else {}
    metric_parts = [metrics_frame(kept, MODEL, windows, mode)]
    rows: list[dict[str, Any]] = []
    nan = float("nan")
    no_probs = {"prob_params": None, "prob_cross_entropy": nan, "prob_kl": nan, "prob_mae": nan, "prob_kl_rank": None}
    for c in counts.itertuples(index=False):
        p = float(c.p_tails)
        used = kept[kept["p_tails"] == p]
        seqs = used["flips"].tolist()
        base = {"p_tails": p, "n_total": c.n_total, "n_short": c.n_short, "n_unparsed": c.n_unparsed,
                "n_used": c.n_used, "n_flips": int(n_flips), "parse": parse, "n_clean": c.n_clean,
                "n_used_strict": c.n_used_strict, "n_used_first_letter": c.n_used_first_letter, "mode": mode}
        rows.append({**base, **no_probs, "source": MODEL, "params": "", "n_params": 0, "loglik": nan,
                     "loglik_per_flip": nan, "bic": nan, "bic_rank": 0, "delta_bic": nan,
                     "mean_levenshtein": bm.mean_pairwise_levenshtein(seqs, levenshtein)})
        if not seqs:
            log.warning("generation (%s) p_tails=%g: no sequence with %d flips; baselines not fitted", mode, p,
                        n_flips)
            for name, cls in bl.BASELINES.items():
                rows.append({**base, **no_probs, "source": name, "params": "", "n_params": cls.n_params,
                             "loglik": nan, "loglik_per_flip": nan, "bic": nan, "bic_rank": 0, "delta_bic": nan,
                             "mean_levenshtein": nan})
            continue
        fits = bl.compare_baselines(seqs)
        best = min(f["bic"] for f in fits)
        on_probs = {}
        step = [probs.get((p, int(s))) for s in used["sample"]]
        if probs and all(q is not None and len(q) == len(f) for q, f in zip(step, seqs)):
            on_probs = {r["baseline"]: r for r in bl.compare_baselines_on_probs(seqs, step)}
        for fit in fits:
            name = fit["baseline"]
            model = bl.BASELINES[name](**fit["params"])
            keys = ("baseline", name, p) if mode == "free" else ("baseline", name, p, mode)
            drawn = model.sample(len(seqs), int(n_flips), rng(seed, *keys))
            strings = [bm.to_string(x) for x in drawn]
            sampled = pd.DataFrame({"p_tails": p, "sample": np.arange(len(strings)), "flips": strings})
            metric_parts.append(metrics_frame(sampled, name, windows, mode))
            fitted = on_probs.get(name)
            prob = no_probs if fitted is None else {
                "prob_params": json.dumps(fitted["params"], sort_keys=True),
                "prob_cross_entropy": fitted["cross_entropy"], "prob_kl": fitted["kl"], "prob_mae": fitted["mae"],
                "prob_kl_rank": fitted["kl_rank"]}
            rows.append({**base, **prob, "source": name, "params": json.dumps(fit["params"], sort_keys=True),
                         "n_params": fit["n_params"], "loglik": fit["loglik"],
                         "loglik_per_flip": fit["loglik_per_flip"], "bic": fit["bic"],
                         "bic_rank": fit["bic_rank"], "delta_bic": fit["bic"] - best,
                         "mean_levenshtein": bm.mean_pairwise_levenshtein(strings, levenshtein)})
    if kept.empty:
        log.warning("generation (%s): no sequence has %d parsed flips; metrics tables are empty", mode, n_flips)
    parts = [m for m in metric_parts if not m.empty]
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), rows


def generation_steps(generations: pd.DataFrame, n_flips: int) -> pd.DataFrame:
    """One row per generated flip of the constrained sequences (:data:`contracts.GENERATION_STEPS`):
    the model's probability of the second symbol at that step, and the history it saw (the
    prompt's own flips first): the run it ends with, its fraction of second symbols, and
    ``p_same``, the probability of continuing that run (below ``p_same`` of short runs for
    long ones: the gambler's fallacy; above: a hot hand)."""
    if "mode" not in generations.columns:
        return contracts.GENERATION_STEPS.empty_table().to_pandas()
    part = generations[generations["mode"] == "constrained"].sort_values(["p_tails", "sample"], kind="stable")
    rows = []
    for p, s, forced, flips, q in zip(part["p_tails"], part["sample"], part["forced_flips"], part["flips"],
                                       part["step_p_second"]):
        history = [int(c) for c in (forced or "")]
        for t, (flip, p_second) in enumerate(zip(str(flips)[:n_flips], list(q)[:n_flips]), start=1):
            if history:
                symbol, run = history[-1], 1
                while run < len(history) and history[-1 - run] == symbol:
                    run += 1
                mean = float(np.mean(history))
                same = float(p_second) if symbol == 1 else 1.0 - float(p_second)
            else:  # nothing seen yet: no run to continue
                symbol, run, mean, same = -1, 0, float("nan"), float("nan")
            rows.append({"p_tails": float(p), "sample": int(s), "step": t, "flip": int(flip),
                         "p_second": float(p_second), "run_symbol": symbol, "run_length": run,
                         "running_mean": mean, "p_same": same})
            history.append(int(flip))
    return schema_frame(contracts.GENERATION_STEPS, rows)

