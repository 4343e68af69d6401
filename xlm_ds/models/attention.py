"""Self-attention on top of ``torch.nn.functional.scaled_dot_product_attention``.

Parameter names (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) are those of
fairseq's ``MultiheadAttention``, so an xlm_ds layer's state dict loads into
fairseq's ``TransformerEncoderLayer``/``TransformerDecoderLayer`` (MT
initialisation) and fairseq RoBERTa/XLM-R checkpoints load into xlm_ds
(import) without renaming. The forward pass is SDPA rather than fairseq's
module because SDPA picks the fused kernel of the platform (flash/mem-efficient
on CUDA, the fused CPU kernel otherwise) and handles the causal mask of CLM
without materialising it.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


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
        shape = (bsz, tgt_len, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        attn_mask = None
        if key_padding_mask is not None:
            # boolean mask, True = may attend; broadcast over heads and queries
            attn_mask = ~key_padding_mask[:, None, None, :]
            if causal:
                attn_mask = attn_mask & torch.ones(
                    tgt_len, tgt_len, dtype=torch.bool, device=x.device
                ).tril()
                causal = False
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
