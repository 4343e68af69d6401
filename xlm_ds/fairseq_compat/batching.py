"""fairseq-fixed 0.12.3.1's ``data_utils.batch_by_size`` drops the last
batch when its size is not a multiple of ``--required-batch-size-multiple``
(default 8). In training that loses a few samples per epoch; in
fairseq-generate and validation it silently leaves sentences out (4 of the
sample's 500 test sentences were never translated, and BLEU was computed
on the rest). The remainder is kept as a final, smaller batch, as upstream
fairseq does."""
import numpy as np


def apply() -> None:
    from fairseq.data import data_utils

    batch_by_size = data_utils.batch_by_size

    def batch_by_size_keeping_remainder(indices, *args, **kwargs):
        batches = batch_by_size(indices, *args, **kwargs)
        n = sum(len(b) for b in batches)
        if n < len(indices):
            seen = set(np.concatenate(batches).tolist()) if batches else set()
            rest = np.asarray([i for i in indices if int(i) not in seen], dtype=np.int64)
            batches = list(batches) + [rest]
        return batches

    batch_by_size_keeping_remainder.__wrapped__ = batch_by_size
    data_utils.batch_by_size = batch_by_size_keeping_remainder
