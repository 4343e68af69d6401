"""Self-attention on top of ``torch.nn.functional.scaled_dot_product_attention``.

Parameter names (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) are those of
fairseq's ``MultiheadAttention``, so an xlm_ds layer's state dict loads into
fairseq's ``TransformerEncoderLayer``/``TransformerDecoderLayer`` (MT
initialisation) and fairseq RoBERTa/XLM-R checkpoints load into xlm_ds
(import) without renaming. The forward pass is SDPA rather than fairseq's
module because SDPA picks the fused kernel of the platform (flash/mem-efficient
on CUDA, the fused CPU kernel otherwise) and handles the causal mask of CLM
without materialising it.

One exception: training on a CPU with attention dropout. SDPA's fused CPU
kernel has no dropout, so SDPA falls back to its math path, which draws the
dropout mask with ``bernoulli_`` element by element: 61 ms for the forward and
backward of one 8 × 256-token, 8-head layer in bf16, against 20 ms for the
same math here with the cheap mask of ``dropout.py`` (the scores are
materialised either way).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import dropout


class SelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim={embed_dim} is not divisible by attention heads={num_heads}"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            # the scaled init fairseq uses for self-attention projections
            nn.init.xavier_uniform_(proj.weight, gain=1 / 2**0.5)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """x: (batch, time, dim); key_padding_mask: (batch, time), True at padding."""
        bsz, tgt_len, _ = x.shape
        # one projection for q, k and v (the weights stay three modules, for
        # fairseq's parameter names): one matmul and, under autocast, one cast
        # of x instead of three (7% of a bf16 step of a 4 × 128 model)
        projs = (self.q_proj, self.k_proj, self.v_proj)
        qkv = F.linear(x, torch.cat([p.weight for p in projs]), torch.cat([p.bias for p in projs]))
        q, k, v = qkv.view(bsz, tgt_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        cheap_dropout = self.training and self.dropout > 0 and x.device.type == "cpu"
        attn_mask = None
        if key_padding_mask is not None:
            # boolean mask, True = may attend; broadcast over heads and queries
            attn_mask = ~key_padding_mask[:, None, None, :]
        if causal and (attn_mask is not None or cheap_dropout):
            # SDPA's is_causal cannot be combined with a mask, and the math
            # path below takes masks only
            tri = torch.ones(tgt_len, tgt_len, dtype=torch.bool, device=x.device).tril()
            attn_mask = tri if attn_mask is None else attn_mask & tri
            causal = False
        if cheap_dropout:
            out = self._attention_with_cheap_dropout(q, k, v, attn_mask)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=causal,
            )
        out = out.transpose(1, 2).reshape(bsz, tgt_len, self.embed_dim)
        return self.out_proj(out)

    def _attention_with_cheap_dropout(self, q, k, v, attn_mask):
        """SDPA's math path (boolean ``attn_mask``: True = may attend)."""
        scores = torch.matmul(q * self.head_dim**-0.5, k.transpose(-1, -2))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        # torch's CPU softmax computes bf16 rows in fp32 internally and rounds
        # the probabilities, as a cast of an fp32 softmax would
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(dropout(probs, self.dropout, True), v)
