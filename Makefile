.DEFAULT_GOAL := help
SHELL := /bin/bash
# Where `make uv` installs uv when pip refuses `--user` (a PEP 668 "externally managed"
# system Python): a venv of the project's own, git-ignored.
UV_BOOTSTRAP := $(CURDIR)/.cache/uv-bootstrap
# uv on PATH, else where `make uv` put it. Recursively expanded, so a recipe running after
# the `uv` target finds what it just installed.
UV ?= $(firstword $(shell command -v uv 2>/dev/null) $(wildcard $(HOME)/.local/bin/uv $(UV_BOOTSTRAP)/bin/uv) uv)

.PHONY: help uv sync proto client run test fuzz lint typecheck bench wrk clean openclaw

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

uv: ## Install uv when it is missing (pip --user, or a venv in .cache/ where PEP 668 refuses that)
	@command -v uv >/dev/null 2>&1 || [ -x "$(HOME)/.local/bin/uv" ] || [ -x "$(UV_BOOTSTRAP)/bin/uv" ] || { \
		refusal=$$(python3 -m pip install --user --quiet uv 2>&1) || { \
			echo "make: pip refused --user (PEP 668?); installing uv into $(UV_BOOTSTRAP)"; \
			python3 -m venv "$(UV_BOOTSTRAP)" && "$(UV_BOOTSTRAP)/bin/python" -m pip install --quiet uv; \
		} || { echo "$$refusal" >&2; exit 1; }; }

# Bytecode is compiled once here: every service, gateway and CLI process would otherwise
# compile its imports again at each start when PYTHONDONTWRITEBYTECODE is set.
sync: uv ## Create .venv from uv.lock
	@$(UV) sync --frozen --quiet --compile-bytecode
	@.venv/bin/python -m compileall -q services gateway cli clients/python generated >/dev/null

proto: sync ## Regenerate generated/ from protos/
	@$(UV) run --frozen python protos/generate.py

client: sync ## Regenerate the sync Python client (client.py) from the async one (aio.py)
	@$(UV) run --frozen python clients/python/generate_sync.py

run: sync proto ## Start the four services and the gateway on SQLite (Ctrl-C stops them)
	@$(UV) run --frozen gate4 dev up

test: sync ## Run every test (lint, types, unit, contract)
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy
	@$(UV) run --frozen hadolint Dockerfile
	@$(UV) run --frozen pytest

fuzz: sync ## Fuzz the API against its OpenAPI document: the test of make test, many more examples
	@GATE4_FUZZ_EXAMPLES=$${GATE4_FUZZ_EXAMPLES:-300} GATE4_FUZZ_SEED=$${GATE4_FUZZ_SEED:-random} \
		$(UV) run --frozen pytest tests/fuzz -q -s

lint: sync ## ruff check and format check, hadolint on the Dockerfile
	@$(UV) run --frozen ruff check . && $(UV) run --frozen ruff format --check .
	@$(UV) run --frozen hadolint Dockerfile

typecheck: sync ## mypy
	@$(UV) run --frozen mypy

wrk: ## Install wrk, the benchmarks' load generator, from Debian's packages when missing
	@command -v wrk >/dev/null 2>&1 || { \
		echo "installing wrk (apt-get)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }

bench: sync wrk ## Run the benchmarks (figures and same-run ratios; never pass/fail on time)
	@$(UV) run --frozen python -m bench $(BENCH_ARGS)

openclaw: ## Install Node.js 24 and OpenClaw into .cache/openclaw (git-ignored; quick when present)
	@bash clients/openclaw/install.sh

clean: ## Remove local state (databases, spans, logs)
	rm -rf var
