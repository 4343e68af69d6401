"""Dropout whose mask is cheap to draw on a CPU.

``F.dropout`` on a CPU draws one ``bernoulli_`` per element from the MT19937
generator, one element at a time: on the 2-core reference machine a bf16
training step of a 6-layer, 512-dim XLM spent 22% of its time there, more
than in the feed-forward matmuls. Here the mask comes from 64-bit random
integers read as four 16-bit ones (four elements per draw) compared with a
threshold, so element i is kept with probability 1 - p, p rounded to a
multiple of 2^-16 (0.1 becomes 0.100006), and the kept elements are scaled
by 1 / (1 - p) of that rounded p: the same distribution as dropout up to
that rounding. The draws come from torch's default generator, which
fairseq and xlm-ds-train seed per update, so a resumed run and activation
checkpointing's recomputation draw the same masks.

On other devices (CUDA's Philox generator is fast) this is ``F.dropout``.
"""
import math

import torch
import torch.nn.functional as F

_LEVELS = 1 << 16


def keep_mask(shape, p: float, dtype: torch.dtype) -> torch.Tensor:
    """``(kept / (1 - p)) or 0`` per element, in ``dtype``, on the CPU."""
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    values = bits.view(torch.int16)[:n].view(shape)
    dropped = round(p * _LEVELS)
    keep = values >= dropped - _LEVELS // 2
    return keep.to(dtype).mul_(_LEVELS / (_LEVELS - dropped))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p <= 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training)
    return x * keep_mask(x.shape, p, x.dtype)
