# One entry point for humans and CI. `make run` and `make test` each build the
# virtualenv on first use (pinned versions, see pyproject.toml + requirements.lock).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast docs check lint typecheck bench system-deps lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev,local-llm,scale]'
	touch $(STAMP)

## Run the service on embedded defaults (demo source unless PLUGIN_BACKEND_PROMETHEUS_URL is set),
## with the packaged offline LLM served once for the machine (notes fall back to a template
## until it is ready: the first start verifies and converts the weights, ~1 min), and the
## worker: PLUGIN_BACKEND_RULES if set, else (on the demo estate) deploy/demo-rules.yaml,
## replaying the last 12 h so http://127.0.0.1:8080/incidents has explained incidents at once.
run: $(STAMP)
	$(BIN)/plugin-backend llm-serve & llm=$$!; \
	rules="$${PLUGIN_BACKEND_RULES:-}"; since=""; \
	if [ -z "$$rules" ] && [ -z "$${PLUGIN_BACKEND_PROMETHEUS_URL:-}" ]; then \
	  rules=deploy/demo-rules.yaml; since="--since 12h"; fi; \
	if [ -n "$$rules" ]; then $(BIN)/plugin-backend worker --rules "$$rules" $$since & worker=$$!; fi; \
	trap 'kill $$llm $${worker:-} 2>/dev/null' EXIT INT TERM; \
	$(BIN)/plugin-backend serve

## Install the Debian packages the tests need (Prometheus + promtool). Needs root or sudo.
system-deps:
	bash scripts/install-system-deps.sh

## The whole test suite (what CI runs through .ci/run).
test: $(STAMP) system-deps
	$(BIN)/pytest

## The edit loop: no Prometheus, gunicorn, PostgreSQL, browser, stack, LLM or Node
## (tiers: tests/README.md). Not a substitute for `make test`.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not processes and not browser and not stack and not llm and not client"

## Regenerate docs/configuration.md from the Settings field descriptions.
docs: $(STAMP)
	$(BIN)/python -m plugin_backend.config_doc > docs/configuration.md

lint: $(STAMP)
	$(BIN)/ruff check plugin_backend testkit tests benchmarks
	$(BIN)/ruff format --check plugin_backend testkit tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

## Lint, types and tests in one go.
check: lint typecheck test

## Benchmarks (need a real Prometheus; print tables).
bench: $(STAMP) system-deps
	$(BIN)/python -m benchmarks

## Re-pin transitive dependencies after changing pyproject.toml.
lock:
	rm -rf /tmp/plugin-backend-lock && $(PYTHON) -m venv /tmp/plugin-backend-lock
	/tmp/plugin-backend-lock/bin/pip install --quiet -e '.[dev,local-llm,scale]'
	/tmp/plugin-backend-lock/bin/pip freeze --exclude-editable | grep -v '^-e' | sed -E 's/\+(cpu|cu[0-9]+)$$//' > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
