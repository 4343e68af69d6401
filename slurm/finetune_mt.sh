#!/bin/bash
# Fine-tune translation from a pretrained XLM (encoder and decoder) with
# fairseq-train on one GPU (or CPU), on a SLURM cluster.
#
#   sbatch [SBATCH OPTIONS] slurm/finetune_mt.sh DATA PRETRAINED [FAIRSEQ-TRAIN OPTIONS...]
#
#   DATA        directory written by xlm-ds-prepare (with the parallel pair)
#   PRETRAINED  a plain fairseq checkpoint: fairseq-train's checkpoint_best.pt,
#               or xlm-ds-export's output for a DeepSpeed run of xlm-ds-train
#               (xlm-ds-export checkpoints/RUN --out pretrained.pt)
#   the rest    any fairseq-train option; given after the defaults below, so it
#               overrides them
#
# Environment (all optional): XLM_DS_PYTHON (default REPO/.venv/bin/python, else
# python), SAVE_DIR (default checkpoints/$SLURM_JOB_NAME), SRC / TGT (default
# de / en), MAX_UPDATE (default 50000), SAVE_INTERVAL_UPDATES (default 1000).
#
# Preemption and time limits: on SIGUSR1 (--signal=B:USR1@120, or
# scancel --signal=USR1 --batch JOBID) the job requeues itself; fairseq-train
# resumes from SAVE_DIR/checkpoint_last.pt, so the updates since the last
# periodic checkpoint (--save-interval-updates) are redone, none is counted
# twice. (fairseq-train cannot save on a signal; keep SAVE_INTERVAL_UPDATES
# short enough that redoing them is cheap.)
#
#SBATCH --job-name=xlm-ds-finetune-mt
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

set -uo pipefail
if [ $# -lt 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^#SBATCH/p' "$0" | sed -e '/^#SBATCH/d' -e 's/^# \{0,1\}//'
    exit 2
fi
DATA=$1; PRETRAINED=$2; shift 2

REPO=${XLM_DS_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
[ -d "$REPO/xlm_ds" ] || REPO=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)
. "$REPO/slurm/env.sh"
SAVE_DIR=${SAVE_DIR:-checkpoints/${SLURM_JOB_NAME:-xlm-ds-finetune-mt}}
mkdir -p "$SAVE_DIR"

DEVICE=()
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
[ "${NGPU:-0}" -eq 0 ] && DEVICE=(--cpu)
CPUS=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$CPUS} PYTHONUNBUFFERED=1

echo "[finetune_mt.sh] job ${SLURM_JOB_ID:-local} restart ${SLURM_RESTART_COUNT:-0}: ${SRC:-de}->${TGT:-en}," \
     "${NGPU} GPUs; save dir $SAVE_DIR"
[ -f "$SAVE_DIR/checkpoint_last.pt" ] && echo "[finetune_mt.sh] resuming from $SAVE_DIR/checkpoint_last.pt"

ARGS=(
    "$DATA" --user-dir "$REPO/xlm_ds" --task xlm_translation -s "${SRC:-de}" -t "${TGT:-en}"
    --arch xlm_transformer --init-encoder "$PRETRAINED" --init-decoder "$PRETRAINED"
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4000
    --optimizer adam --adam-betas "(0.9,0.98)" --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 1000
    --clip-norm 1.0 --max-update "${MAX_UPDATE:-50000}"
    --save-interval-updates "${SAVE_INTERVAL_UPDATES:-1000}" --validate-interval-updates "${SAVE_INTERVAL_UPDATES:-1000}"
    --keep-interval-updates 3 --no-epoch-checkpoints --log-format simple --log-interval 100
    --save-dir "$SAVE_DIR" "${DEVICE[@]}" "$@"
)

SIGNALLED=
trap 'SIGNALLED=USR1; echo "[finetune_mt.sh] $(date +%T) got SIGUSR1: requeueing"; kill -s TERM "$SRUN_PID" 2>/dev/null' USR1
trap 'SIGNALLED=TERM; kill -s TERM "$SRUN_PID" 2>/dev/null' TERM
srun --ntasks=1 --cpus-per-task="$CPUS" "$XLM_DS_PYTHON" -m fairseq_cli.train "${ARGS[@]}" &
SRUN_PID=$!
while :; do
    wait "$SRUN_PID"; RC=$?
    kill -0 "$SRUN_PID" 2>/dev/null || break
done
echo "[finetune_mt.sh] $(date +%T) fairseq-train exited with $RC"
if [ "$SIGNALLED" = USR1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    scontrol requeue "$SLURM_JOB_ID" && exit 0
fi
exit "$RC"
