# Config lookups and input functions shared by all rules. Paths are built here only.
import shlex
from functools import partial

# report() marks an output for `snakemake --report` (imported under another name: snakefmt
# reads a bare `report` as the workflow's report directive)
from snakemake.exceptions import WorkflowError
from snakemake.io import report as report_output

from iclscope.extraction import params as extraction_params
from iclscope.planning.requests import JobRequests
from iclscope.provenance import canonical_json
from iclscope.registry import CAPTIONS_FILE, COMPARE_FIGURES, EXTRACT_TABLES, Captions
from iclscope.registry import STUDIES as REGISTRY
from iclscope.registry import sampled_task
from iclscope.tasks import task_data_files, task_names, task_params

RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
MODELS = {m["name"]: m for m in config["models"]}
TASKS = task_names(config)
# the task a model samples (the generate rule's) instead of extracting: the registry's one
try:
    SAMPLED_TASK = sampled_task()
except ValueError as err:
    raise WorkflowError(str(err)) from None
STUDIES = config["studies"]
for _name in STUDIES:  # the config names registered studies only (validate_config)
    if _name not in REGISTRY:
        raise WorkflowError(
            f"config studies: {_name!r} is not registered ({', '.join(REGISTRY)})"
        )
# each per-dataset study's datasets (its `datasets` hook)
STUDY_DATASETS = {name: REGISTRY[name].datasets(config) for name in STUDIES}
DATASETS = [ds for name in STUDIES for ds in STUDY_DATASETS[name]]
# figure file names of each study's plot step (iclscope.registry: the one list)
FIGURE_NAMES = {name: list(study.figures) for name, study in REGISTRY.items()}
# the report's caption files (report/captions/{study}/{figure}.rst); a figure without one is
# an output of its plot step but not marked for Snakemake's report
CAPTIONS_DIR = Path(PACKAGE_DIR).parent / "report" / "captions"


def reported_figure(folder, name, captions, **how):
    """``folder/name`` marked for Snakemake's report (``how``: its category, labels, ...) when
    it has a caption file, report/captions/{captions}/{stem}.rst; else a plain output.
    """
    caption = f"{captions}/{Path(name).stem}.rst"
    if not (CAPTIONS_DIR / caption).exists():
        return f"{folder}/{name}"
    return report_output(
        f"{folder}/{name}", caption=f"../report/captions/{caption}", **how
    )


def figure_outputs(study, folder):
    """A study's figures in ``folder``, each marked for Snakemake's report: its caption is
    the one the plot step wrote (report/captions/ reads captions.json through the rule's
    `captions` param), grouped by study (category) and model (subcategory)."""
    labels = {"model": "{model}"}
    if REGISTRY[study].per_dataset:
        labels["dataset"] = "{dataset}"
    return [
        reported_figure(
            folder,
            name,
            study,
            category=REGISTRY[study].title,
            subcategory="{model}",
            labels={**labels, "figure": Path(name).stem},
        )
        for name in REGISTRY[study].figures
    ]


def compare_figure_outputs(folder):
    """The comparison's figures (iclscope.registry: the size figure, then each study's
    overlay figures), marked for Snakemake's report as the studies' figures are."""
    return [
        reported_figure(
            folder,
            name,
            "compare",
            category="Models compared",
            labels={"figure": Path(name).stem},
        )
        for name in COMPARE_FIGURES
    ]


def table_outputs(study, folder):
    """A study's tables in ``folder``; its key ones also marked for Snakemake's report (a
    "Key tables" section per model, offered as downloads)."""
    where = "{dataset}/" if REGISTRY[study].per_dataset else ""
    return [
        (
            report_output(
                f"{folder}/{t}.parquet",
                caption="../report/captions/table.rst",
                category="Key tables",
                subcategory="{model}",
                labels={"study": study, "table": f"{where}{t}"},
            )
            if t in REGISTRY[study].key_tables
            else f"{folder}/{t}.parquet"
        )
        for t in REGISTRY[study].tables
    ]


def model_dir(model):
    return f"{RESOURCES}/models/{model}"


