"""The `iclscope` command line: one subcommand per pipeline step.

Every Snakemake rule calls one of these; each also runs on its own, e.g.::

    iclscope build-tasks --config config/config.yaml --task reading --out reading.parquet
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from iclscope.cli_commands import (
    bench_tasks,  # noqa: F401 (re-exported: `iclscope.cli.bench_tasks`)
    cmd_analyse, cmd_audit, cmd_bench, cmd_build_tasks, cmd_cluster_profile, cmd_compare, cmd_extract,
    cmd_findings, cmd_gather, cmd_generate, cmd_info, cmd_make_tiny_model, cmd_plan, cmd_plot, cmd_prepare_model,
    cmd_quote_findings, cmd_report, cmd_validate_config,
)


def cmd_docs(args: argparse.Namespace) -> int:
    from iclscope.docs_reference import REGENERATE, generate, shown, stale_pages, write_pages

    pages = generate(build_parser())
    for g in pages:
        if g.text is None:
            print(f"{shown(g.page)}: not checked: its source {g.source} is absent (run the pipeline to produce it)")
    if args.check:
        stale = stale_pages(pages)
        for line in stale:
            print(f"stale: {line}")
        if stale:
            print(f"regenerate with: {REGENERATE}")
            return 1
        print("generated pages are current")
        return 0
    for path in write_pages(pages):
        print(f"wrote {shown(path)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from iclscope import __version__

    parser = argparse.ArgumentParser(prog="iclscope", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--version", action="version", version=f"iclscope {__version__}",
                        help="print the package version (pyproject.toml's, the one in every table's provenance)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-config", help="validate a config and list models and tasks",
                       description="Check a config against config/schema.yaml and the cross-key rules "
                                   "(every problem listed by key), then list its models and tasks.")
    p.add_argument("--config", nargs="+", default=["config/config.yaml"],
                   help="config files, each merged over the one before; files other than config/config.yaml "
                        "are merged over it, as snakemake --configfile does (default: %(default)s)")
    p.add_argument("--alone", action="store_true", help="check the files without config/config.yaml beneath")
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser("prepare-model", help="convert a configured model into a fast-loading folder",
                       description="Load a model once (embedded GGUF, local folder or hub id) and write a plain "
                                   "Hugging Face folder (safetensors, tokenizer) with card.json.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--params", help="the model's config entry as JSON (what the rule passes)")
    src.add_argument("--model", help="a model name in --config")
    p.add_argument("--config", default="config/config.yaml", help="the config naming --model (default: %(default)s)")
    p.add_argument("--out-dir", required=True, help="the prepared folder, e.g. resources/models/NAME")
    p.set_defaults(func=cmd_prepare_model)

    p = sub.add_parser("build-tasks", help="build one task table",
                       description="Build one task's prompt table (seeded; independent of the model).")
    p.add_argument("--task", required=True, help="the task name, e.g. reading, labels_sentiment (see validate-config)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--params", help="the task's config keys as JSON (what the rule passes)")
    src.add_argument("--config", default="config/config.yaml", help="a config file (default: %(default)s)")
    p.add_argument("--out", required=True, help="where the task table (Parquet) goes")
    p.set_defaults(func=cmd_build_tasks)

    for name, func, what in (
        ("extract", cmd_extract, "pooled embeddings, attention mass and readouts of a task"),
        ("generate", cmd_generate, "sampled continuations of the generation prompts"),
    ):
        p = sub.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}, on a prepared model.")
        p.add_argument("--model-dir", required=True, help="a prepared model folder (prepare-model's --out-dir)")
        p.add_argument("--tasks", required=True, help="the task table to run")
        p.add_argument("--params", default="{}", help="run-time settings as JSON (dtype, device, batch_tokens, ...)")
        p.add_argument("--out", nargs="+", required=True, help="the output table(s), matched by file name")
        p.add_argument("--batch-tokens", type=int, default=None,
                       help="token budget of one forward batch (speed only; default: --params' or 4096)")
        if name == "extract":
            p.add_argument("--shard", type=int, default=1,
                           help="which shard of the task's prompts, 1..--shards (as in shards/K-of-N/)")
            p.add_argument("--shards", type=int, default=1, help="how many shards the task is split into")
        p.set_defaults(func=func)

    p = sub.add_parser("gather", help="concatenate shard tables (matched to --out by file name)",
                       description="Concatenate the shards of an extraction into one table per kind.")
    p.add_argument("--inputs", nargs="+", required=True, help="every shard's tables")
    p.add_argument("--out", nargs="+", required=True, help="the gathered tables (inputs matched by file name)")
    p.set_defaults(func=cmd_gather)

    from iclscope.registry import STUDIES

    studies = list(STUDIES)
    p = sub.add_parser("analyse", help="a study's analyses: tables from extracted tables",
                       description="Run one study's analyses on a model's task and extracted tables.")
    p.add_argument("study", choices=studies, help="which study")
    p.add_argument("--inputs", nargs="+", required=True, metavar="NAME=PATH", help="the study's named inputs")
    p.add_argument("--params", default="{}", help="the study's config section (and seed) as JSON")
    p.add_argument("--out", nargs="+", required=True, metavar="NAME=PATH", help="the study's named output tables")
    p.set_defaults(func=cmd_analyse)

    p = sub.add_parser("plot", help="a study's figures (and captions.json) from its tables",
                       description="Draw one study's figures from its analysis tables; captions go to captions.json.")
    p.add_argument("study", choices=studies, help="which study")
    p.add_argument("--inputs", nargs="+", required=True, metavar="NAME=PATH", help="the study's analysis tables")
    p.add_argument("--params", default="{}", help="the study's config section (and seed) as JSON")
    p.add_argument("--out-dir", required=True, help="where the figures and captions.json go")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "findings",
        help="each study's headline quantities with CIs (findings.parquet) and the text reading them (findings.md)",
        description="Read one model's analysis tables and write its findings, every number from the tables.",
    )
    p.add_argument("--results", required=True, help="the model's results folder, e.g. results/smollm2-135m")
    p.add_argument("--model", required=True, help="the model's name (as in the config)")
    p.add_argument("--params", default="{}", help="JSON: seed, studies, datasets, n_boot, level")
    p.add_argument("--out-table", required=True, help="where findings.parquet goes")
    p.add_argument("--out-markdown", required=True, help="where findings.md goes")
    p.set_defaults(func=cmd_findings)

    p = sub.add_parser(
        "quote-findings",
        help="copy generated findings.md files into a document's marked blocks (e.g. a paper draft)",
        description="Replace each <!-- findings:NAME --> ... <!-- /findings:NAME --> block of a document "
                    "with the generated findings file named for it.",
    )
    p.add_argument("document", help="the document to update, e.g. paper.md")
    p.add_argument("findings", nargs="+", metavar="NAME=FINDINGS_MD",
                   help="block name and findings file, e.g. smollm2-135m=results/smollm2-135m/findings.md")
    p.set_defaults(func=cmd_quote_findings)

    p = sub.add_parser(
        "compare",
        help="every model's headline quantities side by side, cross-model findings and figures",
        description="Stack the models' findings tables with their cards into results/compare/.",
    )
    p.add_argument("--results", required=True, help="the results folder holding one folder per model")
    p.add_argument("--cards", nargs="+", required=True, metavar="MODEL=CARD",
                   help="each model's name and its prepared card.json")
    p.add_argument("--params", default="{}", help="JSON: seed, datasets")
    p.add_argument("--out-dir", required=True, help="where headlines.parquet, findings.md and figures/ go")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="benchmarks (extract: vs the bare forward and the naive way; "
                                     "generate: vs plain model.generate; device: a device's tables and speed "
                                     "vs CPU float32; jobs: a finished run's extraction jobs)",
                       description="Measure throughput as ratios taken in one run, interleaved repeats; "
                                   "device: whether extraction on --device in each of --dtypes gives CPU "
                                   "float32's tables within stated tolerances (exit code 1 if not), and how fast; "
                                   "jobs: each extraction job of the run in --results (its log's throughput "
                                   "record): tokens/s, MFU, compute bound and ratio to `bench extract` where "
                                   "results/bench/<model>/extract.json exists (exit code 1 if no job logged one).")
    p.add_argument("what", choices=["extract", "generate", "device", "jobs"], help="what to benchmark")
    p.add_argument("--results", default="results", help="jobs: the run's results folder (default: %(default)s)")
    p.add_argument("--markdown", default=None, help="jobs: also write the table as Markdown here")
    p.add_argument("--model-dir", default="resources/models/smollm2-135m", help="a prepared model (default: %(default)s)")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="task tables (default: those of --config under its results_dir/tasks/; extract and device: "
                        "every task it extracts, generate: the sampled task)")
    p.add_argument("--config", default=None,
                   help="the config whose tasks are the default --tasks (default: the built-in studies' defaults, "
                        "results_dir results)")
    p.add_argument("--params", default="{}",
                   help="JSON: runtime keys (dtype, device, batch_tokens, pooling); for generate also "
                        "generation (n_samples, temperature, max_new_tokens) and seed; device takes "
                        "batch_tokens and pooling (--device and --dtypes set the rest)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best is kept (default: %(default)s)")
    p.add_argument("--max-prompts", type=int, default=None,
                   help="prompts per task (extract: spread over the table, default one full batch of a "
                        "job's plan, at least 8 prompts; device: spread over the table, default 8; generate: the first "
                        "ones, default all)")
    p.add_argument("--device", default="cuda",
                   help="device: the device checked against CPU float32 (default: %(default)s)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                   choices=["float32", "bfloat16", "float16"],
                   help="device: the dtypes run on --device (default: %(default)s)")
    p.add_argument("--out", required=True, help="where the JSON summary goes")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "plan", help="what a run will cost before it runs: tokens, FLOPs, memory, bytes and time per model job",
        description="Estimate every model job of a config (or of models given by their config.json alone): prompt "
                    "and branch tokens, forward FLOPs, peak device and host memory, bytes written and wall time on a "
                    "device at a stated MFU. Task tables are read from results/tasks/ when current, else built in "
                    "memory; no weights are loaded. With --against, compare with a finished run (exit 1 beyond "
                    "tolerance).")
    p.add_argument("--config", nargs="+", default=["config/config.yaml"],
                   help="config files, each merged over the one before, as snakemake --configfile (default: %(default)s)")
    p.add_argument("--device", help="cpu (this machine, measured) or a GPU from --devices (default: the config's plan.device)")
    p.add_argument("--mfu", type=float, help="fraction of the device's dense peak a forward reaches (default: the config's "
                                             "plan.mfu, else per device kind)")
    p.add_argument("--model", nargs="+", metavar="SHAPE",
                   help="plan these models instead of the config's: a reference shape (llama-2-7b, llama-2-13b, "
                        "llama-2-70b) or a config.json, each with the first configured model's settings")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="override the models' dtype")
    p.add_argument("--batch-tokens", type=int, help="override the models' batch_tokens")
    p.add_argument("--shards", type=int, help="override the models' shards")
    p.add_argument("--json", help="also write the plan (and the comparison) as JSON here")
    p.add_argument("--against", metavar="RESULTS", help="a finished run's results folder: compare each job's estimate "
                                                        "with its benchmark file and tables")
    p.add_argument("--devices", action="store_true", help="list the devices a plan can target, then exit")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("audit", help="manifest of a run's tables (sha256, rows, provenance); compare two runs",
                       description="List every table under a results folder with its checksum, rows and provenance; "
                                   "with --against, name every table that differs from a second run.")
    p.add_argument("results", help="a results folder")
    p.add_argument("--against", help="a second run's results folder that must be identical")
    p.add_argument("--json", help="also write the manifest as JSON here")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("report", help="the HTML report of all figures and each model's findings",
                       description="One self-contained HTML page: each model's findings, then its figures with captions.")
    p.add_argument("--figures", nargs="*", default=[], help="figure PNGs (captions.json beside them)")
    p.add_argument("--findings", nargs="*", default=[], help="each model's findings.md")
    p.add_argument("--out", required=True, help="where the HTML page goes")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("make-tiny-model", help="a tiny random Llama model (tests, smoke runs)",
                       description="Build a tiny randomly initialised Llama with the embedded tokenizer (no download).")
    p.add_argument("--out-dir", required=True, help="where the model folder goes")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="number of layers (default: %(default)s)")
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("info", help="rows, schema and provenance of Parquet tables",
                       description="Print each table's row count, schema and provenance metadata.")
    p.add_argument("tables", nargs="+", help="Parquet files")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("cluster-profile", help="a SLURM profile for one cluster: the shipped one with an overlay",
                       description="Write OUT/config.yaml: the SLURM profile (profiles/slurm) with an overlay merged "
                                   "over it key by key (rules' resources and threads per key; lists and scalars "
                                   "replaced; null removes a key). Refused if a placeholder <...> is left unfilled.")
    p.add_argument("--overlay", required=True, help="the overlay YAML, e.g. cluster/onenode/overlay.yaml")
    p.add_argument("--out", required=True, help="the folder the profile goes to (snakemake --profile OUT)")
    p.add_argument("--profile", default="profiles/slurm", help="the shipped profile's folder (default: %(default)s)")
    p.set_defaults(func=cmd_cluster_profile)

    p = sub.add_parser("docs", help="write the generated documentation pages (config, tables, CLI, findings)",
                       description="Generate docs/reference/{config,tables,cli}.md from config/schema.yaml, "
                                   "iclscope.contracts and this parser, and docs/findings/*.md from the findings.md "
                                   "of finished runs under results/ (pages whose run is absent are left as they "
                                   "are). With --check, write nothing and exit 1 if a page is stale.")
    p.add_argument("--check", action="store_true", help="only report stale pages (exit 1 if any)")
    p.set_defaults(func=cmd_docs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from iclscope.memory import avoid_hugepage_stalls

    avoid_hugepage_stalls()
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from iclscope.config import ConfigError
    from iclscope.errors import ExtractionError, ModelError
    from iclscope.tables import TableError
    from iclscope.tasks.common import TaskError

    from iclscope.provenance import collecting_warnings

    try:
        with collecting_warnings():  # the step's warnings go into the tables it writes
            status = args.func(args)
    except (ConfigError, ExtractionError, ModelError, TableError, TaskError) as err:
        print(f"iclscope {args.command}: error: {err}", file=sys.stderr)  # no traceback: a user error
        return 2
    except KeyboardInterrupt:
        # outputs are written atomically, so an interrupted step leaves nothing half-written
        print(f"iclscope {args.command}: interrupted; no output was written", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
