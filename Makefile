# The two commands a fresh machine needs: `make run` and `make test`. Both set up .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck unit bench clean notebooks

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet -p $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job end to end on this host with the embedded defaults (DuckDB in data/,
# MLflow in models/, pipelines/local.yaml): collect, import the sample history, train,
# predict + decide + fix in dry run (rules in shadow mode), plan maintenance, KPIs,
# a status summary and the HTML report.
run: $(STAMP)
	$(BIN)/autofix collect --interval 5s --duration 30s
	$(BIN)/autofix import data/samples
	$(BIN)/autofix series --summary
	$(BIN)/autofix train
	AUTOFIX_DRY_RUN=true $(BIN)/autofix run remediate
	AUTOFIX_DRY_RUN=true $(BIN)/autofix run maintenance
	$(BIN)/autofix run kpi
	$(BIN)/autofix status
	$(BIN)/autofix report --out data/reports/latest

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
	$(BIN)/python benchmarks/anomaly.py
	$(BIN)/python benchmarks/executor.py
	$(BIN)/python benchmarks/api.py
	$(BIN)/python benchmarks/cli.py

# JupyterLab on notebooks/ with this project's .venv (kernel "Python 3" is .venv's python).
notebooks: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
