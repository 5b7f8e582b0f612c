# Two commands for a new user:
#   make run    create .venv, install the pinned dependencies, run the default pipeline
#   make test   lint and run the whole test suite
# KEDRO_ENV picks a conf environment (e.g. shared, full); LIBRISPEECH_DIR points at LibriSpeech.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
KEDRO_ENV ?= local
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: setup run test lint viz mlflow-ui

$(VENV)/.deps-installed: requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	touch $@

setup: $(VENV)/.deps-installed
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .

run: setup
	$(VENV)/bin/kedro run --env $(KEDRO_ENV)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts notebooks
	$(VENV)/bin/ruff format --check src tests benchmarks scripts notebooks
	$(VENV)/bin/lint-imports --no-logo

test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest

viz: setup
	$(VENV)/bin/kedro viz run --env $(KEDRO_ENV)

mlflow-ui: setup
	$(VENV)/bin/kedro mlflow ui --env $(KEDRO_ENV)

# A PostgreSQL-backed MLflow tracking server for the team (data in data/tracking/, see
# docs/scaling.md); installs Debian's postgresql with apt-get when initdb is missing.
#   make tracking-server && export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
.PHONY: tracking-server tracking-server-stop tracking-server-status

tracking-server: setup
	$(PY) scripts/tracking_server.py start --install

tracking-server-stop:
	$(PY) scripts/tracking_server.py stop

tracking-server-status:
	$(PY) scripts/tracking_server.py status
