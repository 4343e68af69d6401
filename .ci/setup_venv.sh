#!/usr/bin/env bash
# Creates .venv at the repo root with the pinned stack. Idempotent: a stamp
# file holding the hash of this script and pyproject.toml skips the work when
# nothing changed. Order matters (see docs/stack.md): torch first, so nothing
# pulls a multi-GB CUDA build; numpy<2 and cython before fairseq, which is
# built without isolation against them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.xlm_ds_setup_stamp
want=$(cat .ci/setup_venv.sh pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip install --disable-pip-version-check -q"
$PIP --upgrade "pip>=24" "setuptools<81" wheel
$PIP "torch==2.13.0"
$PIP "numpy<2" "cython<3.1"
# fairseq 0.12.2 does not import on Python 3.11; fairseq-fixed is a maintained
# build of fairseq's main branch with the same import name and CLIs.
$VENV/bin/python -c "import fairseq" 2>/dev/null || $PIP --no-build-isolation "fairseq-fixed==0.12.3.1"
$PIP --no-build-isolation -e ".[test,hf]"
# fairseq pulls a PyPI torchaudio built for CUDA; it fails to import on CPU and
# breaks `import transformers`. Text tasks never use it.
$VENV/bin/python -m pip uninstall -y -q torchaudio 2>/dev/null || true
echo "$want" > "$STAMP"
