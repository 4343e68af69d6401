#!/usr/bin/env bash
# Wheels of what a bare GPU machine lacks to run benchmarks/gpu_check.sh
# (fairseq, DeepSpeed and their pure dependencies; torch, transformers and
# numpy are taken from the machine), fetched here, where the package
# registries are reachable, for the machine's Python (default 3.12):
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION] [DIR]   # DIR: benchmarks/out/wheels
#
# gpu_check.sh installs them from DIR with --no-index when fairseq or
# deepspeed does not import. DeepSpeed ships only a source archive: it is
# built here into a pure-Python wheel (its CUDA ops are compiled at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
DIR=${2:-benchmarks/out/wheels}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$DIR"
tag=${PYV/./}
# the versions of this project's venv (docs/stack.md)
"$PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "$PYV" \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$DIR" \
  "fairseq-fixed==0.12.3.1" "omegaconf==2.3.0" "hydra-core==1.3.2" "bitarray==3.12.3" "regex==2026.11.19" \
  "hjson==3.1.0" "py-cpuinfo==9.0.0" "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" \
  "typing-inspection==0.4.5" "typing-extensions==4.16.0" "msgpack==1.2.4" "psutil==7.2.2" "ninja==1.13.2" \
  "einops==0.8.2" nvidia-ml-py "packaging==26.4" "pyyaml==6.0.4" "portalocker==4.4.2" "tabulate==0.10.0" \
  "colorama==0.4.6"
# source-only on PyPI: built here into pure-Python wheels (DeepSpeed's CUDA
# ops are compiled at run time on the GPU machine)
for spec in "antlr4-python3-runtime==4.9.3" "deepspeed==0.19.8"; do
  name=${spec%%==*}; ver=${spec##*==}
  ls "$DIR"/${name//-/_}-$ver-*.whl >/dev/null 2>&1 || \
    DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps "$spec" -w "$DIR"
done
echo "wheels for cp$tag in $DIR: $(ls "$DIR" | wc -l) files, $(du -sh "$DIR" | cut -f1)"
