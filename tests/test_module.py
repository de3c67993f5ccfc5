"""The workflow as a Snakemake module of another workflow (docs/module.md): an outer
Snakefile imports every rule under a prefix and runs them on the tiny model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, small_config

BIN = Path(sys.executable).parent

# the outer Snakefile docs/module.md shows, with the path to this clone filled in
OUTER = """\
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


module iclscope:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from iclscope as iclscope_*


rule all:
    default_target: True
    input:
        rules.iclscope_all.input,


rule pythonpath:
    output:
        "pythonpath.txt",
    shell:
        'echo "$PYTHONPATH" > {{output}}'
"""


def outer_snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_workflow_runs_as_a_module_of_another_workflow(tmp_path, tiny_model_dir):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(small_config(tiny_model_dir)))
    (tmp_path / "Snakefile").write_text(OUTER.format(snakefile=REPO / "Snakefile"))
    dry = outer_snakemake(tmp_path, "-n", "-p", "--cores", "1")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    stats = dry.stdout[dry.stdout.index("Job stats:"):]
    jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    assert jobs["iclscope_prepare_model"] == 1 and jobs["iclscope_extract"] == 5 and jobs["iclscope_report"] == 1
    assert "localrules directive" not in dry.stdout + dry.stderr  # gather_extract stays local
    # one real job of the module, with the shipped data files found from the module's clone;
    # jobs find the package of the module's clone (its shell prefix), not the outer folder's
    run = outer_snakemake(tmp_path, "--cores", "1", "results/tasks/reading.parquet", "pythonpath.txt")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "pythonpath.txt").read_text().split(":")[0] == str(REPO / "workflow")
    from iclscope.tables import read_table

    assert read_table(tmp_path / "results/tasks/reading.parquet").num_rows > 0
