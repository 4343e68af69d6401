"""MoCo-style sentence-level contrastive alignment (Pan et al. 2021, after
He et al. 2020): a query encoder (the model being trained) embeds the source
sentence, a momentum copy of it embeds the translation (the positive key),
and a FIFO queue of earlier keys supplies the negatives.

    loss = -log  exp(q·k+ / T) / (exp(q·k+ / T) + Σ_j exp(q·n_j / T))

with q, k, n L2-normalised. The key encoder gets no gradient; after every
optimizer step θ_k ← m θ_k + (1 − m) θ_q.
"""
import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: Optional[torch.Tensor], temperature: float,
             reduction: str = "sum"):
    """q, k: (B, C) query and positive-key embeddings (normalised here);
    queue: (K, C) negatives (already normalised) or None/empty. Returns
    (loss, logits (B, 1 + K)); the positive is column 0."""
    q = F.normalize(q.float(), dim=-1)
    k = F.normalize(k.float(), dim=-1).detach()
    pos = (q * k).sum(-1, keepdim=True)
    if queue is not None and queue.numel():
        logits = torch.cat([pos, q @ queue.to(q).t()], dim=1)
    else:
        logits = pos
    logits = logits / temperature
    labels = torch.zeros(q.size(0), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels, reduction=reduction), logits


class KeyQueue:
    """FIFO of the last ``size`` keys (rows). ``tensor()`` returns them
    oldest first; enqueueing more than ``size`` keeps the newest ``size``."""

    def __init__(self, size: int, dim: int):
        if size < 0:
            raise ValueError(f"queue size must be >= 0, got {size}")
        self.size = size
        self.dim = dim
        self._keys = torch.empty(0, dim)

    def __len__(self):
        return self._keys.size(0)

    def tensor(self) -> torch.Tensor:
        return self._keys

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        if self.size == 0:
            return
        keys = keys.detach().float()
        if self._keys.device != keys.device:
            self._keys = self._keys.to(keys.device)
        self._keys = torch.cat([self._keys, keys], dim=0)[-self.size:]


def make_key_encoder(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` (θ_k ← θ_q at the start)."""
    key = copy.deepcopy(model)
    for p in key.parameters():
        p.requires_grad_(False)
    return key


@torch.no_grad()
def momentum_update(query: nn.Module, key: nn.Module, m: float) -> None:
    """θ_k ← m θ_k + (1 − m) θ_q, parameter by parameter (buffers copied)."""
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    for pq, pk in zip(query.parameters(), key.parameters()):
        pk.mul_(m).add_(pq.detach().to(pk.dtype), alpha=1.0 - m)
    for bq, bk in zip(query.buffers(), key.buffers()):
        bk.copy_(bq)


def pool(features: torch.Tensor, tokens: torch.Tensor, pad: int, how: str = "mean") -> torch.Tensor:
    """Sentence embedding from (B, T, C) features: mean over non-padding
    positions, or the first position (``cls``: the <s> token)."""
    if how == "cls":
        return features[:, 0]
    mask = tokens.ne(pad).unsqueeze(-1).type_as(features)
    return (features * mask).sum(1) / mask.sum(1).clamp(min=1)
