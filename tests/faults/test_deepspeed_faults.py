"""Faults of ``xlm-ds-train --deepspeed-config ...`` (2 gloo ranks, ZeRO-2):
SIGKILL mid-update then resume, incomplete checkpoint tags, resuming on
another number of ranks, NaN losses (ZeRO-0: the update skipped by
xlm-ds's trainer; ZeRO 1-3 skip in DeepSpeed's optimizer)."""
import json
import logging
import os
import random
import shutil

import pytest
import torch

from xlm_ds.engine.checkpoint_dir import CheckpointDir

pytestmark = pytest.mark.slow  # fairseq-train / torchrun runs (conftest: scheduled first)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module(tag_dir):
    return torch.load(os.path.join(tag_dir, "mp_rank_00_model_states.pt"), map_location="cpu",
                      weights_only=False)["module"]


def test_sigkill_mid_update_resumes_exactly(prepared_sample, ds_full, ds, tmp_path):
    kill_at = random.Random().randint(5, 8)  # inside an update after the save at 4
    print(f"SIGKILL inside update {kill_at} (both ranks)")
    save = tmp_path / "ckpt"
    rc, _ = ds.run(prepared_sample, save, 2, "zero2.json", faults={"FAULT_KILL_AT_UPDATE": kill_at}, expect_rc=None)
    assert rc != 0
    assert max(ds.losses(str(save) + ".jsonl")) == kill_at - 1
    _, log = ds.run(prepared_sample, save, 2, "zero2.json")
    assert f"Loaded checkpoint {save / 'checkpoint_1_4'} (epoch 1 @ 4 updates)" in log
    got, ref = ds.losses(str(save) + ".jsonl"), ds_full["losses"]
    for u in range(5, 11):
        assert got[u]["loss"] == ref[u]["loss"] and got[u]["gnorm"] == ref[u]["gnorm"], u
    a, b = _module(save / "checkpoint_1_10"), _module(ds_full["dir"] / "checkpoint_1_10")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_incomplete_tags_are_skipped(ds_full, tmp_path):
    save = tmp_path / "ckpt"
    shutil.copytree(ds_full["dir"], save)
    assert CheckpointDir(str(save)).resume_tag() == "checkpoint_1_10"
    shard = save / "checkpoint_1_10" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 100)
    os.remove(save / "checkpoint_1_8" / "complete.json")  # a save killed before every rank finished
    (save / "latest").write_text("checkpoint_1_10")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # own handler: other tests reconfigure logging (caplog misses it)
    logger = logging.getLogger("xlm_ds.checkpoints")
    logger.addHandler(handler)
    try:
        assert CheckpointDir(str(save)).resume_tag() == "checkpoint_1_4"
    finally:
        logger.removeHandler(handler)
    text = "\n".join(r.getMessage() for r in records)
    assert f"skipping checkpoint {save / 'checkpoint_1_10'}: zero_pp_rank_1_mp_rank_00_optim_states.pt: size" in text
    assert f"skipping checkpoint {save / 'checkpoint_1_8'}: no complete.json" in text


def test_universal_load_equals_direct_resume(prepared_sample, ds_full, ds, tmp_path):
    """The universal-checkpoint path loses nothing: on the same 2 ranks,
    resuming update 4 through it (config "checkpoint": {"load_universal":
    true}) gives the reference run's losses bit for bit."""
    save = tmp_path / "ckpt"
    shutil.copytree(ds_full["dir"], save)
    for tag in ("checkpoint_1_8", "checkpoint_1_10"):
        shutil.rmtree(save / tag)
    config = json.load(open(os.path.join(REPO, "ds_configs", "zero2.json")))
    config["checkpoint"] = {"load_universal": True}
    (tmp_path / "zero2_universal.json").write_text(json.dumps(config))
    _, log = ds.run(prepared_sample, save, 2, str(tmp_path / "zero2_universal.json"))
    assert f"Loaded checkpoint {save / 'universal' / 'checkpoint_1_4'} (epoch 1 @ 4 updates)" in log
    got, ref = ds.losses(str(save) + ".jsonl"), ds_full["losses"]
    for u in range(5, 11):
        assert got[u]["loss"] == ref[u]["loss"] and got[u]["gnorm"] == ref[u]["gnorm"], u


def test_other_number_of_ranks_resumes_through_universal(prepared_sample, ds_full, ds, tmp_path):
    save = tmp_path / "ckpt"
    shutil.copytree(ds_full["dir"], save)
    _, log = ds.run(prepared_sample, save, 1, "zero2.json", updates=12)
    assert (f"{save / 'checkpoint_1_10'} was written by 2 data-parallel ranks (ZeRO stage 2), resuming on 1: "
            "loading it through a DeepSpeed universal checkpoint") in log
    assert f"Loaded checkpoint {save / 'universal' / 'checkpoint_1_10'} (epoch 1 @ 10 updates)" in log
    rows = ds.losses(str(save) + ".jsonl")
    assert [u for u in rows if u > 10] == [11, 12]
    assert all(rows[u]["loss"] == rows[u]["loss"] for u in (11, 12))  # finite
    # the 1-rank checkpoint holds every Adam moment, 12 steps each
    opt = torch.load(save / "checkpoint_1_12" / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                     map_location="cpu", weights_only=False)["optimizer_state_dict"]["base_optimizer_state"]
    steps = {int(s["step"]) for s in opt["state"].values()} if "state" in opt else {
        int(s["step"]) for group in opt for s in group.values() if isinstance(s, dict) and "step" in s}
    assert steps == {12}, steps


