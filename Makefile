# NeuroMF — `make demo` and `make test` work on a fresh machine (they create .venv and install when needed).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean-demo browser

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first, only when none is installed (GPU users keep their own build; from the public index on Linux this is a CUDA build, README)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@# data-only packages: real brain volumes (pydeface) and a pretrained 3D T1 network (deepbet); their
	@# runtime dependencies are GUI/neuroimaging tools we do not use, hence --no-deps
	$(PY) -m pip install -q --no-deps pydeface==2.1.0 deepbet==1.0.2
	@touch $(STAMP)

install: $(STAMP)

DEMO_SWEEP ?= outputs/sweeps/demo/$(shell date +%Y-%m-%d_%H-%M-%S)

# The main job: a small real sweep (iMF vs the best one-step objective vs flow matching, at equal training compute)
# on the bundled real-brain demo data, W&B offline, then the ablation report. The three arms run at once, one
# thread each. Results: $(DEMO_SWEEP)/ (runs 0/ 1/ 2/, sweep_summary.csv, report/report.html).
demo: $(STAMP)
	$(PY) -m neuromf.data.demo
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) -m neuromf.train -m sweep=demo hydra.launcher.max_parallel=3 hydra.sweep.dir=$(DEMO_SWEEP)
	$(PY) -m neuromf.report $(DEMO_SWEEP)
	@echo; echo "Demo results: $(DEMO_SWEEP)"; echo "  report:  $(DEMO_SWEEP)/report/report.html (and report.md)"; \
	  echo "  arms:    $(DEMO_SWEEP)/sweep_summary.csv"; echo "  samples: $(DEMO_SWEEP)/<arm>/samples/  W&B offline runs: $(DEMO_SWEEP)/<arm>/wandb/"

# headless Chromium for the report's browser test (tests/test_report_browser.py): installed with apt-get when
# missing and apt-get exists (as root, or via sudo); elsewhere the test skips (CI=true makes it required)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check neuromf tests
	$(PY) -m ruff format --check neuromf tests

bench: $(STAMP)
	$(PY) -m neuromf.bench $(BENCH_ARGS)
