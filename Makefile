# The README's two commands: `make run` (set up + main job) and `make test` (set up + tests).
# ARGS passes Hydra overrides to the main job: make run ARGS="allocator=prefix".
ARGS ?= allocator=paged
PY := .venv/bin/python

.PHONY: setup run test lint bench paper-quick

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m kvlab.run $(ARGS)

test: setup
	@bash scripts/test.sh

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) -m pytest benchmarks --benchmark-enable --benchmark-only -q