def test_other_layout_is_refused_with_the_way_out(prepared_sample, ds_full, ds, tmp_path):
    save = tmp_path / "ckpt"
    shutil.copytree(ds_full["dir"], save)
    rc, log = ds.run(prepared_sample, save, 1, "zero1.json", updates=12, expect_rc=None)
    assert rc != 0 and "exitcode  : 2" in log, log[-3000:]  # xlm-ds-train exit 2 (torchrun reports 1)
    assert (f"xlm-ds-train: error: {save / 'checkpoint_1_10'}: written by 2 ranks (2 data-parallel, ZeRO stage 2, "
            "1 pipeline stages), this run has 1 (1 data-parallel, ZeRO stage 1, 1 pipeline stages)") in log
    assert f"xlm-ds-export {save} --tag checkpoint_1_10 --out checkpoint_1_10.pt" in log


def test_nan_losses_skip_the_update_zero0(prepared_sample, ds, tmp_path):
    save = tmp_path / "ckpt"
    _, log = ds.run(prepared_sample, save, 1, "zero0.json", "--save-interval-updates", "0", updates=6,
                    faults={"FAULT_NAN_AT_BATCHES": "3,4"})
    assert "update 3 skipped: non-finite loss/gradient (gradient norm nan), no optimizer step; 2 in a row" in log
    rows = ds.losses(str(save) + ".jsonl")
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert all(r["gnorm"] == r["gnorm"] for r in rows.values())  # finite from update 3 on
    opt = torch.load(save / "checkpoint_1_6" / "mp_rank_00_model_states.pt", map_location="cpu",
                     weights_only=False)["optimizer"]["state"]
    assert {int(s["step"]) for s in opt.values()} == {6}  # 8 batches, 6 Adam steps


def test_nan_losses_in_a_row_stop_zero2(prepared_sample, ds, tmp_path):
    save = tmp_path / "ckpt"
    rc, log = ds.run(prepared_sample, save, 1, "zero2.json", "--max-nonfinite-updates", "2", updates=6,
                     faults={"FAULT_NAN_AT_BATCHES": "2,3,4"}, expect_rc=None)
    assert rc != 0
    assert "2 updates in a row with a non-finite loss/gradient (last: update 2" in log


def test_nan_losses_skip_the_update_in_a_pipeline(prepared_sample, ds, tmp_path):
    """2 pipeline stages (ZeRO-1): NaN losses on batches 3 and 4 are skipped
    (no optimizer step) and counted like the other engines'; the run goes on."""
    save = tmp_path / "ckpt"
    _, log = ds.run(prepared_sample, save, 2, "pipeline.json", "--save-interval-updates", "0", updates=6,
                    faults={"FAULT_NAN_AT_BATCHES": "3,4"})
    assert "update 3 skipped: non-finite loss/gradient" in log and "2 in a row" in log, log[-3000:]
    rows = ds.losses(str(save) + ".jsonl")
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] == r["loss"] for r in rows.values())


def test_xlm_align_resumes_exactly_with_its_task_state(prepared_sample, ds, tmp_path):
    """xlm-ds-train (2 ranks, ZeRO-1) of xlm_align: the key encoder comes
    back from the checkpoint's client state and every rank's own queue of
    negatives from its per-rank state, so updates after a SIGKILL and resume
    equal the uninterrupted run's (rank 1 resumed with rank 0's queue scores
    other negatives: the gradient norm differs at update 5)."""
    ranks = 2
    align = ("--task", "xlm_align", "--objectives", "tlm", "--align-queue-size", "24")
    ref = tmp_path / "ref"
    ds.run(prepared_sample, ref, ranks, "zero1.json", *align)
    kill_at = random.Random().randint(6, 8)  # after the save at 4, with a full queue
    save = tmp_path / "ckpt"
    rc, _ = ds.run(prepared_sample, save, ranks, "zero1.json", *align, faults={"FAULT_KILL_AT_UPDATE": kill_at},
                   expect_rc=None)
    assert rc != 0
    _, log = ds.run(prepared_sample, save, ranks, "zero1.json", *align)
    assert f"Loaded checkpoint {save / 'checkpoint_1_4'} (epoch 1 @ 4 updates)" in log
    got, want = ds.losses(str(save) + ".jsonl"), ds.losses(str(ref) + ".jsonl")
    for u in range(5, 11):
        assert got[u]["loss"] == want[u]["loss"] and got[u]["gnorm"] == want[u]["gnorm"], u
