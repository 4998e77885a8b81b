# p2p entry points. See README.md.
SHELL := /bin/bash
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

# Data and weights beside the project (../shared in this lab and in CI); online users
# get datasets/ from `make data` and torchvision's weight download instead.
SHARED ?= $(abspath ../shared)
export P2P_DATA_ROOT ?= $(if $(wildcard $(SHARED)/data/facades),$(SHARED)/data,$(CURDIR)/datasets)
ifneq ($(wildcard $(SHARED)/weights/vgg16-features-imagenet.pth),)
export P2P_WEIGHTS_DIR ?= $(SHARED)/weights
endif

.PHONY: setup test data

# `make setup`: the .venv with the locked dependencies, then the Debian packages `make test` needs
# beyond Python's: PostgreSQL (the many-machines sweep test), Chromium with its driver (the MLflow
# UI browser test), and Slurm with munge (tests/test_slurm.py starts a one-node cluster). Missing ones are installed with apt-get when run as root; otherwise the exact
# command is printed and setup stops with exit status 2. `SYSTEM_PACKAGES=` skips them.
# Python 3.11 to 3.13 (requires-python, one lock for all; CI runs the whole suite on 3.11): uv takes an
# installed interpreter that fits, the .venv's own if it has one (never a download). PYTHON=3.13 or
# PYTHON=/path/to/python3.13 picks one, and a .venv of another Python is then replaced (uv finds pyenv's
# versions other than the active one only by path). UV_PROJECT_ENVIRONMENT=DIR PY=DIR/bin/python puts
# the venv elsewhere (.ci/run: .venv-3.13).
SYSTEM_PACKAGES ?= postgresql chromium chromium-driver slurmctld slurmd slurm-client munge
PYTHON ?=

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode $(if $(PYTHON),--python $(PYTHON))
	@$(PY) -c "import p2p, torch; print('p2p ready: torch', torch.__version__)"
	@$(MAKE) --no-print-directory system-packages

.PHONY: system-packages
system-packages:
	@missing=(); \
	for package in $(SYSTEM_PACKAGES); do \
	  case $$package in \
	    postgresql) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null \
	                || missing+=($$package) ;; \
	    chromium-driver) command -v chromedriver >/dev/null || missing+=($$package) ;; \
	    slurmctld|slurmd) command -v $$package >/dev/null || test -x /usr/sbin/$$package || missing+=($$package) ;; \
	    slurm-client) command -v sbatch >/dev/null || missing+=($$package) ;; \
	    munge) command -v munged >/dev/null || test -x /usr/sbin/munged || missing+=($$package) ;; \
	    *) command -v $$package >/dev/null || missing+=($$package) ;; \
	  esac; \
	done; \
	if [ $${#missing[@]} -eq 0 ]; then echo "system packages ready: $(or $(SYSTEM_PACKAGES),none asked for)"; exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make setup: the tests need the Debian packages $${missing[*]}; install them with:" >&2; \
	  echo "  sudo apt-get update && sudo apt-get install -y $${missing[*]}" >&2; \
	  echo "(or run make setup as root; SYSTEM_PACKAGES= skips them, and their tests then fail)" >&2; \
	  exit 2; \
	fi; \
	echo "installing $${missing[*]} (apt-get)"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${missing[@]}" >/dev/null

# `make test`: the whole suite (what CI runs); `make test-fast`: the unit tier, everything but the end-to-end
# tests marked `slow` (under a minute on 2 cores). PYTEST_ARGS passes more, e.g. PYTEST_ARGS="-x -k trainer".
.PHONY: test-fast lint
test:
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast:
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# ruff ([tool.ruff]), then the import contracts: the floors and seams of the code ([tool.importlinter]), both in
# pyproject.toml.
lint:
	$(PY) -m ruff check . && $(dir $(PY))lint-imports --no-cache

# `make data`: the pix2pix releases into datasets/ (`p2p data NAME datasets`), facades and Cityscapes (the
# paper's dataset) unless DATASETS= names others; one already there is left as it is.
DATASETS ?= facades cityscapes
data:
	@for name in $(DATASETS); do $(PY) -m p2p data $$name $(CURDIR)/datasets || exit $$?; done

.PHONY: bench
bench:
	$(PY) -m benchmarks.bench

# The FCN-score's segmenter for facades at the scale's resolution (cpu: 128x128, paper: 256x256),
# cached in .cache/p2p/fcn/ (or $P2P_CACHE_DIR). Runs fit it themselves when it is missing.
.PHONY: fcn
fcn:
	$(PY) -m p2p fcn fit experiments/facades.yaml --scale $(or $(SCALE),cpu)

# Sweeps (docs/sweeps.md, "Write a sweep"): `make sweep-NAME` runs, resumes, or joins sweeps/NAME.yaml, one
# target for each spec there (sweep-patchsize, sweep-loss, sweep-generator, sweep-tricks, sweep-search-lr-l1, ...).
# SCALE=cpu|paper (default: paper where CUDA is present, else cpu), WORKERS=N (default: one per GPU, else one
# per CPU core), STORAGE=postgresql://... to share one sweep between machines (docs/sweeps.md, "Scale to many
# machines"); SLURM=1 submits the workers to Slurm instead, with SLURM_ARGS="--tasks 8 --gpus-per-task 1 ..."
# (docs/sweeps.md, "Run on a Slurm cluster").
SWEEP_ARGS = $(if $(SCALE),--scale $(SCALE)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(STORAGE),--storage $(STORAGE)) \
             $(if $(SLURM),--slurm $(SLURM_ARGS))
SWEEP_TARGETS := $(patsubst sweeps/%.yaml,sweep-%,$(wildcard sweeps/*.yaml))
.PHONY: $(SWEEP_TARGETS)
$(SWEEP_TARGETS):
	$(PY) -m p2p sweep sweeps/$(@:sweep-%=%).yaml $(SWEEP_ARGS)

# Reports (docs/reports.md, "Read a report"): reports/<SWEEP>/report.html and report.md, also logged on
# the sweep's parent run. SCALE picks which scale's runs (default: the newest sweep's).
.PHONY: report
report:
	@test -n "$(SWEEP)" || { echo "make report: set SWEEP, e.g. make report SWEEP=patchsize" >&2; exit 2; }
	$(PY) -m p2p report $(SWEEP) $(if $(SCALE),--scale $(SCALE))

# The MLflow UI on the project's tracking store (MLFLOW_TRACKING_URI, else ./mlflow.db).
PORT ?= 5000
.PHONY: ui
ui:
	$(PY) -m mlflow ui --backend-store-uri $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db) --host 127.0.0.1 --port $(PORT)
