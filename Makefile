# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv (Python 3.11 when available) and install the package into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/autoprune train --arch resnet20 --dataset digits --epochs 15 --out runs/demo/dense.pt

test: $(STAMP)
	$(BIN)/ruff check autoprune kernels search_spaces tests benchmarks
	$(BIN)/python -m pytest -q -x

lint: $(STAMP)
	$(BIN)/ruff check autoprune kernels search_spaces tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
