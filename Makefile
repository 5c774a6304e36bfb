# Entry points for a fresh machine: `make demo`, `make study-deps` (the extras `experiment` needs) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# llama-cpp-python compiles llama.cpp from source. A native build (-march=native) enables AVX-512 and
# AMX kernels that crash (SIGSEGV in decode) on virtual CPUs that advertise but do not allow them, so
# build for the portable AVX2 baseline instead.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

.PHONY: demo test lint typecheck bench clean venv study-deps

# The CPU build of torch (it lies in the local wheel cache), installed before anything that pulls torch
# so pip does not fetch a multi-GB CUDA build.
TORCH_CPU := torch==2.13.0

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

# Core install: the pipeline and the embedded model (llama-cpp-python builds from source once).
$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e .
	touch $@

# Dev install: every extra, with the CPU torch first.
$(VENV)/.dev-installed: $(VENV)/.created pyproject.toml requirements/dev-constraints.txt
	$(PIP) install -q "$(TORCH_CPU)"
	$(PIP) install -q -c requirements/dev-constraints.txt -e ".[dev]"
	touch $@

# What `experiment` needs beyond the core install (analysis, training, math grading), on CPU.
$(VENV)/.study-installed: $(VENV)/.installed requirements/dev-constraints.txt
	$(PIP) install -q "$(TORCH_CPU)"
	$(PIP) install -q -c requirements/dev-constraints.txt -e ".[analysis,train,eval]"
	touch $@

venv: $(VENV)/.installed

study-deps: $(VENV)/.study-installed

demo: $(VENV)/.installed
	$(VENV)/bin/explore-instruct run configs/demo.yaml --run-dir runs/demo --resume

test: lint
	$(PY) -m pytest -q

lint: typecheck
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# mypy, strict on src/ (pyproject.toml's [tool.mypy]); its cache in .mypy_cache makes a second run fast.
typecheck: $(VENV)/.dev-installed
	$(VENV)/bin/mypy

bench: $(VENV)/.dev-installed
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) runs build dist *.egg-info src/*.egg-info .mypy_cache
