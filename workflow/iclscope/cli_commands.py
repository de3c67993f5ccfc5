"""The handlers of the `iclscope` subcommands (:mod:`iclscope.cli` builds the parser that
dispatches to them): each reads its parsed arguments and runs one pipeline step, importing
the step's libraries on demand."""

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
                            max_prompts=args.max_prompts, params=_params(args))
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

