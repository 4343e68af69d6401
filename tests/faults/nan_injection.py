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


def install_pipeline() -> None:
    """The same for the pipeline trainer, whose last stage weights each
    objective's loss with ``XLMTask.objective_loss``: the listed batches
    (one per update without accumulation) get a NaN loss on every objective."""
    if not NAN_AT:
        return
    from xlm_ds.engine.pipeline import PipelineTrainer

    run = PipelineTrainer._run
    objective_loss = XLMTask.objective_loss
    state = {"n": 0, "poison": False}

    def nan_run(self, samples, train):
        if train:
            state["n"] += 1
            state["poison"] = state["n"] in NAN_AT
        try:
            return run(self, samples, train)
        finally:
            state["poison"] = False

    def nan_objective_loss(obj, loss, n_pred):
        scaled = objective_loss(obj, loss, n_pred)
        return scaled * float("nan") if state["poison"] else scaled

    PipelineTrainer._run = nan_run
    XLMTask.objective_loss = staticmethod(nan_objective_loss)
