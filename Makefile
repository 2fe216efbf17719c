# The two commands: `make run` (install and serve) and `make test` (install and test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test replay demo install install-test system-test-deps bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt

install-test: $(BIN)/python system-test-deps
	$(BIN)/pip install -q -r requirements-test.txt

# Real servers and a real browser for the tests, from Debian's packages.
system-test-deps:
	sh scripts/install-system-deps.sh

run: install
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# A Binance-compatible exchange replaying recorded candles (see README).
replay: install
	$(BIN)/flask --app wsgi:app replay

test: install-test
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run_all.py
