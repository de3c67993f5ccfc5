"""The `iclscope` command line: one subcommand per pipeline step.

Every Snakemake rule calls one of these; each also runs on its own, e.g.::

    iclscope build-tasks --config config/config.yaml --task reading --out reading.parquet
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("iclscope")
# when the command started (an extraction job's throughput counts its time from here)
STARTED = time.perf_counter()

def _params(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return json.loads(args.params)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--params is not valid JSON: {err}") from err


def cmd_validate_config(args: argparse.Namespace) -> None:
    from iclscope.config import load_config
    from iclscope.tasks import task_names

    files = list(args.config)
    base = Path("config/config.yaml")
    if not args.alone and base.exists() and all(Path(f).resolve() != base.resolve() for f in files):
        files.insert(0, str(base))  # an override file is read as snakemake --configfile reads it
    cfg = load_config(*files)
    print(f"{' + '.join(files)}: valid")
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


def cmd_extract(args: argparse.Namespace) -> None:
    from iclscope.extraction.run import run_extract

    if not 1 <= args.shards or not 1 <= args.shard <= args.shards:
        raise SystemExit(f"--shard {args.shard} --shards {args.shards}: expected 1 <= shard <= shards")
    # shards count from 1 on the command line and in paths (shards/K-of-N/); from 0 inside
    run_extract(args.model_dir, args.tasks, _runtime(args), args.out, shard=args.shard - 1, n_shards=args.shards,
                started=STARTED)


def cmd_gather(args: argparse.Namespace) -> None:
    from iclscope.gather import gather

    gather(args.inputs, args.out)


def cmd_generate(args: argparse.Namespace) -> None:
    from iclscope.extraction.run import run_generate

    if len(args.out) != 1:
        raise SystemExit("generate writes one table: give one --out")
    params = _params(args)
    if args.batch_tokens is not None:  # a speed setting: not among the params the rule records
        params["runtime"] = {**params.get("runtime", {}), "batch_tokens": args.batch_tokens}
    run_generate(args.model_dir, args.tasks, params, args.out[0])


def _runtime(args: argparse.Namespace) -> dict[str, Any]:
    """--params plus --batch-tokens (a speed setting the rules pass apart from the params)."""
    params = _params(args)
    if args.batch_tokens is not None:
        params["batch_tokens"] = args.batch_tokens
    return params


def _named(pairs: Sequence[str], flag: str) -> dict[str, str]:
    """``name=path`` arguments as a dict (the rules name every input and output)."""
    named = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"{flag} expects name=path, got {pair!r}")
        if name in named:
            raise SystemExit(f"{flag}: {name!r} given twice")
        named[name] = path
    return named


def _study(name: str) -> Any:
    """The registry's record behind ``iclscope analyse|plot NAME`` (its hooks import the
    study's analysis libraries on demand)."""
    from iclscope.registry import study

    try:
        return study(name)
    except KeyError as err:  # argparse's choices come from the registry: a registry/CLI mismatch
        raise SystemExit(err.args[0]) from None


def cmd_analyse(args: argparse.Namespace) -> None:
    _study(args.study).call("analyse", _named(args.inputs, "--inputs"), _params(args), _named(args.out, "--out"))


def cmd_plot(args: argparse.Namespace) -> None:
    captions = _study(args.study).call("plot", _named(args.inputs, "--inputs"), _params(args), args.out_dir)
    from iclscope.registry import CAPTIONS_FILE
    from iclscope.tables import atomic_path

    with atomic_path(Path(args.out_dir) / CAPTIONS_FILE) as tmp:  # never a half-written file
        tmp.write_text(json.dumps(captions, indent=2, sort_keys=True) + "\n")
    log.info("%s figures: %s -> %s", args.study, ", ".join(sorted(captions)), args.out_dir)


def cmd_findings(args: argparse.Namespace) -> None:
    from iclscope.findings import write_findings

    frame = write_findings(args.results, args.model, _params(args), args.out_table, args.out_markdown)
    log.info("%s: %d headline quantities -> %s, %s", args.model, len(frame), args.out_table, args.out_markdown)


def cmd_quote_findings(args: argparse.Namespace) -> None:
    from iclscope.findings import quote_into
    from iclscope.tables import atomic_path

    doc = Path(args.document)
    text = doc.read_text()
    for pair in args.findings:
        name, _, path = pair.partition("=")
        text = quote_into(text, name, Path(path).read_text(), path)
    with atomic_path(doc) as tmp:
        tmp.write_text(text)
    log.info("quoted %s into %s", ", ".join(args.findings), doc)


def cmd_compare(args: argparse.Namespace) -> None:
    from iclscope.compare import write_compare

    cards = dict(_named(args.cards, "--cards"))
    frame = write_compare(args.results, sorted(cards), cards, _params(args), args.out_dir)
    log.info("compare: %d models, %d headline rows -> %s", len(cards), len(frame), args.out_dir)