def model_card(wildcards):
    return f"{model_dir(wildcards.model)}/card.json"


# the keys of a model's config entry that say which weights to prepare (nothing else does)
MODEL_SOURCE_KEYS = ("name", "embedded", "path", "hf_id", "revision", "gguf_file")


def model_spec(wildcards):
    """The model's source as canonical JSON (params of prepare_model: changing the source
    re-prepares it; run-time and speed settings such as dtype or shards do not)."""
    m = MODELS[wildcards.model]
    return canonical_json({k: m[k] for k in MODEL_SOURCE_KEYS if k in m})


def runtime_params(wildcards):
    """What a forward pass's results depend on: the model's run-time settings.

    Speed-only settings are not here: `batch_tokens` reaches the jobs as a resource
    (results do not depend on batch composition), `shards` as the shard wildcards."""
    return extraction_params.runtime_params(MODELS[wildcards.model])


def all_cores():
    """The threads of a model job: every core of the run (`--cores`), so model jobs run one
    at a time. A command that runs no job and gives no --cores (`snakemake --report
    report.html`, `--lint`) gets 1: the value then plans nothing."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


# the model jobs' scheduler requests come from their plans (iclscope.planning.requests)
# (inside a cluster job the requests are made already: not planned again there)
REQUESTS = JobRequests(config, remote=workflow.remote_exec)


def _job(wildcards):
    """(model, task, shard, shards) of a model job (generation: its task, one shard)."""
    task = wildcards.get("task", SAMPLED_TASK)
    return (
        wildcards.model,
        task,
        int(wildcards.get("shard", 1)),
        int(wildcards.get("n", 1)),
    )


def planned_mem_mb(wildcards, attempt):
    """Host memory of a model job: its planned peak (times plan.margin and the attempt)."""
    return REQUESTS.mem_mb(*_job(wildcards), attempt=attempt)


def planned_runtime(wildcards, attempt):
    """Wall-time limit (minutes) of a model job: its planned time (times the margin)."""
    return REQUESTS.runtime(*_job(wildcards), attempt=attempt)


def planned_gpus(wildcards):
    """GPUs of a model job: one, or as many as the plan says its model fills."""
    return REQUESTS.gpus(*_job(wildcards))


def batch_tokens(wildcards):
    """The token budget of one forward batch: a resource, so changing it reruns nothing."""
    return MODELS[wildcards.model]["batch_tokens"]


def runtime_spec(wildcards):
    """The benchmark's params: run-time settings and the batch budget it measures."""
    return canonical_json(
        {**runtime_params(wildcards), "batch_tokens": batch_tokens(wildcards)}
    )


def extract_spec(wildcards):
    """Extraction params: run-time settings, plus the pooling for the tasks that pool
    (so changing it reruns only study B's extraction)."""
    return canonical_json(
        extraction_params.extract_params(
            MODELS[wildcards.model], wildcards.task, config
        )
    )


def generate_spec(wildcards):
    """Generation params: run-time settings, the seed and the generation keys."""
    return canonical_json(
        extraction_params.generate_params(MODELS[wildcards.model], config)
    )


def study_spec(study, wildcards):
    """The config slice a study's analysis and figures read (its `spec` hook: the seed and its
    section; for a per-dataset study also the dataset): the params of its rules."""
    return canonical_json(REGISTRY[study].spec(config, wildcards.get("dataset")))


# the cross-model stage's figures (names only: the Snakefile imports nothing heavy for them)
def compare_targets():
    """The compare stage runs when the config names two or more models."""
    if len(MODELS) < 2:
        return []
    return [
        f"{RESULTS}/compare/headlines.parquet",
        f"{RESULTS}/compare/findings.md",
    ] + [
        f"{RESULTS}/compare/figures/{name}"
        for name in [*COMPARE_FIGURES, CAPTIONS_FILE]
    ]


def findings_spec():
    """What the findings depend on: the seed, the studies and the per-dataset studies' datasets."""
    return canonical_json(
        {"seed": config["seed"], "studies": STUDIES, "datasets": DATASETS}
    )


def n_shards(model):
    return MODELS[model]["shards"]


