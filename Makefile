# The two commands: `make demo` (whole service end to end) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes for the unit and integration layers, a module (or test class) each, so its
# fixtures start once. Most of their time is spent waiting (ack deadlines, real-time
# recorders, servers starting): more processes than cores pay. Modules start in the order
# tests/conftest.py sorts them (longest first). The e2e layer runs alone: whole stacks
# (two at once took 720 s instead of 789 s on two cores, and loaded each other's timing).
TEST_PROCESSES ?= 3
PARALLEL := -n $(TEST_PROCESSES) --dist loadscope --no-loadscope-reorder

.PHONY: install demo up down status test check lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## start the local stack, request a clip, download it via its signed URL
	$(BIN)/python -m stack demo

up: $(STAMP)  ## start the local stack and leave it running
	$(BIN)/python -m stack up

down: $(STAMP)  ## stop every process the stack started
	$(BIN)/python -m stack down

status: $(STAMP)
	$(BIN)/python -m stack status

test: $(STAMP)  ## the whole suite: unit and integration tests in parallel, then the e2e ones
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "unit or integration" $(PARALLEL)
	$(BIN)/python -m pytest -m e2e

check: $(STAMP)  ## the inner loop: lint, types, unit and integration tests (no stack)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "unit or integration" $(PARALLEL)

lint: $(STAMP)  ## ruff and the type checker
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean: down
	rm -rf .stack