def bench_tasks(args: argparse.Namespace) -> list[str]:
    """``--tasks``, else the task tables of ``--config`` (default: the built-in studies' defaults,
    under results/tasks/): its sampled task for ``bench generate``, every task it extracts
    otherwise, in the registry's order (as the bench_extract rule lists them)."""
    if args.tasks:
        return list(args.tasks)
    from iclscope.config import load_config, study_defaults
    from iclscope.registry import sampled_task
    from iclscope.tasks import task_names

    config = load_config(args.config) if args.config else {**study_defaults(), "results_dir": "results"}
    sampled = sampled_task()
    names = [sampled] if args.what == "generate" else [t for t in task_names(config) if t != sampled]
    return [f"{config['results_dir']}/tasks/{t}.parquet" for t in names]


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "jobs":
        from iclscope.bench import jobs

        rows = jobs.job_rows(args.results)
        print(jobs.format_jobs(rows))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"jobs": rows, "totals": jobs.totals(rows)}, indent=2, sort_keys=True)
                                  + "\n")
        if args.markdown:
            Path(args.markdown).write_text(jobs.markdown_jobs(rows) + "\n")
        return 0 if rows else 1
    tasks = bench_tasks(args)
    if args.what == "generate":
        from iclscope.bench import generate as bench_generate

        task = tasks[0]
        summary = bench_generate.bench_generate(args.model_dir, task, args.out, params=_params(args),
                                                repeats=args.repeats, max_prompts=args.max_prompts)
        print(bench_generate.format_summary(summary))
        return 0
    if args.what == "device":
        from iclscope.bench import device as bench_device

        summary = bench_device.check_device(args.model_dir, tasks, args.out, device=args.device, dtypes=args.dtypes,
                                            max_prompts=args.max_prompts or 8, params=_params(args))
        print(bench_device.format_summary(summary))
        return 0 if summary["ok"] else 1  # 1: some table differs beyond its tolerance
    from iclscope.bench import bench_extract, format_summary

    summary = bench_extract(args.model_dir, tasks, args.out, repeats=args.repeats,
                            max_prompts=args.max_prompts or 8, params=_params(args))
    print(format_summary(summary))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from iclscope.config import load_config
    from iclscope.planning import devices, report
    from iclscope.planning.estimate import Assumptions
    from iclscope.planning.run import plan_config, plan_shapes

    if args.devices:
        for name in devices.device_names():
            d = devices.GPUS.get(name)
            print(f"{name:10s} " + ("this machine's CPU, measured when planned" if d is None else
                                    f"{d.note}: " + ", ".join(f"{k} {v / 1e12:g}" for k, v in d.peak_flops.items())
                                    + f" TFLOP/s dense, {d.memory_bytes / 1024**3:g} GiB, {d.bandwidth / 1e9:g} GB/s"))
        return 0
    cfg = load_config(*args.config)
    if args.model:
        overrides = {"dtype": args.dtype, "batch_tokens": args.batch_tokens, "shards": args.shards}
        plans = plan_shapes(cfg, Path.cwd(), args.model, args.device, args.mfu, overrides)
    else:
        if args.dtype or args.batch_tokens or args.shards:
            for model in cfg["models"]:
                model.update({k: v for k, v in (("dtype", args.dtype), ("batch_tokens", args.batch_tokens),
                                                ("shards", args.shards)) if v})
        plans = plan_config(cfg, Path.cwd(), args.device, args.mfu)
    device = devices.find_device(args.device or cfg["plan"]["device"])
    assume = Assumptions.for_device(device, mfu=args.mfu or cfg["plan"]["mfu"])
    print(report.format_plan(plans, device, assume))
    status = 0
    summary: dict[str, Any] = {"device": device.name, "device_note": device.note, "peak_flops": dict(device.peak_flops),
                               "assumptions": assume.__dict__, "jobs": [p.record() for p in plans]}
    if args.against:
        rows = report.against(plans, args.against)
        print()
        print(report.format_against(rows, args.against))
        summary["against"] = rows
        status = 1 if any(r[k]["within"] is False for r in rows for k in report.TOLERANCE) else 0
    if args.json:
        from iclscope.tables import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return status


def cmd_audit(args: argparse.Namespace) -> int:
    from iclscope.audit import compare, format_manifest, manifest, provenance_differences, scan, write_manifest

    entries, corrupt = scan(args.results)
    print(format_manifest(entries))
    print(f"{len(entries)} tables under {args.results}")
    if args.json:
        write_manifest(entries, args.json)
    if corrupt:  # every damaged table, after the manifest of the others
        for problem in corrupt:
            print(f"CORRUPT: {problem}", file=sys.stderr)
        print(f"{len(corrupt)} corrupt table(s) under {args.results}", file=sys.stderr)
        return 2
    if args.against:
        other = manifest(args.against)
        problems = compare(entries, other)
        for note in provenance_differences(entries, other):
            print(f"PROVENANCE: {note}")
        for problem in problems:
            print(f"DIFFERS: {problem}")
        if problems:
            print(f"{len(problems)} difference(s) between {args.results} and {args.against}")
            return 1
        print(f"identical: every table of {args.results} holds the same data as {args.against}")
    return 0


def cmd_report(args: argparse.Namespace) -> None:
    from iclscope.report import write_report

    write_report(args.figures, args.out, findings=args.findings)
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


def cmd_cluster_profile(args: argparse.Namespace) -> None:
    from iclscope.cluster import write_overlay_profile

    try:
        out = write_overlay_profile(args.profile, args.overlay, args.out)
    except (OSError, ValueError) as err:  # a missing file, an unfilled placeholder
        raise SystemExit(f"iclscope cluster-profile: error: {err}") from err
    print(out)


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
                   help="prompts per task (extract and device: spread over the table, default 8; generate: "
                        "the first ones, default all)")
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
