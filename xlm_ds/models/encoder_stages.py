"""The XLM encoder's forward pass as a sequence of layers, each a function
of the previous one's output: what pipeline parallelism cuts into stages
(engine/pipeline.py turns them into DeepSpeed layer specs). Every layer
wraps the encoder's own submodules and runs the encoder's own code
(encoder_parts.py: ``ContextEmbedding``, ``run_block``, ``HeadTransform``), so a pipeline
trains the model that ``XLMEncoder.forward`` runs, with every objective
(MLM, TLM with its reset positions, CLM) and language-specific blocks
(``--shared-top-layers``).

Between layers travels a tuple of tensors (the pipeline sends only tensors
from stage to stage):

====================  ==========================================================
layer                 output
====================  ==========================================================
input (first stage)   tokens, langs, positions, causal, target
TokenTable            token embeddings, tokens, langs, positions, causal, target
ContextStage          x, tokens, langs, causal, target
BlockStage ×L,        x, tokens, langs, causal, target
FinalNormStage (pre-LN)
HeadTransformStage    h: the head's features of the predicted positions (N, C)
TokenTable.project    h @ token tableᵀ (the tied projection)
HeadBiasStage         logits (N, V)
====================  ==========================================================

``positions`` are explicit (:func:`default_positions` where the batch has
none: the same ids fairseq's position tables compute), ``causal`` is a
one-element integer tensor (1 for CLM), ``target`` is the criterion's
target (padding where nothing is predicted). The first and the
second-to-last layer share one ``TokenTable`` (its weight is the LM head's
projection), which the pipeline ties across the stages that hold them.
"""
from typing import Callable, List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .encoder_parts import ContextEmbedding, HeadTransform, padding_mask_of, run_block


def default_positions(tokens: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """0..n-1 over each row's non-padding tokens (what ``embed_positions``
    computes when no positions are given)."""
    mask = tokens.ne(padding_idx).long()
    return (torch.cumsum(mask, dim=1) - 1) * mask


class EncoderSource:
    """The encoder the layers are cut from. A layer takes its submodules
    from here when it is built (only on the stage that runs it);
    :meth:`release` afterwards lets the submodules of other stages be freed."""

    def __init__(self, encoder):
        self.encoder = encoder

    def release(self) -> None:
        self.encoder = None


class TokenTable(nn.Module):
    """The token embedding; its weight is also the LM head's projection."""

    def __init__(self, source: EncoderSource):
        super().__init__()
        self.embed_tokens = source.encoder.embed_tokens

    def forward(self, inputs):
        tokens, langs, positions, causal, target = inputs
        return self.embed_tokens(tokens), tokens, langs, positions, causal, target

    def project(self, h):
        return F.linear(h, self.embed_tokens.weight)


class ContextStage(nn.Module, ContextEmbedding):
    """Positions, languages, embedding layer norm, dropout (the encoder's
    ``add_context``)."""

    def __init__(self, source: EncoderSource):
        super().__init__()
        encoder = source.encoder
        self.padding_idx = encoder.padding_idx
        self.dropout = encoder.dropout
        self.embed_positions = encoder.embed_positions
        self.embed_langs = encoder.embed_langs
        self.layernorm_embedding = encoder.layernorm_embedding

    def forward(self, inputs):
        emb, tokens, langs, positions, causal, target = inputs
        return self.add_context(emb, tokens, langs, positions), tokens, langs, causal, target


class BlockStage(nn.Module):
    """One transformer block (shared, or one copy per language)."""

    def __init__(self, source: EncoderSource, index: int):
        super().__init__()
        self.block = source.encoder.layers[index]
        self.padding_idx = source.encoder.padding_idx

    def forward(self, inputs):
        x, tokens, langs, causal, target = inputs
        mask = padding_mask_of(tokens, self.padding_idx)
        return run_block(self.block, x, mask, bool(causal.item()), langs), tokens, langs, causal, target


class FinalNormStage(nn.Module):
    """The layer norm after the last block (pre-LN models)."""

    def __init__(self, source: EncoderSource):
        super().__init__()
        self.layer_norm = source.encoder.layer_norm

    def forward(self, inputs):
        x, tokens, langs, causal, target = inputs
        return self.layer_norm(x), tokens, langs, causal, target


class HeadTransformStage(nn.Module, HeadTransform):
    """The LM head's dense, activation and layer norm on the predicted
    positions (those whose target is not padding, as the criterion picks)."""

    def __init__(self, source: EncoderSource):
        super().__init__()
        head = source.encoder.lm_head
        self.dense = head.dense
        self.activation_fn = head.activation_fn
        self.layer_norm = head.layer_norm
        self.padding_idx = source.encoder.padding_idx

    def forward(self, inputs):
        x, tokens, langs, causal, target = inputs
        return self.transform(x, target.ne(self.padding_idx))


class HeadBiasStage(nn.Module):
    def __init__(self, source: EncoderSource):
        super().__init__()
        self.bias = source.encoder.lm_head.bias

    def forward(self, logits):
        return logits + self.bias


class Layer(NamedTuple):
    """One layer of the sequence: ``cls(source, *args)`` builds it around
    the encoder's submodules. Layers with the same ``tied`` key share one
    module, run by ``forward`` (default: the module's own). ``state`` maps
    the module's state-dict keys to the encoder's: (own prefix, fairseq
    prefix); None for a use of a tied module whose state another layer
    holds."""

    cls: type
    args: tuple
    state: Optional[tuple]
    tied: str = ""
    forward: Optional[Callable] = None


TIED_TOKENS = "embed_tokens"


def encoder_layers(encoder) -> List[Layer]:
    """The encoder's forward pass as an ordered list of layers."""
    layers = [
        Layer(TokenTable, (), ("", "encoder."), tied=TIED_TOKENS),
        Layer(ContextStage, (), ("", "encoder.")),
    ]
    layers += [Layer(BlockStage, (i,), ("block.", f"encoder.layers.{i}.")) for i in range(len(encoder.layers))]
    if encoder.layer_norm is not None:
        layers.append(Layer(FinalNormStage, (), ("", "encoder.")))
    layers += [
        Layer(HeadTransformStage, (), ("", "encoder.lm_head.")),
        Layer(TokenTable, (), None, tied=TIED_TOKENS, forward=TokenTable.project),
        Layer(HeadBiasStage, (), ("", "encoder.lm_head.")),
    ]
    return layers
