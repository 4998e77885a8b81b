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

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode
	@$(PY) -c "import p2p, torch; print('p2p ready: torch', torch.__version__)"

test:
	$(PY) -m pytest

data:
	$(PY) -m p2p.download facades $(CURDIR)/datasets

.PHONY: bench
bench:
	$(PY) -m p2p.bench

# The FCN-score's segmenter for facades at the scale's resolution (cpu: 128x128, paper: 256x256),
# cached in .cache/p2p/fcn/ (or $P2P_CACHE_DIR). Runs fit it themselves when it is missing.
.PHONY: fcn
fcn:
	$(PY) -m p2p fcn fit experiments/facades.yaml --scale $(or $(SCALE),cpu)

# Sweeps (README, "Write a sweep"): run, resume, or join a sweep. SCALE=cpu|paper (default: paper
# where CUDA is present, else cpu), WORKERS=N (default: one per GPU, else one per CPU core),
# STORAGE=postgresql://... to share one sweep between machines (README, "Scale to many machines").
SWEEP_ARGS = $(if $(SCALE),--scale $(SCALE)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(STORAGE),--storage $(STORAGE))
.PHONY: sweep-patchsize sweep-loss sweep-generator sweep-tricks
sweep-patchsize sweep-loss sweep-generator sweep-tricks:
	$(PY) -m p2p sweep sweeps/$(@:sweep-%=%).yaml $(SWEEP_ARGS)

# Reports (README, "Read a report"): reports/<SWEEP>/report.html and report.md, also logged on
# the sweep's parent run. SCALE picks which scale's runs (default: the newest sweep's).
.PHONY: report
report:
	@test -n "$(SWEEP)" || { echo "make report: set SWEEP, e.g. make report SWEEP=patchsize" >&2; exit 2; }
	$(PY) -m analysis $(SWEEP) $(if $(SCALE),--scale $(SCALE))

# The MLflow UI on the project's tracking store (MLFLOW_TRACKING_URI, else ./mlflow.db).
PORT ?= 5000
.PHONY: ui
ui:
	$(PY) -m mlflow ui --backend-store-uri $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db) --host 127.0.0.1 --port $(PORT)
