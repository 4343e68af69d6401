"""fairseq's prefetch thread stopped and joined before the interpreter exits.

``--data-buffer-size N`` (default 10) makes fairseq fill a queue from the
data iterator in a *daemon* thread (``data.iterators.BackgroundConsumer``).
When training stops before the epoch ends (``--max-update``), that thread
is blocked in ``queue.put`` or inside the DataLoader's C++ code; Python's
finalization then kills it with a forced unwind and the process aborts
("terminate called without an active exception", exit -6) after training
has finished and saved.

The patch makes the consumer's ``put`` interruptible (a stop event checked
every 0.1 s) and registers one ``atexit`` hook that stops and joins every
live consumer while the interpreter is still whole (atexit runs before
daemon threads are torn down). The thread's behaviour while training is
unchanged: same items, same order, same sentinel/exception protocol.
"""
import atexit
import queue
import threading
import weakref

_consumers = weakref.WeakSet()
JOIN_TIMEOUT_S = 30.0


def _put(consumer, item) -> bool:
    while not consumer._xlm_ds_stop.is_set():
        try:
            consumer._queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _run(self):
    import torch
    from fairseq.data import iterators

    if self.cuda_device is not None:
        torch.cuda.set_device(self.cuda_device)
    try:
        for item in self._source:
            if not _put(self, item):
                return
            self.count += 1
            if self._max_len is not None and self.count >= self._max_len:
                break
            if self._xlm_ds_stop.is_set():
                return
        _put(self, iterators._sentinel)
    except Exception as e:
        _put(self, e)


def stop_all(timeout: float = JOIN_TIMEOUT_S) -> int:
    """Stops and joins the live prefetch threads; returns how many were
    still alive after ``timeout`` (0 when all ended)."""
    consumers = list(_consumers)
    for c in consumers:
        c._xlm_ds_stop.set()
    alive = 0
    for c in consumers:
        if c.is_alive() and c is not threading.current_thread():
            c.join(timeout)
            alive += c.is_alive()
    return alive


def apply() -> None:
    from fairseq.data import iterators

    cls = iterators.BackgroundConsumer
    if getattr(cls, "_xlm_ds_patched", False):
        return
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._xlm_ds_stop = threading.Event()
        _consumers.add(self)

    __init__.__wrapped__ = init
    cls.__init__ = __init__
    cls.run = _run
    cls._xlm_ds_patched = True
    atexit.register(stop_all)
