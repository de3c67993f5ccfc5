"""Conda environments (for `--sdm conda`) stay consistent with pyproject.toml, and the
analysis rule group really runs without torch."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from conftest import REPO

RULE_ENV = re.compile(r'^rule (\w+):.*?conda:\s*"\.\./envs/(\w+)\.yaml"', re.S | re.M)


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~ ]", d, maxsplit=1)[0].lower(): d.replace(" ", "") for d in deps}


def env_pins(name: str) -> dict[str, str]:
    env = yaml.safe_load((REPO / "envs" / f"{name}.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"]
    return {re.split(r"[<>=!~ ]", d, maxsplit=1)[0].lower(): d.replace(" ", "") for d in pip}


def test_env_pins_equal_pyproject_pins():
    project = pyproject_pins()
    for name in ("torch", "analysis"):
        for package, spec in env_pins(name).items():
            assert package in project, f"envs/{name}.yaml: {package} is not a dependency in pyproject.toml"
            assert spec == project[package], f"envs/{name}.yaml: {spec} differs from pyproject's {project[package]}"
    # together the envs cover every dependency but the workflow engine itself
    covered = set(env_pins("torch")) | set(env_pins("analysis"))
    assert set(project) - covered == {"snakemake"}


def test_every_rule_with_a_command_names_an_existing_env():
    rules = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        # named rules, and the rules a loop defines per study (`rule:` + `name: f"analyse_{...}"`)
        for block in re.split(r"^(?=\s*rule[ :])", path.read_text(), flags=re.M):
            name = re.match(r"\s*rule (\w+):", block) or re.match(
                r'\s*rule:\s*name:\s*f"(\w+_)\{', block)
            if name and "shell:" in block:
                env = re.search(r'conda:\s*"\.\./envs/(\w+)\.yaml"', block)
                assert env, f"rule {name[1]} ({path.name}) has no conda env"
                assert (REPO / "envs" / f"{env[1]}.yaml").exists()
                rules[name[1]] = env[1]
    assert rules["extract"] == rules["generate"] == rules["prepare_model"] == "torch"
    # analyse_<study> and plot_<study>, one definition for every registered study
    assert rules["analyse_"] == rules["plot_"] == rules["gather_extract"] == "analysis"
    assert rules["build_tasks"] == "analysis"  # task tables need no model, so no torch


def test_analysis_commands_do_not_import_torch(tmp_path):
    """The analysis env has no torch: its commands must not import it."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'):\n"
        "            raise ImportError(f'{name} is not in the analysis env')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from iclscope import cli\n"
        "import iclscope.studies.binary, iclscope.studies.representations, iclscope.studies.labels\n"
        "import iclscope.gather, iclscope.report\n"
        f"assert cli.main(['report', '--out', r'{tmp_path / 'r.html'}']) == 0\n"
        # build_tasks runs in this env too: every default task builds without torch
        f"sys.exit(cli.main(['-q', 'build-tasks', '--task', 'labels_sentiment', '--config', 'config/config.yaml', "
        f"'--out', r'{tmp_path / 't.parquet'}']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.html").exists() and (tmp_path / "t.parquet").exists()


def test_installing_the_package_keeps_an_installed_torch_in_range():
    """A user's torch (any build) inside the declared range is left alone: pip's resolver
    plans no torch when the package is installed into an environment that has one."""
    import json

    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-build-isolation",
         "--report", "-", "-e", str(REPO)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    planned = {item["metadata"]["name"].lower() for item in json.loads(proc.stdout)["install"]}
    assert "torch" not in planned and "iclscope" in planned, planned
