"""FAULT_NAN_AT_BATCHES for both probes: the loss of the listed batches
(1-based, counted as drawn) is multiplied by NaN inside XLMTask.train_step."""
import os

from xlm_ds.tasks.xlm_task import XLMTask

NAN_AT = {int(u) for u in os.environ.get("FAULT_NAN_AT_BATCHES", "").split(",") if u}


def install() -> None:
    if not NAN_AT:
        return
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
