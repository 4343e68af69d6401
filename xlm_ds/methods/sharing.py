"""Sharing ablations (Conneau et al. 2020, "Emerging cross-lingual
structure in pretrained language models"): share only the top ``k``
transformer blocks between languages; the lower blocks are one copy per
language (``--shared-top-layers k`` on the ``xlm_lm`` model; -1, the
default, shares everything).

A language-specific block runs each token through its own language's copy
(selected by the token's language id), so a monolingual sentence (MLM/CLM)
goes through exactly its language's parameters. In a TLM pair, queries of a
token use its language's copy while attending over keys/values computed by
the same copy from the whole pair (the block is applied to the whole
sequence once per language present and the outputs are selected per token).
"""
import copy

import torch
from torch import nn


class LanguageRoutedLayer(nn.Module):
    """One block per language; ``forward`` selects per token by ``langs``."""

    routes_by_language = True

    def __init__(self, layer: nn.Module, n_langs: int):
        super().__init__()
        if n_langs < 1:
            raise ValueError("language-specific layers need at least one language")
        self.per_lang = nn.ModuleList(
            [layer] + [copy.deepcopy(layer) for _ in range(n_langs - 1)]
        )
        for block in list(self.per_lang)[1:]:  # independent initialisations
            for p in block.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def forward(self, x, key_padding_mask=None, causal=False, langs=None):
        if langs is None:
            raise ValueError(
                "this model has language-specific layers (--shared-top-layers): "
                "pass language ids (src_langs) with the tokens"
            )
        present = torch.unique(langs).tolist()
        if len(present) == 1:
            return self.per_lang[present[0]](x, key_padding_mask=key_padding_mask, causal=causal)
        out = torch.zeros_like(x)
        for lang in present:
            y = self.per_lang[lang](x, key_padding_mask=key_padding_mask, causal=causal)
            out = torch.where(langs.eq(lang).unsqueeze(-1), y, out)
        return out


def share_top_layers(encoder: nn.Module, k: int, n_langs: int) -> nn.Module:
    """Makes all but the top ``k`` blocks of ``encoder.layers`` language
    specific (in place). k < 0 or k >= number of blocks: no change."""
    n = len(encoder.layers)
    if k < 0 or k >= n:
        return encoder
    for i in range(n - k):
        encoder.layers[i] = LanguageRoutedLayer(encoder.layers[i], n_langs)
    return encoder


def shared_parameters(encoder: nn.Module, lang_a: int, lang_b: int):
    """(shared, distinct) lists of block indices for two languages, decided
    by parameter object identity."""
    shared, distinct = [], []
    for i, layer in enumerate(encoder.layers):
        a = _block(layer, lang_a)
        b = _block(layer, lang_b)
        ids_a = {id(p) for p in a.parameters()}
        ids_b = {id(p) for p in b.parameters()}
        (shared if ids_a == ids_b else distinct).append(i)
    return shared, distinct


def _block(layer, lang):
    return layer.per_lang[lang] if isinstance(layer, LanguageRoutedLayer) else layer
