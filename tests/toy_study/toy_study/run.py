"""The toy study's task, extraction plan, analysis, figure, headline and comparison figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa

from iclscope import contracts, provenance
from iclscope.extraction.plan import PromptPlan, ReadPoint
from iclscope.tables import read_table, recorded_model, write_table
from iclscope.tasks.common import TextBuilder, task_table

ANSWERS = ("yes", "no")
SCORES = pa.schema([("prompt_id", pa.string()), ("number", pa.int32()), ("even", pa.bool_()),
                    ("p_yes", pa.float64()), ("correct", pa.bool_())])


def build_task(name: str, params: Mapping[str, Any], root: Path) -> pa.Table:
    rows = []
    for n in params["toy"]["numbers"]:
        b = TextBuilder()
        b.add("Question: is ")
        b.add(str(n), span="number")
        b.add(" even?\nAnswer:")
        rows.append({"prompt_id": f"{name}-{n:04d}", "task": name, "condition": "parity", "n_shots": 0,
                     "text": b.text, "spans": b.spans, "number": n, "even": n % 2 == 0})
    # the task-table contract's base fields, then the study's own
    schema = pa.schema(contracts.TASK_BASE_FIELDS + [pa.field("number", pa.int32()), pa.field("even", pa.bool_())])
    return task_table(rows, schema)


def plan(task: str, row: Mapping[str, Any]) -> PromptPlan:
    return PromptPlan(reads=(ReadPoint("answer", None, ANSWERS, tuple(" " + a for a in ANSWERS)),))


def analyse(inputs: Mapping[str, str], params: Mapping[str, Any], outs: Mapping[str, str]) -> None:
    tasks = read_table(inputs["tasks"]).to_pylist()
    logp: dict[tuple[str, str], float] = {
        (r["prompt_id"], r["candidate"]): r["logprob"] for r in read_table(inputs["readouts"]).to_pylist()
    }
    threshold = params["toy"]["analysis"]["threshold"]
    rows = []
    for t in tasks:
        yes, no = logp[(t["prompt_id"], "yes")], logp[(t["prompt_id"], "no")]
        p_yes = 1.0 / (1.0 + math.exp(no - yes))
        rows.append({"prompt_id": t["prompt_id"], "number": t["number"], "even": t["even"], "p_yes": p_yes,
                     "correct": (p_yes > threshold) == t["even"]})
    meta = provenance.metadata("toy_scores", params, seed=params["seed"], model=recorded_model([inputs["readouts"]]))
    write_table(pa.Table.from_pylist(rows, schema=SCORES), outs["scores"], meta)


def plot(inputs: Mapping[str, str], params: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    from iclscope.figures import pyplot, save_figure

    scores = read_table(inputs["scores"]).to_pylist()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.scatter([r["number"] for r in scores], [r["p_yes"] for r in scores],
               c=["tab:blue" if r["even"] else "tab:orange" for r in scores])
    ax.set_xlabel("N")
    ax.set_ylabel("p(yes | is N even?)")
    save_figure(fig, Path(out_dir) / "parity.png")
    return {"parity.png": f"p(yes) for 'is N even?' against N ({len(scores)} numbers; blue: even)."}


def headlines(root: Path, context: Mapping[str, Any]) -> list[Any]:
    from iclscope.findings import Headline

    scores = read_table(root / "toy" / "scores.parquet").to_pylist()
    accuracy = sum(r["correct"] for r in scores) / len(scores)
    return [Headline("toy", "accuracy", "parity", accuracy, n=len(scores), source="toy/scores.parquet",
                     note="share of numbers whose parity p(yes) gets right")]


def compare(results: Path, models: Sequence[str], params: Mapping[str, Any], figures_dir: Path) -> dict[str, str]:
    """The comparison's overlay (two or more models): every model's p(yes) against N."""
    from iclscope.compare import model_tables
    from iclscope.figures import pyplot, save_figure

    scores = model_tables(results, models, "toy/scores.parquet")  # the models that have the table
    fig, ax = pyplot().subplots(figsize=(4, 3))
    for model, frame in sorted(scores.items()):
        ax.plot(frame["number"], frame["p_yes"], marker="o", label=model)
    ax.set_xlabel("N")
    ax.set_ylabel("p(yes | is N even?)")
    ax.legend(fontsize=7)
    save_figure(fig, figures_dir / "toy_parity.png")
    return {"toy_parity.png": f"p(yes) for 'is N even?' against N, one line per model ({', '.join(sorted(scores))})."}
