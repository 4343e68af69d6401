"""MLM and CLM samples: contiguous streams of ``tokens_per_sample`` tokens
cut from a monolingual corpus across sentence boundaries (XLM §3.1-3.2;
sentences keep their ``</s>`` as separator), built on fairseq's
``TokenBlockDataset``."""
from typing import Optional

import numpy as np
import torch
from fairseq.data import TokenBlockDataset

from .masking import MaskingConfig, mask_tokens
from .objective_dataset import ObjectiveDataset


def token_blocks(dataset, block_size: int, pad: int, eos: int) -> TokenBlockDataset:
    return TokenBlockDataset(
        dataset, dataset.sizes, block_size, pad=pad, eos=eos, break_mode="none"
    )


class MaskedStreamDataset(ObjectiveDataset):
    """``<s>`` + a block of the stream, masked 80/10/10."""

    objective = "mlm"

    def __init__(
        self,
        blocks: TokenBlockDataset,
        lang_id: int,
        bos: int,
        masking: MaskingConfig,
        seed: int,
        token_weights: Optional[np.ndarray] = None,
    ):
        super().__init__(masking.pad_idx, seed)
        self.blocks = blocks
        self.lang_id = lang_id
        self.bos = bos
        self.masking = masking
        self.token_weights = token_weights
        self.sizes = np.asarray(blocks.sizes) + 1

    def __len__(self):
        return len(self.blocks)

    def build(self, index, draw):
        block = self.blocks[index].numpy()
        tokens = np.concatenate([[self.bos], block])
        maskable = np.ones(len(tokens), dtype=bool)
        maskable[0] = False
        source, target = mask_tokens(
            tokens, maskable, self.masking, self.rng(draw), self.token_weights
        )
        return {
            "id": index,
            "source": torch.from_numpy(source),
            "target": torch.from_numpy(target),
            "langs": torch.full((len(tokens),), self.lang_id, dtype=torch.long),
        }


class CausalStreamDataset(ObjectiveDataset):
    """Next-token prediction on a block: source = ``<s>`` + block[:-1],
    target = block (every position predicted, causal attention)."""

    objective = "clm"

    def __init__(self, blocks: TokenBlockDataset, lang_id: int, bos: int, pad: int, seed: int):
        super().__init__(pad, seed)
        self.blocks = blocks
        self.lang_id = lang_id
        self.bos = bos
        self.sizes = np.asarray(blocks.sizes)

    def __len__(self):
        return len(self.blocks)

    def build(self, index, draw):
        block = self.blocks[index]
        source = torch.cat([block.new_tensor([self.bos]), block[:-1]])
        return {
            "id": index,
            "source": source,
            "target": block.clone(),
            "langs": torch.full((len(block),), self.lang_id, dtype=torch.long),
        }
