"""Study A's analysis: reads the extracted tables, computes the tables documented in
:mod:`iclscope.studies.binary`, writes them (:func:`analyse`). The judgment (A3),
continuation (A4) and model-selection (A5) functions here and the generation ones (A1, A2)
in :mod:`.generation` are pure: DataFrames in, DataFrames out; the statistics they use live
in :mod:`iclscope.analysis`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from iclscope import contracts, progress, provenance
from iclscope.analysis import binary_metrics as bm
from iclscope.analysis.candidates import restricted_log_softmax
from iclscope.analysis.model_selection import curve_selection
from iclscope.analysis.stats import bootstrap_ci
from iclscope.seeding import rng
from iclscope.studies.binary.frames import require_columns, schema_frame
from iclscope.studies.binary.generation import analyse_generations, generation_steps
from iclscope.studies.binary.settings import INPUTS, OUTPUTS, RANDOM, BinarySettings
from iclscope.tables import read_table, recorded_model, typed_table, write_table

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- A3 judgment


def p_random(readouts: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """p(random) of every judgment prompt.

    ``readouts``: columns prompt_id, readout, candidate, logprob; the rows with readout
    ``judgment`` and candidates ``r`` / ``n`` hold log P(next token starts with r / n).
    ``tasks``: the ``binary_judgment`` task table (prompt_id, concept, length, sample).
    Returns one row per prompt present in both (tasks' order) with columns concept, length,
    sample, p_random, logp_r, logp_n, prompt_id, where
    p_random = P(r) / (P(r) + P(n)), renormalised by :func:`restricted_log_softmax` (stable for
    any log-probs).
    Prompts without readouts are dropped with a warning; a prompt lacking ``r`` or ``n``
    raises ValueError.
    """
    require_columns(readouts, ["prompt_id", "readout", "candidate", "logprob"], "judgment readouts")
    require_columns(tasks, ["prompt_id", "concept", "length", "sample"], "judgment tasks")
    reads = readouts[readouts["readout"] == contracts.JUDGMENT_READOUT]
    if reads.duplicated(["prompt_id", "candidate"]).any():
        dup = reads.loc[reads.duplicated(["prompt_id", "candidate"]), "prompt_id"].iloc[0]
        raise ValueError(f"judgment readouts: prompt {dup!r} has duplicate candidates")
    wide = reads.pivot(index="prompt_id", columns="candidate", values="logprob")
    for letter in ("r", "n"):
        if letter not in wide.columns:
            if wide.empty:
                wide[letter] = pd.Series(dtype=float)
            else:
                raise ValueError(f"judgment readouts have no candidate {letter!r}; got {list(wide.columns)}")
    lacking = wide.index[wide[["r", "n"]].isna().any(axis=1)]
    if len(lacking):
        raise ValueError(f"judgment readouts: prompts {list(lacking[:5])} lack candidate 'r' or 'n'")
    df = tasks[["prompt_id", "concept", "length", "sample"]].merge(
        wide[["r", "n"]].astype(float).rename(columns={"r": "logp_r", "n": "logp_n"}),
        left_on="prompt_id", right_index=True, how="left",
    )
    unread = df["logp_r"].isna()
    if unread.any():
        log.warning("judgment: %d of %d prompts have no readouts (e.g. %s); dropped",
                    int(unread.sum()), len(df), df.loc[unread, "prompt_id"].iloc[0])
        df = df[~unread]
    shares = restricted_log_softmax(np.stack([df["logp_r"].to_numpy(float), df["logp_n"].to_numpy(float)], axis=-1))
    df = df.assign(p_random=np.exp(shares[:, 0]))
    df["length"] = df["length"].astype("int32")
    df["sample"] = df["sample"].astype("int32")
    return schema_frame(contracts.JUDGMENT, df)


# --------------------------------------------------------------------------- A4 continuation



def restricted_log_q(logp0: np.ndarray, logp1: np.ndarray, flips: str) -> np.ndarray:
    """log q_t, t = 1..n: q_t = P(flip t = flips[t-1]) restricted to the two symbols.

    ``logp0``, ``logp1``: shape (n,), log P(symbol 0 / 1 as flip t | prompt, flips < t).
    q_t = the target's share of the two symbols (:func:`restricted_log_softmax`).
    """
    target = bm.as_flips(flips).astype(bool)
    both = restricted_log_softmax(np.stack([logp0, logp1], axis=-1))
    return np.where(target, both[:, 1], both[:, 0])


def judgment_summary(judgment: pd.DataFrame, seed: int, n_boot: int, level: float) -> pd.DataFrame:
    """Mean p(random) per concept and |x| with a bootstrap CI over samples (the figure's
    curves and the controls' band). Seeds: ``rng(seed, "judgment_summary", concept)``.
    A concept has one sample per |x|: its interval is NaN (nothing to resample)."""
    rows = []
    for concept, g in judgment.groupby("concept", sort=True):
        gen = rng(seed, "judgment_summary", concept)
        for length, h in g.groupby("length", sort=True):
            values = h["p_random"].to_numpy(float)
            ci = bootstrap_ci(values, gen, n_boot, level) if len(values) > 1 else None
            rows.append({"concept": concept, "length": int(length), "mean": float(values.mean()),
                         "ci_low": ci.low if ci else float("nan"), "ci_high": ci.high if ci else float("nan"),
                         "n": len(values)})
    return pd.DataFrame(rows, columns=contracts.JUDGMENT_SUMMARY.names)


def continuation_curves(readouts: pd.DataFrame, tasks: pd.DataFrame, max_depth: int) -> pd.DataFrame:
    """P(the next d flips continue the concept | first n flips), per prompt (rotation and
    replicate variant).

    ``readouts``: rows with readout ``flip_t`` (t = 1..length), candidates ``0`` / ``1``,
    ``logprob`` = log P(symbol as flip t | prompt, flips 1..t-1). ``tasks``: the
    ``binary_continuation`` table (prompt_id, concept, rotation, flips; ``variant``, 0
    where absent).
    With q_t from :func:`restricted_log_q`, P(continue d | |x| = n) = prod_{t=n+1}^{n+d} q_t for
    n = 0..len(flips) - d and d = 1..min(max_depth, len(flips)) (from cumulative sums of log q).
    Returns columns concept, rotation, variant, length (= n), depth, p_continue, prompt_id.
    A prompt without readouts is dropped with a warning; one missing some flip raises ValueError.
    """
    require_columns(readouts, ["prompt_id", "readout", "candidate", "logprob"], "continuation readouts")
    require_columns(tasks, ["prompt_id", "concept", "rotation", "flips"], "continuation tasks")
    if not isinstance(max_depth, (int, np.integer)) or max_depth < 1:
        raise ValueError(f"max_depth must be a positive int, got {max_depth!r}")
    cols = ["concept", "rotation", "variant", "length", "depth", "p_continue", "prompt_id"]
    if "variant" not in tasks.columns:
        tasks = tasks.assign(variant=0)
    t = readouts["readout"].map(contracts.flip_index)
    reads = readouts[t.notna()].assign(t=t[t.notna()].astype(int))
    by_prompt = {pid: g for pid, g in reads.groupby("prompt_id", sort=False)}
    parts = []
    for row in tasks.itertuples(index=False):
        g = by_prompt.get(row.prompt_id)
        if g is None:
            log.warning("continuation: prompt %s has no readouts; dropped", row.prompt_id)
            continue
        n = len(row.flips)
        wide = g.pivot(index="t", columns="candidate", values="logprob").reindex(range(1, n + 1))
        if not {"0", "1"} <= set(wide.columns) or wide[["0", "1"]].isna().any().any():
            raise ValueError(f"continuation readouts of prompt {row.prompt_id!r} lack candidate '0'/'1' "
                             f"for some of flip_1..flip_{n}")
        logq = restricted_log_q(wide["0"].to_numpy(float), wide["1"].to_numpy(float), row.flips)
        csum = np.concatenate(([0.0], np.cumsum(logq)))
        for d in range(1, min(int(max_depth), n) + 1):
            lengths = np.arange(0, n - d + 1)
            parts.append(pd.DataFrame({
                "concept": row.concept, "rotation": int(row.rotation), "variant": int(row.variant),
                "length": lengths, "depth": d,
                "p_continue": np.exp(csum[lengths + d] - csum[lengths]), "prompt_id": row.prompt_id,
            }))
    if not parts:
        dtypes = ["object", "int32", "int32", "int32", "int32", "float64", "object"]
        return pd.DataFrame({c: pd.Series(dtype=dt) for c, dt in zip(cols, dtypes)})
    out = pd.concat(parts, ignore_index=True)
    return out.astype({"rotation": "int32", "variant": "int32", "length": "int32", "depth": "int32"})[cols]


def combine_rotations(curves: pd.DataFrame) -> pd.DataFrame:
    """Combine a concept's units (phase rotations x replicate variants) at each (|x|, depth).

    Each rotation is a different sequence of the same concept, so the rotations are
    averaged at equal |x|: p_continue = mean over units (the probability under a phase and
    a variant drawn uniformly); p_continue_sum = the sum over rotations (the paper's "summed
    over phase rotations", = k x mean when all k rotations are present), averaged over the
    variants; min / max over units; n_rotations, n_units.
    ``curves``: output of :func:`continuation_curves`. Returns the ``continuation`` table.
    """
    if curves.empty:
        return contracts.CONTINUATION.empty_table().to_pandas()
    if "variant" not in curves.columns:
        curves = curves.assign(variant=0)
    keys = ["concept", "length", "depth"]
    g = curves.groupby(keys, sort=True)
    out = g["p_continue"].agg(p_continue="mean", p_continue_min="min", p_continue_max="max",
                              n_units="count").reset_index()
    summed = curves.groupby([*keys, "variant"], sort=True)["p_continue"].sum().groupby(level=keys).mean()
    out["p_continue_sum"] = summed.to_numpy()
    out["n_rotations"] = g["rotation"].nunique().to_numpy()
    incomplete = out.loc[out["n_rotations"] != out["concept"].str.len(), "concept"].unique()
    if len(incomplete):
        log.warning("continuation: concepts %s lack some phase rotations; averaged over those present",
                    list(incomplete))
    out = out.astype({"length": "int32", "depth": "int32", "n_rotations": "int32", "n_units": "int32"})
    return schema_frame(contracts.CONTINUATION, out)


# --------------------------------------------------------------------------- A5 model selection


def judgment_selection(judgment: pd.DataFrame, seed: int, n_boot: int, level: float, min_units: int) -> pd.DataFrame:
    """Model selection of every judgment curve: each concept (k = len(concept); units: its
    replicate variants) and the random controls (``lm`` row only; units: the samples).

    ``judgment``: output of :func:`p_random`. Seeds: ``rng(seed, "model_selection",
    "judgment", concept)``.
    """
    rows: list[dict[str, Any]] = []
    groups = judgment.groupby("concept", sort=True)
    for concept, g in progress.track(groups, groups.ngroups, "bootstrap judgment curves", unit="curve"):
        wide = g.pivot_table(index="sample", columns="length", values="p_random", aggfunc="mean")
        wide = wide.dropna(axis=1).sort_index(axis=1)
        if wide.shape[1] == 0:
            continue
        k = 0 if concept == RANDOM else len(concept)
        gen = rng(seed, "model_selection", "judgment", concept)
        rows += curve_selection("judgment", str(concept), wide.columns.to_numpy(float), wide.to_numpy(float),
                                k, 0, gen, n_boot, level, min_units=min_units)
    return _selection_frame(rows)


def continuation_selection(
    curves: pd.DataFrame, seed: int, n_boot: int, level: float, min_units: int
) -> pd.DataFrame:
    """Model selection of every continuation curve (concept x depth), bootstrap over units
    (phase rotations x replicate variants).

    ``curves``: per-prompt output of :func:`continuation_curves`. Seeds:
    ``rng(seed, "model_selection", "continuation", concept, depth)``.
    """
    rows: list[dict[str, Any]] = []
    groups = curves.groupby(["concept", "depth"], sort=True)
    for (concept, depth), g in progress.track(groups, groups.ngroups, "bootstrap continuation curves", unit="curve"):
        units = ["rotation", "variant"] if "variant" in g.columns else ["rotation"]
        wide = g.pivot_table(index=units, columns="length", values="p_continue", aggfunc="mean")
        wide = wide.dropna(axis=1).sort_index(axis=1)
        if wide.shape[1] == 0:
            continue
        gen = rng(seed, "model_selection", "continuation", concept, int(depth))
        rows += curve_selection("continuation", str(concept), wide.columns.to_numpy(float), wide.to_numpy(float),
                                len(concept), int(depth), gen, n_boot, level, min_units=min_units)
    return _selection_frame(rows)


def _selection_frame(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    df = schema_frame(contracts.MODEL_SELECTION, rows)
    if not df.empty:
        df = df.astype({c: "int32" for c in ("depth", "k", "n_points", "n_units", "n_params")})
        df["best"] = df["best"].astype(bool)
    return df


# --------------------------------------------------------------------------- I/O


def _read(path: str, what: str, columns: list[str] | None = None) -> pd.DataFrame:
    table = read_table(path, columns=columns)
    log.info("read %s: %d rows from %s", what, table.num_rows, path)
    return table.to_pandas()


def analyse(inputs: Mapping[str, str], params: Mapping[str, Any], outs: Mapping[str, str]) -> None:
    """Run study A's analyses and write the six tables.

    ``inputs``: paths keyed judgment_tasks, continuation_tasks, generations,
    judgment_readouts, continuation_readouts. ``params``: {"seed": int, "binary": the config's
    ``binary`` section} (defaults filled from the schema). ``outs``: paths keyed
    generation_metrics, baselines, judgment, judgment_summary, continuation, model_selection. Every table is
    written atomically with provenance (kind ``binary_<out>``, the params hash, the seed, the
    model recorded in the inputs, and the analysis settings).
    """
    from iclscope.config import with_defaults

    for keys, given, what in ((INPUTS, inputs, "inputs"), (OUTPUTS, outs, "outs")):
        missing = [k for k in keys if k not in given]
        if missing:
            raise ValueError(f"analyse binary: {what} lack key(s) {missing}; expected {list(keys)}")
    if "seed" not in params or "binary" not in params:
        raise ValueError(f"analyse binary: params need 'seed' and 'binary', got {sorted(params)}")
    seed = int(params["seed"])
    settings = BinarySettings.from_section(with_defaults("binary", params["binary"]))

    generations = _read(inputs["generations"], "generations",
                        ["prompt_id", "p_tails", "sample", "flips", "parsed", "forced_flips", "n_clean", "clean",
                         "mode", "step_p_second"])
    metrics, baselines = analyse_generations(generations, settings.n_flips, seed, settings.windows,
                                             settings.levenshtein, settings.parse)

    jtasks = _read(inputs["judgment_tasks"], "judgment tasks", ["prompt_id", "concept", "length", "sample"])
    jreads = _read(inputs["judgment_readouts"], "judgment readouts")
    judgment = p_random(jreads, jtasks)
    if judgment.empty:
        log.warning("judgment: no prompt has readouts; judgment tables are empty")

    ctasks = _read(inputs["continuation_tasks"], "continuation tasks")
    ctasks = ctasks[[c for c in ("prompt_id", "concept", "rotation", "variant", "length", "flips") if c in ctasks]]
    creads = _read(inputs["continuation_readouts"], "continuation readouts")
    curves = continuation_curves(creads, ctasks, settings.max_depth)
    continuation = combine_rotations(curves)
    if continuation.empty:
        log.warning("continuation: no prompt has readouts; continuation tables are empty")

    log.info("model selection: %d bootstrap replicates per curve", settings.n_boot)
    parts = [judgment_selection(judgment, seed, settings.n_boot, settings.ci_level, settings.min_units),
             continuation_selection(curves, seed, settings.n_boot, settings.ci_level, settings.min_units)]
    parts = [p for p in parts if not p.empty]
    selection = _selection_frame(pd.concat(parts, ignore_index=True)) if parts else _selection_frame([])

    card = recorded_model([inputs[k] for k in ("generations", "judgment_readouts", "continuation_readouts")])
    extra = {"analysis": settings.analysis()}
    schemas = {
        "generation_metrics": contracts.binary_generation_metrics_schema(settings.windows),
        "baselines": contracts.BINARY_BASELINES,
        "judgment": contracts.JUDGMENT,
        "judgment_summary": contracts.JUDGMENT_SUMMARY,
        "continuation": contracts.CONTINUATION,
        "model_selection": contracts.MODEL_SELECTION,
        "generation_steps": contracts.GENERATION_STEPS,
    }
    frames = {"generation_metrics": metrics, "baselines": baselines,
              "generation_steps": generation_steps(generations, settings.n_flips), "judgment": judgment,
              "judgment_summary": judgment_summary(judgment, seed, settings.n_boot, settings.ci_level),
              "continuation": continuation, "model_selection": selection}
    for name, df in frames.items():
        meta = provenance.metadata(f"binary_{name}", dict(params), seed=seed, model=card, extra=extra)
        write_table(typed_table(df, schemas[name]), outs[name], meta)
        log.info("wrote %s: %d rows -> %s", name, len(df), outs[name])