def shard_tables(wildcards):
    """Every extraction table of every shard, in shard order."""
    n = n_shards(wildcards.model)
    return [
        f"{RESULTS}/{wildcards.model}/extract/{wildcards.task}/shards/{i}-of-{n}/{t}.parquet"
        for i in range(1, n + 1)
        for t in EXTRACT_TABLES
    ]


def task_spec(wildcards):
    return canonical_json(task_params(wildcards.task, config))


def task_inputs(wildcards):
    """The data files a task reads, relative to the working directory where they lie
    under it: Snakemake records input paths, so a moved or copied project plans nothing.
    """
    return [
        run_relative(p) for p in task_data_files(wildcards.task, config, Path.cwd())
    ]


def run_relative(path):
    """``path`` relative to the working directory when under it, else as it is."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def task_table(task):
    return f"{RESULTS}/tasks/{task}.parquet"


def extracted(model, task):
    return [f"{RESULTS}/{model}/extract/{task}/{t}.parquet" for t in EXTRACT_TABLES]


def study_tables(model, study):
    """A study's result tables (per dataset for a per-dataset study)."""
    folders = (
        [f"{RESULTS}/{model}/{study}/{ds}" for ds in STUDY_DATASETS[study]]
        if REGISTRY[study].per_dataset
        else [f"{RESULTS}/{model}/{study}"]
    )
    return [f"{d}/{t}.parquet" for d in folders for t in REGISTRY[study].tables]


def figure_dirs(model, study):
    """Where a study's figures go: one folder per model (per dataset for a per-dataset study)."""
    if REGISTRY[study].per_dataset:
        return [
            f"{RESULTS}/{model}/figures/{study}/{ds}" for ds in STUDY_DATASETS[study]
        ]
    return [f"{RESULTS}/{model}/figures/{study}"]


def figures(model, study):
    return [
        f"{d}/{name}"
        for d in figure_dirs(model, study)
        for name in [*FIGURE_NAMES[study], CAPTIONS_FILE]
    ]


def named(pairs):
    """``name=path`` arguments for the CLI from a dict (or from paths, named by file stem)."""
    if not isinstance(pairs, dict):
        pairs = {Path(p).stem: p for p in pairs}
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in pairs.items())


def extracted_table(model, task, table):
    return f"{RESULTS}/{model}/extract/{task}/{table}.parquet"


def analysis_inputs(study, wildcards):
    """The named inputs of a study's analysis (its `inputs` hook, paths under the results folder)."""
    inputs = REGISTRY[study].inputs(config, wildcards.get("dataset"))
    return {
        name: f"{RESULTS}/{path.format(model=wildcards.model)}"
        for name, path in inputs.items()
    }


def study_dir(study, model, dataset, figures=False):
    """A study's folder of tables (or of figures) for one model (and one dataset for a
    per-dataset study: ``dataset`` is ignored otherwise)."""
    parts = [RESULTS, model, "figures", study] if figures else [RESULTS, model, study]
    return "/".join(parts + ([dataset] if REGISTRY[study].per_dataset else []))


def figure_folder(study, wildcards):
    """The folder of one plot job's figures and captions.json."""
    return study_dir(study, wildcards.model, wildcards.get("dataset"), figures=True)


def plot_inputs(study, wildcards):
    """The tables a study's plot step reads, named by table (its `plot_tables`, else all)."""
    record = REGISTRY[study]
    folder = study_dir(study, wildcards.model, wildcards.get("dataset"))
    return {t: f"{folder}/{t}.parquet" for t in record.plot_tables or record.tables}


def all_figures():
    return [f for m in MODELS for s in STUDIES for f in figures(m, s)]


def all_targets():
    targets = [f"{model_dir(m)}/card.json" for m in MODELS]
    targets += [task_table(t) for t in TASKS]
    targets += [t for m in MODELS for s in STUDIES for t in study_tables(m, s)]
    targets += [f"{RESULTS}/{m}/findings.md" for m in MODELS] + compare_targets()
    return targets + all_figures() + [f"{RESULTS}/report.html"]
