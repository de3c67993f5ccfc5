"""Study B's analysis driver: per task, behaviour and attention first, then the embeddings
one layer at a time (:mod:`.layers`), and the tables written with their provenance."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from iclscope import contracts, provenance
from iclscope.studies.representations.attention import prompt_attention_ratios, summarise_attention_ratios
from iclscope.studies.representations.behaviour import (
    behaviour_measures, distinct_prompt_ids, prompt_behaviour, summarise_behaviour,
)
from iclscope.studies.representations.effects import (
    AlignmentBands, attention_band_rows, correlation_band_rows, gain_rows,
)
from iclscope.studies.representations.embeddings import embedding_index, iter_layers
from iclscope.studies.representations.layers import (
    Collected, LayerRows, layer_probes, layer_repr_vs_behaviour, layer_rsa, TaskFrame,
)
from iclscope.studies.representations.settings import (
    DISTRACTOR, INPUT_KINDS, OUTPUTS, RELEVANT, SCHEMAS, TASKS, RepresentationsSettings,
)
from iclscope.studies.representations.statistics import RSAResult, condition_change, condition_fields
from iclscope.tables import read_table, recorded_model, typed_table, write_table


log = logging.getLogger(__name__)


def _tasks_present(inputs: Mapping[str, str]) -> list[str]:
    tasks = [t for t in TASKS if any(f"{t}_{kind}" in inputs for kind in INPUT_KINDS)]
    for task in tasks:
        missing = [f"{task}_{kind}" for kind in INPUT_KINDS if f"{task}_{kind}" not in inputs]
        if missing:
            raise ValueError(f"inputs for task {task!r} lack {missing} (got {sorted(inputs)})")
    unknown = sorted(k for k in inputs if not any(k == f"{t}_{kind}" for t in TASKS for kind in INPUT_KINDS))
    if unknown:
        raise ValueError(f"unknown input keys {unknown}; expected <task>_<kind> for task in {TASKS}, "
                         f"kind in {INPUT_KINDS}")
    return tasks


def _check_present(wanted: Iterable[str], found: Iterable[str], what: str, key: str, path: str) -> None:
    found = sorted(set(found))
    for name in wanted:
        if name not in found:
            raise ValueError(f"{what} {name!r} (representations.analysis.{key}) is not in the embeddings {path}; "
                             f"found: {found}")


def _shared(labels: list[str], fields: pd.DataFrame) -> list[list[str]]:
    """For each (row, col) pair of ``labels``, row-major: the fields the two conditions share."""
    values = fields.loc[labels]
    out = []
    for a in labels:
        for b in labels:
            out.append([f for f in fields.columns if values.at[a, f] == values.at[b, f]])
    return out


def _similarity_frame(task: str, entries: list[tuple[int, str, str, int, RSAResult]], fields: pd.DataFrame) -> pd.DataFrame:
    """The long similarity table of one task from (layer, pooling, span, n_shots, result)."""
    if not entries:
        return pd.DataFrame(columns=contracts.SIMILARITY.names)
    shared_cache: dict[tuple[str, ...], list[list[str]]] = {}
    cols: dict[str, list[Any]] = {name: [] for name in contracts.SIMILARITY.names}
    for layer, pooling, span, k, res in entries:
        labels = tuple(res.labels)
        if labels not in shared_cache:
            shared_cache[labels] = _shared(list(labels), fields)
        n = len(labels)
        cols["task"].append(np.full(n * n, task, dtype=object))
        cols["layer"].append(np.full(n * n, layer))
        cols["pooling"].append(np.full(n * n, pooling, dtype=object))
        cols["span"].append(np.full(n * n, span, dtype=object))
        cols["n_shots"].append(np.full(n * n, k))
        cols["row_condition"].append(np.repeat(np.asarray(labels, dtype=object), n))
        cols["col_condition"].append(np.tile(np.asarray(labels, dtype=object), n))
        cols["similarity"].append(res.similarity.reshape(-1))
        cols["shared"].append(shared_cache[labels])
    data = {name: (np.concatenate(parts) if name != "shared" else [x for part in parts for x in part])
            for name, parts in cols.items()}
    return pd.DataFrame(data)


def _task_frame(task: str, inputs: Mapping[str, str], settings: RepresentationsSettings) -> TaskFrame | None:
    """Read the task table (None, with a warning, when it is empty) and resolve the task's
    own settings once."""
    own = settings.task(task)
    hypotheses, rsa_spans, probe_span = list(own.hypotheses), list(own.rsa_spans), own.probe_span
    paths = {kind: inputs[f"{task}_{kind}"] for kind in INPUT_KINDS}
    tasks = read_table(paths["tasks"]).to_pandas()
    if len(tasks) == 0:
        log.warning("%s: the task table %s is empty; skipping the task", task, paths["tasks"])
        return None
    # prompts repeated across conditions (regression's zero-shot prompt) are one unit
    tasks["distinct_prompt_id"] = distinct_prompt_ids(tasks)
    tasks = tasks.drop(columns=[c for c in ("text", "spans") if c in tasks.columns])
    fields = condition_fields(tasks, hypotheses)
    prompt_index = pd.Index(tasks["prompt_id"])
    if not prompt_index.is_unique:
        raise ValueError(f"{paths['tasks']}: prompt_id is not unique")
    prompt_shots = tasks["n_shots"].to_numpy(dtype=int)
    shots = sorted({int(k) for k in prompt_shots})
    if len(shots) == 1:
        log.warning("%s: only n_shots=%d: no before/after comparison (B7)", task, shots[0])
    return TaskFrame(task, hypotheses, rsa_spans, probe_span, paths, tasks, fields, list(fields.index),
                      prompt_index, prompt_shots,
                      tasks["condition"].to_numpy(dtype=object), shots, shots[0], shots[1:],
                      settings.readout(task))


def _behaviour_deltas(tf: TaskFrame, seed: int, n_boot: int,
                      collected: Collected) -> dict[tuple[str, int], np.ndarray]:
    """B1, B2: behaviour per prompt and its gains after ICL (collected), and each measure's
    change per condition from ``before`` to every ``after`` shot count."""
    readouts = read_table(tf.paths["readouts"], columns=["prompt_id", "readout", "candidate", "logprob"]).to_pandas()
    behaviour = prompt_behaviour(tf.task, tf.tasks, readouts)
    del readouts
    collected.behaviour.append(behaviour)
    collected.effects += gain_rows(tf.task, behaviour, tf.before, tf.afters, seed, n_boot)
    measures = behaviour_measures(behaviour)
    if tf.afters and tf.readout["behaviour"] not in measures:
        raise ValueError(f"representations.analysis.headline.behaviour {tf.readout['behaviour']!r} is not measured "
                         f"for task {tf.task!r} (measures: {sorted(measures)})")
    return {
        (name, after): tf.per_condition(condition_change(values, behaviour["condition"], behaviour["n_shots"],
                                                         tf.before, after))
        for name, values in measures.items() for after in tf.afters
    }


def _attention_deltas(tf: TaskFrame, seed: int, n_boot: int,
                      collected: Collected) -> dict[tuple[int, int], np.ndarray]:
    """B6: the attention ratio summaries (collected), and the head-mean log ratio's change per
    condition by (layer, after); empty when the task has no distractor span."""
    attention = read_table(tf.paths["attention"]).to_pandas()
    ratio_deltas: dict[tuple[int, int], np.ndarray] = {}
    present = set(attention["span"].unique()) if len(attention) else set()
    if not {RELEVANT, DISTRACTOR} <= present:
        log.info("%s: attention has no %r and %r spans: no attention ratio (B6 needs a distractor)",
                 tf.task, RELEVANT, DISTRACTOR)
        return ratio_deltas
    ratios = prompt_attention_ratios(attention)
    del attention
    tasks = tf.tasks
    shots_of = dict(zip(tasks["prompt_id"], tf.prompt_shots))
    order_of = (dict(zip(tasks["prompt_id"], tasks["relevant_first"].astype(bool)))
                if "relevant_first" in tasks.columns else None)
    collected.attention.append(summarise_attention_ratios(ratios, shots_of, tf.task, seed, n_boot, order_of))
    prompts = tasks[["prompt_id", "condition", "variant", "n_shots", "distinct_prompt_id"]
                    + (["relevant_first"] if "relevant_first" in tasks.columns else [])]
    collected.effects += attention_band_rows(tf.task, ratios, prompts, tf.n_layers, tf.before, tf.afters, seed, n_boot)
    mean_head = ratios[ratios["head"] == -1]
    pos = tf.prompt_index.get_indexer(mean_head["prompt_id"])
    if (pos < 0).any():
        raise ValueError(f"{tf.paths['attention']}: prompts {sorted(set(mean_head['prompt_id'][pos < 0]))[:3]} "
                         f"are not in the task table {tf.paths['tasks']}")
    cond = pd.Series(tf.prompt_cond[pos], index=mean_head.index)
    k = pd.Series(tf.prompt_shots[pos], index=mean_head.index)
    for layer, idx in mean_head.groupby("layer").groups.items():
        for after in tf.afters:
            ratio_deltas[(int(layer), after)] = tf.per_condition(
                condition_change(mean_head.loc[idx, "log_ratio"], cond.loc[idx], k.loc[idx], tf.before, after))
    return ratio_deltas


def _check_embeddings(tf: TaskFrame, poolings: Sequence[str], spans: Sequence[str]) -> None:
    """The embeddings hold every pooling and span the analyses ask for."""
    index = embedding_index(tf.paths["embeddings"])
    _check_present(poolings, index["pooling"].unique(), "pooling", "rsa_poolings/probe_pooling",
                   tf.paths["embeddings"])
    _check_present(spans, index["span"].unique(), "span", "rsa_spans/probe_span", tf.paths["embeddings"])
    tf.n_layers = int(index["layer"].max()) if len(index) else 0
    log.info("%s: %d prompts, %d conditions, n_shots %s, %d layers", tf.task, len(tf.tasks), len(tf.fields),
             tf.shots, index["layer"].nunique())


def _analyse_task(task: str, inputs: Mapping[str, str], settings: RepresentationsSettings, seed: int,
                  collected: Collected) -> None:
    """B1-B7 for one task: behaviour and attention first, then the embeddings one layer at a
    time (RSA, probes, and B7, which needs both)."""
    tf = _task_frame(task, inputs, settings)
    if tf is None:
        return
    n_boot = settings.n_boot
    poolings = [*settings.rsa_poolings, settings.probe_pooling]
    spans = [*tf.rsa_spans, tf.probe_span]
    _check_embeddings(tf, poolings, spans)
    behaviour_deltas = _behaviour_deltas(tf, seed, n_boot, collected)
    ratio_deltas = _attention_deltas(tf, seed, n_boot, collected)
    prompts = tf.tasks[["prompt_id", "condition", "variant", "n_shots", "distinct_prompt_id"]
                       + (["relevant_first"] if "relevant_first" in tf.tasks.columns else [])]
    readout = tf.readout
    bands = AlignmentBands(task, prompts, tf.fields, tf.hypotheses, readout["pooling"], readout["span"],
                           settings.rsa_comparators[0], tf.n_layers, seed, n_boot)
    similarity_entries: list[tuple[int, str, str, int, RSAResult]] = []
    deltas: dict[tuple[str, str | None, str | None, str, int], dict[int, np.ndarray]] = {}
    for lv in iter_layers(tf.paths["embeddings"], spans, poolings):
        rows = LayerRows(tf, lv)
        sims = layer_rsa(tf, rows, settings, seed, collected, similarity_entries)
        layer_probes(tf, rows, settings, seed, collected)
        layer_repr_vs_behaviour(tf, lv.layer, sims, behaviour_deltas, ratio_deltas, settings, seed, collected, deltas)
        bands.add_layer(lv.layer, *lv.select(readout["span"], readout["pooling"]))
        log.debug("%s: layer %d done", task, lv.layer)
    collected.similarity.append(_similarity_frame(task, similarity_entries, tf.fields))
    collected.effects += bands.rows(tf.before, tf.afters)
    collected.effects += correlation_band_rows(task, deltas, behaviour_deltas, tf.n_layers, tf.before, readout, seed,
                                               n_boot, settings.correlation)


class _single_thread:
    """Limit BLAS/OpenMP to one thread: the many tiny probe fits run several times faster."""

    def __enter__(self) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(1)

    def __exit__(self, *exc: object) -> None:
        self._limits.restore_original_limits()


def analyse(inputs: Mapping[str, str], params: Mapping[str, Any], outs: Mapping[str, str]) -> None:
    """Run B1-B7 and write the tables of the module docstring.

    ``inputs``: ``<task>_tasks``, ``<task>_embeddings``, ``<task>_attention``,
    ``<task>_readouts`` for each task present (regression, reading). ``params``: ``seed`` and
    ``representations`` (the config section; analysis settings under ``analysis``, see the
    module docstring). ``outs``: a path for each of :data:`OUTPUTS`.
    """
    missing = [name for name in OUTPUTS if name not in outs]
    if missing:
        raise ValueError(f"outs lacks {missing} (got {sorted(outs)})")
    settings = RepresentationsSettings.from_section(params.get("representations", {}) or {})
    seed = int(params["seed"])
    tasks = _tasks_present(inputs)
    collected = Collected([], [], [], [], [], [])
    import sklearn

    # many small fits and products: one BLAS thread is faster; vectors are checked finite per layer
    with _single_thread(), sklearn.config_context(assume_finite=True):
        for task in tasks:
            _analyse_task(task, inputs, settings, seed, collected)

    behaviour = (pd.concat(collected.behaviour, ignore_index=True) if collected.behaviour
                 else pd.DataFrame(columns=contracts.BEHAVIOUR.names))
    summary = summarise_behaviour(behaviour, seed, settings.n_boot) if len(behaviour) else pd.DataFrame()
    frames: dict[str, Any] = {
        "behaviour": [behaviour] if len(behaviour) else [],
        "behaviour_summary": [summary] if len(summary) else [],
        "rsa": collected.rsa,
        "similarity": collected.similarity,
        "probes": collected.probes,
        "attention_ratio": collected.attention,
        "repr_vs_behaviour": collected.repr_vs_behaviour,
        "effects": collected.effects,
    }
    model = recorded_model([inputs[f"{task}_embeddings"] for task in tasks])
    extra = {"tasks": tasks, "settings": settings.record()}
    for name in OUTPUTS:
        table = typed_table(frames[name], SCHEMAS[name])
        meta = provenance.metadata(f"representations_{name}", params, seed=seed, model=model, extra=extra)
        write_table(table, outs[name], meta)
        log.info("%s: %d rows -> %s", name, table.num_rows, outs[name])
