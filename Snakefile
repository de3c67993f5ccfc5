# iclscope: one DAG from models and task definitions to the three ICL studies' figures.
# All logic lives in the package workflow/iclscope; the rules below only call its CLI.
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version

# the oldest Snakemake this workflow is tested with (pyproject.toml: snakemake>=9.0,<10)
min_version("9.0")

# The package lives in workflow/: importable here (to build the DAG) and, through the
# shell prefix, in every job whatever environment runs it (a venv, a conda env from
# envs/, a cluster node). Rules run `python -m iclscope`. The folder is found from this
# file, not from the main Snakefile, so the workflow also runs as a module of another
# workflow (`module iclscope: snakefile: ...`; docs/module.md).
PACKAGE_DIR = str(Path(str(workflow.current_basedir)).resolve() / "workflow")
sys.path.insert(0, PACKAGE_DIR)
# (no braces: Snakemake formats the prefix; an empty trailing entry is the run
# directory, which `python -m` puts on the path anyway)
shell.prefix(f'export PYTHONPATH={shlex.quote(PACKAGE_DIR)}:"$PYTHONPATH"; ')

from iclscope.config import SCHEMA_PATH, ConfigError, validate_config
from iclscope.registry import schema_file


configfile: "config/config.yaml"


# Snakemake's own report (`snakemake --report report.html`): this page, then every figure
# and findings file marked with report() in the rules, captioned from captions.json.
report: "report/workflow.rst"


# Validate (and fill in defaults) before any job is planned: a bad config stops here
# with every problem listed by key.
try:
    # (the schema admits the studies registered from outside the package: iclscope.registry)
    config.update(
        validate_config(config, root=Path.cwd(), schema_path=schema_file(SCHEMA_PATH))
    )
except ConfigError as err:
    sys.exit(f"Error: {err}")


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9._-]*",
    task="[a-z0-9_]+",
    dataset="[a-z0-9_]+",
    shard="[0-9]+",
    n="[0-9]+",


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/tasks.smk"
include: "rules/extract.smk"
include: "rules/studies.smk"
include: "rules/findings.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
