"""TLM samples (XLM §3.3): a translation pair concatenated, tokens masked on
both sides, positions restarting at 0 on the second sentence and every token
tagged with its own language, so the model can attend across languages to
predict a masked word."""
from typing import Optional

import numpy as np
import torch

from .masking import MaskingConfig, mask_tokens
from .objective_dataset import ObjectiveDataset


class TLMPairDataset(ObjectiveDataset):
    objective = "tlm"

    def __init__(
        self,
        src,
        tgt,
        src_lang_id: int,
        tgt_lang_id: int,
        bos: int,
        masking: MaskingConfig,
        max_tokens: int,
        seed: int,
        token_weights: Optional[np.ndarray] = None,
    ):
        super().__init__(masking.pad_idx, seed)
        if len(src) != len(tgt):
            raise ValueError(f"parallel datasets differ in length: {len(src)} vs {len(tgt)}")
        self.src, self.tgt = src, tgt
        self.src_lang_id, self.tgt_lang_id = src_lang_id, tgt_lang_id
        self.bos = bos
        self.masking = masking
        self.token_weights = token_weights
        # each side is "<s> sentence </s>", cut to half of the sample budget
        self.side_max = max_tokens // 2
        self.sizes = np.minimum(src.sizes + 1, self.side_max) + np.minimum(
            tgt.sizes + 1, self.side_max
        )

    def __len__(self):
        return len(self.src)

    def _side(self, sentence: torch.Tensor) -> np.ndarray:
        tokens = np.concatenate([[self.bos], sentence.numpy()])
        if len(tokens) > self.side_max:
            tokens = np.concatenate([tokens[: self.side_max - 1], tokens[-1:]])
        return tokens

    def build(self, index, draw):
        a, b = self._side(self.src[index]), self._side(self.tgt[index])
        tokens = np.concatenate([a, b])
        maskable = np.ones(len(tokens), dtype=bool)
        maskable[[0, len(a)]] = False
        source, target = mask_tokens(
            tokens, maskable, self.masking, self.rng(draw), self.token_weights
        )
        langs = np.concatenate(
            [np.full(len(a), self.src_lang_id), np.full(len(b), self.tgt_lang_id)]
        )
        positions = np.concatenate([np.arange(len(a)), np.arange(len(b))])
        return {
            "id": index,
            "source": torch.from_numpy(source),
            "target": torch.from_numpy(target),
            "langs": torch.from_numpy(langs).long(),
            "positions": torch.from_numpy(positions).long(),
        }
