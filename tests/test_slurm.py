"""The pipeline through a real SLURM scheduler: `make slurm-check` (CI runs it on every submission).

`cluster/onenode/cluster.sh start` runs SLURM 22.05 on this one machine: a `gpu` partition
whose node has one fake GPU and a GRES-less `cpu` partition. The tiny model's run (the
tests' small config, every task in two shards) goes through `snakemake --executor slurm`
with the shipped profile and `cluster/onenode/overlay.yaml` merged over it
(`iclscope cluster-profile`), while the same config runs locally beside it. Meanwhile one
extraction shard is cancelled with scancel halfway through. The checks, one per test:

- every job that is not a local rule went through sbatch, exactly once (the cancelled
  shard twice), each group of the profile as one submission;
- the tables equal the local run's by data hash (`iclscope audit --against`);
- the cancelled shard was retried (`retries: 1`), its other shard and every other job ran
  once, nothing partial was left, every other SLURM job COMPLETED;
- model jobs ask for the GPU as SLURM expects (--gpus=1 in partition gpu, shown by
  scontrol), the others for none, and a GRES-less partition refuses a GPU request;
- model jobs ask for their plan's memory and time (rules/common.smk), not fixed numbers.

Skipped unless ICLSCOPE_SLURM_TEST=1 (which `make slurm-check` sets once the cluster is
up); with it set, a cluster that does not answer is a failure, not a skip.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import BIN, REPO, small_config, snakemake

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("ICLSCOPE_SLURM_TEST") != "1",
        reason="needs a SLURM cluster: run `make slurm-check` (starts one on this machine, sets ICLSCOPE_SLURM_TEST=1)",
    ),
]

MODEL = "tiny"
SHARDS = 2
# the task whose second shard is cancelled mid-extraction, enlarged so that each of its shards
# extracts for about 3 s (on one thread of the 2-core development machine; the small config's
# 2 repeats of 7 examples take ~10 ms): long enough for the watcher to see the extraction start
# and cancel it, and cheap to analyse (rows grow with repeats x examples, analysis time with
# repeats; 1200 repeats of 7 examples extract as long but take 25 s more to analyse)
CANCELLED_TASK = "labels_sentiment"
LABEL_REPEATS = 150
LABEL_EXAMPLES = 31  # ~450 tokens a prompt
CANCELLED_SHARD = f"rule_extract_wildcards_{MODEL}_{CANCELLED_TASK}_2_{SHARDS}"  # the plugin's --comment
FINISHED_SHARD = f"rule_extract_wildcards_{MODEL}_{CANCELLED_TASK}_1_{SHARDS}"
MODEL_RULES = ("extract", "generate")
# the SLURM run is interrupted (SIGINT, as Ctrl-C: the plugin cancels its jobs) after this
# long, so the whole test stays under 8 minutes (the run takes about 6 on the 2-core
# development machine; sacct instead of squeue would hang it here)
RUN_TIMEOUT_S = 450
# the shim put first on PATH: logs each sbatch call's argv as one JSON line, then runs sbatch
SHIM = """#!{python}
import json, os, sys
fd = os.open({log!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (json.dumps(sys.argv[1:]) + "\\n").encode())  # one write: whole lines
os.close(fd)
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def option(argv: list[str], *names: str) -> str | None:
    """The value of an sbatch option in an argv (``--mem 1000``, ``-t 10`` or ``--gpus=1``)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table: the jobs of the run by rule."""
    table = output[output.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def declared_localrules() -> set[str]:
    """The rules named in `localrules:` directives of the Snakefile and rules/*.smk, and the
    rules that declare themselves local (`localrule: True`, which survives a module's renaming)."""
    names: set[str] = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = path.read_text()
        for block in re.findall(r"^localrules:\s*\n((?:[ \t]+\S.*\n)+)", text, re.M):
            names.update(n.strip() for n in block.replace("\n", ",").split(",") if n.strip())
        for block in re.split(r"^(?=rule )", text, flags=re.M):
            name = re.match(r"rule (\w+):", block)
            if name and re.search(r"^\s+localrule:\s*True\s*$", block, re.M):
                names.add(name[1])
    return names


@dataclass
class Cancellation:
    """What the watcher did to the chosen shard's first attempt."""

    slurm_id: str | None = None
    log_at_cancel: str = ""  # the shard's log when it was cancelled
    log_after: str = ""  # the same log once the job was gone (before any retry)
    shard_files_after: list[str] = field(default_factory=list)  # its shard folder then
    missed: str | None = None  # why nothing was cancelled


@dataclass
class Runs:
    slurm_dir: Path
    local_dir: Path
    profile: dict[str, Any]
    rc: int
    output: str  # the SLURM run's stdout and stderr
    submissions: list[list[str]]  # each sbatch call's argv
    jobs: dict[str, tuple[str, str]]  # SLURM job id -> (state, comment), every job of the run
    cancellation: Cancellation
    local: subprocess.CompletedProcess
    seconds: dict[str, float]

    def by_comment(self, comment: str) -> list[list[str]]:
        return [a for a in self.submissions if option(a, "--comment") == comment]

    def of_rule(self, rule: str) -> list[list[str]]:
        return [a for a in self.submissions if (option(a, "--comment") or "").startswith(f"rule_{rule}_wildcards_")]


def watch_and_cancel(run_dir: Path, shim_log: Path, proc: subprocess.Popen, found: Cancellation) -> None:
    """Wait until the chosen shard's job RUNs and its log shows the extraction started, then
    scancel exactly that job; note its log and shard folder once it is gone."""
    log = run_dir / f"results/logs/{MODEL}/extract/{CANCELLED_TASK}.2-of-{SHARDS}.log"
    shard_dir = run_dir / f"results/{MODEL}/extract/{CANCELLED_TASK}/shards/2-of-{SHARDS}"
    while proc.poll() is None:
        names = set()
        for line in shim_log.read_text().splitlines() if shim_log.exists() else []:
            try:
                names.add(option(json.loads(line), "--job-name"))
            except ValueError:  # a line being written
                pass
        for name in names - {None}:  # the plugin names every job of a run by the run's id
            queue = sh("squeue", "-h", "--name", name, "-t", "RUNNING", "-o", "%i|%k", check=False).stdout
            for line in queue.splitlines():
                job_id, comment = line.split("|", 1)
                if comment != CANCELLED_SHARD:
                    continue
                while proc.poll() is None:
                    text = log.read_text() if log.exists() else ""
                    if "prompts (" in text:  # iclscope.extraction.run: "<task>: N prompts (shard 2 of 2)"
                        sh("scancel", job_id)
                        found.slurm_id, found.log_at_cancel = job_id, text
                        break
                    state = sh("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()
                    if state != "RUNNING":
                        found.missed = f"job {job_id} was {state} before its extraction was seen to start"
                        return
                    time.sleep(0.05)
                if found.slurm_id:
                    # wait until it is gone, then look (the retry needs a poll, a resubmission
                    # and ten seconds of start-up before it touches the log or the folder)
                    for _ in range(200):
                        state = sh("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()
                        if state not in ("RUNNING", "COMPLETING"):
                            break
                        time.sleep(0.05)
                    found.log_after = log.read_text() if log.exists() else ""
                    found.shard_files_after = sorted(p.name for p in shard_dir.iterdir()) if shard_dir.exists() else []
                return
        time.sleep(0.2)
    found.missed = "the run ended before the shard ran"


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    """The partitions of the running cluster, by GRES: fails (never skips) if none answers."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%R|%G"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"ICLSCOPE_SLURM_TEST=1 but no SLURM cluster answers (sinfo: {err}); start one with "
                    "`cluster/onenode/cluster.sh start`, or run `make slurm-check`")
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"ICLSCOPE_SLURM_TEST=1 but no SLURM cluster answers: sinfo exited {proc.returncode}: "
                    f"{proc.stderr.strip()}; start one with `cluster/onenode/cluster.sh start`, or run `make slurm-check`")
    return dict(line.split("|", 1) for line in proc.stdout.split())


@pytest.fixture(scope="module")
def runs(cluster, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    start = time.monotonic()
    base = tmp_path_factory.mktemp("slurm")
    profile_dir = base / "profile"
    subprocess.run(
        [sys.executable, "-m", "iclscope", "cluster-profile", "--profile", str(REPO / "profiles/slurm"),
         "--overlay", str(REPO / "cluster/onenode/overlay.yaml"), "--out", str(profile_dir)],
        check=True, capture_output=True, text=True)
    profile = yaml.safe_load((profile_dir / "config.yaml").read_text())

    cfg = small_config(tiny_model_dir)
    cfg["models"][0]["shards"] = SHARDS
    cfg["labels"]["repeats"] = LABEL_REPEATS
    cfg["labels"]["n_examples"] = LABEL_EXAMPLES
    slurm_dir, local_dir = base / "run-slurm", base / "run-local"
    for d in (slurm_dir, local_dir):
        (d / "config").mkdir(parents=True)
        (d / "config" / "config.yaml").write_text(yaml.safe_dump(copy.deepcopy(cfg)))

    real_sbatch = shutil.which("sbatch")
    assert real_sbatch, "no sbatch on PATH"
    shim_dir, shim_log = base / "shim", base / "sbatch.jsonl"
    shim_dir.mkdir()
    (shim_dir / "sbatch").write_text(SHIM.format(python=sys.executable, log=str(shim_log), real=real_sbatch))
    (shim_dir / "sbatch").chmod(0o755)
    env = dict(os.environ, PATH=os.pathsep.join([str(shim_dir), str(BIN), os.environ.get("PATH", "")]))

    # the local run goes beside the SLURM one: the SLURM run's model jobs (one GPU, one
    # thread) leave a core mostly idle
    local_s: list[float] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        local_started = time.monotonic()
        local_future = pool.submit(snakemake, "--cores", "2", cwd=local_dir, check=False)
        local_future.add_done_callback(lambda _: local_s.append(time.monotonic() - local_started))
        slurm_started = time.monotonic()
        out_path = base / "run-slurm.log"
        with open(out_path, "w") as out:
            proc = subprocess.Popen(
                ["timeout", "-s", "INT", "-k", "30", str(RUN_TIMEOUT_S), sys.executable, "-m", "snakemake",
                 "-s", str(REPO / "Snakefile"), "--directory", str(slurm_dir),
                 "--executor", "slurm", "--profile", str(profile_dir)],
                stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
            cancellation = Cancellation()
            watcher = threading.Thread(target=watch_and_cancel, args=(slurm_dir, shim_log, proc, cancellation))
            watcher.start()
            rc = proc.wait()
            slurm_s = time.monotonic() - slurm_started
            watcher.join()
        local = local_future.result()
    submissions = [json.loads(line) for line in shim_log.read_text().splitlines()] if shim_log.exists() else []
    jobs = {}
    for name in {option(a, "--job-name") for a in submissions}:
        queue = sh("squeue", "-h", "--states=all", "--name", str(name), "-o", "%i|%T|%k").stdout
        jobs.update({i: (state, comment) for i, state, comment in (l.split("|", 2) for l in queue.splitlines())})
    return Runs(slurm_dir, local_dir, profile, rc, out_path.read_text(), submissions, jobs, cancellation, local,
                {"slurm run": slurm_s, "local run (beside it)": local_s[0], "fixture": time.monotonic() - start})


def test_the_run_through_slurm_finishes(runs: Runs, capsys):
    assert runs.local.returncode == 0, runs.local.stdout[-3000:] + runs.local.stderr[-3000:]
    assert runs.rc == 0, f"snakemake --executor slurm exited {runs.rc} (124: timed out):\n{runs.output[-5000:]}"
    assert re.search(r"(\d+) of \1 steps \(100%\) done", runs.output)
    with capsys.disabled():  # the figures `make slurm-check` reports
        print(f"\n  {len(runs.submissions)} sbatch submissions, {len(runs.jobs)} SLURM jobs; "
              + ", ".join(f"{k} {v:.0f} s" for k, v in runs.seconds.items()))


def test_every_job_but_local_rules_went_through_sbatch_once(runs: Runs):
    ran = job_counts(runs.output)
    # the jobs Snakemake runs itself: the `localrules:` (gather_extract) and `all`, which only
    # collects the targets (no shell, so Snakemake never submits it); the run says so for each
    # of their jobs (a failed job's log, appended to the output, says "localrule" too: its own
    # Snakemake runs it in the job, so only these rules are counted)
    local = declared_localrules() | {"all"}
    assert local < set(ran)
    for rule in local:
        assert len(re.findall(rf"^localrule {rule}:", runs.output, re.M)) == ran[rule], rule
    groups: dict[str, str] = runs.profile["groups"]  # rule -> group: one submission per group job
    components = runs.profile["group-components"]
    present = {groups[r] for r in ran if r in groups}
    for group in present:
        # every job of a group in one submission: its jobs are independent components, at
        # most group-components of them are joined into one job
        assert sum(n for r, n in ran.items() if groups.get(r) == group) <= components[group]
    ungrouped = {r: n for r, n in ran.items() if r not in local and r not in groups}
    # exact: one submission per ungrouped job and per group, plus the one retry of the
    # cancelled shard; nothing more (no job resubmitted) and nothing less (no job run locally)
    assert len(runs.submissions) == sum(ungrouped.values()) + len(present) + 1, \
        Counter(option(a, "--comment") for a in runs.submissions)
    units = Counter()
    for argv in runs.submissions:
        comment = option(argv, "--comment")[len("rule_"):]
        group = next((g for g in present if comment.startswith(f"{g}_")), None)
        units[group or comment.split("_wildcards_")[0]] += 1
    assert units == Counter({**ungrouped, **{g: 1 for g in present}}) + Counter({"extract": 1})
    assert runs.output.count("has been submitted with SLURM jobid") == len(runs.submissions)
    # every submission is a SLURM job of the run (the job name is the run's id)
    assert len({option(a, "--job-name") for a in runs.submissions}) == 1
    assert len(runs.jobs) == len(runs.submissions)


def test_tables_equal_a_local_run_of_the_same_config(runs: Runs):
    proc = subprocess.run(
        [sys.executable, "-m", "iclscope", "audit", str(runs.slurm_dir / "results"),
         "--against", str(runs.local_dir / "results")], capture_output=True, text=True)
    assert proc.returncode == 0 and "identical" in proc.stdout, proc.stdout[-5000:] + proc.stderr


def test_a_cancelled_shard_is_retried_and_leaves_nothing_partial(runs: Runs):
    cancelled = runs.cancellation
    assert cancelled.slurm_id, f"nothing was cancelled: {cancelled.missed}"
    # it was cancelled during its extraction: started, no table written
    assert "prompts (" in cancelled.log_at_cancel
    assert "readouts.parquet" not in cancelled.log_after, cancelled.log_after[-2000:]
    assert not [f for f in cancelled.shard_files_after if f.endswith(".parquet")], cancelled.shard_files_after
    # retried as the profile says, its finished twin (and every other job) not run again
    assert runs.profile["retries"] == 1
    attempts = [option(a, "--wrap").split("--attempt ")[1].split()[0] for a in runs.by_comment(CANCELLED_SHARD)]
    assert attempts == ["1", "2"]
    assert len(runs.by_comment(FINISHED_SHARD)) == 1
    assert runs.jobs[cancelled.slurm_id] == ("CANCELLED", CANCELLED_SHARD)
    others = {i: state for i, (state, _) in runs.jobs.items() if i != cancelled.slurm_id}
    assert set(others.values()) == {"COMPLETED"}, others
    # nothing partial: no atomic-write temporary (iclscope.tables.atomic_path), no shard
    # table left (they are temporary), nothing Snakemake marks incomplete
    results = runs.slurm_dir / "results"
    assert not [str(p) for p in results.rglob("*.tmp")]
    assert not list((results / MODEL / "extract").glob("*/shards/*/*.parquet"))
    assert not [p for p in (runs.slurm_dir / ".snakemake/incomplete").rglob("*") if p.is_file()]
    assert (results / MODEL / "extract" / CANCELLED_TASK / "readouts.parquet").is_file()


def test_model_jobs_ask_for_the_gpu_as_slurm_expects(runs: Runs):
    gpu_partition = runs.profile["set-resources"]["extract"]["slurm_partition"]
    cpu_partition = runs.profile["default-resources"]["slurm_partition"]
    model_jobs = [a for rule in MODEL_RULES for a in runs.of_rule(rule)]
    ran = job_counts(runs.output)
    assert len(model_jobs) == sum(ran[rule] for rule in MODEL_RULES) + 1  # and the retry
    for argv in model_jobs:
        # the plugin turns the rules' `gpu` resource into --gpus (set_gres_string)
        assert option(argv, "--gpus") == "1" and option(argv, "-p") == gpu_partition, argv
        assert option(argv, "--cpus-per-gpu") == "1", argv  # the overlay's one thread
    for argv in runs.submissions:
        if argv not in model_jobs:
            assert option(argv, "--gpus") is None and option(argv, "--gres") is None, argv
            assert option(argv, "-p") == cpu_partition, argv
    model_ids = [i for i, (state, comment) in runs.jobs.items()
                 if comment.startswith("rule_extract_") and state == "COMPLETED"]
    shown = sh("scontrol", "show", "job", model_ids[0]).stdout
    assert "TresPerJob=gres:gpu:1" in shown and f"Partition={gpu_partition}" in shown, shown


def test_a_gresless_partition_refuses_a_gpu_request(cluster):
    # the partitions' nodes: one with the fake GPU, one without any GRES
    gpu = [p.rstrip("*") for p, gres in cluster.items() if gres.startswith("gpu")]
    plain = [p.rstrip("*") for p, gres in cluster.items() if gres == "(null)"]
    assert gpu and plain, cluster
    refused = sh("sbatch", "--test-only", "--gpus=1", "-p", plain[0], "--wrap", "true", check=False)
    assert refused.returncode != 0
    assert re.search(r"Requested node configuration is not available|Invalid generic resource", refused.stderr), \
        refused.stderr
    accepted = sh("sbatch", "--test-only", "--gpus=1", "-p", gpu[0], "--wrap", "true", check=False)
    assert accepted.returncode == 0, accepted.stderr


def test_model_jobs_ask_for_their_plans_memory_and_time(runs: Runs):
    from iclscope.config import validate_config
    from iclscope.planning.requests import MIN_MEM_MB, MIN_RUNTIME_MINUTES, JobRequests

    cfg = yaml.safe_load((runs.slurm_dir / "config/config.yaml").read_text())
    cfg["plan"] = {"device": "cpu"}  # the overlay's `config: plan={device: cpu}`
    requests = JobRequests(validate_config(cfg, root=runs.slurm_dir), root=runs.slurm_dir)
    small = runs.of_rule("prepare_model")[0]  # a CPU job with the profile's fixed numbers
    for argv in [a for rule in MODEL_RULES for a in runs.of_rule(rule)]:
        mem, minutes = int(option(argv, "--mem")), int(option(argv, "-t"))
        wildcards = option(argv, "--comment").split("_wildcards_")[1]
        attempt = int(option(argv, "--wrap").split("--attempt ")[1].split()[0])
        if wildcards == MODEL:  # generate
            job = (MODEL, "binary_generation", 1, 1)
        else:
            task, shard, n = re.fullmatch(rf"{MODEL}_(\w+)_(\d+)_(\d+)", wildcards).groups()
            job = (MODEL, task, int(shard), int(n))
        assert mem == requests.mem_mb(*job, attempt=attempt), (argv, job)
        assert minutes == requests.runtime(*job, attempt=attempt), (argv, job)
        assert mem >= MIN_MEM_MB and minutes >= MIN_RUNTIME_MINUTES
        assert (mem, minutes) != (int(option(small, "--mem")), int(option(small, "-t")))
        assert mem != 64000 and minutes != 240  # the shipped profile's former fixed numbers
    # the retry asks for more memory (plan x margin x attempt)
    first, retry = (int(option(a, "--mem")) for a in runs.by_comment(CANCELLED_SHARD))
    assert retry > first
