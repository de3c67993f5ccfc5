"""Findings generated from the tables: each study's headline quantities, with CIs.

``headlines(results, model, studies, ...)`` reads a model's analysis tables (through each
study's ``headlines`` hook, :mod:`iclscope.registry`: e.g. :mod:`iclscope.studies.binary.headlines`)
and returns one row per headline quantity (the ``FINDINGS`` contract): what it is, for which unit (a
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

from iclscope.analysis import defaults
from iclscope.analysis.depth import DEPTH_BANDS, depth_band  # noqa: F401 (re-exported for compare and tests)
from iclscope.analysis.stats import bootstrap_ci
from iclscope.registry import STUDIES
from iclscope.registry import study as registered
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


# the findings' own bootstrap (over repeats, sequences, concepts): not a config key
N_BOOT, LEVEL = defaults.N_BOOT, defaults.LEVEL

# ----------------------------------------------------------------------------- assembling

def headlines(root: str | Path, model: str, studies: Sequence[str], datasets: Sequence[str], seed: int,
              n_boot: int = N_BOOT, level: float = LEVEL) -> pd.DataFrame:
    """Every headline of one model's run (``root`` = ``results/{model}``) as a findings frame."""
    root = Path(root)
    rows: list[Headline] = []
    context = {"seed": seed, "n_boot": n_boot, "level": level, "datasets": list(datasets)}
    for name in studies:  # each study's `headlines` hook (iclscope.registry)
        rows += registered(name).call("headlines", root, context)
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
                  "Intervals are bootstrap CIs over the named units at the configured level: "
                  "percentile intervals unless a row's note says otherwise.", ""]
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


# study C's helpers the findings' tests read here (their home: iclscope.studies.labels.headlines)
_MOVED = {"label_effect_form": "iclscope.studies.labels.headlines", "repeats_for_width": "iclscope.studies.labels.headlines"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
