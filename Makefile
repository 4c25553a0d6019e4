# The two commands a fresh machine needs: `make run` and `make test`. Both set up .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck unit bench clean notebooks docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet -p $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo: the whole loop live on a real news-delivery stack (autofix demo). `.[dev]`
# includes the `demo` extra (supervisor; PyPI PostgreSQL and Redis where Debian's are absent).
run: $(STAMP)
	$(BIN)/autofix demo --dashboard

lint: $(STAMP)
	$(BIN)/ruff check autofix tests benchmarks notebooks
	$(BIN)/ruff format --check autofix tests benchmarks notebooks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/forecast.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/scenarios.py
	$(BIN)/python benchmarks/anomaly.py
	$(BIN)/python benchmarks/nab.py
	$(BIN)/python benchmarks/executor.py
	$(BIN)/python benchmarks/api.py
	$(BIN)/python benchmarks/remote_write.py
	$(BIN)/python benchmarks/cli.py
	$(BIN)/python benchmarks/faults.py
	$(BIN)/python benchmarks/dashboard.py
	$(BIN)/python benchmarks/fleet.py

# The manual (docs/, mkdocs.yml) into site/, the CLI reference regenerated first;
# tests/test_docs.py runs the same strict build and fails on a stale CLI reference.
docs: $(STAMP)
	$(BIN)/cog -r docs/cli-reference.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# JupyterLab on notebooks/ with this project's .venv (kernel "Python 3" is .venv's python).
notebooks: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
