"""Common base of the MLM, CLM and TLM sample datasets: one sample is a
dict of 1-D tensors (``source``, ``target``, ``langs``, optional
``positions``) and batches are right-padded to the longest sample.

Randomness (masking) is drawn from a Generator seeded by (seed, epoch,
index), so a sample is the same whichever worker builds it and whenever a
resumed run rebuilds it.
"""
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils


class ObjectiveDataset(FairseqDataset):
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

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

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
