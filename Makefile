# The front door. Recipes stay thin; anything longer lives in scripts/ or infra/local/stack.py.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PY := .venv/bin/python
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: help install up down up-docker down-docker render status logs trace canary rollback loadtest loadtest-ui capacity capacity-plan shadow-audit shadow-reset test test-unit test-members test-integration test-fuzz test-e2e test-loadtest test-chaos test-canary test-observability test-containers test-scaffold test-browser new-service lint fmt bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## Install uv if missing and the locked workspace into .venv (no root needed)
	@scripts/bootstrap.sh

up: install ## Start the four services locally (SQLite by default), wait until ready, print URLs
	@$(PY) infra/local/stack.py up

down: ## Stop exactly what `make up` started
	@if [ -x $(PY) ]; then $(PY) infra/local/stack.py down; else python3 infra/local/stack.py down; fi

up-docker: ## The whole stack in docker compose (services, PostgreSQL, Redis, collector, Jaeger, Prometheus, Grafana); prints URLs
	@scripts/compose.sh up

down-docker: ## Stop what `make up-docker` started (volumes kept)
	@scripts/compose.sh down

render: install ## Rewrite the per-service parts of compose, Prometheus and Kubernetes files from services.toml
	@$(PY) infra/render.py

status: ## Show each service: pid, alive, port, ready
	@$(PY) infra/local/stack.py status

logs: ## Follow the JSON logs (.run/logs/*.log); SERVICE=order to pick one
	@$(PY) infra/local/stack.py logs $(SERVICE)

trace: ## Print a trace as a waterfall from .run/traces (the latest; TRACE=<id> for one)
	@$(PY) -m servicekit.telemetry.waterfall $(TRACE)

canary: install ## Canary release of SERVICE (VERSION, CANARY_ENV, STEPS, STEP_SECONDS, LOAD): promote or roll back by itself
	@SERVICE="$(SERVICE)" VERSION="$(VERSION)" CANARY_ENV="$(CANARY_ENV)" STEPS="$(STEPS)" STEP_SECONDS="$(STEP_SECONDS)" LOAD="$(LOAD)" $(PY) infra/local/canary.py run

rollback: install ## Roll SERVICE back to stable now: canary route removed, canary stopped
	@SERVICE="$(SERVICE)" $(PY) infra/local/canary.py rollback

shadow-audit: install ## Exit 1 if a live table holds dyed (load-test) data; SNAPSHOT=1 records the live tables before a run, the next audit compares
	@$(PY) scripts/shadow.py audit --snapshot="$(SNAPSHOT)"

shadow-reset: install ## Empty the shadow tables (dyed traffic's data), re-seed the shadow catalogue, delete Redis's shadow: keys
	@$(PY) scripts/shadow.py reset

loadtest: install ## Locust headless on the stack: SCENARIO=smoke|journey|ramp|spike|soak, USERS, DURATION, WORKERS, DYE... (loadtest/README.md)
	@$(PY) -m loadtest.run

loadtest-ui: install ## Locust's web UI on the local stack (http://127.0.0.1:8089; same knobs)
	@$(PY) -m loadtest.run --ui

capacity: install ## Step open-loop load to the knee, name what saturated first, recommend limits (TARGET_RPS, APPLY=1, HOST...)
	@$(PY) -m loadtest.capacity $(MAKEOVERRIDES)

capacity-plan: install ## Weekly growth from Prometheus (or SERIES=file): the three-band rule, per-unit costs, the date of the knee
	@$(PY) -m loadtest.plan $(MAKEOVERRIDES)

new-service: install ## Generate services/NAME from templates/service and register it (PORT=, DOWNSTREAMS=a,b, PUBLIC=1)
	@$(PY) scripts/new_service.py $(MAKEOVERRIDES)

test: install test-unit test-members test-integration test-fuzz test-e2e test-loadtest test-observability test-containers test-chaos test-canary test-scaffold test-browser ## Run every test tier (unit, members alone, integration, fuzz, e2e, loadtest, observability, containers, chaos, canary, scaffold, browser)

test-unit: install ## Unit tests: no servers needed
	@scripts/test.sh unit

test-members: install ## Each workspace member installs alone (uv sync --package) and passes its unit tests
	@scripts/check-members.sh

test-integration: install ## Integration tests against the real PostgreSQL and Redis
	@scripts/test.sh integration

test-fuzz: install ## schemathesis on every app's OpenAPI, in-process (all checks, positive + negative, stateful)
	@scripts/test.sh fuzz

test-e2e: install ## End-to-end: start the stack with `make up` (SQLite, then PostgreSQL + Redis), drive it over HTTP
	@scripts/test.sh e2e

test-loadtest: install ## `make loadtest` against a private `make up` stack: reports, SLO gate, workers, bad knobs
	@scripts/test.sh loadtest

test-observability: install ## promtool checks and tests; a real Prometheus scraping a private stack: every panel and rule has data
	@scripts/test.sh observability

test-scaffold: install ## make new-service in a throwaway clone: the new service's tests, architecture, make up beside the four, through the gateway
	@scripts/test.sh scaffold

test-containers: install ## Compose schema and contract, Dockerfile (hadolint), kubectl kustomize + kubernetes-validate, Grafana provisioning, render --check
	@scripts/test.sh containers

test-chaos: install ## Chaos: kill/hang/flood a private stack (own PostgreSQL + Redis), check every invariant
	@scripts/test.sh chaos

test-canary: install ## Canary releases on a private stack: bad canaries rolled back, a good one promoted
	@scripts/test.sh canary

test-browser: install ## The ops page in Debian's chromium (Selenium) on a private stack: log in, break payment, watch the breaker
	@scripts/test.sh browser

lint: install ## ruff (lint + format check), mypy --strict, bandit and pip-audit
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy libs/servicekit/src services/*/src gateway/src infra/local loadtest/src loadtest/locustfile.py
	@scripts/security-lint.sh

bench: install ## Benchmarks, never part of `make test`: B1-B9 -> benchmarks/results/, summary in latest.md
	@scripts/system-packages.sh bench
	@echo "==> B1: middleware stack vs bare FastAPI (wrk, real uvicorn)" && $(PY) benchmarks/b1_middleware.py
	@echo "==> B2: tracing on at the default sampling vs bare FastAPI" && $(PY) benchmarks/b2_tracing.py
	@echo "==> B3: once-guarded access vs a module global" && $(PY) benchmarks/b3_once.py
	@echo "==> B4: overload at 1x/2x/4x capacity, open loop, shedding on and off" && $(PY) benchmarks/b4_overload.py
	@echo "==> B5: breaker fast fail and closed-breaker throughput" && $(PY) benchmarks/b5_breaker.py
	@echo "==> B6: Redis stalled or gone, latency of requests that do not need it" && $(PY) benchmarks/b6_redis_outage.py
	@echo "==> B7: checkout end to end, per hop, tracing cost, the saga's optimisation" && $(PY) benchmarks/b7_checkout.py
	@echo "==> B8: the seed's experiments" && $(PY) benchmarks/b8_seed.py
	@echo "==> B9: canary routing decision per outbound call" && $(PY) benchmarks/b9_routing.py
	@echo "==> benchmarks/results/latest.md" && $(PY) benchmarks/latest.py

fmt: install ## Format and auto-fix
	@.venv/bin/ruff format .
	@.venv/bin/ruff check --fix .

clean: down ## Stop the stack and remove local state (.run/)
	@rm -rf .run
