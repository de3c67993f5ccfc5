"""Findings generated from the tables: each study's headline quantities, with CIs.

``headlines(results, model, studies, ...)`` reads a model's analysis tables and returns one
row per headline quantity (the ``FINDINGS`` contract): what it is, for which unit (a
concept, a task, a layer band, a dataset), the estimate with its interval, how many units
it rests on, and the table it was read from. ``render_markdown`` turns those rows, and only
those rows, into ``findings.md``: every number the text states is a cell of the findings
table, and every cell is recomputed from its source table by the tests. The compare stage
stacks the per-model findings tables, so per-model and cross-model statements share code.

Intervals come from the analysis tables where they hold one; where a headline combines
table rows (a paired before/after difference, a mean over layers of a depth band) the
interval is a seeded percentile bootstrap over the named units (``analysis.stats``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from iclscope.analysis.depth import DEPTH_BANDS, depth_band  # noqa: F401 (re-exported for compare and tests)
from iclscope.analysis.stats import bootstrap_ci
from iclscope.registry import STUDIES, study
from iclscope.seeding import rng
from iclscope.tables import TableError, read_table, table_metadata

FINDINGS = pa.schema([
    ("model", pa.string()), ("study", pa.string()), ("quantity", pa.string()), ("unit", pa.string()),
    ("estimate", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("n", pa.int64()),
    ("relative_depth", pa.float64()), ("source", pa.string()), ("note", pa.string()),
])



@dataclass(frozen=True)
class Headline:
    """One headline quantity of one model (a row of the findings table)."""

    study: str
    quantity: str
    unit: str
    estimate: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0
    source: str = ""
    relative_depth: float = math.nan
    note: str = ""

    def __post_init__(self) -> None:
        # one unit has no spread to show: its "interval" would be the point itself
        if self.n == 1 and not (math.isnan(self.ci_low) and math.isnan(self.ci_high)):
            object.__setattr__(self, "ci_low", math.nan)
            object.__setattr__(self, "ci_high", math.nan)


def fmt(value: float) -> str:
    """How findings print a number (the tests parse the markdown with the same rule)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    if math.isinf(value):
        return "infinite" if value > 0 else "minus infinite"
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _read(root: Path, rel: str, columns: Sequence[str]) -> pd.DataFrame:
    frame = read_table(root / rel).to_pandas()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TableError(f"table {root / rel} lacks columns {missing} that the findings read")
    return frame


