# Sourced by the batch scripts once they have found the repository (sbatch
# runs a spool copy of a script, so $0 is no guide to it):
#     REPO=${XLM_DS_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
#     [ -d "$REPO/xlm_ds" ] || REPO=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)
#     . "$REPO/slurm/env.sh"
# Works in the submit directory (relative paths are the user's) and sets
# XLM_DS_PYTHON: REPO/.venv/bin/python if there is one, else python.
cd "${SLURM_SUBMIT_DIR:-$PWD}" || exit 1
if [ -z "${XLM_DS_PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then XLM_DS_PYTHON=$REPO/.venv/bin/python; else XLM_DS_PYTHON=python; fi
fi
