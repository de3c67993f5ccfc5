"""Study B's effects table: every quantity the findings state, with an interval over the
experimental units that were drawn independently, never over layers or repeated rows.

* ``gain``: the change in a behavioural measure after ICL, per task; pairs (condition, variant)
  are resampled when each before prompt pairs with one after prompt, otherwise the distinct
  prompts of each side apart (:func:`iclscope.analysis.resampling.difference_ci`).
* ``attention_log_ratio_change``: per depth band, the change after ICL of the band-averaged
  head-mean log attention ratio (relevant / distractor), resampling prompt pairs.
* ``alignment_change`` / ``alignment_after`` (where nothing is defined before ICL): per depth
  band, the change of the band-averaged hypothesis alignment divided by its comparator's
  ceiling, for the pre-declared readout (pooling, span); resampled are the variants as the
  design draws them: within each condition (reading's stories), or jointly across conditions
  where the design shares them (regression's query x), before and after ICL the same draws, and
  the condition means, similarity matrices and alignments of every layer of the band are
  recomputed in every resample. The interval is normal, from the bootstrap standard error: a
  resample's duplicated variants make condition means noisier and alignment smaller, so the
  bootstrap distribution sits below the estimate and a percentile interval can miss it.
* ``repr_behaviour_r``: per depth band, the band-averaged correlation across conditions of a
  representation measure's change with a behavioural change, for every readout (pooling, span,
  behaviour measure), resampling conditions; ``headline`` marks the pre-declared readout.

Tasks with a story order (reading) also get each quantity but the correlations per order
(``relevant_first`` true / false; null = pooled). Columns: :data:`iclscope.contracts.EFFECTS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from iclscope import contracts
from iclscope.analysis import defaults
from iclscope.analysis import rsa as rsa_math
from iclscope.analysis.depth import DEPTH_BANDS, band_centre, depth_band
from iclscope.analysis.resampling import band_correlation_ci, difference_ci, normal_interval, stratified_draws
from iclscope.seeding import rng

# (relevant_first value, tag in seeds and logs): pooled, then each story order
ORDERS: tuple[tuple[bool | None, str], ...] = ((None, "pooled"), (True, "first"), (False, "second"))
# behaviour metrics whose change after ICL is reported (accuracy is the mean of `correct`)
GAIN_METRICS = ("correct", "logp_correct", "expected_error")
LEVEL = defaults.LEVEL  # study B's intervals (no config key): the documented default level
# bootstrap resamples of the alignment per chunk (bounds the gathered vectors' memory)
_CHUNK = 100


def effect_row(**values: Any) -> dict[str, Any]:
    """A row of the effects table, every column present (absent ones null)."""
    row = {name: None for name in contracts.EFFECTS.names}
    unknown = set(values) - set(row)
    if unknown:
        raise ValueError(f"effects rows have no columns {sorted(unknown)}")
    row.update(values)
    return row


def _orders(frame: pd.DataFrame) -> list[tuple[bool | None, str]]:
    """Pooled, plus each story order when the prompts have one."""
    has = "relevant_first" in frame.columns and frame["relevant_first"].notna().any()
    return list(ORDERS) if has else [ORDERS[0]]


def _in_order(frame: pd.DataFrame, flag: bool | None) -> pd.DataFrame:
    return frame if flag is None else frame[frame["relevant_first"] == flag]


def _band_of(layers: Sequence[int], n_layers: int) -> dict[str, list[int]]:
    bands: dict[str, list[int]] = {name: [] for name, _, _ in DEPTH_BANDS}
    for layer in sorted(layers):
        bands[depth_band(int(layer), n_layers)].append(int(layer))
    return {name: ls for name, ls in bands.items() if ls}


def _band_fields(band: str, layers: Sequence[int]) -> dict[str, Any]:
    return {"band": band, "layer_low": int(min(layers)), "layer_high": int(max(layers)),
            "relative_depth": band_centre(band)}


def _pairs(frame: pd.DataFrame, value: str, before: int, after: int) -> pd.DataFrame:
    """Before and after rows of one (condition, variant) side by side: columns ``before``,
    ``after`` (the values) and ``unit_before``, ``unit_after`` (distinct prompts)."""
    keys = ["condition", "variant"]
    sides = []
    for k, name in ((before, "before"), (after, "after")):
        part = frame[frame["n_shots"] == k][keys + [value, "distinct_prompt_id"]]
        sides.append(part.rename(columns={value: name, "distinct_prompt_id": f"unit_{name}"}))
    return sides[0].merge(sides[1], on=keys, how="inner").sort_values(keys, kind="stable")


# ----------------------------------------------------------------------------- behaviour


def gain_rows(task: str, behaviour: pd.DataFrame, before: int, afters: Sequence[int], seed: int,
              n_boot: int) -> list[dict[str, Any]]:
    """The change of each behaviour metric after ICL (``behaviour``: the behaviour table of one
    task, with ``distinct_prompt_id``), pooled and per story order; seeded by ``rng(seed,
    "effects", task, "gain", metric, after, order)``."""
    rows = []
    frame = behaviour.assign(correct=behaviour["correct"].astype(float))
    for after in afters:
        for flag, tag in _orders(frame):
            part = _in_order(frame, flag)
            for metric in GAIN_METRICS:
                pairs = _pairs(part, metric, before, after)
                if pairs.empty or pairs[["before", "after"]].isna().all().any():
                    continue
                diff = difference_ci(pairs["before"], pairs["unit_before"], pairs["after"], pairs["unit_after"],
                                     rng(seed, "effects", task, "gain", metric, after, tag), n_boot, LEVEL)
                rows.append(effect_row(
                    task=task, quantity="gain", measure=metric, relevant_first=flag, n_shots_before=before,
                    n_shots_after=after, estimate=diff.interval.mean, ci_low=diff.interval.low,
                    ci_high=diff.interval.high, n_units=diff.n_units, units=diff.units, headline=True))
    return rows


# ----------------------------------------------------------------------------- attention


def attention_band_rows(task: str, ratios: pd.DataFrame, prompts: pd.DataFrame, n_layers: int, before: int,
                        afters: Sequence[int], seed: int, n_boot: int) -> list[dict[str, Any]]:
    """Per depth band the change after ICL of the band-averaged head-mean log attention ratio,
    pooled and per story order, resampling prompt pairs (each pair's band averages move
    together); seeded by ``rng(seed, "effects", task, "attention", band, after, order)``.

    ``ratios``: per-prompt ratios (``prompt_id, layer, head, log_ratio``; head -1 is used);
    ``prompts``: ``prompt_id, condition, variant, n_shots, distinct_prompt_id`` (and
    ``relevant_first``)."""
    mean_head = ratios[ratios["head"] == -1]
    rows = []
    for band, layers in _band_of(mean_head["layer"].unique(), n_layers).items():
        per_prompt = (mean_head[mean_head["layer"].isin(layers)].groupby("prompt_id")["log_ratio"].mean()
                      .rename("band_log_ratio"))
        frame = prompts.merge(per_prompt, left_on="prompt_id", right_index=True, how="inner")
        for after in afters:
            for flag, tag in _orders(frame):
                pairs = _pairs(_in_order(frame, flag), "band_log_ratio", before, after)
                if pairs.empty:
                    continue
                diff = difference_ci(pairs["before"], pairs["unit_before"], pairs["after"], pairs["unit_after"],
                                     rng(seed, "effects", task, "attention", band, after, tag), n_boot, LEVEL)
                rows.append(effect_row(
                    task=task, quantity="attention_log_ratio_change", measure="log_ratio", relevant_first=flag,
                    **_band_fields(band, layers), n_shots_before=before, n_shots_after=after,
                    estimate=diff.interval.mean, ci_low=diff.interval.low, ci_high=diff.interval.high,
                    n_units=diff.n_units, units=diff.units, headline=True))
    return rows


# ----------------------------------------------------------------------------- alignment


class AlignmentBands:
    """Band-averaged alignment (normalised by its comparator's ceiling) with a bootstrap over
    the variants within each condition, fed one layer at a time.

    ``prompts``: the task table's ``prompt_id, condition, variant, n_shots,
    distinct_prompt_id`` (and ``relevant_first``); ``fields``: one row per condition (sorted)
    with the hypothesis fields. Draws are seeded by ``rng(seed, "effects", task, "alignment",
    order, band)`` and shared by every layer of the band, both shot counts and every hypothesis,
    so before and after stay paired and the band average is recomputed in each resample. When
    every variant's first-shot prompt is one prompt in every condition (the design shares the
    variant across conditions), variants are drawn jointly for all conditions.
    """

    def __init__(self, task: str, prompts: pd.DataFrame, fields: pd.DataFrame, hypotheses: Sequence[str],
                 pooling: str, span: str, comparator: str, n_layers: int, seed: int, n_boot: int) -> None:
        self.task, self.pooling, self.span, self.comparator = task, pooling, span, comparator
        self.n_layers, self.seed, self.n_boot = n_layers, seed, n_boot
        self.conditions = list(fields.index)
        records = fields.to_dict("records")
        self.hyps = {h: rsa_math.hypothesis_matrix(records, h) for h in hypotheses}
        self.ceilings = {h: rsa_math.comparator_ceiling(m, comparator) for h, m in self.hyps.items()}
        self.shots = sorted(int(k) for k in prompts["n_shots"].unique())
        self.orders = _orders(prompts)
        # per order: the (n_cond, n_slots) variants of each condition in that order
        self.slots: dict[str, np.ndarray] = {}
        for flag, tag in self.orders:
            part = _in_order(prompts, flag)
            per = [sorted(part[part["condition"] == c]["variant"].unique()) for c in self.conditions]
            if len({len(v) for v in per}) == 1 and per[0]:
                self.slots[tag] = np.asarray(per)
        self.prompt_of = {(c, int(v), int(k)): p for p, c, v, k in
                          prompts[["prompt_id", "condition", "variant", "n_shots"]].itertuples(index=False)}
        first = prompts[prompts["n_shots"] == self.shots[0]]
        self.joint = bool(len(first)) and bool(
            (first.groupby("variant")["distinct_prompt_id"].nunique() == 1).all()) and first["condition"].nunique() > 1
        self.points: dict[tuple[str, str, str, int], dict[int, float]] = {}
        self.boots: dict[tuple[str, str, str, int], dict[int, np.ndarray]] = {}
        self._draws: dict[tuple[str, str], np.ndarray] = {}

    def draws(self, tag: str, band: str) -> np.ndarray:
        if (tag, band) not in self._draws:
            slots = self.slots[tag]
            self._draws[(tag, band)] = stratified_draws(
                rng(self.seed, "effects", self.task, "alignment", tag, band), [slots.shape[1]] * len(slots),
                self.n_boot, joint=self.joint)
        return self._draws[(tag, band)]

    def add_layer(self, layer: int, prompt_ids: np.ndarray, vectors: np.ndarray) -> None:
        """One layer's vectors of the readout's pooling and span (rows: ``prompt_ids``)."""
        band = depth_band(layer, self.n_layers)
        row_of = {p: i for i, p in enumerate(prompt_ids)}
        for tag, slots in self.slots.items():
            for k in self.shots:
                rows = np.array([[row_of.get(self.prompt_of.get((c, int(v), k)), -1) for v in slots[i]]
                                 for i, c in enumerate(self.conditions)])
                if (rows < 0).any():
                    continue
                self._add(tag, band, layer, k, vectors, rows)

    def _add(self, tag: str, band: str, layer: int, k: int, vectors: np.ndarray, rows: np.ndarray) -> None:
        sim = rsa_math.similarity_matrix(vectors[rows].mean(axis=1))
        points = {h: rsa_math.alignment(sim, hyp, self.comparator) / self.ceilings[h] for h, hyp in self.hyps.items()}
        defined = [h for h, v in points.items() if np.isfinite(v)]
        for h, v in points.items():
            self.points.setdefault((tag, band, h, k), {})[layer] = v
        if not defined:
            return  # e.g. before ICL on regression: every condition reads the same prompts
        draws = self.draws(tag, band)
        cond = np.arange(len(rows))[None, :, None]
        out = {h: np.empty(self.n_boot) for h in defined}
        for start in range(0, self.n_boot, _CHUNK):
            picked = rows[cond, draws[start:start + _CHUNK]]  # (chunk, n_cond, n_slots)
            sims = rsa_math.batched_similarity(vectors[picked].mean(axis=2))
            for h in defined:
                out[h][start:start + _CHUNK] = rsa_math.batched_alignment(sims, self.hyps[h], self.comparator)
        for h in defined:
            self.boots.setdefault((tag, band, h, k), {})[layer] = out[h] / self.ceilings[h]

    def rows(self, before: int, afters: Sequence[int]) -> list[dict[str, Any]]:
        """The band effects: the change of the band-averaged normalised alignment (or, where it
        is undefined before ICL, its value after ICL)."""
        out = []
        for flag, tag in self.orders:
            if tag not in self.slots:
                continue
            for band, _, _ in DEPTH_BANDS:
                for h in self.hyps:
                    for after in afters:
                        row = self._band_row(tag, band, h, before, after)
                        if row is not None:
                            out.append(effect_row(task=self.task, measure=h, pooling=self.pooling, span=self.span,
                                                  comparator=self.comparator, relevant_first=flag,
                                                  n_shots_before=before, n_shots_after=after, headline=True, **row))
        return out

    def _band_row(self, tag: str, band: str, h: str, before: int, after: int) -> dict[str, Any] | None:
        p_after = self.points.get((tag, band, h, after), {})
        layers = sorted(layer for layer, v in p_after.items() if np.isfinite(v))
        if not layers:
            return None
        p_before = self.points.get((tag, band, h, before), {})
        b_after = self.boots[(tag, band, h, after)]
        n_var = self.slots[tag].shape[1]
        units = (f"{n_var} variants, drawn jointly for the {len(self.conditions)} conditions that share them"
                 if self.joint else f"variants within each of {len(self.conditions)} conditions ({n_var} each)")
        if all(np.isfinite(p_before.get(layer, np.nan)) for layer in layers):
            b_before = self.boots[(tag, band, h, before)]
            point = float(np.mean([p_after[x] - p_before[x] for x in layers]))
            boots = np.mean([b_after[x] - b_before[x] for x in layers], axis=0)
            quantity = "alignment_change"
        else:
            point = float(np.mean([p_after[x] for x in layers]))
            boots = np.mean([b_after[x] for x in layers], axis=0)
            quantity = "alignment_after"
        n_units = n_var if self.joint else int(self.slots[tag].size)
        # one unit has no spread to resample: no interval (not a zero-width one)
        ci = normal_interval(point, boots if n_units > 1 else np.array([]), LEVEL)
        return {"quantity": quantity, **_band_fields(band, layers), "estimate": ci.mean, "ci_low": ci.low,
                "ci_high": ci.high, "n_units": n_units, "units": f"{units}; normal interval from the bootstrap SE"}


# ----------------------------------------------------------------------------- correlations


def correlation_band_rows(task: str, deltas: Mapping[tuple[str, str | None, str | None, str, int], Mapping[int, np.ndarray]],
                          behaviour_deltas: Mapping[tuple[str, int], np.ndarray], n_layers: int, before: int,
                          headline: Mapping[str, str], seed: int, n_boot: int, method: str) -> list[dict[str, Any]]:
    """Per depth band and readout the band-averaged correlation across conditions of a
    representation measure's change with a behavioural change, resampling conditions.

    ``deltas``: (measure, pooling, span, behaviour, after) -> {layer: per-condition change};
    ``behaviour_deltas``: (behaviour, after) -> per-condition change; ``headline``: the
    pre-declared ``pooling``, ``span`` and ``behaviour`` of this task (attention measures have
    no pooling or span of their own and are headline for the declared behaviour). Seeded by
    ``rng(seed, "effects", task, "correlation", measure, pooling, span, behaviour, after, band)``.
    """
    rows = []
    for (measure, pooling, span, behaviour, after), per_layer in sorted(deltas.items(), key=lambda kv: str(kv[0])):
        is_headline = behaviour == headline["behaviour"] and (
            pooling is None or (pooling == headline["pooling"] and span == headline["span"]))
        for band, layers in _band_of(list(per_layer), n_layers).items():
            gen = rng(seed, "effects", task, "correlation", measure, pooling, span, behaviour, after, band)
            ci, n = band_correlation_ci(np.stack([per_layer[x] for x in layers]),
                                        behaviour_deltas[(behaviour, after)], gen, n_boot, method, LEVEL)
            rows.append(effect_row(
                task=task, quantity="repr_behaviour_r", measure=measure, pooling=pooling, span=span,
                behaviour=behaviour, **_band_fields(band, layers), n_shots_before=before, n_shots_after=after,
                estimate=ci.mean, ci_low=ci.low, ci_high=ci.high, n_units=n, units="conditions",
                headline=bool(is_headline)))
    return rows
