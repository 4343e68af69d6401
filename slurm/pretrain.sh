#!/bin/bash
# XLM pretraining with DeepSpeed on a SLURM cluster, preemption-safe.
#
#   sbatch [SBATCH OPTIONS] slurm/pretrain.sh DATA [DS_CONFIG] [XLM-DS-TRAIN OPTIONS...]
#
#   DATA        directory written by xlm-ds-prepare
#   DS_CONFIG   DeepSpeed config (default: ds_configs/zero2.json)
#   the rest    any xlm-ds-train / fairseq-train option; given after the
#               defaults below, so it overrides them (e.g. --max-update 5000)
#
# Resources: the #SBATCH lines below are defaults; sbatch's own options
# override them (sbatch --nodes 4 --time 2-00:00:00 slurm/pretrain.sh ...),
# as do SBATCH_* variables (SBATCH_PARTITION, SBATCH_TIMELIMIT, ...).
# One task per GPU: keep --ntasks-per-node equal to --gpus-per-node. On CPU
# nodes: sbatch --gpus-per-node=0 --ntasks-per-node=N --cpus-per-task=C.
#
# Environment (all optional):
#   XLM_DS_PYTHON    python with xlm-ds installed (default: REPO/.venv/bin/python
#                    when it exists, else python)
#   SAVE_DIR         checkpoint directory (default: checkpoints/$SLURM_JOB_NAME);
#                    a requeued or resubmitted job with the same SAVE_DIR resumes
#                    from its newest complete checkpoint
#   ARCH             model architecture (default xlm_small; xlm_1024, xlmr_base,
#                    xlmr_large, ... for real runs)
#   OBJECTIVES       default "mlm tlm"
#   MAX_UPDATE       default 100000
#   SAVE_INTERVAL_UPDATES  periodic checkpoints (default 1000)
#   REQUEUE_ON_TERM  1: also requeue after SIGTERM (default 0: SIGTERM comes
#                    from scancel or from a preemption that SLURM requeues itself)
#   MASTER_PORT      rendezvous port (default: derived from the job id)
#
# Preemption and time limits: SLURM sends SIGUSR1 to this batch shell 120 s
# before the time limit (--signal=B:USR1@120), or you do
# (scancel --signal=USR1 --batch JOBID). The shell forwards it to the
# training tasks through srun; they finish the current update, save a
# checkpoint, write SAVE_DIR/preempted.json and exit 0; the shell then
# requeues the job (scontrol requeue), which resumes from that checkpoint.
# SIGTERM (preemption, scancel) also makes the tasks save, but the job is
# requeued only by SLURM's own preemption (PreemptMode=REQUEUE) or with
# REQUEUE_ON_TERM=1. Exit status: 0 done or requeued; otherwise the
# training tasks' failure.
#
#SBATCH --job-name=xlm-ds-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

set -uo pipefail

