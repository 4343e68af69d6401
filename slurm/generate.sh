#!/bin/bash
# Translate a test set with fairseq-generate and score it with xlm-ds-score
# (sacreBLEU and chrF against the raw reference), on a SLURM cluster.
#
#   sbatch [SBATCH OPTIONS] slurm/generate.sh DATA CHECKPOINT REF [FAIRSEQ-GENERATE OPTIONS...]
#
#   DATA        directory written by xlm-ds-prepare
#   CHECKPOINT  the fine-tuned model (e.g. checkpoints/xlm-ds-finetune-mt/checkpoint_best.pt)
#   REF         raw reference text of the target side, one sentence a line
#               (plain or .gz; e.g. xlm_ds/sample_corpus/test.de-en.en.gz)
#   the rest    any fairseq-generate option (override the defaults below)
#
# Environment (all optional): XLM_DS_PYTHON, SRC / TGT (default de / en),
# SUBSET (default test), BEAM (default 5), OUT_DIR (default
# generate-$SLURM_JOB_ID). Writes OUT_DIR/generate-SUBSET.txt and
# OUT_DIR/score.json (the last line of xlm-ds-score). Short and idempotent:
# a requeued job simply runs again.
#
#SBATCH --job-name=xlm-ds-generate
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

set -euo pipefail
if [ $# -lt 3 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^#SBATCH/p' "$0" | sed -e '/^#SBATCH/d' -e 's/^# \{0,1\}//'
    exit 2
fi
DATA=$1; CHECKPOINT=$2; REF=$3; shift 3

REPO=${XLM_DS_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
[ -d "$REPO/xlm_ds" ] || REPO=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)
. "$REPO/slurm/env.sh"
SUBSET=${SUBSET:-test}
OUT_DIR=${OUT_DIR:-generate-${SLURM_JOB_ID:-local}}
mkdir -p "$OUT_DIR"
DEVICE=()
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
[ "${NGPU:-0}" -eq 0 ] && DEVICE=(--cpu)
CPUS=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$CPUS} PYTHONUNBUFFERED=1

srun --ntasks=1 --cpus-per-task="$CPUS" "$XLM_DS_PYTHON" -m fairseq_cli.generate \
    "$DATA" --user-dir "$REPO/xlm_ds" --task xlm_translation -s "${SRC:-de}" -t "${TGT:-en}" \
    --gen-subset "$SUBSET" --path "$CHECKPOINT" --beam "${BEAM:-5}" --batch-size 64 \
    --post-process sentencepiece --results-path "$OUT_DIR" "${DEVICE[@]}" "$@"
"$XLM_DS_PYTHON" -m xlm_ds.cli.score_mt "$OUT_DIR/generate-$SUBSET.txt" --ref "$REF" | tee "$OUT_DIR/score.txt"
tail -n 1 "$OUT_DIR/score.txt" > "$OUT_DIR/score.json"
