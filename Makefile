# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv (Python 3.11 when available) and install the package into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean postgres-server

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The whole job on the bundled digits data: dense model (reused when present) ->
# SR-init sensitivity -> 30-trial search at half the FLOPs -> apply + fine-tune.
DEMO := runs/demo
demo: $(STAMP) $(DEMO)/dense.pt
	$(BIN)/autoprune sensitivity --arch resnet20 --dataset digits --checkpoint $(DEMO)/dense.pt \
		--method sr-init --unit group --seeds 3 --out $(DEMO)/sensitivity.json
	$(BIN)/autoprune search --arch resnet20 --dataset digits --checkpoint $(DEMO)/dense.pt \
		--sensitivity $(DEMO)/sensitivity.json --flops 0.5 --trials 30 --study demo --out $(DEMO)
	$(BIN)/autoprune apply $(DEMO)/best_trial.json --finetune-epochs 5 --kd --out $(DEMO)/pruned.pt

$(DEMO)/dense.pt: | $(STAMP)
	$(BIN)/autoprune train --arch resnet20 --dataset digits --epochs 15 --out $@

test: $(STAMP) postgres-server
	$(BIN)/ruff check autoprune kernels search_spaces tests benchmarks
	$(BIN)/python -m pytest -q -x

# PostgreSQL server binaries for the tests' own throwaway server (tests/pg_server.py starts and
# stops it on a free loopback port). Nothing to do when they are there already. As root:
# Debian's package (apt-get update once, then install); otherwise the pgserver wheel into the venv.
PG_INITDB = $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgres-server: $(STAMP)
	@if [ -n "$(PG_INITDB)" ] || $(BIN)/python -c "import pgserver" 2>/dev/null; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	else \
		$(BIN)/python -m pip install -q pgserver; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check autoprune kernels search_spaces tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
