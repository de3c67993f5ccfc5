"""Study B's analysis: behaviour, RSA, probes, attention ratio and the representation-vs-
behaviour correlation per layer, streamed from the extracted tables (the statistics are in
:mod:`iclscope.analysis`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iclscope import contracts, provenance
from iclscope.analysis import rsa as rsa_math
from iclscope.analysis.attention_ratio import (
    attention_ratio,
    change_correlation,
    geometric_mean_ratio,
    log_attention_ratio,
)
from iclscope.analysis.probes import probe_permutation_control
from iclscope.analysis.stats import bootstrap_ci
from iclscope.seeding import rng
from iclscope.studies.representations.settings import (
    _NOT_FIELDS, DISTRACTOR, END, INPUT_KINDS, OUTPUTS, RELEVANT, SCHEMAS, TASKS, analysis_settings,
    headline_readout, task_setting,
)
from iclscope.studies.representations.behaviour import (
    behaviour_measures, distinct_prompt_ids, prompt_behaviour, summarise_behaviour,
)
from iclscope.studies.representations.effects import (
    ORDERS, AlignmentBands, attention_band_rows, correlation_band_rows, gain_rows,
)
from iclscope.tables import TableError, read_table, recorded_model, typed_table, write_table

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- conditions


def _scalar_column(series: pd.Series) -> bool:
    return not series.map(lambda v: isinstance(v, (list, tuple, np.ndarray, dict))).any()


def known_fields(tasks: pd.DataFrame) -> list[str]:
    """Columns of a task table that are constant within every condition (usable hypotheses)."""
    out = []
    for column in tasks.columns:
        if column in _NOT_FIELDS or not _scalar_column(tasks[column]):
            continue
        if tasks.groupby("condition")[column].nunique(dropna=False).max() <= 1:
            out.append(column)
    return out


def condition_fields(tasks: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    """One row per condition (index: condition, sorted) with the value of each field.

    ``tasks``: a task table with ``condition`` and the ``fields`` columns. Raises ValueError
    naming a field that is not a column (with the known fields) or that varies within a
    condition.
    """
    if "condition" not in tasks.columns:
        raise ValueError(f"the task table has no 'condition' column (columns: {list(tasks.columns)})")
    known = known_fields(tasks)
    for name in fields:
        if name not in tasks.columns:
            raise ValueError(f"unknown condition field {name!r}; known fields: {known}")
        if name not in known:
            raise ValueError(
                f"condition field {name!r} varies within conditions, so it cannot label them; "
                f"known fields: {known}"
            )
    return tasks.groupby("condition")[list(fields)].first().sort_index()


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


# ----------------------------------------------------------------------------- RSA (B4)


@dataclass(frozen=True)
class RSAResult:
    """RSA of one set of embeddings: sorted condition ``labels``, the (n_cond, n_cond)
    ``similarity`` matrix, per hypothesis and comparator ``(alignment, p_value)`` and per
    hypothesis the Spearman alignment."""

    labels: list[str]
    similarity: np.ndarray
    alignments: dict[str, dict[str, tuple[float, float]]]
    spearman: dict[str, float]
    ceilings: dict[str, dict[str, float]]  # hypothesis -> comparator -> its best attainable value


def _check_conditions(labels: Sequence[Any], fields: pd.DataFrame, hypotheses: Sequence[str], what: str) -> None:
    if len(labels) < 3:
        raise ValueError(f"{what} needs at least 3 conditions, got {len(labels)}: {list(labels)}")
    for name in hypotheses:
        if name not in fields.columns:
            raise ValueError(f"unknown hypothesis field {name!r}; known fields: {list(fields.columns)}")
    missing = [c for c in labels if c not in fields.index]
    if missing:
        raise ValueError(f"conditions {missing[:5]} have no field values (known: {list(fields.index)[:5]} ...)")


def rsa_by_condition(
    vectors: np.ndarray,
    conditions: Sequence[str],
    fields: pd.DataFrame,
    hypotheses: Sequence[str],
    seed: int,
    key: Sequence[Any] = (),
    n_permutations: int = 1000,
    comparators: Sequence[str] = ("spearman",),
) -> RSAResult:
    """Condition means -> similarity matrix -> alignment with each hypothesis field.

    One permutation test per hypothesis and comparator (:data:`iclscope.analysis.rsa.COMPARATORS`);
    the comparators of one hypothesis share its permutations.

    ``vectors``: (n_prompts, d); ``conditions``: n_prompts labels; ``fields``: one row per
    condition (:func:`condition_fields`) holding the hypothesis fields. The permutation test of
    hypothesis ``h`` is seeded by ``rng(seed, "rsa", *key, h)`` (``key`` = task, layer,
    pooling, span, n_shots in :func:`analyse`). Raises ValueError with fewer than 3
    conditions or an unknown hypothesis field.
    """
    labels, means = rsa_math.condition_means(vectors, list(conditions))
    _check_conditions(labels, fields, hypotheses, "RSA")
    sim = rsa_math.similarity_matrix(means)
    records = fields.loc[labels].to_dict("records")
    alignments: dict[str, dict[str, tuple[float, float]]] = {}
    spearman = {}
    ceilings: dict[str, dict[str, float]] = {}
    for name in hypotheses:
        hyp = rsa_math.hypothesis_matrix(records, name)
        spearman[name] = rsa_math.alignment(sim, hyp, "spearman")
        alignments[name] = {
            method: rsa_math.permutation_test(sim, hyp, rng(seed, "rsa", *key, name), n_permutations, method)
            for method in comparators
        }
        ceilings[name] = {method: _ceiling(hyp, method) for method in comparators}
    return RSAResult([str(c) for c in labels], sim, alignments, spearman, ceilings)


_CEILINGS: dict[tuple[bytes, str], float] = {}


def _ceiling(hyp: np.ndarray, method: str) -> float:
    """:func:`iclscope.analysis.rsa.comparator_ceiling`, computed once per hypothesis matrix."""
    key = (np.asarray(hyp, dtype=np.int8).tobytes() + bytes([len(hyp)]), method)
    if key not in _CEILINGS:
        _CEILINGS[key] = rsa_math.comparator_ceiling(hyp, method)
    return _CEILINGS[key]


def condition_alignment(similarity: np.ndarray, labels: Sequence[str], fields: pd.DataFrame, field: str) -> np.ndarray:
    """Per-condition alignment with hypothesis ``field``: for each condition (row of
    ``similarity``, (n_cond, n_cond)) the mean similarity to the *other* conditions sharing the
    field's value minus the mean similarity to those that do not; NaN when either set is empty.
    Returns (n_cond,) in the order of ``labels``."""
    values = fields[field].reindex(list(labels)).to_numpy()
    similarity = np.asarray(similarity, dtype=float)
    other = ~np.eye(len(values), dtype=bool)
    same = (values[:, None] == values[None, :]) & other
    differ = ~same & other
    n_same, n_differ = same.sum(axis=1), differ.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (similarity * same).sum(axis=1) / n_same - (similarity * differ).sum(axis=1) / n_differ
    return np.where((n_same > 0) & (n_differ > 0), out, np.nan)


# ----------------------------------------------------------------------------- probes (B5)


def probe_fields(
    vectors: np.ndarray,
    conditions: Sequence[str],
    fields: pd.DataFrame,
    targets: Sequence[str],
    seed: int,
    key: Sequence[Any] = (),
    n_splits: int = 5,
    alpha: float = 1.0,
    C: float = 1.0,
    n_shuffles: int = 100,
    classifier: str = "ridge",
    n_shuffles_max: int | None = None,
) -> list[dict[str, Any]]:
    """Probe each field of ``targets`` from single prompts' ``vectors`` (n_prompts, d).

    Numeric fields: ridge regression (R^2); others: a classifier (accuracy; ``classifier``
    "ridge" = closed-form ridge classifier with ``alpha``, or "logistic" with ``C``). Folds are
    grouped by condition; the control repeats the probe on ``n_shuffles`` shuffles of the
    targets between conditions (:func:`iclscope.analysis.probes.probe_permutation_control`),
    seeded by ``rng(seed, "probe", *key, target)``, continued up to ``n_shuffles_max`` where p
    sits at its resolution. Returns one dict per target with ``target, probe, metric, score,
    control_score`` (mean over shuffles), ``control_sd``, ``p_value``, ``n_shuffles``,
    ``chance``, ``selectivity`` (chance-floored,
    :func:`iclscope.analysis.probes.chance_selectivity`) and ``p_resolution``. Raises
    ValueError with fewer than 3 conditions or an unknown field.
    """
    conditions = [str(c) for c in conditions]
    _check_conditions(sorted(set(conditions)), fields, targets, "probing")
    out = []
    for target in targets:
        numeric = _numeric(fields[target])
        y = fields[target].reindex(conditions).to_numpy()
        res = probe_permutation_control(
            "ridge" if numeric else "classifier", vectors, y.astype(float) if numeric else y.astype(str),
            conditions, rng(seed, "probe", *key, target), n_shuffles=n_shuffles, n_splits=n_splits,
            alpha=alpha, C=C, classifier=classifier, n_shuffles_max=n_shuffles_max,
        )
        kind = "ridge" if numeric else ("ridge_classifier" if classifier == "ridge" else "logistic")
        out.append({"target": target, "probe": kind, "metric": "r2" if numeric else "accuracy",
                    "score": res.score, "control_score": res.control_mean, "control_sd": res.control_sd,
                    "p_value": res.p_value, "n_shuffles": res.n_shuffles, "chance": res.chance,
                    "selectivity": res.selectivity, "p_resolution": 1.0 / (1 + res.n_shuffles)})
    return out


# ----------------------------------------------------------------------------- attention ratio (B6)


def prompt_attention_ratios(
    attention: pd.DataFrame, relevant: str = RELEVANT, distractor: str = DISTRACTOR, query: str = END
) -> pd.DataFrame:
    """Attention ratio per prompt, layer and head from an attention table.

    ``attention``: ``prompt_id, layer, head, query, span, mass``. Returns ``prompt_id, layer,
    head, mass_relevant, mass_distractor, ratio, log_ratio`` (ratio = relevant / distractor mass,
    see :func:`iclscope.analysis.attention_ratio.attention_ratio`; log_ratio its log with both
    masses floored, :func:`iclscope.analysis.attention_ratio.log_attention_ratio`). Raises
    ValueError when either span or the query is absent.
    """
    rows = attention[attention["query"] == query] if "query" in attention.columns else attention
    spans = set(rows["span"].unique())
    for name in (relevant, distractor):
        if name not in spans:
            raise ValueError(
                f"attention table has no span {name!r} for query {query!r} (spans: {sorted(spans)})"
            )
    rows = rows[rows["span"].isin([relevant, distractor])]
    wide = rows.pivot_table(index=["prompt_id", "layer", "head"], columns="span", values="mass",
                            aggfunc="first", observed=True)
    wide = wide.dropna(subset=[relevant, distractor]).reset_index()
    out = pd.DataFrame({
        "prompt_id": wide["prompt_id"].astype(str),
        "layer": wide["layer"].astype(int),
        "head": wide["head"].astype(int),
        "mass_relevant": wide[relevant].astype(float),
        "mass_distractor": wide[distractor].astype(float),
    })
    out["ratio"] = attention_ratio(out["mass_relevant"].to_numpy(), out["mass_distractor"].to_numpy())
    out["log_ratio"] = log_attention_ratio(out["mass_relevant"].to_numpy(), out["mass_distractor"].to_numpy())
    return out


def summarise_attention_ratios(
    ratios: pd.DataFrame,
    n_shots: Mapping[str, int],
    task: str,
    seed: int,
    n_boot: int = 1000,
    relevant_first: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """Geometric-mean attention ratio over prompts per layer, head and n_shots, with bootstrap CIs.

    ``ratios``: :func:`prompt_attention_ratios`; ``n_shots``: prompt_id -> n_shots;
    ``relevant_first``: prompt_id -> story order (reading), or None. The summary is the mean
    log ratio (``log_ratio``, CI ``log_ci_*``) and its exp (``ratio``, ``ci_*``: the geometric
    mean, :func:`iclscope.analysis.attention_ratio.geometric_mean_ratio`). Rows with
    ``relevant_first`` null pool all prompts; with a mapping, rows for each story order follow.
    Seeded by ``rng(seed, "attention_ratio", task, layer, head, n_shots, order)`` (order:
    "pooled", "first", "second"). Columns: the attention_ratio table's (module docstring).
    """
    frame = ratios.assign(n_shots=ratios["prompt_id"].map(n_shots))
    frame = frame[frame["n_shots"].notna()]
    subsets: list[tuple[Any, str, pd.Series | None]] = [(None, "pooled", None)]
    if relevant_first is not None:
        first = frame["prompt_id"].map(relevant_first)
        subsets += [(True, "first", first == True), (False, "second", first == False)]  # noqa: E712
    rows = []
    for order, tag, mask in subsets:
        part = frame if mask is None else frame[mask.to_numpy(dtype=bool)]
        for (layer, head, k), g in part.groupby(["layer", "head", "n_shots"], sort=True):
            gen = rng(seed, "attention_ratio", task, int(layer), int(head), int(k), tag)
            logs, ratio = geometric_mean_ratio(g["log_ratio"].to_numpy(dtype=float), gen, n_boot=n_boot)
            rows.append({"task": task, "layer": int(layer), "head": int(head), "n_shots": int(k),
                         "ratio": ratio.mean, "ci_low": ratio.low, "ci_high": ratio.high,
                         "log_ratio": logs.mean, "log_ci_low": logs.low, "log_ci_high": logs.high,
                         "mass_relevant": float(g["mass_relevant"].mean()),
                         "mass_distractor": float(g["mass_distractor"].mean()), "n_prompts": len(g),
                         "relevant_first": order})
    out = pd.DataFrame(rows, columns=contracts.ATTENTION_RATIO.names)
    out["relevant_first"] = out["relevant_first"].astype(object)
    return out


# ----------------------------------------------------------------------------- B7 helpers


def condition_change(values: pd.Series, conditions: pd.Series, n_shots: pd.Series, before: int, after: int) -> pd.Series:
    """Per condition: mean of ``values`` over prompts with ``n_shots == after`` minus the mean
    with ``n_shots == before`` (all three series aligned). Indexed by condition, sorted;
    conditions missing on either side are dropped."""
    frame = pd.DataFrame({"v": values.to_numpy(dtype=float), "c": conditions.to_numpy(),
                          "k": n_shots.to_numpy()})
    means = frame.groupby(["k", "c"])["v"].mean()
    if before not in means.index.get_level_values(0) or after not in means.index.get_level_values(0):
        return pd.Series(dtype=float)
    delta = means.loc[after] - means.loc[before]
    return delta.dropna().sort_index()


def change_row(
    delta_measure: np.ndarray, delta_behaviour: np.ndarray, gen: np.random.Generator, n_boot: int, method: str
) -> dict[str, Any]:
    """Correlate two per-condition changes, (n_cond,) arrays in the same condition order (NaN
    = condition missing on a side): ``mean`` (the correlation), ``ci_low``, ``ci_high``,
    ``n_conditions`` (pairs used), ``delta_measure``, ``delta_behaviour`` (mean changes)."""
    x = np.asarray(delta_measure, dtype=float)
    y = np.asarray(delta_behaviour, dtype=float)
    r, low, high = change_correlation(x, y, gen, n_boot=n_boot, method=method)  # type: ignore[arg-type]
    keep = ~(np.isnan(x) | np.isnan(y))
    return {"mean": r, "ci_low": low, "ci_high": high, "n_conditions": int(keep.sum()),
            "delta_measure": float(np.mean(x[keep])) if keep.any() else float("nan"),
            "delta_behaviour": float(np.mean(y[keep])) if keep.any() else float("nan")}


# ----------------------------------------------------------------------------- embeddings I/O


@dataclass
class LayerVectors:
    """The pooled vectors of one layer: parallel arrays of rows and (n_rows, hidden) vectors."""

    layer: int
    prompt_id: np.ndarray
    span: np.ndarray
    pooling: np.ndarray
    vectors: np.ndarray

    def select(self, span: str, pooling: str) -> tuple[np.ndarray, np.ndarray]:
        """(prompt_ids, vectors) of one span and pooling."""
        mask = (self.span == span) & (self.pooling == pooling)
        return self.prompt_id[mask], self.vectors[mask]


def _layer_vectors(layer: int, batches: list[pa.RecordBatch]) -> LayerVectors:
    table = pa.Table.from_batches(batches)
    column = table.column("vector").combine_chunks()
    hidden = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, hidden)
    return LayerVectors(
        layer,
        np.asarray(table.column("prompt_id").to_pylist(), dtype=object),
        np.asarray(table.column("span").to_pylist(), dtype=object),
        np.asarray(table.column("pooling").to_pylist(), dtype=object),
        vectors,
    )


def embedding_index(path: str) -> pd.DataFrame:
    """The ``layer, span, pooling`` columns of an embeddings table (no vectors)."""
    return read_table(path, columns=["layer", "span", "pooling"]).to_pandas()


def iter_layers(path: str, spans: Iterable[str], poolings: Iterable[str], batch_size: int = 4096) -> Iterator[LayerVectors]:
    """Stream an embeddings table one layer at a time, keeping only ``spans`` x ``poolings``.

    Rows sorted by layer (as extraction writes them) are streamed batch by batch, so memory
    holds one layer plus one batch; unsorted tables are read whole (filtered) and sorted.
    """
    spans = pa.array(sorted(set(spans)), pa.string())
    poolings = pa.array(sorted(set(poolings)), pa.string())
    columns = ["prompt_id", "layer", "span", "pooling", "vector"]
    try:
        layers = read_table(path, columns=["layer"]).column("layer").to_numpy()
        if np.all(np.diff(layers) >= 0):
            # streamed: each page's CRC is checked as it is read (the column checksums need
            # the whole column, which streaming never holds)
            batches: Iterable[pa.RecordBatch] = pq.ParquetFile(path, page_checksum_verification=True).iter_batches(
                batch_size=batch_size, columns=columns)
        else:
            log.warning("%s is not sorted by layer: reading it whole", path)
            batches = read_table(path, columns=columns).sort_by("layer").to_batches(batch_size)
    except (pa.ArrowInvalid, OSError) as err:
        raise TableError(f"table {path} is corrupt or truncated: {err}") from err
    pending: dict[int, list[pa.RecordBatch]] = {}
    for batch in batches:
        keep = pc.and_(pc.is_in(batch.column("span").cast(pa.string()), value_set=spans),
                       pc.is_in(batch.column("pooling").cast(pa.string()), value_set=poolings))
        batch = batch.filter(keep)
        if batch.num_rows == 0:
            continue
        layer_of = batch.column("layer").to_numpy()
        for layer in np.unique(layer_of):
            pending.setdefault(int(layer), []).append(batch.filter(pa.array(layer_of == layer)))
        top = int(layer_of.max())
        for layer in sorted(k for k in pending if k < top):
            yield _layer_vectors(layer, pending.pop(layer))
    for layer in sorted(pending):
        yield _layer_vectors(layer, pending.pop(layer))


# ----------------------------------------------------------------------------- analyse


@dataclass
class _Collected:
    behaviour: list[pd.DataFrame]
    rsa: list[dict[str, Any]]
    similarity: list[pd.DataFrame]
    probes: list[dict[str, Any]]
    attention: list[pd.DataFrame]
    repr_vs_behaviour: list[dict[str, Any]]
    effects: list[dict[str, Any]] = field(default_factory=list)


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


@dataclass
class _TaskFrame:
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


def _task_frame(task: str, inputs: Mapping[str, str], settings: Mapping[str, Any]) -> _TaskFrame | None:
    """Read the task table (None, with a warning, when it is empty) and resolve the task's
    own settings once."""
    hypotheses = task_setting(settings, "hypotheses", task)
    rsa_spans = list(task_setting(settings, "rsa_spans", task))
    probe_span = str(task_setting(settings, "probe_span", task))
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
    return _TaskFrame(task, hypotheses, rsa_spans, probe_span, paths, tasks, fields, list(fields.index),
                      prompt_index, prompt_shots,
                      tasks["condition"].to_numpy(dtype=object), shots, shots[0], shots[1:],
                      headline_readout(settings, task))


def _behaviour_deltas(tf: _TaskFrame, seed: int, n_boot: int,
                      collected: _Collected) -> dict[tuple[str, int], np.ndarray]:
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


def _attention_deltas(tf: _TaskFrame, seed: int, n_boot: int,
                      collected: _Collected) -> dict[tuple[int, int], np.ndarray]:
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


def _check_embeddings(tf: _TaskFrame, poolings: Sequence[str], spans: Sequence[str]) -> None:
    """The embeddings hold every pooling and span the analyses ask for."""
    index = embedding_index(tf.paths["embeddings"])
    _check_present(poolings, index["pooling"].unique(), "pooling", "rsa_poolings/probe_pooling",
                   tf.paths["embeddings"])
    _check_present(spans, index["span"].unique(), "span", "rsa_spans/probe_span", tf.paths["embeddings"])
    tf.n_layers = int(index["layer"].max()) if len(index) else 0
    log.info("%s: %d prompts, %d conditions, n_shots %s, %d layers", tf.task, len(tf.tasks), len(tf.fields),
             tf.shots, index["layer"].nunique())


class _LayerRows:
    """Which rows of one layer's vectors hold a (span, pooling, shot count)."""

    def __init__(self, tf: _TaskFrame, lv: LayerVectors) -> None:
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


