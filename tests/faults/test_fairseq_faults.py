"""Faults of plain ``fairseq-train --user-dir xlm_ds --task xlm``: SIGKILL in
the middle of an update, checkpoints truncated or corrupted on disk, a full
disk while saving, NaN losses. Each compares real losses/weights with an
uninterrupted run (tests/faults/conftest.py: ``fairseq_full``)."""
import glob
import os
import random
import shutil

import pytest
import torch

from xlm_ds.reliability.atomic import read_marker, verify

pytestmark = pytest.mark.slow  # fairseq-train / torchrun runs (conftest: scheduled first)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _assert_same_trajectory(got, ref, updates):
    for u in updates:
        assert u in got, f"update {u} missing after resume"
        assert got[u]["loss"] == ref[u]["loss"], (u, got[u]["loss"], ref[u]["loss"])
        assert got[u]["gnorm"] == ref[u]["gnorm"], (u, got[u]["gnorm"], ref[u]["gnorm"])


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigkill_mid_update_resumes_exactly(prepared_sample, fairseq_full, probe, tmp_path):
    kill_at = random.Random().randint(21, 29)  # inside an update after the save at 20
    print(f"SIGKILL inside update {kill_at}")
    save, losses = tmp_path / "ckpt", str(tmp_path / "losses.jsonl")
    rc, _ = probe.run(prepared_sample, save, losses, faults={"FAULT_KILL_AT_UPDATE": kill_at}, expect_rc=None)
    assert rc == -9, rc
    assert max(probe.losses(losses)) == kill_at - 1
    assert not glob.glob(str(save / "*.tmp*"))
    _, log = probe.run(prepared_sample, save, losses)
    assert "Loaded checkpoint" in log and "@ 20 updates" in log
    _assert_same_trajectory(probe.losses(losses), fairseq_full["losses"], range(21, 31))
    _assert_same_weights(probe.model(save / "checkpoint_last.pt"), probe.model(fairseq_full["dir"] / "checkpoint_last.pt"))


