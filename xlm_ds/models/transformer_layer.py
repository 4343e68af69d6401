"""One transformer encoder block (post- or pre-layer-norm, GELU FFN).

Same submodule names as fairseq's ``TransformerEncoderLayer`` (``self_attn``,
``self_attn_layer_norm``, ``fc1``, ``fc2``, ``final_layer_norm``); see
``attention.py`` for why the attention itself is our own.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.modules import LayerNorm
from torch import nn

from .attention import SelfAttention
from .dropout import dropout


def activation(name: str):
    """fairseq's activation, except ``gelu``: fairseq's computes it in fp32
    (``gelu(x.float()).type_as(x)``): two casts and an fp32 kernel per call
    under bf16 autocast (forward + backward of 8 × 256 × 2048: 7-9 ms against
    3.3 ms on the reference CPU); torch's own computes each element in fp32
    internally and is the same function on fp32 inputs."""
    return F.gelu if name == "gelu" else utils.get_activation_fn(name)


class TransformerLayer(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
        activation_fn: str = "gelu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = SelfAttention(embed_dim, num_heads, attention_dropout)
        self.self_attn_layer_norm = LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = LayerNorm(embed_dim)
        self.activation_fn = activation(activation_fn)
        self.dropout = dropout
        self.activation_dropout = activation_dropout
        self.normalize_before = normalize_before

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
    ) -> torch.Tensor:
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x = self.self_attn(x, key_padding_mask=key_padding_mask, causal=causal)
        x = residual + dropout(x, self.dropout, self.training)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)

        residual = x
        if self.normalize_before:
            x = self.final_layer_norm(x)
        x = self.activation_fn(self.fc1(x))
        x = dropout(x, self.activation_dropout, self.training)
        x = self.fc2(x)
        x = residual + dropout(x, self.dropout, self.training)
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        return x
