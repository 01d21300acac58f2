# `make demo` runs the main job on the embedded dataset; `make test` runs the test suite.
# Both create .venv and install what they need on first use.
VENV := .venv/bin

.PHONY: setup demo test test-all lint bench

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(VENV)/seminar demo

test: setup
	$(VENV)/ruff check .
	$(VENV)/python -m pytest -q

test-all: setup
	$(VENV)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(VENV)/ruff check .
