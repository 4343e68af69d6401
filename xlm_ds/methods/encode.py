"""Raw text -> sentence representations with a pretraining checkpoint: the
model rebuilt from the checkpoint's own config and dictionary, the text
segmented with the checkpoint's sentencepiece model (``spm.model`` of the
data directory recorded in the checkpoint, or one given explicitly)."""
import json
import os
from typing import List, Optional, Sequence

import numpy as np
import torch
from fairseq.data import Dictionary


class EncodeError(ValueError):
    pass


class SentenceEncoder:
    def __init__(self, model, dictionary, sp, languages: List[str], data_dir: Optional[str] = None):
        self.model, self.dictionary, self.sp = model, dictionary, sp
        self.languages = languages
        self.data_dir = data_dir
        from ..data.binarize import id_map

        self.offsets = None  # separate per-language vocabularies (methods/separate_vocab.py)
        manifest = os.path.join(data_dir, "manifest.json") if data_dir else None
        sep = None
        if manifest and os.path.isfile(manifest):
            with open(manifest, encoding="utf-8") as f:
                sep = json.load(f).get("separate_vocabularies")
        if sep:
            shared = Dictionary.load(os.path.join(data_dir, "dict.shared.txt"))
            self.lut = id_map(sp, shared).astype(np.int64)
            self.offsets = sep
        else:
            self.lut = id_map(sp, dictionary).astype(np.int64)

    @classmethod
    def load(cls, path: str, spm_model: Optional[str] = None) -> "SentenceEncoder":
        import sentencepiece as spm

        from ..interop import InteropError
        from ..interop.checkpoint import dictionary_from_symbols, load_xlm_model

        if not os.path.isfile(path):
            raise EncodeError(f"{path}: checkpoint not found")
        try:
            model, pre = load_xlm_model(path)
        except InteropError as e:
            raise EncodeError(str(e)) from None
        data_dir = pre.task_data.split(os.pathsep)[0] if pre.task_data else None
        if spm_model is None:
            spm_model = os.path.join(data_dir, "spm.model") if data_dir else None
            if not spm_model or not os.path.isfile(spm_model):
                raise EncodeError(
                    f"{path}: no sentencepiece model at {spm_model} (the data directory recorded "
                    "in the checkpoint); pass --spm-model PRETRAIN_DATA/spm.model"
                )
        sp = spm.SentencePieceProcessor(model_file=spm_model)
        return cls(model, dictionary_from_symbols(pre.dictionary_symbols), sp, pre.languages, data_dir)

    def lang_id(self, lang: str) -> int:
        if lang not in self.languages:
            raise EncodeError(f"language {lang!r} was not seen in pretraining (known: {', '.join(self.languages)})")
        return self.languages.index(lang)

    def token_ids(self, sentences: Sequence[str], max_len: Optional[int] = None,
                  lang: Optional[str] = None) -> List[np.ndarray]:
        max_len = max_len or self.model.max_positions()
        lut = self.lut
        if self.offsets is not None:
            if lang not in self.offsets["offsets"]:
                raise EncodeError(f"separate vocabularies: no vocabulary for language {lang!r}")
            off = self.offsets["offsets"][lang]
            lut = np.where(lut < self.offsets["nspecial"], lut, lut + off)
        out = []
        for ids in self.sp.encode(list(sentences), add_eos=True):
            t = np.concatenate([[self.dictionary.bos()], lut[np.asarray(ids, dtype=np.int64)]])
            if len(t) > max_len:
                t = np.concatenate([t[: max_len - 1], t[-1:]])
            out.append(t)
        return out

    @torch.no_grad()
    def embed(self, sentences: Sequence[str], lang: str, layer: int = -1, batch_size: int = 64) -> torch.Tensor:
        """Mean-pooled layer-``layer`` representations (N, C); layer 0 is the
        embedding output, 1..L the blocks, -1 the last."""
        lid = self.lang_id(lang) if self.languages else 0
        ids = self.token_ids(sentences, lang=lang)
        order = np.argsort([len(t) for t in ids], kind="stable")
        pad = self.dictionary.pad()
        out = torch.empty(len(ids), self.model.encoder.embed_tokens.embedding_dim)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            tokens = _pad([ids[i] for i in idx], pad)
            langs = torch.full_like(tokens, lid)
            _, hiddens = self.model.encoder.extract_features(tokens, langs, return_all_hiddens=True)
            x = hiddens[layer]
            mask = tokens.ne(pad).unsqueeze(-1).type_as(x)
            out[torch.as_tensor(idx)] = ((x * mask).sum(1) / mask.sum(1)).float()
        return out


def _pad(seqs, pad):
    n = max(len(s) for s in seqs)
    t = torch.full((len(seqs), n), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        t[i, : len(s)] = torch.as_tensor(s)
    return t
