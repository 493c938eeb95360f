# The two commands: `make demo` (whole service end to end) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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

test: $(STAMP)  ## the whole suite: unit tests and the end-to-end test on its own stack
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

check: $(STAMP)  ## the inner loop: lint and every test that starts no stack
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "not e2e"

lint: $(STAMP)  ## ruff and the type checker
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean: down
	rm -rf .stack
