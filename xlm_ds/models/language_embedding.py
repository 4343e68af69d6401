"""Token embeddings plus a fixed language embedding, for one side of a
translation model.

XLM adds a language embedding to every input token; in a translation model
each side has one language, so the encoder adds the source language's row
and the decoder the target's. Both wrap the *same* token and language tables
(XLM shares all embeddings) and expose ``weight`` so fairseq's decoder ties
its output projection to the token table as usual.
"""
from typing import Optional

import torch
from torch import nn


class LanguageTaggedEmbedding(nn.Module):
    def __init__(self, tokens: nn.Embedding, langs: Optional[nn.Embedding], lang_id: int):
        super().__init__()
        self.tokens = tokens
        self.langs = langs
        self.lang_id = lang_id
        self.embedding_dim = tokens.embedding_dim
        self.num_embeddings = tokens.num_embeddings
        self.padding_idx = tokens.padding_idx

    @property
    def weight(self) -> torch.Tensor:
        return self.tokens.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tokens(tokens)
        if self.langs is not None:
            x = x + self.langs.weight[self.lang_id]
        return x
