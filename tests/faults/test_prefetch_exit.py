"""fairseq's prefetch thread (--data-buffer-size > 0) is stopped and joined
at interpreter exit (xlm_ds/reliability/prefetch.py) instead of being torn
down inside C++ code ("terminate called without an active exception")."""
import os
import subprocess
import sys
import time

import xlm_ds  # noqa: F401  (applies the patch)
from fairseq.data import iterators

from xlm_ds.reliability import prefetch


class _Slow:
    """A source that is never exhausted and slow per item, like a DataLoader
    mid-epoch."""

    def __len__(self):
        return 10_000

    def __iter__(self):
        for i in range(10_000):
            time.sleep(0.01)
            yield i


def test_blocked_consumer_is_stopped_and_joined():
    itr = iterators.BufferedIterator(2, _Slow())
    assert [next(itr) for _ in range(3)] == [0, 1, 2]
    time.sleep(0.1)  # the queue fills up; the thread blocks in put()
    consumer = itr._consumer
    assert consumer.is_alive()
    assert prefetch.stop_all(timeout=5) == 0
    assert not consumer.is_alive()


def test_short_training_run_with_prefetch_exits_cleanly(prepared_sample, tmp_path, probe):
    """The run the tests used to avoid: --data-buffer-size 10 (fairseq's
    default), stopped by --max-update in mid-epoch."""
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.train", prepared_sample, "--user-dir", os.path.join(probe.repo, "xlm_ds"),
         "--task", "xlm", "--arch", "xlm_tiny", "--criterion", "xlm_lm", "--objectives", "mlm",
         "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3",
         "--max-update", "3", "--cpu", "--no-save", "--save-dir", str(tmp_path), "--disable-validation",
         "--data-buffer-size", "10"],
        env=probe.env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr
