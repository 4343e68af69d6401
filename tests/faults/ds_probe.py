"""``xlm-ds-train`` (python -m xlm_ds.train) with faults injected (tests/faults
only); per-update losses come from its own --ds-metrics-jsonl.

* FAULT_KILL_AT_UPDATE=K    every rank SIGKILLs itself inside update K,
                            after backward, before the optimizer step
* FAULT_NAN_AT_BATCHES=3,4  the loss of the 3rd and 4th batch is NaN
* FAULT_SAMPLES=FILE        every training sample, per rank (sample_recorder.py)
"""
import os
import signal
import sys

import nan_injection  # noqa: E402  (this folder: the script's sys.path[0])
import sample_recorder  # noqa: E402
import xlm_ds  # noqa: F401
from xlm_ds import fairseq_compat  # noqa: E402

# the fixes first (as the task's setup_task / xlm-ds-train would apply them),
# so that the faults below wrap the patched fairseq and the start-up check
# sees fairseq's own signatures, not the probe's wrappers
fairseq_compat.apply()
from xlm_ds.engine.trainer import DeepSpeedTrainer

KILL_AT = int(os.environ.get("FAULT_KILL_AT_UPDATE", "0"))

if KILL_AT:
    local_norm = DeepSpeedTrainer._local_grad_norm_if_needed

    def _local_grad_norm_if_needed(self):
        if self.get_num_updates() + 1 == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return local_norm(self)

    DeepSpeedTrainer._local_grad_norm_if_needed = _local_grad_norm_if_needed

nan_injection.install()
nan_injection.install_pipeline()
sample_recorder.install()

if __name__ == "__main__":
    from xlm_ds.cli.train import main

    sys.exit(main(sys.argv[1:]))