def _layer_rsa(tf: _TaskFrame, rows: _LayerRows, settings: Mapping[str, Any], seed: int, collected: _Collected,
               similarity_entries: list[tuple[int, str, str, int, RSAResult]]) -> dict[tuple[str, str, int], RSAResult]:
    """B4 at one layer: RSA per (pooling, span, shot count), rows collected; returns the results."""
    n_permutations = int(settings["n_permutations"])
    comparators = list(settings["rsa_comparators"])
    lv, layer = rows.lv, rows.lv.layer
    sims: dict[tuple[str, str, int], RSAResult] = {}
    for pooling in list(settings["rsa_poolings"]):
        for span in tf.rsa_spans:
            for k in tf.shots:
                for flag, tag in rows.orders():
                    sel = rows.select(span, pooling, k, flag)
                    if sel.size == 0:
                        continue
                    # the pooled rows keep their seeds; one story order's rows get their own
                    key = (tf.task, layer, pooling, span, k) + (() if flag is None else (tag,))
                    res = rsa_by_condition(lv.vectors[sel], rows.cond[sel], tf.fields, tf.hypotheses, seed,
                                           key, n_permutations, comparators)
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


def _layer_probes(tf: _TaskFrame, rows: _LayerRows, settings: Mapping[str, Any], seed: int,
                  collected: _Collected) -> None:
    """B5 at one layer: the probes per shot count with their permutation controls."""
    probe_span, probe_pooling = tf.probe_span, str(settings["probe_pooling"])
    lv, layer = rows.lv, rows.lv.layer
    for k in tf.shots:
        sel = rows.select(probe_span, probe_pooling, k)
        if sel.size == 0:
            continue
        scores = probe_fields(lv.vectors[sel], rows.cond[sel], tf.fields, tf.hypotheses, seed,
                              (tf.task, layer, k), int(settings["n_splits"]), float(settings["ridge_alpha"]),
                              float(settings["logistic_C"]), int(settings["n_shuffles"]),
                              str(settings["classifier"]), int(settings["n_shuffles_max"]))
        for s in scores:
            collected.probes.append({
                "task": tf.task, "layer": layer, "n_shots": k, **s, "pooling": probe_pooling,
                "span": probe_span, "n_prompts": int(sel.size), "n_conditions": len(set(rows.cond[sel]))})


