# Two entry points for a fresh Debian machine with Python 3.11:
#   make demo   installs the package and runs the main job on data shipped inside installed packages
#   make test   installs everything (Debian packages for Xvfb/Qt included) and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: the pinned CPU wheel. With a GPU, e.g. `make demo TORCH=torch`.
TORCH ?= torch==2.13.0
OUT ?= outputs

.PHONY: demo test lint bench bench-quick system-deps install install-dev monailabel-check gpu-check clean

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PY) -m pip install --quiet -e ".[napari,test]"
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

system-deps:
	bash scripts/install_system_deps.sh

demo: install  # the demo wants a new folder: make's own earlier demo output is replaced
	rm -rf $(OUT)/demo
	$(PY) -m napari_uspmie demo $(OUT)/demo

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: system-deps install-dev lint
	$(PY) -m pytest tests
	$(PY) -m benchmarks.run_all --quick --out $(OUT)/bench-quick

bench: install-dev
	$(PY) -m benchmarks.run_all --out docs

# On a machine with a CUDA GPU (install with TORCH=torch): every device path against the CPU, the
# inference and metric tests, then the GPU benchmarks page docs/benchmarks_gpu.md. Under 8 minutes.
gpu-check: install-dev
	$(PY) -m pytest -q tests/test_devices.py tests/inference tests/metric
	$(PY) -m benchmarks.gpu_check --device cuda --out docs/benchmarks_gpu.md

monailabel-check:
	bash scripts/monailabel_check.sh

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
