#!/bin/bash
# Data preparation of a large corpus as a SLURM array, one task per shard.
#
#   sbatch --array=0-$((N-1)) [SBATCH OPTIONS] slurm/prepare.sh CORPUS.yaml OUT [XLM-DS-PREPARE OPTIONS...]
#
#   CORPUS.yaml  the corpus description (docs/prepare.md), the same for every task
#   OUT          output directory on a filesystem every node sees
#   the rest     any xlm-ds-prepare option (--vocab-size, --alpha, --model-type, ...)
#
# Array task I binarizes shard I into OUT/shardI (array indices are shard
# numbers, 0..N-1). Task 0 first counts the corpus (one process per file)
# and learns the vocabulary into OUT/vocab; the others wait for it
# (WAIT_FOR_VOCAB seconds, default 86400) and stop at once if it failed.
# Each task then tries to finalize: the last shard to finish checks every
# shard and writes OUT/manifest.json, after which `fairseq-train OUT ...`
# (or slurm/pretrain.sh OUT) trains epoch e on shard (e-1) mod N.
#
# Everything is atomic and resumable: a task that dies leaves no shard that
# looks complete, and a rerun keeps what is complete. Resubmit the failed
# tasks only, e.g. `sbatch --array=2,5 slurm/prepare.sh CORPUS.yaml OUT`
# (N is fixed by the vocabulary stage: NUM_SHARDS, default the array size).
# The same corpus on one machine: xlm-ds-prepare --corpus CORPUS.yaml --out OUT --num-shards N
#
# Environment (all optional):
#   XLM_DS_PYTHON    python with xlm-ds installed (default: REPO/.venv/bin/python
#                    when it exists, else python)
#   NUM_SHARDS       number of shards (default: the array's task count)
#   WAIT_FOR_VOCAB   seconds a task waits for task 0's vocabulary (default 86400)
#
#SBATCH --job-name=xlm-ds-prepare
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%A_%a.out

set -uo pipefail

if [ $# -lt 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^#SBATCH/p' "$0" | sed -e '/^#SBATCH/d' -e 's/^# \{0,1\}//'
    exit 2
fi
CORPUS=$1; OUT=$2; shift 2

REPO=${XLM_DS_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
[ -d "$REPO/xlm_ds" ] || REPO=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)
. "$REPO/slurm/env.sh"

SHARD=${SLURM_ARRAY_TASK_ID:-0}
NUM_SHARDS=${NUM_SHARDS:-${SLURM_ARRAY_TASK_COUNT:-1}}
WORKERS=${SLURM_CPUS_PER_TASK:-$(nproc)}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
PREPARE=("$XLM_DS_PYTHON" -m xlm_ds.cli.prepare --corpus "$CORPUS" --out "$OUT" --workers "$WORKERS" --quiet "$@")

echo "[prepare.sh] job ${SLURM_JOB_ID:-local} shard $SHARD of $NUM_SHARDS on $(hostname), $WORKERS workers: $OUT"
if [ "$SHARD" = 0 ]; then
    "${PREPARE[@]}" --stage vocab --num-shards "$NUM_SHARDS" || exit $?
fi
"${PREPARE[@]}" --stage shard --shard "$SHARD" --wait-for-vocab "${WAIT_FOR_VOCAB:-86400}" || exit $?
"${PREPARE[@]}" --stage finalize --if-complete || exit $?
[ -f "$OUT/manifest.json" ] && echo "[prepare.sh] $OUT complete"
exit 0
