"""The `iclscope` command line: one subcommand per pipeline step.

Every Snakemake rule calls one of these; each also runs on its own, e.g.::

    iclscope build-tasks --config config/config.yaml --task reading --out reading.parquet
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("iclscope")

# Issues that replace the placeholder steps.
PENDING = {
    "extract": "the extraction engine (issue 3)",
    "generate": "the extraction engine (issue 3)",
    "binary": "study A (issue 4)",
    "representations": "study B (issue 5)",
    "labels": "study C (issue 6)",
}


def _params(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return json.loads(args.params)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--params is not valid JSON: {err}") from err


def cmd_validate_config(args: argparse.Namespace) -> None:
    from iclscope.config import load_config
    from iclscope.tasks import task_names

    cfg = load_config(args.config)
    print(f"{args.config}: valid")
    print("models:", ", ".join(m["name"] for m in cfg["models"]))
    print("tasks: ", ", ".join(task_names(cfg)))


def cmd_prepare_model(args: argparse.Namespace) -> None:
    from iclscope.config import load_config
    from iclscope.models import prepare_model

    if args.params:
        model_cfg = _params(args)
    else:
        models = {m["name"]: m for m in load_config(args.config)["models"]}
        if args.model not in models:
            raise SystemExit(f"no model named {args.model!r} in {args.config}; known: {', '.join(models)}")
        model_cfg = models[args.model]
    card = prepare_model(model_cfg, args.out_dir)
    print(json.dumps(card, indent=2, sort_keys=True))


def cmd_build_tasks(args: argparse.Namespace) -> None:
    from iclscope import provenance
    from iclscope.config import load_config
    from iclscope.tables import write_table
    from iclscope.tasks import build_task, task_params

    params = _params(args) if args.params else task_params(args.task, load_config(args.config))
    table = build_task(args.task, params, Path.cwd())
    meta = provenance.metadata("tasks", params, seed=params["seed"], extra={"task": args.task})
    write_table(table, args.out, meta)
    log.info("%s: %d prompts -> %s", args.task, table.num_rows, args.out)


def _placeholder_tables(step: str, outputs: Sequence[str], replaced_by: str, hidden: int = 1) -> None:
    """Write zero-row tables, choosing each schema by the output's file name."""
    from iclscope import contracts
    from iclscope.placeholders import write_placeholder_tables

    schemas = {
        "embeddings": contracts.embeddings_schema(hidden),
        "attention": contracts.ATTENTION,
        "readouts": contracts.READOUTS,
        "generations": contracts.GENERATIONS,
        "positions": contracts.LABEL_POSITIONS,
        "curves": contracts.CURVE,
        "generation_metrics": contracts.BINARY_GENERATION_METRICS,
        "judgment": contracts.JUDGMENT,
        "continuation": contracts.CONTINUATION,
        "model_selection": contracts.MODEL_SELECTION,
        "behaviour": contracts.BEHAVIOUR,
        "rsa": contracts.RSA,
        "probes": contracts.PROBES,
        "attention_ratio": contracts.ATTENTION_RATIO,
        "repr_vs_behaviour": contracts.REPR_VS_BEHAVIOUR,
    }
    unknown = [out for out in outputs if Path(out).stem not in schemas]
    if unknown:
        raise SystemExit(f"{step}: no table contract for output(s) {unknown}")
    write_placeholder_tables({out: schemas[Path(out).stem] for out in outputs}, step, replaced_by)


def _hidden_size(model_dir: str) -> int:
    from iclscope.models import read_card

    return int(read_card(model_dir)["hidden_size"])


def cmd_extract(args: argparse.Namespace) -> None:
    _placeholder_tables("extract", args.out, PENDING["extract"], hidden=_hidden_size(args.model_dir))


def cmd_generate(args: argparse.Namespace) -> None:
    _placeholder_tables("generate", args.out, PENDING["generate"])


def cmd_analyse(args: argparse.Namespace) -> None:
    _placeholder_tables(f"analyse {args.study}", args.out, PENDING[args.study])


def cmd_plot(args: argparse.Namespace) -> None:
    from iclscope.placeholders import placeholder_figure

    for out in args.out:
        placeholder_figure(out, f"{args.study} figures", PENDING[args.study])


def cmd_report(args: argparse.Namespace) -> None:
    from iclscope.report import write_report

    write_report(args.figures, args.out)
    log.info("report -> %s", args.out)


def cmd_make_tiny_model(args: argparse.Namespace) -> None:
    from iclscope.models import build_tiny_model, embedded_tokenizer

    build_tiny_model(args.out_dir, embedded_tokenizer(), seed=args.seed, n_layers=args.layers)
    log.info("tiny model -> %s", args.out_dir)


def cmd_info(args: argparse.Namespace) -> None:
    from iclscope.tables import read_table, table_metadata

    for path in args.tables:
        table = read_table(path)
        print(f"{path}: {table.num_rows} rows")
        print(table.schema.remove_metadata())
        for key, value in sorted(table_metadata(path).items()):
            print(f"  {key}: {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclscope", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-config", help="validate a config and list models and tasks")
    p.add_argument("--config", default="config/config.yaml")
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser("prepare-model", help="convert a configured model into a fast-loading folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--params", help="the model's config entry as JSON")
    src.add_argument("--model", help="model name in --config")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_prepare_model)

    p = sub.add_parser("build-tasks", help="build one task table")
    p.add_argument("--task", required=True)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--params", help="the task's config keys as JSON (what the rule passes)")
    src.add_argument("--config", default="config/config.yaml")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_build_tasks)

    for name, func, what in (
        ("extract", cmd_extract, "activations and readouts of a task (placeholder)"),
        ("generate", cmd_generate, "sampled continuations of a task (placeholder)"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("--model-dir", required=True)
        p.add_argument("--tasks", required=True)
        p.add_argument("--params", default="{}")
        p.add_argument("--out", nargs="+", required=True)
        p.set_defaults(func=func)

    for name, func, what in (
        ("analyse", cmd_analyse, "a study's analyses (placeholder)"),
        ("plot", cmd_plot, "a study's figures (placeholder)"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("study", choices=["binary", "representations", "labels"])
        p.add_argument("--inputs", nargs="*", default=[])
        p.add_argument("--params", default="{}")
        p.add_argument("--out", nargs="+", required=True)
        p.set_defaults(func=func)

    p = sub.add_parser("report", help="the HTML report of all figures")
    p.add_argument("--figures", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("make-tiny-model", help="a tiny random Llama model (tests, smoke runs)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=2)
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("info", help="rows, schema and provenance of Parquet tables")
    p.add_argument("tables", nargs="+")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from iclscope.config import ConfigError
    from iclscope.models import ModelError
    from iclscope.tables import TableError
    from iclscope.tasks.common import TaskError

    try:
        args.func(args)
    except (ConfigError, ModelError, TableError, TaskError) as err:
        print(f"iclscope {args.command}: error: {err}", file=sys.stderr)  # no traceback: a user error
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
