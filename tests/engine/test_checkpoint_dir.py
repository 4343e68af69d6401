"""engine/checkpoint_dir.py without DeepSpeed: a tag appears whole or not at
all, ``latest``/``best.json``/``preempted.json`` are its own, and export
finds tags through it. (SIGKILL mid-run, corrupted shards and universal
conversion with real DeepSpeed: tests/faults/test_deepspeed_faults.py.)"""
import json
import os

import pytest

from xlm_ds.engine.checkpoint_dir import CheckpointDir, CheckpointLookupError, tag_name


class FakeEngine:
    """Writes DeepSpeed-like files into SAVE/TAG; ``crash_after`` files,
    then raises (a rank killed mid-save)."""

    def __init__(self, payload=b"weights", crash_after=None):
        self.payload = payload
        self.crash_after = crash_after

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        assert not save_latest  # ``latest`` moves only once the tag is complete
        for i, name in enumerate(("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt")):
            if self.crash_after is not None and i >= self.crash_after:
                raise KeyboardInterrupt("killed mid-save")
            with open(os.path.join(save_dir, tag, name), "wb") as f:
                f.write(self.payload)


def save(ckpt, tag, updates, engine=None):
    return ckpt.save(engine or FakeEngine(), tag, {}, {"num_updates": updates, "world_size": 1,
                                                       "data_parallel_size": 1, "zero_stage": 1})


def test_a_tag_appears_whole_and_latest_follows(tmp_path):
    ckpt = CheckpointDir(str(tmp_path))
    save(ckpt, tag_name(1, 4, False), 4)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1_4", "latest"]
    assert ckpt.latest() == "checkpoint_1_4" and ckpt.resume_tag() == "checkpoint_1_4"
    files = json.loads((tmp_path / "checkpoint_1_4" / "complete.json").read_text())["files"]
    assert set(files) == {"mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                          "rng_state_0.pt", "rng_state_0.pt.complete"}
    assert ckpt.rank_state(ckpt.tag_dir("checkpoint_1_4"))["rank_state"] == {}


def test_a_save_killed_midway_leaves_the_previous_tag_in_charge(tmp_path):
    ckpt = CheckpointDir(str(tmp_path))
    save(ckpt, "checkpoint_1_4", 4)
    with pytest.raises(KeyboardInterrupt):
        save(ckpt, "checkpoint_1_8", 8, FakeEngine(crash_after=1))
    assert not (tmp_path / "checkpoint_1_8").exists()  # nothing named like a checkpoint is half written
    assert (tmp_path / ".partial-checkpoint_1_8").is_dir()
    assert ckpt.tags() == ["checkpoint_1_4"]
    assert ckpt.latest() == "checkpoint_1_4" and ckpt.resume_tag() == "checkpoint_1_4"
    save(ckpt, "checkpoint_1_8", 8)  # the next save clears the leftovers
    assert not any(n.startswith(".partial-") for n in os.listdir(tmp_path))
    assert ckpt.resume_tag() == "checkpoint_1_8"


def test_saving_a_tag_again_replaces_it(tmp_path):
    ckpt = CheckpointDir(str(tmp_path))
    save(ckpt, "checkpoint_1_4", 4)
    save(ckpt, "checkpoint_1_4", 4, FakeEngine(payload=b"newer"))
    assert (tmp_path / "checkpoint_1_4" / "mp_rank_00_model_states.pt").read_bytes() == b"newer"
    assert ckpt.verify("checkpoint_1_4") == (True, "ok")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1_4", "latest"]


def test_best_prune_and_export_lookup(tmp_path):
    ckpt = CheckpointDir(str(tmp_path))
    for u in (2, 4, 6, 8):
        save(ckpt, f"checkpoint_1_{u}", u)
    ckpt.write_best("checkpoint_1_2", "loss", 3.5, 2)
    ckpt.prune("checkpoint_1_8", keep_interval_updates=2, keep_last_epochs=0)
    assert sorted(ckpt.tags()) == ["checkpoint_1_2", "checkpoint_1_6", "checkpoint_1_8"]  # best kept
    assert CheckpointDir.lookup(str(tmp_path))[1] == "checkpoint_1_8"
    assert CheckpointDir.lookup(str(tmp_path), "best")[1] == "checkpoint_1_2"
    found, tag = CheckpointDir.lookup(str(tmp_path / "checkpoint_1_6"))
    assert (found.path, tag) == (str(tmp_path), "checkpoint_1_6")
    with pytest.raises(CheckpointLookupError, match="checkpoint_1_4: no mp_rank_00_model_states.pt"):
        CheckpointDir.lookup(str(tmp_path), "checkpoint_1_4")
