"""Study B at one layer: RSA, probes and the representation-vs-behaviour correlation for
every (pooling, span, shot count), collected row by row; and the per-task frame they share."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from iclscope.seeding import rng
from iclscope.studies.representations.settings import DISTRACTOR, RELEVANT, RepresentationsSettings
from iclscope.studies.representations.effects import ORDERS
from iclscope.studies.representations.embeddings import LayerVectors
from iclscope.studies.representations.statistics import (
    RSAResult, change_row, condition_alignment, probe_fields, rsa_by_condition,
)


log = logging.getLogger(__name__)


@dataclass
class Collected:
    behaviour: list[pd.DataFrame]
    rsa: list[dict[str, Any]]
    similarity: list[pd.DataFrame]
    probes: list[dict[str, Any]]
    attention: list[pd.DataFrame]
    repr_vs_behaviour: list[dict[str, Any]]
    effects: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TaskFrame:
    """One task's prompts and per-task settings as every analysis step needs them;
    per-condition arrays follow ``order`` (the conditions, sorted)."""

    task: str
    hypotheses: list[str]
    rsa_spans: list[str]
    probe_span: str
    paths: dict[str, str]
    tasks: pd.DataFrame
    fields: pd.DataFrame
    order: list[str]
    prompt_index: pd.Index
    prompt_shots: np.ndarray
    prompt_cond: np.ndarray
    shots: list[int]
    before: int
    afters: list[int]
    readout: dict[str, str]  # the headline's pre-declared pooling, span and behaviour
    n_layers: int = 0  # the deepest layer of the embeddings (0 = the embedding output)

    def per_condition(self, series: pd.Series) -> np.ndarray:
        return series.reindex(self.order).to_numpy(dtype=float)

    def in_order(self, values: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        out = np.full(len(self.order), np.nan)
        position = {c: i for i, c in enumerate(self.order)}
        out[[position[c] for c in labels]] = values
        return out


class LayerRows:
    """Which rows of one layer's vectors hold a (span, pooling, shot count)."""

    def __init__(self, tf: TaskFrame, lv: LayerVectors) -> None:
        pos = tf.prompt_index.get_indexer(lv.prompt_id)
        if (pos < 0).any():
            unknown = sorted(set(lv.prompt_id[pos < 0]))
            raise ValueError(f"{tf.paths['embeddings']}: prompts {unknown[:3]} ({len(unknown)} in all) are not in "
                             f"the task table {tf.paths['tasks']}")
        if not np.isfinite(lv.vectors).all():
            raise ValueError(f"{tf.paths['embeddings']}: non-finite values at layer {lv.layer}")
        self.lv = lv
        self.shots, self.cond = tf.prompt_shots[pos], tf.prompt_cond[pos]
        order = tf.tasks["relevant_first"].to_numpy() if "relevant_first" in tf.tasks.columns else None
        self.first = order[pos] if order is not None else None

    def select(self, span: str, pooling: str, k: int, relevant_first: bool | None = None) -> np.ndarray:
        mask = (self.lv.span == span) & (self.lv.pooling == pooling) & (self.shots == k)
        if relevant_first is not None:
            mask &= self.first == relevant_first
        return np.flatnonzero(mask)

    def orders(self) -> list[tuple[bool | None, str]]:
        """Pooled, then each story order when the task has one."""
        return list(ORDERS) if self.first is not None else [ORDERS[0]]


