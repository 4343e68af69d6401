"""``xlm-ds-train`` (python -m xlm_ds.train) with faults injected (tests/faults
only); per-update losses come from its own --ds-metrics-jsonl.

* FAULT_KILL_AT_UPDATE=K    every rank SIGKILLs itself inside update K,
                            after backward, before the optimizer step
* FAULT_NAN_AT_BATCHES=3,4  the loss of the 3rd and 4th batch is NaN
"""
import os
import signal
import sys

import xlm_ds  # noqa: F401
from xlm_ds.engine.trainer import DeepSpeedTrainer
from xlm_ds.tasks.xlm_task import XLMTask

KILL_AT = int(os.environ.get("FAULT_KILL_AT_UPDATE", "0"))
NAN_AT = {int(u) for u in os.environ.get("FAULT_NAN_AT_BATCHES", "").split(",") if u}

if KILL_AT:
    local_norm = DeepSpeedTrainer._local_grad_norm_if_needed

    def _local_grad_norm_if_needed(self):
        if self.get_num_updates() + 1 == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return local_norm(self)

    DeepSpeedTrainer._local_grad_norm_if_needed = _local_grad_norm_if_needed

if NAN_AT:
    train_step = XLMTask.train_step
    batches = {"n": 0}

    def nan_train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        batches["n"] += 1
        if batches["n"] in NAN_AT:
            def poisoned(model, sub, _c=criterion):
                loss, n, log = _c(model, sub)
                return loss * float("nan"), n, log
            criterion = poisoned
        return train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad)

    XLMTask.train_step = nan_train_step

if __name__ == "__main__":
    from xlm_ds.cli.train import main

    sys.exit(main(sys.argv[1:]))