def _layer_repr_vs_behaviour(tf: _TaskFrame, layer: int, sims: Mapping[tuple[str, str, int], RSAResult],
                             behaviour_deltas: Mapping[tuple[str, int], np.ndarray],
                             ratio_deltas: Mapping[tuple[int, int], np.ndarray], settings: Mapping[str, Any],
                             seed: int, collected: _Collected, deltas: dict) -> None:
    """B7 at one layer: per-condition changes of representation measures against behaviour."""
    n_boot, method = int(settings["n_boot"]), str(settings["correlation"])
    for after in tf.afters:
        measures: list[tuple[str, str | None, str | None, np.ndarray]] = []
        for pooling in list(settings["rsa_poolings"]):
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


def _analyse_task(task: str, inputs: Mapping[str, str], settings: Mapping[str, Any], seed: int,
                  collected: _Collected) -> None:
    """B1-B7 for one task: behaviour and attention first, then the embeddings one layer at a
    time (RSA, probes, and B7, which needs both)."""
    tf = _task_frame(task, inputs, settings)
    if tf is None:
        return
    n_boot = int(settings["n_boot"])
    poolings = [*settings["rsa_poolings"], str(settings["probe_pooling"])]
    spans = [*tf.rsa_spans, tf.probe_span]
    _check_embeddings(tf, poolings, spans)
    behaviour_deltas = _behaviour_deltas(tf, seed, n_boot, collected)
    ratio_deltas = _attention_deltas(tf, seed, n_boot, collected)
    prompts = tf.tasks[["prompt_id", "condition", "variant", "n_shots", "distinct_prompt_id"]
                       + (["relevant_first"] if "relevant_first" in tf.tasks.columns else [])]
    readout = tf.readout
    bands = AlignmentBands(task, prompts, tf.fields, tf.hypotheses, readout["pooling"], readout["span"],
                           str(settings["rsa_comparators"][0]), tf.n_layers, seed, n_boot)
    similarity_entries: list[tuple[int, str, str, int, RSAResult]] = []
    deltas: dict[tuple[str, str | None, str | None, str, int], dict[int, np.ndarray]] = {}
    for lv in iter_layers(tf.paths["embeddings"], spans, poolings):
        rows = _LayerRows(tf, lv)
        sims = _layer_rsa(tf, rows, settings, seed, collected, similarity_entries)
        _layer_probes(tf, rows, settings, seed, collected)
        _layer_repr_vs_behaviour(tf, lv.layer, sims, behaviour_deltas, ratio_deltas, settings, seed, collected, deltas)
        bands.add_layer(lv.layer, *lv.select(readout["span"], readout["pooling"]))
        log.debug("%s: layer %d done", task, lv.layer)
    collected.similarity.append(_similarity_frame(task, similarity_entries, tf.fields))
    collected.effects += bands.rows(tf.before, tf.afters)
    collected.effects += correlation_band_rows(task, deltas, behaviour_deltas, tf.n_layers, tf.before, readout, seed,
                                               n_boot, str(settings["correlation"]))


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
    settings = analysis_settings(params)
    seed = int(params["seed"])
    tasks = _tasks_present(inputs)
    collected = _Collected([], [], [], [], [], [])
    import sklearn

    # many small fits and products: one BLAS thread is faster; vectors are checked finite per layer
    with _single_thread(), sklearn.config_context(assume_finite=True):
        for task in tasks:
            _analyse_task(task, inputs, settings, seed, collected)

    behaviour = (pd.concat(collected.behaviour, ignore_index=True) if collected.behaviour
                 else pd.DataFrame(columns=contracts.BEHAVIOUR.names))
    summary = summarise_behaviour(behaviour, seed, int(settings["n_boot"])) if len(behaviour) else pd.DataFrame()
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
    extra = {"tasks": tasks, "settings": {k: v for k, v in settings.items()}}
    for name in OUTPUTS:
        table = typed_table(frames[name], SCHEMAS[name])
        meta = provenance.metadata(f"representations_{name}", params, seed=seed, model=model, extra=extra)
        write_table(table, outs[name], meta)
        log.info("%s: %d rows -> %s", name, table.num_rows, outs[name])
