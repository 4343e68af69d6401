"""The pieces of the XLM encoder's forward pass that its pipeline layers
(encoder_stages.py) run too: the padding mask, one block (shared or per
language), the context added to token embeddings, and the LM head in two
steps."""
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.models.roberta.model import RobertaLMHead
from torch import nn

from .dropout import dropout


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