def layer_rsa(tf: TaskFrame, rows: LayerRows, settings: RepresentationsSettings, seed: int, collected: Collected,
               similarity_entries: list[tuple[int, str, str, int, RSAResult]]) -> dict[tuple[str, str, int], RSAResult]:
    """B4 at one layer: RSA per (pooling, span, shot count), rows collected; returns the results."""
    n_permutations = settings.n_permutations
    comparators = list(settings.rsa_comparators)
    lv, layer = rows.lv, rows.lv.layer
    sims: dict[tuple[str, str, int], RSAResult] = {}
    for pooling in settings.rsa_poolings:
        for span in tf.rsa_spans:
            for k in tf.shots:
                for flag, tag in rows.orders():
                    sel = rows.select(span, pooling, k, flag)
                    if sel.size == 0:
                        continue
                    # the pooled rows keep their seeds; one story order's rows get their own
                    key = (tf.task, layer, pooling, span, k) + (() if flag is None else (tag,))
                    res = rsa_by_condition(lv.vectors[sel], rows.cond[sel], tf.fields, tf.hypotheses, seed,
                                           key, n_permutations=n_permutations, comparators=comparators)
                    if flag is None:
                        sims[(pooling, span, k)] = res
                        similarity_entries.append((layer, pooling, span, k, res))
                    for name, by_method in res.alignments.items():
                        for method, (value, p) in by_method.items():
                            ceiling = res.ceilings[name][method]
                            collected.rsa.append({
                                "task": tf.task, "layer": layer, "n_shots": k, "hypothesis": name,
                                "comparator": method, "alignment": value, "spearman": res.spearman[name],
                                "p_value": p, "pooling": pooling, "span": span, "n_conditions": len(res.labels),
                                "n_prompts": int(sel.size), "n_permutations": n_permutations,
                                "ceiling": ceiling, "alignment_normalised": value / ceiling,
                                "relevant_first": flag})
    return sims


def layer_probes(tf: TaskFrame, rows: LayerRows, settings: RepresentationsSettings, seed: int,
                  collected: Collected) -> None:
    """B5 at one layer: the probes per shot count with their permutation controls."""
    probe_span, probe_pooling = tf.probe_span, settings.probe_pooling
    lv, layer = rows.lv, rows.lv.layer
    for k in tf.shots:
        sel = rows.select(probe_span, probe_pooling, k)
        if sel.size == 0:
            continue
        scores = probe_fields(lv.vectors[sel], rows.cond[sel], tf.fields, tf.hypotheses, seed,
                              (tf.task, layer, k), n_splits=settings.n_splits,
                              alpha=settings.ridge_alpha, C=settings.logistic_C, n_shuffles=settings.n_shuffles,
                              classifier=settings.classifier, n_shuffles_max=settings.n_shuffles_max)
        for s in scores:
            collected.probes.append({
                "task": tf.task, "layer": layer, "n_shots": k, **s, "pooling": probe_pooling,
                "span": probe_span, "n_prompts": int(sel.size), "n_conditions": len(set(rows.cond[sel]))})


def layer_repr_vs_behaviour(tf: TaskFrame, layer: int, sims: Mapping[tuple[str, str, int], RSAResult],
                             behaviour_deltas: Mapping[tuple[str, int], np.ndarray],
                             ratio_deltas: Mapping[tuple[int, int], np.ndarray], settings: RepresentationsSettings,
                             seed: int, collected: Collected, deltas: dict) -> None:
    """B7 at one layer: per-condition changes of representation measures against behaviour."""
    n_boot, method = settings.n_boot, settings.correlation
    for after in tf.afters:
        measures: list[tuple[str, str | None, str | None, np.ndarray]] = []
        for pooling in settings.rsa_poolings:
            for span in tf.rsa_spans:
                a, b = sims.get((pooling, span, tf.before)), sims.get((pooling, span, after))
                if a is None or b is None:
                    continue
                for name in tf.hypotheses:
                    delta = (tf.in_order(condition_alignment(b.similarity, b.labels, tf.fields, name), b.labels)
                             - tf.in_order(condition_alignment(a.similarity, a.labels, tf.fields, name), a.labels))
                    measures.append((f"alignment:{name}", pooling, span, delta))
        if (layer, after) in ratio_deltas:
            measures.append(("attention_log_ratio", None, f"{RELEVANT}/{DISTRACTOR}", ratio_deltas[(layer, after)]))
        for measure, pooling, span, delta in measures:
            for (behaviour_name, k_after), delta_b in behaviour_deltas.items():
                if k_after != after:
                    continue
                deltas.setdefault((measure, pooling, span, behaviour_name, after), {})[layer] = delta
                gen = rng(seed, "repr_vs_behaviour", tf.task, layer, measure, pooling, span, behaviour_name, after)
                collected.repr_vs_behaviour.append({
                    "task": tf.task, "layer": layer, "measure": measure, "pooling": pooling, "span": span,
                    "behaviour": behaviour_name, "n_shots_before": tf.before, "n_shots_after": after,
                    **change_row(delta, delta_b, gen, n_boot, method)})
