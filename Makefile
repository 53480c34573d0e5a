# Every target sets up .venv on first use: torch==2.13.0 first (the local CPU wheel), then crossent with its
# extras, then its native CPU kernels (gcc).
VENV    ?= .venv
PY      := $(VENV)/bin/python
EXTRAS  ?= test,cli,triton,dev,transformers
STAMP   := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench

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
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m mypy
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m benchmarks
