# The two commands: `make run` (install and serve) and `make test` (install and test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test replay install install-test system-test-deps bench static-vendor

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python static-vendor
	$(BIN)/pip install -q -r requirements.txt

# The dashboard's chart library and the /docs page's Swagger UI, pinned in
# package-lock.json, and (a devDependency) the AsyncAPI parser the tests run.
# Without npm both pages still work, minus the chart and the interactive API
# browser (they say so), and the tests skip the parser's check.
CHART_JS := node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js
SWAGGER_UI := $(addprefix node_modules/swagger-ui-dist/,swagger-ui-bundle.js swagger-ui.css)
static-vendor:
	@if command -v npm >/dev/null 2>&1; then \
		{ npm ci --no-audit --no-fund --loglevel=error && \
		  mkdir -p app/static/vendor && cp $(CHART_JS) $(SWAGGER_UI) app/static/vendor/; } || \
		echo "npm ci failed: the dashboard will run without its chart, /docs without Swagger UI"; \
	else echo "npm not found: the dashboard will run without its chart, /docs without Swagger UI"; fi

install-test: $(BIN)/python system-test-deps static-vendor
	$(BIN)/pip install -q -r requirements-test.txt

# Real servers and a real browser for the tests, from Debian's packages.
system-test-deps:
	sh scripts/install-system-deps.sh

run: install
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# A Binance-compatible exchange replaying recorded candles (see README).
# `--app app` builds the app without starting its feed (wsgi.py would).
REPLAY_ARGS ?= --speed 10
replay: install
	$(BIN)/flask --app app replay $(REPLAY_ARGS)

test: install-test
	$(BIN)/python -m pytest

# Numbers for the README's Benchmarks section (several minutes; needs the
# test dependencies: the storage bench starts the same database servers).
bench: install-test
	$(BIN)/python bench/fanout_bench.py
	$(BIN)/python bench/fanout_bench.py --speed 1200 --ingest-messages 1000
	$(BIN)/python bench/storage_bench.py
	$(BIN)/python bench/clients_bench.py
