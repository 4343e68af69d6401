#!/usr/bin/env bash
# The GPU check of docs/benchmarks.md, one run on one GPU (under 8 minutes):
#   1. the tests marked gpu (tests/gpu: ZeRO-2/3 in bf16 and fp16 with
#      dynamic loss scaling under xlm-ds-train, SDPA's flash and
#      memory-efficient kernels, the masked-only LM head);
#   2. benchmarks/gpu_throughput.py: tokens/s and MFU at xlmr_base and
#      xlmr_large beside fairseq masked_lm --fp16 and transformers.
#
#   bash benchmarks/gpu_check.sh [OUT]      # OUT: benchmarks/out/gpu
#
# Where torch sees no CUDA device it says so and exits 0 (make test runs
# that path). Missing fairseq/deepspeed are installed from
# benchmarks/out/wheels (made by benchmarks/gpu_wheels.sh) into a
# temporary site directory; the machine's own torch is used.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/out/gpu}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: skipped: torch sees no CUDA GPU here (nothing to check on a CPU machine)"
  exit 0
fi
mkdir -p "$OUT"
if ! "$PY" -c 'import fairseq, deepspeed' 2>/dev/null; then
  WHEELS=${WHEELS:-benchmarks/out/wheels}
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_check: fairseq or deepspeed missing and no wheels in $WHEELS (bash benchmarks/gpu_wheels.sh)" >&2
    exit 2
  fi
  SITE=${TMPDIR:-/tmp}/xlm_ds_gpu_site
  "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$SITE" "$WHEELS"/*.whl || exit 2
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DS_ACCELERATOR=cuda OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(), "torch", torch.__version__)'
status=0
timeout 240 "$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
timeout 300 "$PY" benchmarks/gpu_throughput.py --json "$OUT/gpu_throughput.json" 2>&1 | tee "$OUT/gpu_throughput.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "gpu_check: results in $OUT (exit $status)"
exit $status
