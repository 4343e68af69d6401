"""Common base of the MLM, CLM and TLM sample datasets: one sample is a
dict of 1-D tensors (``source``, ``target``, ``langs``, optional
``positions``) and batches are right-padded to the longest sample.

Randomness (masking, shuffles) is drawn from a Generator seeded by (the
stream's seed, epoch, draw), so a sample is the same whichever worker builds
it and whenever a resumed run rebuilds it, and differs between epochs.
``draw`` is the sample's position in the epoch's stream (see
``epoch_streams.py``): a block drawn twice in one epoch is masked twice,
differently.
"""
import zlib
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils


def stream_seed(seed: int, stream: str) -> int:
    """A 32-bit seed of its own for each stream (``"mlm:en"``), so that two
    languages' masks and resampling draws are not the same random numbers."""
    return zlib.crc32(f"{seed}:{stream}".encode("utf-8"))


class ObjectiveDataset(FairseqDataset):
    """Subclasses implement ``build(index, draw)``."""

    objective: str = "?"

    def __init__(self, pad_idx: int, seed: int):
        super().__init__()
        self.pad_idx = pad_idx
        self.seed = seed
        self.epoch = 1

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # masks change every epoch

    def set_epoch(self, epoch, **unused):
        super().set_epoch(epoch)
        self.epoch = epoch

    def rng(self, draw: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, draw])

    def __getitem__(self, index):
        return self.build(index, index)

    def build(self, index: int, draw: int) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def num_tokens(self, index):
        return int(self.sizes[index])

    def size(self, index):
        return int(self.sizes[index])

    def ordered_indices(self):
        return np.arange(len(self), dtype=np.int64)

    def collater(self, samples: List[Dict[str, torch.Tensor]]) -> Optional[dict]:
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}
        pad = self.pad_idx

        def stack(key, pad_value):
            return data_utils.collate_tokens([s[key] for s in samples], pad_value)

        src = stack("source", pad)
        batch = {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "objective": self.objective,
            "nsentences": len(samples),
            "ntokens": int(src.ne(pad).sum()),
            "net_input": {
                "src_tokens": src,
                "src_lengths": torch.tensor([len(s["source"]) for s in samples]),
                # language 0 under padding is harmless: padded positions are
                # masked out of attention and of the loss
                "src_langs": stack("langs", 0),
            },
            "target": stack("target", pad),
        }
        if samples[0].get("positions") is not None:
            batch["net_input"]["positions"] = stack("positions", 0)
        if self.objective == "clm":
            batch["net_input"]["causal"] = True
        return batch
