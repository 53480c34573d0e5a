# Every target sets up .venv on first use: torch==2.13.0 first (the local CPU wheel), then crossent with its
# extras, then its native CPU kernels (gcc). `make test` also builds the docs site strictly (`make docs`).
VENV    ?= .venv
PY      := $(VENV)/bin/python
EXTRAS  ?= test,cli,triton,dev,docs,transformers
STAMP   := $(VENV)/.installed

.PHONY: setup demo test lint typecheck docs bench gpu-check

$(STAMP): pyproject.toml $(wildcard src/crossent/native/csrc/*)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -m crossent.native build
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/crossent demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples tools
	$(PY) -m mypy
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2
	$(MAKE) docs

# The documentation site, into site/; any warning (a broken link, a missing page, a bad docstring) fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples tools

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m benchmarks

# The GPU validation (needs a CUDA GPU, under 8 minutes; not part of `make test`): the Triton tests
# compiled on the GPU, then a benchmark against torch eager, torch.compile, Liger-Kernel and Cut
# Cross-Entropy (installed here, on a GPU machine only) into benchmarks/results/gpu-check-*.csv and .png.
# Without a CUDA GPU it says so in one line and exits 0.
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check
