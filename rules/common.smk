# Config lookups and input functions shared by all rules. Paths are built here only.
from iclscope.provenance import canonical_json
from iclscope.tasks import task_data_files, task_names, task_params

RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
MODELS = {m["name"]: m for m in config["models"]}
TASKS = task_names(config)
STUDIES = config["studies"]
DATASETS = (
    [ds["name"] for ds in config["labels"]["datasets"]] if "labels" in STUDIES else []
)
EXTRACT_TABLES = ["embeddings", "attention", "readouts"]
BINARY_TABLES = ["generation_metrics", "judgment", "continuation", "model_selection"]
REPRESENTATION_TABLES = [
    "behaviour",
    "rsa",
    "probes",
    "attention_ratio",
    "repr_vs_behaviour",
]
LABEL_TABLES = ["positions", "curves"]


def model_dir(model):
    return f"{RESOURCES}/models/{model}"


def model_card(wildcards):
    return f"{model_dir(wildcards.model)}/card.json"


def model_spec(wildcards):
    """The model's config entry as canonical JSON (passed as params, so changing it reruns the job)."""
    return canonical_json(MODELS[wildcards.model])


def runtime_params(wildcards):
    """What a forward pass depends on: the model's run-time settings and the pooling."""
    m = MODELS[wildcards.model]
    keys = ("dtype", "device", "device_map", "attn_implementation", "batch_tokens")
    params = {k: m[k] for k in keys}
    params["pooling"] = config["representations"]["pooling"]
    params["seed"] = config["seed"]
    return params


def runtime_spec(wildcards):
    return canonical_json(runtime_params(wildcards))


def task_spec(wildcards):
    return canonical_json(task_params(wildcards.task, config))


def task_inputs(wildcards):
    return [str(p) for p in task_data_files(wildcards.task, config, Path.cwd())]


def task_table(task):
    return f"{RESULTS}/tasks/{task}.parquet"


def extracted(model, task):
    return [f"{RESULTS}/{model}/extract/{task}/{t}.parquet" for t in EXTRACT_TABLES]


def study_tables(model, study):
    if study == "binary":
        return [f"{RESULTS}/{model}/binary/{t}.parquet" for t in BINARY_TABLES]
    if study == "representations":
        return [
            f"{RESULTS}/{model}/representations/{t}.parquet"
            for t in REPRESENTATION_TABLES
        ]
    return [
        f"{RESULTS}/{model}/labels/{ds}/{t}.parquet"
        for ds in DATASETS
        for t in LABEL_TABLES
    ]


def figures(model, study):
    return [f"{RESULTS}/{model}/figures/{study}/overview.png"]


def all_figures():
    return [f for m in MODELS for s in STUDIES for f in figures(m, s)]


def all_targets():
    targets = [f"{model_dir(m)}/card.json" for m in MODELS]
    targets += [task_table(t) for t in TASKS]
    targets += [t for m in MODELS for s in STUDIES for t in study_tables(m, s)]
    return targets + all_figures() + [f"{RESULTS}/report.html"]
