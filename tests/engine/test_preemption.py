"""xlm_ds.engine.preemption without a cluster: the handler, the marker, the
patched loop, and the ranks' agreement (2 gloo processes). The end-to-end
path (sbatch, SIGUSR1, requeue, exact resume) is tests/slurm/."""
import json
import os
import signal
import socket
import types

import pytest

from xlm_ds.engine import loop, preemption


@pytest.fixture(autouse=True)
def clean():
    preemption.reset()
    original = loop.validate_and_save
    yield
    preemption.uninstall()
    preemption.reset()
    loop.validate_and_save = getattr(loop.validate_and_save, "__wrapped__", original)


def test_signal_sets_the_flag_and_uninstall_restores():
    before = signal.getsignal(signal.SIGUSR1)
    assert preemption.install(["USR1", "SIGTERM"]) == (signal.SIGUSR1, signal.SIGTERM)
    assert not preemption.requested()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert preemption.requested() and preemption.signal_name() == "SIGUSR1"
    assert preemption.agreed()  # no process group: this process decides
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not change the first
    assert preemption.signal_name() == "SIGUSR1"
    preemption.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_signals_from_the_environment(monkeypatch):
    monkeypatch.setenv("XLM_DS_PREEMPT_SIGNALS", "USR2")
    assert preemption.install() == (signal.SIGUSR2,)


def _fake(tmp_path, no_save=False):
    cfg = types.SimpleNamespace(checkpoint=types.SimpleNamespace(save_dir=str(tmp_path), no_save=no_save))
    trainer = types.SimpleNamespace(get_num_updates=lambda: 7)
    epoch_itr = types.SimpleNamespace(epoch=2)
    return cfg, trainer, epoch_itr


def test_patched_loop_saves_writes_the_marker_and_stops(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(loop, "save_checkpoint",
                        lambda cfg, trainer, itr, val: saved.append(val) or os.path.join(str(tmp_path), "checkpoint_2_7"))
    calls = []
    monkeypatch.setattr(loop, "validate_and_save", lambda *a: calls.append(a) or ([1.0], False))
    preemption.patch_loop()
    preemption.patch_loop()  # idempotent
    cfg, trainer, itr = _fake(tmp_path)
    preemption.install(["USR1"])
    assert loop.validate_and_save(cfg, trainer, None, itr, ["valid"], False) == ([1.0], False)
    assert len(calls) == 1 and not saved
    os.kill(os.getpid(), signal.SIGUSR1)
    assert loop.validate_and_save(cfg, trainer, None, itr, ["valid"], False) == ([None], True)
    assert len(calls) == 1 and saved == [None]  # saved without validating
    marker = json.load(open(preemption.marker_path(str(tmp_path))))
    assert marker["num_updates"] == 7 and marker["epoch"] == 2 and marker["checkpoint"] == "checkpoint_2_7"
    assert marker["signal"] == "SIGUSR1"
    assert preemption.stopped_at_update() == 7
    preemption.clear_marker(str(tmp_path))
    assert not os.path.exists(preemption.marker_path(str(tmp_path)))


def test_early_signal_counts(monkeypatch):
    from xlm_ds.cli import train

    seen = {}
    monkeypatch.setattr(train, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    preemption.main(["DATA", "--save-dir", "/nonexistent/x"], early=[signal.SIGUSR1])
    assert preemption.requested() and seen["argv"][0] == "DATA"
    assert preemption._save_dir(["--save-dir=/a"]) == "/a"
    assert preemption._save_dir([]) == "checkpoints"


def _agree_worker(rank, port, flags, results):
    import torch.distributed as dist

    from xlm_ds.engine import preemption as p

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    p.reset()
    if flags[rank]:
        p._handler(signal.SIGUSR1, None)
    results[rank] = p.agreed()
    dist.destroy_process_group()


@pytest.mark.parametrize("flags", [(False, True), (False, False)])
def test_ranks_agree(flags):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_agree_worker, args=(port, flags, results), nprocs=2, join=True)
    assert dict(results) == {0: any(flags), 1: any(flags)}
