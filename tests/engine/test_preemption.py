"""xlm_ds.engine.preemption without a cluster: the handler, the loop's
hook (save, marker, stop), and the ranks' agreement (2 gloo processes). The
end-to-end path (sbatch, SIGUSR1, requeue, exact resume) is tests/slurm/."""
import json
import os
import signal
import socket
import types

import pytest

from xlm_ds.engine import loop, preemption
from xlm_ds.engine.checkpoint_dir import CheckpointDir
from xlm_ds.engine.checkpoint_dir import main as checkpoint_dir_main


@pytest.fixture(autouse=True)
def clean():
    preemption.reset()
    yield
    preemption.uninstall()
    preemption.reset()


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


def test_the_loop_asks_the_hook_saves_writes_the_marker_and_stops(tmp_path, monkeypatch, capsys):
    """train_epoch asks the hook at every update: no signal, the ordinary
    validate-and-save; a signal, a save without validation, the marker and
    a stop."""
    saved = []
    monkeypatch.setattr(loop, "save_checkpoint",
                        lambda cfg, trainer, itr, val: saved.append(val) or os.path.join(str(tmp_path), "checkpoint_2_7"))
    hook = preemption.PreemptionHook()
    cfg, trainer, itr = _fake(tmp_path)
    preemption.install(["USR1"])
    assert not hook.requested()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert hook.requested()
    assert loop.save_and_stop(cfg, trainer, itr, hook) == ([None], True)
    assert saved == [None]  # saved without validating
    marker = CheckpointDir(str(tmp_path)).preempted()
    assert marker["num_updates"] == 7 and marker["epoch"] == 2 and marker["checkpoint"] == "checkpoint_2_7"
    assert marker["signal"] == "SIGUSR1"
    assert preemption.stopped_at_update() == 7
    # what slurm/pretrain.sh asks: the marker, then (next start) forgetting it
    assert checkpoint_dir_main([str(tmp_path), "preempted"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == "checkpoint_2_7"
    assert checkpoint_dir_main([str(tmp_path), "start"]) == 0
    assert CheckpointDir(str(tmp_path)).preempted() is None
    assert checkpoint_dir_main([str(tmp_path), "preempted"]) == 1


def test_early_signal_counts(monkeypatch):
    from xlm_ds.cli import train

    seen = {}
    monkeypatch.setattr(train, "main", lambda argv, preempt=None: seen.update(argv=argv, preempt=preempt) or 0)
    assert train.preemptible_main(["DATA", "--save-dir", "/nonexistent/x"], early=[signal.SIGUSR1]) == 0
    assert preemption.requested() and seen["argv"][0] == "DATA"
    assert isinstance(seen["preempt"], preemption.PreemptionHook)


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
