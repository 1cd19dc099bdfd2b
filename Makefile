.DEFAULT_GOAL := help
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")

.PHONY: help uv sync proto run test fuzz lint typecheck bench wrk clean openclaw

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

uv: ## Install uv when it is missing
	@command -v uv >/dev/null 2>&1 || [ -x "$(HOME)/.local/bin/uv" ] || python3 -m pip install --user --quiet uv

sync: uv ## Create .venv from uv.lock
	@$(UV) sync --frozen --quiet

proto: sync ## Regenerate generated/ from protos/
	@$(UV) run --frozen python protos/generate.py

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
