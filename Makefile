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

# The main job: the coin-at-end alpha sweep (about 90 seconds on a 2-core AMD EPYC; resumes if interrupted),
# its figures in runs/demo/, and a GIF and visitation map of one alpha = 0 agent.
demo: $(VENV)/.installed
	$(BIN)/gridsim sweep examples/coin_alpha.toml --figures runs/demo
	$(BIN)/gridsim inspect runs/coin_alpha --point 0 --seed 0 --out runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/ppo_throughput.py
	$(PY) benchmarks/sweep_throughput.py

# The committed pictures in docs/ (the demo's figures come from `make demo`).
docs: demo
	cp runs/demo/misgeneralization.png docs/coin_alpha.png
	cp runs/demo/visitation.png docs/coin_alpha_visitation.png
	for env in $$($(BIN)/gridsim envs | grep -v '^ '); do \
		$(BIN)/gridsim show $$env --alpha 0 --out docs/$$env.png || exit 1; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
