# The README's two commands: `make demo` and `make test`. Both set up .venv
# first (idempotent; see .ci/setup_venv.sh and docs/stack.md).
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 1
export DS_ACCELERATOR ?= cpu

.PHONY: setup demo test clean

setup:
	@bash .ci/setup_venv.sh

demo: setup
	OMP_NUM_THREADS=2 $(PY) -m xlm_ds.cli.demo --out demo_out

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf demo_out .pytest_cache
