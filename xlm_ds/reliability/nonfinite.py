"""Updates with a NaN/inf loss or gradient are skipped, not fatal at once.

fairseq-train (fp32) raises ``FloatingPointError("gradients are Nan/Inf")``
at the first non-finite gradient norm: one bad batch (an overflow in a long
run, a corrupt sample) ends a multi-day job. DeepSpeed's ZeRO optimizers
skip such a step silently, however many come in a row.

Here both behave alike: an update whose gradient norm (all ranks' reduced
gradients, so every rank agrees) is not finite is skipped — gradients
zeroed, no optimizer step (so no Adam moment update), no update counted, no
LR step — and logged with the count (``nonfinite_skipped`` in the logs);
after ``--max-nonfinite-updates`` such updates *in a row* training stops
with a message saying so (0 = fairseq's behaviour: stop at the first).
A loss that is NaN/inf gives a non-finite gradient norm, so the gradient
check covers it without another collective.

The fairseq side is a patch of ``fairseq.trainer.Trainer`` (applied by
``xlm_ds.fairseq_compat``); the DeepSpeed trainer uses :class:`NonFiniteCounter`.
"""
import logging
import math

logger = logging.getLogger("xlm_ds.reliability")

DEFAULT_LIMIT = 5


class NonFiniteUpdate(Exception):
    """Raised inside fairseq's train_step to leave it before the optimizer
    step (deliberately not a FloatingPointError/OverflowError/RuntimeError,
    which fairseq catches there)."""


class TooManyNonFiniteUpdates(FloatingPointError):
    pass


class NonFiniteCounter:
    def __init__(self, limit: int):
        self.limit = int(limit)
        self.in_a_row = 0
        self.total = 0

    def ok(self) -> None:
        self.in_a_row = 0

    def skipped(self, update: int, what: str) -> None:
        """Records a skipped update; raises when the limit is reached."""
        from fairseq.logging import metrics

        self.in_a_row += 1
        self.total += 1
        metrics.log_scalar("nonfinite_skipped", self.total, weight=0, priority=710)
        if self.in_a_row >= max(self.limit, 1):
            raise TooManyNonFiniteUpdates(
                f"{self.in_a_row} updates in a row with a non-finite loss/gradient (last: update "
                f"{update + 1}, {what}); --max-nonfinite-updates is {self.limit}. Expected finite losses: "
                "lower --lr, set --clip-norm, or check the data of these batches"
            )
        logger.warning(
            "update %d skipped: non-finite loss/gradient (%s), no optimizer step; %d in a row "
            "(stop at %d), %d skipped in total", update + 1, what, self.in_a_row, self.limit, self.total,
        )


def limit_from_cfg(cfg) -> int:
    task = getattr(cfg, "task", None)
    value = getattr(task, "max_nonfinite_updates", None) if task is not None else None
    return 0 if value is None else int(value)


def _is_finite(norm) -> bool:
    import torch

    if torch.is_tensor(norm):
        return bool(torch.isfinite(norm).all())
    return math.isfinite(float(norm))


def apply() -> None:
    from fairseq.trainer import Trainer

    if getattr(Trainer.train_step, "_xlm_ds_patched", False):
        return
    clip_grad_norm = Trainer.clip_grad_norm
    train_step = Trainer.train_step

    def patched_clip_grad_norm(self, clip_norm):
        norm = clip_grad_norm(self, clip_norm)
        if getattr(self, "_xlm_ds_nonfinite", None) is not None and not _is_finite(norm):
            raise NonFiniteUpdate(f"gradient norm {float(norm)}")
        return norm

    def patched_train_step(self, samples, raise_oom=False):
        counter = getattr(self, "_xlm_ds_nonfinite", None)
        if counter is None:
            limit = limit_from_cfg(self.cfg)
            if limit <= 0 or self.cfg.common.amp or self.cfg.common.fp16 or self.cfg.common.bf16:
                return train_step(self, samples, raise_oom)  # fairseq's own handling
            counter = self._xlm_ds_nonfinite = NonFiniteCounter(limit)
        try:
            out = train_step(self, samples, raise_oom)
        except NonFiniteUpdate as e:
            self.zero_grad()
            counter.skipped(self.get_num_updates(), str(e))
            return None
        counter.ok()
        return out

    patched_train_step._xlm_ds_patched = True
    patched_train_step.__wrapped__ = train_step
    patched_clip_grad_norm.__wrapped__ = clip_grad_norm
    Trainer.clip_grad_norm = patched_clip_grad_norm
    Trainer.train_step = patched_train_step