def test_truncated_and_corrupted_checkpoints_are_skipped(prepared_sample, fairseq_full, probe, tmp_path):
    save, losses = tmp_path / "ckpt", str(tmp_path / "losses.jsonl")
    shutil.copytree(fairseq_full["dir"], save)
    for name in ("checkpoint_last.pt", "checkpoint_1_30.pt"):
        assert read_marker(str(save / name))["num_updates"] == 30
    last = save / "checkpoint_last.pt"
    with open(last, "r+b") as f:  # truncated: a write cut short
        f.truncate(os.path.getsize(last) // 2)
    newest = save / "checkpoint_1_30.pt"
    data = bytearray(newest.read_bytes())  # corrupted: same size, one byte flipped
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    assert "truncated" in verify(str(last))[1] and "corrupted" in verify(str(newest))[1]
    _, log = probe.run(prepared_sample, save, losses)
    assert f"skipping checkpoint {last}: size" in log
    assert f"skipping checkpoint {newest}: sha256" in log
    assert "@ 20 updates" in log
    _assert_same_trajectory(probe.losses(losses), fairseq_full["losses"], range(21, 31))
    _assert_same_weights(probe.model(last), probe.model(fairseq_full["dir"] / "checkpoint_last.pt"))


def test_full_disk_during_save_keeps_the_previous_checkpoint(prepared_sample, fairseq_full, probe, tmp_path):
    # checkpoint file writes: 1 = checkpoint_1_10.pt, 2 = its copy checkpoint_last.pt, 3 = checkpoint_1_20.pt
    save, losses = tmp_path / "ckpt", str(tmp_path / "losses.jsonl")
    rc, log = probe.run(prepared_sample, save, losses, faults={"FAULT_ENOSPC_ON_WRITE": 3}, expect_rc=None)
    assert rc == 1, log[-3000:]
    assert f"checkpoint {save / 'checkpoint_1_20.pt'} not written (no space left on device)" in log
    assert not glob.glob(str(save / "*.tmp*")) and not (save / "checkpoint_1_20.pt").exists()
    for name in ("checkpoint_last.pt", "checkpoint_1_10.pt"):
        assert verify(str(save / name)) == (True, "ok"), name
        assert read_marker(str(save / name))["num_updates"] == 10
    # space is back: the same command resumes from update 10, exactly
    _, log = probe.run(prepared_sample, save, losses)
    assert "@ 10 updates" in log
    _assert_same_trajectory(probe.losses(losses), fairseq_full["losses"], range(11, 31))


def test_nan_losses_skip_the_update(prepared_sample, probe, tmp_path):
    save, losses = tmp_path / "ckpt", str(tmp_path / "losses.jsonl")
    _, log = probe.run(prepared_sample, save, losses, "--save-interval-updates", "0", updates=6,
                       faults={"FAULT_NAN_AT_BATCHES": "3,4"})
    assert "update 3 skipped: non-finite loss/gradient (gradient norm nan), no optimizer step; 1 in a row" in log
    assert "update 3 skipped: non-finite loss/gradient (gradient norm nan), no optimizer step; 2 in a row (stop at 5), 2 skipped in total" in log
    assert "nonfinite_skipped 2" in log
    ckpt = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert ckpt["optimizer_history"][-1]["num_updates"] == 6
    # 8 batches were drawn, 6 updates applied: Adam stepped 6 times, moments finite
    state = ckpt["last_optimizer_state"]["state"]
    assert {int(s["step"]) for s in state.values()} == {6}
    for s in state.values():
        assert torch.isfinite(s["exp_avg"]).all() and torch.isfinite(s["exp_avg_sq"]).all()
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert ckpt["extra_state"]["train_iterator"]["iterations_in_epoch"] == 8


def test_nan_losses_in_a_row_stop_with_a_message(prepared_sample, probe, tmp_path):
    save, losses = tmp_path / "ckpt", str(tmp_path / "losses.jsonl")
    rc, log = probe.run(prepared_sample, save, losses, "--max-nonfinite-updates", "3", updates=8,
                        faults={"FAULT_NAN_AT_BATCHES": "3,4,5,6"}, expect_rc=None)
    assert rc == 1
    assert ("TooManyNonFiniteUpdates: 3 updates in a row with a non-finite loss/gradient (last: update 3, "
            "gradient norm nan); --max-nonfinite-updates is 3") in log


def _umt_args(data, save, pretrained):
    return [
        data, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm_umt", "-s", "en", "-t", "fr",
        "--arch", "xlm_transformer_tiny", "--init-encoder", pretrained, "--init-decoder", pretrained,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--lambda-bt", "0:0,10:1",
        "--max-tokens", "400", "--optimizer", "adam", "--lr", "5e-4", "--max-update", "20",
        "--save-interval-updates", "10", "--no-epoch-checkpoints", "--cpu", "--save-dir", save,
        "--disable-validation", "--seed", "3", "--log-interval", "1", "--log-format", "simple",
    ]


@pytest.mark.parametrize("task", ["xlm_align", "xlm_umt"])
def test_sigkill_resumes_exactly_with_the_task_state(task, prepared_sample, pretrained_tiny, probe, tmp_path):
    """Tasks with state of their own (xlm_align: momentum key encoder and
    negatives queue; xlm_umt: back-translation through the model being
    trained): killed between the save at 10 and update 20, the same command
    resumes and gives the uninterrupted run's losses and gradient norms."""
    def run(save, losses, **kw):
        if task == "xlm_umt":
            return probe.run_args(_umt_args(prepared_sample, save, pretrained_tiny), save, losses, **kw)
        return probe.run(prepared_sample, save, losses, "--task", "xlm_align", "--objectives", "tlm",
                         "--align-queue-size", "48", "--align-shuffle-rate", "0.3", updates=20, **kw)

    ref = str(tmp_path / "ref.jsonl")
    run(tmp_path / "ref", ref)
    kill_at = random.Random().randint(12, 19)  # the queue is full after ~6 updates
    print(f"SIGKILL inside update {kill_at}")
    save, losses = tmp_path / "ckpt", str(tmp_path / "losses.jsonl")
    rc, _ = run(save, losses, faults={"FAULT_KILL_AT_UPDATE": kill_at}, expect_rc=None)
    assert rc == -9, rc
    _, log = run(save, losses)
    assert "Loaded checkpoint" in log and "@ 10 updates" in log
    _assert_same_trajectory(probe.losses(losses), probe.losses(ref), range(11, 21))
