"""Faults of ``xlm-ds-train --deepspeed-config ...`` (2 gloo ranks, ZeRO-2):
SIGKILL mid-update then resume, incomplete checkpoint tags, resuming on
another number of ranks, NaN losses (ZeRO-0: the update skipped by
xlm-ds's trainer; ZeRO 1-3 skip in DeepSpeed's optimizer)."""
import logging
import os
import random
import shutil

import pytest
import torch

from xlm_ds.reliability import ds_checkpoints


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
    assert ds_checkpoints.find_resume_tag(str(save)) == "checkpoint_1_10"
    shard = save / "checkpoint_1_10" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 100)
    os.remove(save / "checkpoint_1_8" / "complete.json")  # a save killed before every rank finished
    (save / "latest").write_text("checkpoint_1_10")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # own handler: other tests reconfigure logging (caplog misses it)
    logger = logging.getLogger("xlm_ds.reliability")
    logger.addHandler(handler)
    try:
        assert ds_checkpoints.find_resume_tag(str(save)) == "checkpoint_1_4"
    finally:
        logger.removeHandler(handler)
    text = "\n".join(r.getMessage() for r in records)
    assert f"skipping checkpoint {save / 'checkpoint_1_10'}: zero_pp_rank_1_mp_rank_00_optim_states.pt: size" in text
    assert f"skipping checkpoint {save / 'checkpoint_1_8'}: no complete.json" in text


def test_other_number_of_ranks_is_refused_with_the_way_out(prepared_sample, ds_full, ds, tmp_path):
    save = tmp_path / "ckpt"
    shutil.copytree(ds_full["dir"], save)
    rc, log = ds.run(prepared_sample, save, 1, "zero2.json", updates=12, expect_rc=None)
    assert rc != 0 and "exitcode  : 2" in log, log[-3000:]  # xlm-ds-train exit 2 (torchrun reports 1)
    assert (f"xlm-ds-train: error: {save / 'checkpoint_1_10'}: written by 2 ranks (2 data-parallel, ZeRO stage 2), "
            "this run has 1 (1 data-parallel, ZeRO stage 2)") in log
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
