"""``fairseq-train`` with faults injected and per-update losses recorded
(tests/faults only). Runs ``fairseq_cli.train.cli_main`` unchanged after
wrapping a few fairseq/xlm_ds functions according to the environment:

* FAULT_LOSSES=FILE         one JSON line per update: exact loss and grad norm
* FAULT_KILL_AT_UPDATE=K    SIGKILL itself inside update K, after backward,
                            before the optimizer step
* FAULT_NAN_AT_BATCHES=3,4  the loss of the 3rd and 4th batch drawn is NaN
* FAULT_SAMPLES=FILE        every training sample (sample_recorder.py)
* FAULT_ENOSPC_ON_WRITE=N   the N-th checkpoint file write fails with ENOSPC
                            after 64 KiB
"""
import errno
import json
import os
import signal
import sys

import nan_injection  # noqa: E402  (this folder: the script's sys.path[0])
import sample_recorder  # noqa: E402
import xlm_ds  # noqa: F401  (the plugin; --user-dir imports the same module)
from xlm_ds import fairseq_compat  # noqa: E402

# the fixes first (as the task's setup_task / xlm-ds-train would apply them),
# so that the faults below wrap the patched fairseq and the start-up check
# sees fairseq's own signatures, not the probe's wrappers
fairseq_compat.apply()
from fairseq.trainer import Trainer

from xlm_ds.reliability import atomic

LOSSES = os.environ.get("FAULT_LOSSES")
KILL_AT = int(os.environ.get("FAULT_KILL_AT_UPDATE", "0"))
ENOSPC_ON = int(os.environ.get("FAULT_ENOSPC_ON_WRITE", "0"))

if LOSSES:
    reduce_and_log = Trainer._reduce_and_log_stats

    def _reduce_and_log_stats(self, logging_outputs, sample_size, grad_norm=None):
        if grad_norm is not None:
            row = {"update": self.get_num_updates(),
                   "loss": sum(float(log.get("loss", 0.0)) for log in logging_outputs),
                   "gnorm": float(grad_norm)}
            with open(LOSSES, "a") as f:
                f.write(json.dumps(row) + "\n")
        return reduce_and_log(self, logging_outputs, sample_size, grad_norm)

    Trainer._reduce_and_log_stats = _reduce_and_log_stats

if KILL_AT:
    clip = Trainer.clip_grad_norm

    def clip_grad_norm(self, clip_norm):
        if self.get_num_updates() + 1 == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return clip(self, clip_norm)

    Trainer.clip_grad_norm = clip_grad_norm

nan_injection.install()
sample_recorder.install()

if ENOSPC_ON:
    init = atomic._HashingWriter.__init__
    count = {"files": 0}

    class _FullDisk:
        """The file object of the failing write: ENOSPC after 64 KiB."""

        def __init__(self, f):
            self._f, self._n = f, 0

        def write(self, data):
            if self._n > 64 * 1024:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._n += len(data)
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

    def counting_init(self, f):
        count["files"] += 1
        init(self, _FullDisk(f) if count["files"] == ENOSPC_ON else f)

    atomic._HashingWriter.__init__ = counting_init

if __name__ == "__main__":
    from fairseq_cli.train import cli_main

    sys.argv[0] = "fairseq-train"
    sys.exit(cli_main())
