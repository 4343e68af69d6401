"""The XLM encoder: token + position + language embeddings, a transformer
stack, and a tied LM head that scores only the positions being predicted.

Submodule names follow fairseq's ``TransformerEncoder`` and RoBERTa's LM head
(``embed_tokens``, ``embed_positions``, ``layernorm_embedding``, ``layers.N``,
``layer_norm``, ``lm_head``), which is what lets the same weights initialise a
fairseq translation model and be imported from / exported to XLM-R layouts by
renaming prefixes only.
"""
from typing import List, Optional

import torch
from fairseq.models import FairseqEncoder
from fairseq.modules import LayerNorm, PositionalEmbedding
from torch import nn

from .encoder_parts import ContextEmbedding, XLMLMHead, padding_mask_of, run_block
from .encoder_stages import encoder_layers
from .transformer_layer import TransformerLayer


class XLMEncoder(FairseqEncoder, ContextEmbedding):
    def __init__(self, cfg, dictionary, n_langs: int):
        super().__init__(dictionary)
        dim = cfg.encoder_embed_dim
        self.padding_idx = dictionary.pad()
        self.max_positions_ = cfg.max_positions
        self.dropout = cfg.dropout
        self.embed_tokens = nn.Embedding(len(dictionary), dim, self.padding_idx)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=dim**-0.5)
        nn.init.zeros_(self.embed_tokens.weight[self.padding_idx])
        self.embed_positions = PositionalEmbedding(
            cfg.max_positions, dim, self.padding_idx, learned=not cfg.sinusoidal_positions
        )
        self.embed_langs = nn.Embedding(n_langs, dim) if n_langs > 0 else None
        if self.embed_langs is not None:
            nn.init.normal_(self.embed_langs.weight, mean=0.0, std=dim**-0.5)
        self.normalize_before = cfg.normalize_before
        # post-LN (XLM, XLM-R base/large) normalises the embeddings; pre-LN
        # (XLM-R XL/XXL) normalises the output of the last block instead.
        self.layernorm_embedding = None if cfg.normalize_before else LayerNorm(dim)
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim,
                cfg.encoder_ffn_embed_dim,
                cfg.encoder_attention_heads,
                cfg.dropout,
                cfg.attention_dropout,
                cfg.activation_dropout,
                cfg.activation_fn,
                cfg.normalize_before,
            )
            for _ in range(cfg.encoder_layers)
        )
        self.layer_norm = LayerNorm(dim) if cfg.normalize_before else None
        self.lm_head = XLMLMHead(dim, len(dictionary), cfg.activation_fn, weight=self.embed_tokens.weight)

    def max_positions(self) -> int:
        return self.max_positions_

    def pipeline_layers(self):
        """This encoder's forward pass as the ordered layers that pipeline
        parallelism cuts into stages (models/encoder_stages.py)."""
        return encoder_layers(self)

    def embed(
        self,
        tokens: torch.Tensor,
        langs: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """positions: 0-based per-token positions (TLM resets them on the
        second sentence); None = 0..T-1 over non-padding tokens."""
        return self.add_context(self.embed_tokens(tokens), tokens, langs, positions)

    def extract_features(
        self,
        tokens: torch.Tensor,
        langs: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
        causal: bool = False,
        return_all_hiddens: bool = False,
    ):
        """Returns (features (B, T, C), list of hidden states: embeddings then
        each layer's output, filled only with ``return_all_hiddens``)."""
        padding_mask = padding_mask_of(tokens, self.padding_idx)
        x = self.embed(tokens, langs, positions)
        hiddens: List[torch.Tensor] = [x] if return_all_hiddens else []
        for layer in self.layers:
            x = run_block(layer, x, padding_mask, causal, langs)
            if return_all_hiddens:
                hiddens.append(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
            if return_all_hiddens:
                hiddens[-1] = x
        return x, hiddens

    def forward(
        self,
        src_tokens: torch.Tensor,
        src_lengths: Optional[torch.Tensor] = None,
        src_langs: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
        causal: bool = False,
        masked_tokens: Optional[torch.Tensor] = None,
        features_only: bool = False,
        return_all_hiddens: bool = False,
    ):
        """Scores only ``masked_tokens`` positions (a bool mask) when given:
        the vocabulary projection is the largest matmul of a small model, and
        MLM predicts 15% of the positions."""
        x, hiddens = self.extract_features(
            src_tokens, src_langs, positions, causal, return_all_hiddens
        )
        extra = {"inner_states": hiddens}
        if features_only:
            return x, extra
        return self.lm_head(x, masked_tokens=masked_tokens), extra
