# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE ?= examples/hello.toml

.PHONY: run test test-unit bench bench-spawn bench-link bench-reconcile bench-apply bench-output bench-cli bench-idle bench-events bench-http clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/gaffer start $(EXAMPLE)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

test-unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/unit

bench: bench-spawn bench-link bench-reconcile bench-apply bench-output bench-cli bench-idle bench-events bench-http

bench-spawn: $(VENV)/.installed
	$(BIN)/python bench/spawn.py

bench-link: $(VENV)/.installed
	$(BIN)/python bench/controller_link.py

bench-reconcile: $(VENV)/.installed
	$(BIN)/python bench/reconcile.py

bench-apply: $(VENV)/.installed
	$(BIN)/python bench/apply.py

bench-output: $(VENV)/.installed
	$(BIN)/python bench/output.py

bench-cli: $(VENV)/.installed
	$(BIN)/python bench/cli_startup.py

bench-idle: $(VENV)/.installed
	$(BIN)/python bench/idle.py

bench-events: $(VENV)/.installed
	$(BIN)/python bench/events.py

bench-http: $(VENV)/.installed
	$(BIN)/python bench/http.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
