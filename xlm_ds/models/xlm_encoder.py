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
import torch.nn.functional as F
from fairseq.models import FairseqEncoder
from fairseq.models.roberta.model import RobertaLMHead
from fairseq.modules import LayerNorm, PositionalEmbedding
from torch import nn

from .dropout import dropout
from .transformer_layer import TransformerLayer


def padding_mask_of(tokens: torch.Tensor, padding_idx: int) -> Optional[torch.Tensor]:
    """The key padding mask, None when nothing is padded (attention's fast path)."""
    mask = tokens.eq(padding_idx)
    return mask if mask.any() else None


def run_block(block: nn.Module, x, padding_mask, causal: bool, langs):
    """One block of the stack; language-specific blocks (--shared-top-layers)
    route each token by its language."""
    extra = {"langs": langs} if getattr(block, "routes_by_language", False) else {}
    return block(x, key_padding_mask=padding_mask, causal=causal, **extra)


class ContextEmbedding:
    """Adds positions and languages to token embeddings, then layer norm
    (post-LN), dropout and zeroed padding. A mixin over modules with
    ``embed_positions``, ``embed_langs``, ``layernorm_embedding``,
    ``padding_idx`` and ``dropout``: the encoder, and the pipeline's
    embedding stage (models/encoder_stages.py), which holds the encoder's
    own submodules without its token table."""

    def embed_position_ids(self, tokens, positions=None):
        if positions is None:
            return self.embed_positions(tokens)
        # fairseq's tables (learned and sinusoidal) reserve rows 0..padding_idx
        # and do not take explicit positions with a padding index set.
        ids = (positions + self.padding_idx + 1).masked_fill(
            tokens.eq(self.padding_idx), self.padding_idx
        )
        if isinstance(self.embed_positions, nn.Embedding):
            table = self.embed_positions.weight
        else:
            self.embed_positions(tokens)  # grows the sinusoidal table if needed
            table = self.embed_positions.weights.to(tokens.device)
        return F.embedding(ids, table, self.padding_idx)

    def add_context(self, x, tokens, langs=None, positions=None):
        x = x + self.embed_position_ids(tokens, positions)
        if self.embed_langs is not None and langs is not None:
            x = x + self.embed_langs(langs)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = dropout(x, self.dropout, self.training)
        padding_mask = padding_mask_of(tokens, self.padding_idx)
        if padding_mask is not None:
            x = x * (~padding_mask).unsqueeze(-1).type_as(x)
        return x


class HeadTransform:
    """The LM head up to the vocabulary projection, on the predicted
    positions; a mixin over modules with ``dense``, ``activation_fn`` and
    ``layer_norm`` (the head, and the pipeline's head stage)."""

    def transform(self, features, masked_tokens=None):
        if masked_tokens is not None:
            features = features[masked_tokens, :]
        return self.layer_norm(self.activation_fn(self.dense(features)))


class XLMLMHead(RobertaLMHead, HeadTransform):
    """fairseq's RobertaLMHead (same parameters, same names, same
    arithmetic) in two steps, so that pipeline parallelism can run the
    projection on the stage that holds the tied token table."""

    def forward(self, features, masked_tokens=None, **kwargs):
        return F.linear(self.transform(features, masked_tokens), self.weight) + self.bias


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
        from .encoder_stages import encoder_layers

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
