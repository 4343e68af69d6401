"""Raw text -> sentence representations with a pretraining checkpoint: the
model rebuilt from the checkpoint's own config and dictionary, the text
segmented with the checkpoint's sentencepiece model (``spm.model`` of the
data directory recorded in the checkpoint, or one given explicitly)."""
import json
import os
from typing import List, Optional, Sequence

import numpy as np
import torch
from fairseq import checkpoint_utils
from fairseq.data import Dictionary

from ..fairseq_compat import trusted_checkpoints


class EncodeError(ValueError):
    pass


class _Task:  # what XLMModel.build_model reads from a task
    def __init__(self, dictionary, languages):
        self.source_dictionary = dictionary
        self.languages = languages


def dictionary_from_symbols(symbols: Sequence[str]) -> Dictionary:
    d = Dictionary()
    for s in symbols[d.nspecial:]:
        d.add_symbol(s)
    if list(d.symbols) != list(symbols):
        raise EncodeError("cannot rebuild the checkpoint's dictionary from its symbols")
    return d


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

        from ..models.xlm_model import XLMModel

        if not os.path.isfile(path):
            raise EncodeError(f"{path}: checkpoint not found")
        with trusted_checkpoints():
            ckpt = checkpoint_utils.load_checkpoint_to_cpu(path)
        cfg = ckpt["cfg"]
        model_cfg, task_cfg = cfg["model"], cfg.get("task")
        if "encoder.embed_tokens.weight" not in ckpt["model"]:
            raise EncodeError(f"{path}: not an xlm_ds pretraining checkpoint")
        data_dir = getattr(task_cfg, "data", None) if task_cfg is not None else None
        data_dir = data_dir.split(os.pathsep)[0] if data_dir else None
        if spm_model is None:
            spm_model = os.path.join(data_dir, "spm.model") if data_dir else None
            if not spm_model or not os.path.isfile(spm_model):
                raise EncodeError(
                    f"{path}: no sentencepiece model at {spm_model} (the data directory recorded "
                    "in the checkpoint); pass --spm-model PRETRAIN_DATA/spm.model"
                )
        symbols = list((ckpt.get("task_state") or {}).get("dictionary_symbols", []))
        if symbols:
            dictionary = dictionary_from_symbols(symbols)
        elif data_dir and os.path.isfile(os.path.join(data_dir, "dict.txt")):
            dictionary = Dictionary.load(os.path.join(data_dir, "dict.txt"))
            dictionary.add_symbol("<mask>")
        else:
            raise EncodeError(f"{path}: the checkpoint records no dictionary and its data directory is gone")
        languages = [x for x in (getattr(model_cfg, "languages", "") or "").split(",") if x]
        model = XLMModel.build_model(model_cfg, _Task(dictionary, languages))
        model.load_state_dict(ckpt["model"], strict=True)
        model.eval()
        sp = spm.SentencePieceProcessor(model_file=spm_model)
        return cls(model, dictionary, sp, languages, data_dir)

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
