# The README's two commands: `make demo` and `make test`. Both set up .venv
# first (idempotent; see .ci/setup_venv.sh and docs/stack.md).
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 1
export DS_ACCELERATOR ?= cpu
# tests run in 2 worker processes (pytest-xdist), one test file per worker at
# a time: most tests are single-threaded subprocesses, so one worker left a
# core idle (25 min 26 s serial, 17 min 49 s to 20 min 17 s with 2 workers on 2 cores,
# AMD Zen 3, 2026-12-06); files with end-to-end runs first (tests/conftest.py):
# 329 tests in 13 min 42 s on a fresh clone (2026-12-07, 8710920, AMD Zen 4 with AVX512-BF16;
# 327 in 13 min 18 s at 82fa6bf, 326 in 14 min 1 s at f4b3728, 11 min 38 s at 593f091),
# 322 in 16 min 50 s on the Zen 3 machine (ef65130), 316 in 18 min 58 s before
TEST_WORKERS ?= 2

.PHONY: setup demo test clean

setup:
	@bash .ci/setup_venv.sh

demo: setup
	OMP_NUM_THREADS=2 $(PY) -m xlm_ds.cli.demo --out demo_out

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

clean:
	rm -rf demo_out .pytest_cache