if [ $# -lt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^#SBATCH/p' "$0" | sed -e '/^#SBATCH/d' -e 's/^# \{0,1\}//'
    exit 2
fi
DATA=$1; shift
DS_CONFIG=ds_configs/zero2.json
if [ $# -gt 0 ] && [[ $1 != -* ]]; then DS_CONFIG=$1; shift; fi

# the repository: sbatch copies the script to a spool dir, so $0 is no guide
REPO=${XLM_DS_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
[ -d "$REPO/xlm_ds" ] || REPO=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)
. "$REPO/slurm/env.sh"
[ -f "$DS_CONFIG" ] || { [ -f "$REPO/$DS_CONFIG" ] && DS_CONFIG=$REPO/$DS_CONFIG; }

JOB=${SLURM_JOB_ID:-local}
SAVE_DIR=${SAVE_DIR:-checkpoints/${SLURM_JOB_NAME:-xlm-ds-pretrain}}
mkdir -p "$SAVE_DIR"
# the save directory's layout is xlm_ds/engine/checkpoint_dir.py's: ask it
# (start: forget an earlier run's preempted.json, print the tag a restart resumes)
CKPT_DIR=("$XLM_DS_PYTHON" -m xlm_ds.engine.checkpoint_dir "$SAVE_DIR")
RESUME_TAG=$("${CKPT_DIR[@]}" start 2>/dev/null | tail -n 1)

# CPU or GPU nodes, same script: gloo + DeepSpeed's CPU accelerator when no
# GPU is visible, NCCL otherwise (DeepSpeed picks the backend)
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
if [ "${NGPU:-0}" -eq 0 ]; then
    export DS_ACCELERATOR=cpu
fi
CPUS=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$CPUS}
export PYTHONUNBUFFERED=1
# rendezvous: the first node of the job, a port derived from the job id
# (xlm_ds.engine.launch_env maps SLURM_PROCID/... onto RANK/... in each task)
if [ -n "${SLURM_JOB_NODELIST:-}" ] && command -v scontrol >/dev/null 2>&1; then
    export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
fi

echo "[pretrain.sh] job $JOB restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-$(hostname)}:" \
     "${SLURM_NTASKS:-1} tasks, $CPUS cpus/task, ${NGPU} GPUs/node (${DS_ACCELERATOR:-cuda}); save dir $SAVE_DIR"
if [ -n "$RESUME_TAG" ]; then
    echo "[pretrain.sh] resuming from $SAVE_DIR/$RESUME_TAG"
fi

# the training tasks install their signal handler before the heavy imports,
# so a signal that arrives while they start is not lost (nor fatal)
BOOT='import signal, sys
early = []
for s in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(s, lambda n, f: early.append(n))
from xlm_ds.cli import train
sys.exit(train.preemptible_main(sys.argv[1:], early=early))'

ARGS=(
    "$DATA" --task xlm --arch "${ARCH:-xlm_small}" --criterion xlm_lm
    --objectives "${OBJECTIVES:-mlm tlm}"
    --optimizer adam --adam-betas "(0.9,0.98)" --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 1000
    --clip-norm 1.0 --max-update "${MAX_UPDATE:-100000}"
    --save-interval-updates "${SAVE_INTERVAL_UPDATES:-1000}" --validate-interval-updates "${SAVE_INTERVAL_UPDATES:-1000}"
    --keep-interval-updates 3 --no-epoch-checkpoints
    --log-format simple --log-interval 100
    --save-dir "$SAVE_DIR"
    --deepspeed-config "$DS_CONFIG"
    "$@"
)

SIGNALLED=
forward() {
    SIGNALLED=$1
    echo "[pretrain.sh] $(date +%T) got SIG$1: asking the tasks to checkpoint and stop"
    [ -n "${SRUN_PID:-}" ] && kill -s "$1" "$SRUN_PID" 2>/dev/null
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

srun --kill-on-bad-exit=1 --cpus-per-task="$CPUS" \
    "$XLM_DS_PYTHON" -c "$BOOT" "${ARGS[@]}" &
SRUN_PID=$!
# `wait` returns early when a trapped signal arrives: wait again
while :; do
    wait "$SRUN_PID"; RC=$?
    kill -0 "$SRUN_PID" 2>/dev/null || break
done
echo "[pretrain.sh] $(date +%T) training tasks exited with $RC"

if PREEMPTED=$("${CKPT_DIR[@]}" preempted 2>/dev/null | tail -n 1) && [ -n "$PREEMPTED" ]; then
    echo "[pretrain.sh] checkpoint saved on a signal: $PREEMPTED"
    if [ "$SIGNALLED" != TERM ] || [ "${REQUEUE_ON_TERM:-0}" = 1 ]; then
        if [ -n "${SLURM_JOB_ID:-}" ]; then
            echo "[pretrain.sh] requeueing job $SLURM_JOB_ID"
            scontrol requeue "$SLURM_JOB_ID" && exit 0
            echo "[pretrain.sh] scontrol requeue failed: resubmit (sbatch with SAVE_DIR=$SAVE_DIR) to resume" >&2
            exit 1
        fi
    fi
    exit 0
fi
if [ -n "$SIGNALLED" ] && [ "$RC" -ne 0 ]; then
    # signalled before any checkpoint could be written (e.g. while starting):
    # the newest periodic checkpoint, if any, is where the next run resumes
    if [ "$SIGNALLED" != TERM ] && [ -n "${SLURM_JOB_ID:-}" ]; then
        echo "[pretrain.sh] tasks stopped before saving; requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID" && exit 0
    fi
fi
exit "$RC"