def _boot(values: Iterable[float], seed: int, *keys: object, n_boot: int, level: float) -> tuple[float, float, float, int]:
    """Mean and bootstrap CI over units; no interval from fewer than two units (a single
    unit's "interval" is the point itself)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    ci = bootstrap_ci(arr, rng(seed, "findings", *keys), n_boot=n_boot, level=level)
    if len(arr) < 2:
        return ci.mean, float("nan"), float("nan"), len(arr)
    return ci.mean, ci.low, ci.high, len(arr)


# ----------------------------------------------------------------------------- study A

def binary_headlines(root: Path, seed: int, n_boot: int = 1000, level: float = 0.95) -> list[Headline]:
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
        alpha = (1 - level) / 2
        out.append(Headline("binary", f"p_random_drop_{lo}_to_{hi}", "concepts - controls",
                            float(a.mean() - b.mean()), *map(float, np.quantile(boots, [alpha, 1 - alpha])),
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


# ----------------------------------------------------------------------------- study B

# how a unit names the prompts it rests on: relevant_first -> suffix (null = every prompt)
ORDER_SUFFIX = {None: "", True: " (relevant first)", False: " (relevant second)"}


def _order_of(value: Any) -> bool | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value) else bool(value)


def effect_unit(row: Any) -> str:
    """The findings' unit of a study B effect (parsed back by the tests): task, what, band,
    story order."""
    order = ORDER_SUFFIX[_order_of(row.relevant_first)]
    if row.quantity == "gain":
        return f"{row.task} k={row.n_shots_before}->{row.n_shots_after}{order}"
    what = "" if row.quantity == "attention_log_ratio_change" else f" {row.measure}"
    return f"{row.task}{what} {row.band}{order}"


def effect_quantity(row: Any) -> str:
    return f"gain_{row.measure}" if row.quantity == "gain" else str(row.quantity)


def effect_note(row: Any) -> str:
    """What an effect is, read from its row: the readout, the normalisation, what the
    interval resampled."""
    # counts in code spans: every number the findings state outside code is a table cell
    units = f"CI: bootstrap over `{row.units}`"
    if row.quantity == "gain":
        return f"{units}"
    layers = f"layers `{row.layer_low}-{row.layer_high}` averaged in every resample"
    if row.quantity.startswith("alignment"):
        return (f"{row.comparator} / its ceiling, {row.pooling} pooling of span {row.span} (pre-declared); "
                f"{units}, {layers}")
    if row.quantity == "repr_behaviour_r":
        readout = "" if row.pooling is None else f"{row.pooling} pooling of span {row.span}, "
        return (f"{readout}behaviour {row.behaviour} (pre-declared: representations.analysis.headline); "
                f"{units}, {layers}")
    return f"{units}, {layers}"


def representation_headlines(root: Path) -> list[Headline]:
    """Study B: the effects table's headline rows (its pre-declared readout), each with its
    interval over the experimental units: behaviour gains after ICL, and per depth band the
    change of normalised alignment, of the attention log ratio, and the correlation of
    representation change with behaviour change; tasks with a story order also per order."""
    src = "representations/effects.parquet"
    eff = _read(root, src, ["task", "quantity", "measure", "band", "relevant_first", "estimate", "ci_low",
                            "ci_high", "n_units", "units", "headline"])
    eff = eff[eff["headline"].astype(bool)]
    out = []
    for row in eff.itertuples(index=False):
        depth = float(row.relative_depth) if row.relative_depth is not None and not pd.isna(row.relative_depth) \
            else math.nan
        out.append(Headline("representations", effect_quantity(row), effect_unit(row), float(row.estimate),
                            float(row.ci_low), float(row.ci_high), int(row.n_units), src, relative_depth=depth,
                            note=effect_note(row)))
    return out


def primary_comparator(rsa: pd.DataFrame) -> str:
    """The RSA comparator findings and comparisons read: the first configured one (the table
    keeps the configured order: `representations.analysis.rsa_comparators`)."""
    return str(rsa["comparator"].iloc[0])


def one_readout(g: pd.DataFrame, task: str, span: Mapping[str, str] | None, pooling: str) -> pd.DataFrame:
    """The rows of one pooling and span (the figures' defaults), so layers are not mixed."""
    pools = sorted(g["pooling"].unique())
    g = g[g["pooling"] == (pooling if pooling in pools else pools[0])]
    spans = sorted(g["span"].unique())
    want = (span or {}).get(task)
    return g[g["span"] == (want if want in spans else spans[0])]


# the findings' own bootstrap (over layers in a band, over repeats): not a config key
N_BOOT, LEVEL = 1000, 0.95

# ----------------------------------------------------------------------------- study C

# the precision a label-sensitivity effect should reach (nats, full CI width)
TARGET_CI_WIDTH = 0.2
# the quantity suffixes of study C effects adjusted by their content-free twins (a
# cross-fitted control variate) and after contextual calibration with them
ADJUSTED_SUFFIX = " adjusted by content-free"
CALIBRATED_SUFFIX = " calibrated"
# study C effect quantity -> (summary kind, metric)
LABEL_EFFECT_FORMS = {
    "": ("pooled_difference", "logp_true"),
    ADJUSTED_SUFFIX: ("pooled_difference_adjusted", "logp_true"),
    CALIBRATED_SUFFIX: ("pooled_difference", "logp_true_calibrated"),
}


def label_effect_form(quantity: str) -> tuple[str, str, str, str]:
    """``"default - random adjusted by content-free"`` -> (a, b, summary kind, metric)."""
    for suffix in (ADJUSTED_SUFFIX, CALIBRATED_SUFFIX):
        if quantity.endswith(suffix):
            a, b = quantity.removesuffix(suffix).split(" - ")
            return (a, b, *LABEL_EFFECT_FORMS[suffix])
    a, b = quantity.split(" - ")
    return (a, b, *LABEL_EFFECT_FORMS[""])


def repeats_for_width(width: float, n: int, target: float) -> int:
    """Repeats needed for a CI of ``target`` width, from one of ``width`` at ``n`` repeats
    (a CI's width shrinks as 1 / sqrt(repeats)); ``n`` itself when already narrow enough."""
    if not (math.isfinite(width) and n > 0):
        return 0
    return max(n, math.ceil(n * (width / target) ** 2))

def label_headlines(root: Path, datasets: Sequence[str], seed: int, n_boot: int = 1000,
                    level: float = 0.95) -> list[Headline]:
    """Study C per dataset: default - random and default - flipped effects pooled over
    positions, the share of late predictions following flipped labels, and the halfway
    recency effect (D->F vs F->D after 2N examples)."""
    out: list[Headline] = []
    for ds in datasets:
        src = f"labels/{ds}/summary.parquet"
        summary = _read(root, src, ["kind", "metric", "position_name", "condition", "condition_b", "mean",
                                    "ci_low", "ci_high", "n", "beta", "variance_ratio"])
        notes = {
            "": "log-likelihood of the true label, nats, paired by repeat",
            ADJUSTED_SUFFIX: "log-likelihood of the true label, nats, paired by repeat, minus beta times the same "
                             "difference between the conditions' content-free twins (a control variate of mean "
                             "zero; beta cross-fitted over repeats)",
            CALIBRATED_SUFFIX: "log-likelihood of the true label after contextual calibration with the "
                               "condition's content-free twin at each position, nats, paired by repeat",
        }
        for suffix, (kind, metric) in LABEL_EFFECT_FORMS.items():
            pooled = summary[(summary["kind"] == kind) & (summary["metric"] == metric)]
            for r in pooled.itertuples(index=False):
                effect = f"{r.condition} - {r.condition_b}{suffix}"
                out.append(Headline("labels", effect, f"{ds} {r.position_name}", float(r.mean), float(r.ci_low),
                                    float(r.ci_high), int(r.n), src, note=notes[suffix]))
                if suffix == ADJUSTED_SUFFIX:
                    out.append(Headline("labels", "control_beta", f"{ds} {r.position_name} {effect}",
                                        float(r.beta), n=int(r.n), source=src,
                                        note="the control variate's coefficient cov / var of the twins' "
                                             "difference, estimated on all repeats"))
                    out.append(Headline("labels", "control_variance_ratio", f"{ds} {r.position_name} {effect}",
                                        float(r.variance_ratio), n=int(r.n), source=src,
                                        note="variance over repeats of the adjusted effect over that of the plain "
                                             "one: below one the twins removed spread (read the adjusted form), "
                                             "near one they share no noise with the prompts (the forms agree)"))
                if r.condition != "default" or suffix == CALIBRATED_SUFFIX:
                    continue
                # the label-sensitivity effects: how precise are they?
                out.append(Headline("labels", f"repeats_for_ci_width_{fmt(TARGET_CI_WIDTH)}",
                                    f"{ds} {r.position_name} {effect}",
                                    float(repeats_for_width(r.ci_high - r.ci_low, int(r.n), TARGET_CI_WIDTH)),
                                    n=int(r.n), source=src,
                                    note="repeats needed for a CI of that width in nats, from this CI's width "
                                         "(widths shrink with the square root of the repeats)"))
        recency = summary[(summary["kind"] == "difference") & (summary["condition"] == "flip_df")
                          & (summary["condition_b"] == "flip_fd") & (summary["metric"] == "logp_true")]
        for r in recency.itertuples(index=False):
            out.append(Headline("labels", "flip_df - flip_fd", f"{ds} {r.position_name}", float(r.mean),
                                float(r.ci_low), float(r.ci_high), int(r.n), src,
                                note="log-likelihood of the true label, nats, paired by repeat"))

        src = f"labels/{ds}/positions.parquet"
        pos = _read(root, src, ["condition", "repeat", "position", "correct_context"])
        flipped = pos[pos["condition"] == "flipped"]
        if not flipped.empty:
            n_pos = int(pos["position"].max())
            late = flipped[flipped["position"] > n_pos - max(n_pos // 4, 1)]
            per_repeat = late.groupby("repeat")["correct_context"].mean().astype(float)
            mean, lo, hi, n = _boot(per_repeat.to_list(), seed, "labels", ds, "follow_flipped",
                                    n_boot=n_boot, level=level)
            out.append(Headline("labels", "follows_flipped_late", ds, mean, lo, hi, n, src,
                                note="share of argmax predictions equal to the flipped in-context label, "
                                     "last quarter of positions; CI over repeats"))
    return out


# ----------------------------------------------------------------------------- assembling

def headlines(root: str | Path, model: str, studies: Sequence[str], datasets: Sequence[str], seed: int,
              n_boot: int = 1000, level: float = 0.95) -> pd.DataFrame:
    """Every headline of one model's run (``root`` = ``results/{model}``) as a findings frame."""
    root = Path(root)
    rows: list[Headline] = []
    context = {"seed": seed, "n_boot": n_boot, "level": level, "datasets": list(datasets)}
    for name in studies:  # each study's `headlines` hook (iclscope.registry)
        rows += study(name).call("headlines", root, context)
    frame = pd.DataFrame([asdict(r) for r in rows], columns=[f for f in FINDINGS.names if f != "model"])
    frame.insert(0, "model", model)
    return frame


# each study's heading in findings.md, in registry order (the order of the studies' sections)
STUDY_HEADINGS = {s.name: s.title for s in STUDIES.values()}


def _interval(r: Any) -> str:
    if math.isnan(r.ci_low) or math.isnan(r.ci_high):
        return "no interval"
    return f"CI [{fmt(r.ci_low)}, {fmt(r.ci_high)}]"


def sentence(rows: Sequence[Any]) -> str:
    """The sentence that reads one bullet's findings rows; every number in it is a cell of them.

    Units and quantities are written in backticks (they may contain digits, e.g. a
    concept `0011` or `k=0->8`); every other number is an estimate, an interval or an n."""
    r = rows[0]
    q, u = r.quantity, r.unit
    est, ci = fmt(r.estimate), _interval(r)
    n = f"n = {fmt(r.n)}" if r.n else ""
    tail = f" ({'; '.join(x for x in (ci, n) if x)})"
    if q.startswith("p_random_drop"):
        return (f"`{u}`: p(random) at the shortest minus at the longest length `{q}` is {est}{tail} "
                "(positive: the judgment moves towards non-random as |x| grows).")
    if q == "transition":
        text = (f"`{u}`: transition point |x|* {est} ({ci})" if not math.isnan(r.estimate)
                else f"`{u}`: no transition point |x|* within the lengths fitted")
        for s in rows[1:]:
            text += (f", logistic slope {fmt(s.estimate)} ({_interval(s)})" if not math.isnan(s.estimate)
                     else ", no logistic slope estimated")
        return text + f"; {r.note}."
    if q == "sequences_kept":
        return f"`{u}`: {est} of {fmt(r.n)} {r.note}."
    if q == "baseline_bic_wins":
        text = f"`{u}`: the baseline has the lowest BIC in {est} of {fmt(r.n)} p(Tails) conditions"
        for s in rows[1:]:
            text += f"; its BIC summed over them is {fmt(s.estimate)}"
        return text + "."
    if q == "baseline_kl_wins":
        text = (f"`{u}`: fitted to the model's per-step probabilities, the baseline comes closest (lowest KL) "
                f"in {est} of {fmt(r.n)} p(Tails) conditions")
        for s in rows[1:]:
            text += f"; its mean KL per step is {fmt(s.estimate)} nats"
        return text + "."
    if q.startswith("gain_"):
        return f"`{u}`: change in `{q[5:]}` after ICL {est}{tail}, {r.note}."
    if q.endswith("_change") or q == "repr_behaviour_r":
        return f"`{u}`: `{q}` {est}{tail}, {r.note}."
    if q.startswith("repeats_for_ci_width_"):
        return f"`{u}`: `{q}` {est} ({r.note}; n = {fmt(r.n)} now)."
    if q == "follows_flipped_late":
        return f"`{u}`: {est} {r.note}{tail}."
    return f"`{u}`: `{q}` {est}{tail}; {r.note}."


# quantities read in the same bullet as the one before them (same study, source and unit)
_JOINED = {"sharpness": "transition", "baseline_summed_bic": "baseline_bic_wins",
           "baseline_mean_kl": "baseline_kl_wins"}


def bullet_groups(frame: pd.DataFrame) -> list[list[int]]:
    """Row positions of ``frame`` read by each bullet, in the order they are printed."""
    groups: list[list[int]] = []
    for study in STUDY_HEADINGS:
        for _, g in frame[frame["study"] == study].groupby("source", sort=False):
            for i in g.index:
                row = frame.loc[i]
                last = groups[-1] if groups else None
                if (last is not None and _JOINED.get(row["quantity"]) == frame.loc[last[0], "quantity"]
                        and frame.loc[last[0], "unit"] == row["unit"] and frame.loc[last[0], "source"] == row["source"]):
                    last.append(i)
                else:
                    groups.append([i])
    return groups


def recorded_warnings(root: Path, sources: Sequence[Path]) -> dict[str, list[str]]:
    """The warnings each source table's step logged (provenance ``warnings``), by table."""
    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    for path in sources:  # a step's tables all carry its warnings: each is listed once
        raw = table_metadata(path).get("warnings")
        fresh = [m for m in json.loads(raw) if m not in seen] if raw else []
        if fresh:
            out[str(Path(path).relative_to(root))] = fresh
            seen.update(fresh)
    return out


def render_markdown(frame: pd.DataFrame, model: str, provenance: Mapping[str, str] | None = None,
                    warnings: Mapping[str, Sequence[str]] | None = None) -> str:
    """findings.md of one model: a heading per study, a source line per table, one bullet
    per group of :func:`bullet_groups`, then the warnings the analyses logged (quoted: they
    are the steps' own words, not findings)."""
    frame = frame.reset_index(drop=True)
    lines = [f"# Findings: {model}", ""]
    if provenance:
        lines += ["Generated by `iclscope findings` from this run's tables ("
                  + ", ".join(f"{k} `{v}`" for k, v in sorted(provenance.items())) + "). "
                  "Intervals are percentile bootstrap CIs at the configured level.", ""]
    rows = list(frame.itertuples(index=False))
    current: tuple[str, str] | None = None
    for group in bullet_groups(frame):
        first = rows[group[0]]
        if current is None or current[0] != first.study:
            lines += ["", f"## {STUDY_HEADINGS[first.study]}", ""]
        if current != (first.study, first.source):
            lines += ["", f"From `{first.source}`:", ""]
            current = (first.study, first.source)
        lines.append(f"- {sentence([rows[i] for i in group])}")
    if warnings:
        lines += ["", "## Warnings from the analyses", "",
                  "What the steps that made these tables warned about (from their provenance):", ""]
        for table in sorted(warnings):
            lines += [f"- `{table}`: `{message}`" for message in warnings[table]]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"


def tables_config_hash(root: Path, sources: Sequence[Path]) -> str:
    """One hash over the ``config_hash`` of every table the findings read (keyed by the
    table's path under ``root``): it changes with any config key that produced one of them,
    where the findings step's own ``config_hash`` covers only its few parameters."""
    from iclscope import provenance

    recorded = {Path(s).relative_to(root).as_posix(): table_metadata(s).get("config_hash", "") for s in sources}
    return provenance.config_hash(recorded)


def write_findings(root: str | Path, model: str, params: Mapping[str, Any], out_table: str | Path,
                   out_markdown: str | Path) -> pd.DataFrame:
    """Read ``results/{model}``'s analysis tables, write ``findings.parquet`` and ``findings.md``.

    ``params``: ``seed``, ``studies``, ``datasets`` (study C), optional ``n_boot``/``level``."""
    from iclscope import provenance
    from iclscope.tables import atomic_path, recorded_model, write_table

    root = Path(root)
    frame = headlines(root, model, list(params["studies"]), list(params.get("datasets", [])),
                      int(params["seed"]), int(params.get("n_boot", N_BOOT)), float(params.get("level", LEVEL)))
    sources = sorted({root / s for s in frame["source"]}) if len(frame) else []
    meta = provenance.metadata("findings", params, seed=int(params["seed"]), model=recorded_model(sources))
    write_table(pa.Table.from_pandas(frame, schema=FINDINGS, preserve_index=False), out_table, meta)
    recorded = provenance.read_metadata({k.encode(): v.encode() for k, v in meta.items()})
    text = render_markdown(frame, model, {"tables_config_hash": tables_config_hash(root, sources),
                                          "commit": recorded.get("git_commit", "") or "uncommitted"},
                           warnings=recorded_warnings(root, sources))
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(text)
    return frame


def quote_into(document: str, name: str, findings_md: str, source: str) -> str:
    """``document`` with the block between ``<!-- findings:{name} -->`` and
    ``<!-- /findings:{name} -->`` replaced by ``findings_md`` (headings demoted so they nest
    under the document's section) and a line naming the ``source`` file it was copied from.

    This is how the README quotes generated findings instead of carrying numbers by hand."""
    start, end = f"<!-- findings:{name} -->", f"<!-- /findings:{name} -->"
    if document.count(start) != 1 or document.count(end) != 1 or document.index(start) > document.index(end):
        raise ValueError(f"the document needs exactly one {start} ... {end} block")
    body = "\n".join(("###" + line[1:]) if line.startswith("#") else line for line in findings_md.strip().splitlines())
    block = f"{start}\n_Generated: copied verbatim from `{source}` by `iclscope quote-findings`._\n\n{body}\n{end}"
    head, rest = document.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + block + tail
