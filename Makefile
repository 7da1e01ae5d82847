# The two commands a newcomer needs (each does all of its own set-up):
#   make run    start the service (SQLite; the built-in simulator unless NOVITA_API_KEY is set)
#   (make cli ARGS="..." runs the novita-lifecycle command line from the virtual environment)
#   make test   lint, type-check and run every test (SQLite and a local PostgreSQL)
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8080
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run cli test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The demo API key `dev-key` is used unless API_KEYS is set.
run: $(STAMP)
	@if [ -n "$$API_KEYS" ]; then key="one of the keys in API_KEYS"; else key="dev-key"; fi; \
	echo "novita-lifecycle: serving http://$(HOST):$(PORT)" \
		"($(if $(NOVITA_API_KEY),Novita,the built-in Novita simulator)), database $${DATABASE_URL:-./novita-lifecycle.db}"; \
	echo "  API key: $$key  (curl -H 'Authorization: Bearer $${API_KEYS:+<key>}$${API_KEYS:-dev-key}' http://$(HOST):$(PORT)/api/instances)"; \
	echo "  command line: .venv/bin/novita-lifecycle --help  (or: source .venv/bin/activate; or: make cli ARGS='report fleet')"
	API_KEYS="$${API_KEYS:-dev-key}" $(BIN)/novita-lifecycle serve --migrate \
		--host $(HOST) --port $(PORT) $(if $(NOVITA_API_KEY),,--simulator)

# The command line in the virtual environment: make cli ARGS="report usage --since 7d"
cli: $(STAMP)
	$(BIN)/novita-lifecycle $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check service tests migrations scripts bench client-examples novita_lifecycle_client
	$(BIN)/mypy service novita_lifecycle_client
	$(BIN)/lint-imports

test: lint
	eval "$$(scripts/test-postgres.sh)" && $(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
