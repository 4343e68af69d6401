"""Preemption and time limits for ``xlm-ds-train``: a signal (SIGUSR1 from
``sbatch --signal=USR1@120`` or ``scancel --signal=USR1``, SIGTERM from a
preemption or a cancellation) asks every rank to stop at the end of the
current update, save a checkpoint (the ordinary mid-epoch one:
``SAVE_DIR/checkpoint_E_U`` + ``SAVE_DIR/latest``) and exit 0, with rank 0
writing the marker file ``SAVE_DIR/preempted.json``. The next run of the
same command (a requeued or resubmitted job) resumes from ``latest`` as
usual, with the data iterator's position, LR schedule, meters and RNG
states, so no update is lost or counted twice.

A signal reaches the ranks at different moments; they agree at each update
boundary (an all-reduce of the flag, MAX) so that all of them save the same
update and leave the loop together.

Wiring: :func:`install` the handler in every rank before training, and
hand the loop a :class:`PreemptionHook` (``loop.run(..., preempt=...)``),
which it asks at every update boundary; ``xlm_ds.cli.train.preemptible_main``
does both (what ``slurm/pretrain.sh`` runs). The marker is written, and a
stale one cleared at start, by the save directory's owner
(engine/checkpoint_dir.py) through the loop.

Exit status: 0 both when training finished and when it stopped on a signal;
the marker file tells them apart (``slurm/pretrain.sh`` requeues the job
when it is there).
"""
import logging
import os
import signal
import threading
import time
from typing import Iterable, Optional

logger = logging.getLogger("xlm_ds.preemption")

DEFAULT_SIGNALS = ("SIGUSR1", "SIGTERM")


class _State:
    def __init__(self):
        self.signum: Optional[int] = None
        self.received_at: Optional[float] = None
        self.installed: tuple = ()
        self.previous: dict = {}
        self.stopped_at_update: Optional[int] = None


_state = _State()


def _handler(signum, frame):  # noqa: ARG001 - signal handler signature
    if _state.signum is None:
        _state.signum = signum
        _state.received_at = time.time()
        # no logging inside the handler (not reentrant): a plain write
        try:
            os.write(2, f"xlm-ds-train: received {signal.Signals(signum).name}; "
                        "will save a checkpoint at the end of the current update and exit\n".encode())
        except OSError:
            pass


def install(signals: Optional[Iterable[str]] = None) -> tuple:
    """Installs the handler for ``signals`` (default SIGUSR1, SIGTERM; the
    environment variable XLM_DS_PREEMPT_SIGNALS, e.g. ``"USR1 TERM"``,
    overrides). Main thread only; returns the signals installed."""
    if signals is None:
        env = os.environ.get("XLM_DS_PREEMPT_SIGNALS")
        signals = env.split() if env else DEFAULT_SIGNALS
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("preemption.install() must be called from the main thread")
    installed = []
    for name in signals:
        name = name.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        signum = getattr(signal, name)
        _state.previous.setdefault(signum, signal.getsignal(signum))
        signal.signal(signum, _handler)
        installed.append(signum)
    _state.installed = tuple(installed)
    return _state.installed


def uninstall():
    for signum, previous in _state.previous.items():
        signal.signal(signum, previous)
    _state.previous.clear()
    _state.installed = ()


def reset():
    """Forgets a received signal (tests; several runs in one process)."""
    _state.signum = None
    _state.received_at = None
    _state.stopped_at_update = None


def requested() -> bool:
    """Whether this process received one of the signals."""
    return _state.signum is not None


def signal_name() -> Optional[str]:
    return signal.Signals(_state.signum).name if _state.signum is not None else None


def agreed() -> bool:
    """Whether any rank received a signal (collective: every rank must call
    it at the same point; without a process group, :func:`requested`)."""
    flag = 1 if requested() else 0
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return bool(flag)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(flag)
    device = "cpu"
    if dist.get_backend() == "nccl":
        device = f"cuda:{torch.cuda.current_device()}"
    t = torch.tensor([flag], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if t.item() and _state.signum is None:
        _state.signum = -1  # another rank's signal
    return bool(t.item())


class PreemptionHook:
    """What engine/loop.py asks at every update boundary."""

    def requested(self) -> bool:
        """Whether any rank received a signal (collective)."""
        return agreed()

    def reason(self) -> str:
        return signal_name() if _state.signum and _state.signum > 0 else "peer"

    def stopped(self, num_updates: int) -> None:
        _state.stopped_at_update = num_updates


def stopped_at_update() -> Optional[int]:
    """The update at which the loop stopped on a signal, or None."""
    return _state.stopped_at_update


def received_early(signals) -> None:
    """Signals a bootstrap handler caught before this module was imported
    (slurm/pretrain.sh) count as received."""
    if signals and _state.signum is None:
        _state.signum = signals[0]
        _state.received_at = time.time()
