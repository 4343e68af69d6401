"""Read access to a directory written by ``xlm-ds-prepare``: its manifest,
dictionary and binarized datasets, with errors that say which file is
missing and which command makes it."""
import json
import os
from typing import List

from fairseq.data import Dictionary, data_utils


class DataDirectoryError(FileNotFoundError):
    pass


class DataDirectory:
    def __init__(self, path: str):
        self.path = path
        manifest = os.path.join(path, "manifest.json")
        if not os.path.isfile(manifest):
            raise DataDirectoryError(
                f"{manifest}: not found; a data directory is made by xlm-ds-prepare "
                "(its manifest.json is written last, so a missing one means the "
                "preparation did not finish)"
            )
        with open(manifest, encoding="utf-8") as f:
            self.manifest = json.load(f)
        self.languages: List[str] = list(self.manifest["languages"])
        splits = self.manifest.get("splits", {})
        names = {name for split in splits.values() for name in split}
        self.mono_languages = sorted(n for n in names if "-" not in n)
        self.pairs = sorted(n for n in names if "-" in n)

    def load_dictionary(self) -> Dictionary:
        dictionary = Dictionary.load(os.path.join(self.path, "dict.txt"))
        # <mask> is appended at load time (as fairseq's masked_lm does), so
        # dict.txt stays a plain fairseq dictionary that translation reads.
        dictionary.add_symbol("<mask>")
        return dictionary

    def has(self, split: str, name: str) -> bool:
        """Whether ``split`` holds language (or pair) ``name``."""
        return name in self.manifest.get("splits", {}).get(split, {})

    def load(self, split: str, name: str, dictionary: Dictionary):
        prefix = os.path.join(self.path, f"{split}.{name}")
        dataset = data_utils.load_indexed_dataset(prefix, dictionary, dataset_impl="mmap")
        if dataset is None:
            raise DataDirectoryError(
                f"{prefix}.bin/.idx: not found although {self.path}/manifest.json lists "
                f"{split}/{name.split('.')[0]}; the directory is incomplete, re-run xlm-ds-prepare"
            )
        return dataset
