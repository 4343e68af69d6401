"""Separate per-language vocabularies (Conneau et al. 2020 ablation: no
shared subwords, i.e. no anchor points) by a vocabulary-offset scheme.

``python -m xlm_ds.methods.separate_vocab DATA OUT`` rewrites a directory
made by ``xlm-ds-prepare`` so that every language has its own copy of every
normal symbol: id ``s`` (s >= 4, the fairseq specials stay shared) of
language number ``i`` (the manifest's language order) becomes
``4 + i * (V - 4) + (s - 4)``, with V the original dictionary size; the
symbols of the new ``dict.txt`` are ``PIECE@LANG``. The segmentation stays
the shared sentencepiece model (so segmentation is not what differs, only
whether equal pieces share an embedding). The original dictionary is kept
as ``dict.shared.txt`` and the manifest records the scheme under
``separate_vocabularies`` (read by ``xlm-ds-retrieval``/``xlm-ds-classify``
to encode raw text). Everything else (``xlm`` task, ``--objectives``) works
unchanged on the new directory.
"""
import argparse
import glob
import hashlib
import json
import os
import shutil
import sys

import numpy as np
from fairseq.data import Dictionary, indexed_dataset


def offset_ids(ids: np.ndarray, lang_index: int, n_normal: int, nspecial: int = 4) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids < nspecial, ids, ids + lang_index * n_normal)


def separate_vocabularies(data: str, out: str) -> dict:
    with open(os.path.join(data, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    langs = list(manifest["languages"])
    d = Dictionary.load(os.path.join(data, "dict.txt"))
    nspecial = d.nspecial
    normal = d.symbols[nspecial:]
    n_normal = len(normal)
    os.makedirs(out, exist_ok=True)
    new_syms = [f"{s}@{lang}" for lang in langs for s in normal]
    if len(set(new_syms)) != len(new_syms):
        raise ValueError("PIECE@LANG symbols collide; cannot separate this vocabulary")
    with open(os.path.join(out, "dict.txt"), "w", encoding="utf-8") as f:
        for lang in langs:
            for i, s in enumerate(normal):
                f.write(f"{s}@{lang} {d.count[nspecial + i]}\n")
    shutil.copyfile(os.path.join(data, "dict.txt"), os.path.join(out, "dict.shared.txt"))
    vocab = nspecial + len(langs) * n_normal
    from ..data.binarize import make_builder

    for bin_path in sorted(glob.glob(os.path.join(data, "*.bin"))):
        prefix = bin_path[: -len(".bin")]
        name = os.path.basename(prefix)  # split.LANG or split.PAIR.LANG
        lang = name.split(".")[-1]
        ds = indexed_dataset.MMapIndexedDataset(prefix)
        items = [ds[i].numpy() for i in range(len(ds))]
        flat = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
        flat = offset_ids(flat, langs.index(lang), n_normal, nspecial)
        builder = make_builder(os.path.join(out, name), vocab)
        builder.add_items(flat, np.asarray(ds.sizes))
        builder.finalize()
    for extra in glob.glob(os.path.join(data, "spm.*")):
        shutil.copyfile(extra, os.path.join(out, os.path.basename(extra)))
    with open(os.path.join(out, "dict.txt"), "rb") as f:
        manifest["dict_sha256"] = hashlib.sha256(f.read()).hexdigest()
    manifest["dict_size"] = vocab
    manifest["separate_vocabularies"] = {
        "scheme": "offset", "source": os.path.abspath(data), "nspecial": nspecial,
        "n_normal": n_normal, "offsets": {lang: i * n_normal for i, lang in enumerate(langs)},
    }
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest["separate_vocabularies"]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m xlm_ds.methods.separate_vocab", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="directory written by xlm-ds-prepare")
    p.add_argument("out", help="new data directory with per-language vocabularies")
    args = p.parse_args(argv)
    info = separate_vocabularies(args.data, args.out)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
