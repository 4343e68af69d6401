"""The objective streams of one epoch: which samples, and with which random
numbers, a batch is built from.

fairseq's ``RoundRobinZipDatasets`` zips the streams (one batch of each per
update, shorter streams wrapping around) but neither forwards ``set_epoch``
nor says that its samples change between epochs (it inherits
``can_reuse_epoch_itr_across_epochs = True``). fairseq-train then reuses
the epoch-1 iterator of an unsharded corpus for the whole run: every later
epoch replays epoch 1's masks, shuffles and language draws, and the blocks
that epoch 1's resampling left out are never trained on.

Here every level of a stream passes the epoch down and builds a sample
with ``build(index, draw)``: ``index`` picks the block (pair, sentence),
``draw`` is the sample's position in the epoch's zipped stream, and the
leaf (``ObjectiveDataset``) seeds its generator with (stream seed, epoch,
draw). So a block drawn twice in one epoch (an upsampled language, or a
short stream wrapping around) is masked twice, differently; each epoch
draws anew; and a resumed run rebuilds exactly what it would have seen.

* ``EpochZipDatasets``: the zip, forwarding the epoch, reusable across
  epochs only when every stream is (so fairseq makes a new epoch iterator);
* ``StreamResampling``: fairseq's ``ResamplingDataset`` (with replacement,
  redrawn every epoch from (seed, epoch)) for one language's share;
* ``StreamConcat``: fairseq's ``ConcatDataset`` of a stream's languages.
"""
from collections import OrderedDict

from fairseq.data import ConcatDataset, ResamplingDataset, RoundRobinZipDatasets


def draw_from(dataset, index: int, draw: int):
    """``dataset.build(index, draw)`` where the dataset takes draws (our
    sample datasets), else ``dataset[index]`` (fairseq's, e.g. UMT's pairs)."""
    build = getattr(dataset, "build", None)
    return build(index, draw) if build is not None else dataset[index]


class StreamResampling(ResamplingDataset):
    def __init__(self, dataset, size_ratio: float, seed: int, epoch: int):
        super().__init__(dataset, replace=True, size_ratio=size_ratio, seed=seed, epoch=epoch)

    def build(self, index, draw):
        return draw_from(self.dataset, int(self._cur_indices.array[index]), draw)

    def __getitem__(self, index):
        return self.build(index, index)


class StreamConcat(ConcatDataset):
    def build(self, index, draw):
        dataset_idx, sample_idx = self._get_dataset_and_sample_index(index)
        return draw_from(self.datasets[dataset_idx], sample_idx, draw)


class EpochZipDatasets(RoundRobinZipDatasets):
    def __init__(self, datasets, eval_key=None):
        super().__init__(datasets, eval_key)
        self.epoch = None

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return all(getattr(ds, "can_reuse_epoch_itr_across_epochs", True) for ds in self.datasets.values())

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        for ds in self.datasets.values():
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            # each stream's order depends on its epoch (resampled sizes)
            self._ordered_indices = None

    def _map_index(self, key, index):
        if self._ordered_indices is None:
            self.ordered_indices()
        return super()._map_index(key, index)

    def __getitem__(self, index):
        if self.eval_key is not None:
            return draw_from(self.datasets[self.eval_key], self._map_index(self.eval_key, index), index)
        return OrderedDict(
            (key, draw_from(ds, self._map_index(key, index), index)) for key, ds in self.datasets.items()
        )
