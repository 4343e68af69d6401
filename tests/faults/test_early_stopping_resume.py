"""``--patience`` across a kill and resume: the resumed run must stop at
the update the uninterrupted run stops at, under fairseq-train and under
xlm-ds-train (xlm_ds/reliability/early_stopping.py).

``--maximize-best-checkpoint-metric`` on the loss makes every validation
after the first one "no improvement" while the loss falls, so with
validation every 2 updates and patience 3 an uninterrupted run stops at
update 8 whatever the exact losses (so two validation batches suffice:
``--max-valid-steps 2``). The kill falls after the save at update
4 (two validations done, one without improvement): a resume that forgot
the count took its first validation (6) as the best and ran to update 12.
"""
import pytest

pytestmark = pytest.mark.slow

PATIENCE = ["--validate-interval-updates", "2", "--validate-interval", "1000000", "--save-interval-updates", "2",
            "--patience", "3", "--maximize-best-checkpoint-metric", "--max-valid-steps", "2"]
EARLY_STOP = "early stop since valid performance hasn't improved for last 3 runs"


def test_fairseq_train_resumed_stops_where_the_uninterrupted_run_stops(prepared_sample, probe, tmp_path):
    def run(name, **kw):
        save, losses = tmp_path / name, str(tmp_path / f"{name}.jsonl")
        rc, log = probe.run_args(probe.args(prepared_sample, save, *PATIENCE, updates=40, validate=True), save,
                                 losses, **kw)
        return rc, log, max(probe.losses(losses))

    _, log, last = run("full")
    assert EARLY_STOP in log and last == 8, log[-3000:]
    rc, _, last = run("resumed", faults={"FAULT_KILL_AT_UPDATE": 5}, expect_rc=None)
    assert rc == -9 and last == 4
    _, log, last = run("resumed")
    assert "@ 4 updates" in log and "early stopping resumed" in log, log[-3000:]
    assert EARLY_STOP in log and last == 8, log[-3000:]


def test_xlm_ds_train_resumed_stops_where_the_uninterrupted_run_stops(prepared_sample, ds, tmp_path):
    def run(name, **kw):
        save = tmp_path / name
        rc, log = ds.run(prepared_sample, save, 1, "zero0.json", *PATIENCE, updates=40, validate=True, **kw)
        return rc, log, max(ds.losses(str(save) + ".jsonl"))

    _, log, last = run("full")
    assert EARLY_STOP in log and last == 8, log[-3000:]
    rc, _, last = run("resumed", faults={"FAULT_KILL_AT_UPDATE": 5}, expect_rc=None)
    assert rc != 0
    _, log, last = run("resumed")
    assert "@ 4 updates" in log, log[-3000:]
    assert EARLY_STOP in log and last == 8, log[-3000:]
