"""A run's data: one ``xlm-ds-prepare`` directory, or several shards of one
corpus given as ``DATA=d0:d1:...`` (fairseq's convention, ``os.pathsep``).

As in fairseq's own tasks, epoch e trains on shard (e-1) mod N, and
validation always reads d0. Every shard is a complete prepared directory
with the same sentencepiece model and dictionary (token ids must mean the
same in every epoch); a shard that differs is refused at start-up, naming
the shard and the first differing entry. A directory written by
``xlm-ds-prepare --num-shards N`` (its manifest lists ``shards``) stands
for ``DIR/shard0:...:DIR/shardN-1``. A language (or pair) may be
missing from some shards: it is warned about once, and the epochs on such
a shard train without it. A resumed run reloads the shard of its epoch.
"""
import json
import logging
import os
from typing import Iterable, List, Sequence

from fairseq.data import Dictionary

from .data_directory import DataDirectory, DataDirectoryError

logger = logging.getLogger(__name__)


class DataShards:
    def __init__(self, paths: Sequence[str]):
        paths = [p for p in paths if p]
        if not paths:
            raise DataDirectoryError("no data directory given")
        self.dirs: List[DataDirectory] = [DataDirectory(p) for p in paths]
        self._check_same_vocabulary()
        self.languages = sorted({lang for d in self.dirs for lang in d.languages})
        self.mono_languages = sorted({lang for d in self.dirs for lang in d.mono_languages})
        self.pairs = sorted({p for d in self.dirs for p in d.pairs})
        self._announced = None

    @classmethod
    def from_data_arg(cls, data: str) -> "DataShards":
        """``DATA`` as fairseq splits it; a directory that ``xlm-ds-prepare
        --num-shards N`` wrote stands for its shards, in order."""
        return cls(shard_paths(data))

    def __len__(self):
        return len(self.dirs)

    @property
    def first(self) -> DataDirectory:
        return self.dirs[0]

    def load_dictionary(self) -> Dictionary:
        return self.first.load_dictionary()

    def _check_same_vocabulary(self):
        first = self.first
        symbols = _symbols(first)
        spm = first.manifest.get("spm", {}).get("sha256")
        for i, shard in enumerate(self.dirs[1:], start=1):
            other = _symbols(shard)
            if other != symbols:
                j = next((j for j, (a, b) in enumerate(zip(other, symbols)) if a != b), min(len(other), len(symbols)))
                here = repr(other[j]) if j < len(other) else "(no entry)"
                there = repr(symbols[j]) if j < len(symbols) else "(no entry)"
                raise DataDirectoryError(
                    f"{os.path.join(shard.path, 'dict.txt')}: shard {i} has another dictionary than shard 0 "
                    f"({first.path}): entry {j} is {here} there but {there} in shard 0. Every shard must be "
                    f"prepared with one vocabulary: xlm-ds-prepare ... --spm-model {first.path}/spm.model "
                    f"--dict {first.path}/dict.txt"
                )
            other_spm = shard.manifest.get("spm", {}).get("sha256")
            if spm and other_spm and other_spm != spm:
                raise DataDirectoryError(
                    f"{os.path.join(shard.path, 'spm.model')}: shard {i} has another sentencepiece model than "
                    f"shard 0 ({first.path}), sha256 {other_spm[:12]}... vs {spm[:12]}...; every shard must be "
                    f"prepared with --spm-model {first.path}/spm.model --dict {first.path}/dict.txt"
                )

    def warn_missing(self, split: str, names: Iterable[str]) -> None:
        """One warning per (shard, name) that some shards have and this one lacks."""
        if len(self.dirs) < 2:
            return
        for i, shard in enumerate(self.dirs):
            missing = [n for n in names if not shard.has(split, n)]
            for n in missing:
                logger.warning("shard %d (%s) has no %s data for %s: its epochs train without it",
                               i, shard.path, split, n)

    def for_split(self, split: str, epoch: int, train: bool) -> DataDirectory:
        """The shard that ``split`` is read from in ``epoch``: (epoch-1) mod N
        for training, d0 otherwise."""
        if not train:
            return self.first
        index = (max(epoch, 1) - 1) % len(self.dirs)
        shard = self.dirs[index]
        if len(self.dirs) > 1 and self._announced != (split, epoch):
            self._announced = (split, epoch)
            logger.info("epoch %d: %s from shard %d of %d: %s", epoch, split, index, len(self.dirs), shard.path)
        return shard


def shard_paths(data: str) -> List[str]:
    """The directories of ``DATA`` (fairseq's ``d0:d1:...``), a sharded
    directory replaced by its shards."""
    from fairseq import utils

    return [shard for path in utils.split_paths(data) for shard in _expand(path)]


def _expand(path: str) -> List[str]:
    manifest = os.path.join(path, "manifest.json")
    if not os.path.isfile(manifest):
        return [path]  # DataDirectory names what is missing
    with open(manifest, encoding="utf-8") as f:
        shards = json.load(f).get("shards")
    return [os.path.join(path, s) for s in shards] if shards else [path]


def _symbols(data: DataDirectory) -> List[str]:
    path = os.path.join(data.path, "dict.txt")
    if not os.path.isfile(path):
        raise DataDirectoryError(f"{path}: not found although {data.path}/manifest.json exists; "
                                 "the directory is incomplete, re-run xlm-ds-prepare")
    return list(Dictionary.load(path).symbols)
