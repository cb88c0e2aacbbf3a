# Each target sets up its own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: demo test bench docs lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

# For now the main job renders train vs test levels of every environment.
demo: $(VENV)/.installed
	$(BIN)/gridsim envs
	for env in coin-at-end cheese-in-corner keys-and-chests; do \
		$(BIN)/gridsim show $$env --alpha 0 --out runs/demo/$$env.png || exit 1; \
	done

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/ppo_throughput.py

# The committed pictures in the README.
docs: $(VENV)/.installed
	for env in coin-at-end cheese-in-corner keys-and-chests; do \
		$(BIN)/gridsim show $$env --alpha 0 --out docs/$$env.png || exit 1; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
