"""Fixtures of the interop tests: fairseq RoBERTa/XLM-R checkpoints in the
published layout and xlm_ds checkpoints, all tiny, random and built here
(no download). Shared as fixtures because the suite runs with
--import-mode=importlib."""
import argparse
import gzip
import os
import random
import shutil

import pytest
import torch

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "xlm_ds", "sample_corpus")
DIM, FFN, LAYERS, HEADS, MAX_POS = 64, 128, 2, 4, 128


def _sample_sentences(n_per_lang=4):
    """Multilingual test input: the first lines of the shipped en/de/fr sample."""
    out = []
    for lang in ("en", "de", "fr"):
        with gzip.open(os.path.join(SAMPLE, f"valid.{lang}.gz"), "rt", encoding="utf-8") as f:
            out += [(lang, next(f).rstrip("\n")) for _ in range(n_per_lang)]
    return out


@pytest.fixture(scope="session")
def sentences():
    """[(lang, sentence)] in en, de, fr."""
    return _sample_sentences()


def _randomize(model, seed):
    """Layer norms and biases away from 1/0, so a swapped or missing one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name or name.endswith("bias"):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed_langs" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def _write_shuffled_dict(src_dict, dest, seed):
    """The same pieces in another order (like a frequency-sorted fairseq dict)."""
    with open(src_dict, encoding="utf-8") as f:
        lines = f.read().splitlines()
    random.Random(seed).shuffle(lines)
    with open(dest, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def make_roberta(prepared_sample, tmp_path_factory):
    """``make_roberta(pre_ln=False, legacy=False, cfg_style="args", shuffled_dict=False, seed=0)``
    -> (source dir with model.pt + dict.txt + sentencepiece.bpe.model, fairseq model, dictionary).

    ``legacy``: state dict in the 2019 names of the published XLM-R files
    (decoder.sentence_encoder.*, emb_layer_norm, fused in_proj_weight/bias).
    ``cfg_style``: "args" (legacy Namespace, as published) or "cfg" (fairseq >= 0.10)."""
    from fairseq.models.roberta import RobertaModel
    from fairseq.models.roberta.model import base_architecture

    from xlm_ds.interop.checkpoint import load_task_dictionary
    from xlm_ds.interop.roberta_source import _Task

    def make(pre_ln=False, legacy=False, cfg_style="args", shuffled_dict=False, seed=0, activation="gelu"):
        src = tmp_path_factory.mktemp("xlmr_src")
        dict_path = os.path.join(prepared_sample, "dict.txt")
        if shuffled_dict:
            _write_shuffled_dict(dict_path, src / "dict.txt", seed)
        else:
            shutil.copyfile(dict_path, src / "dict.txt")
        shutil.copyfile(os.path.join(prepared_sample, "spm.model"), src / "sentencepiece.bpe.model")
        d = load_task_dictionary(str(src / "dict.txt"))
        args = argparse.Namespace(
            arch="roberta_base", task="multilingual_masked_lm", encoder_layers=LAYERS, encoder_embed_dim=DIM,
            encoder_ffn_embed_dim=FFN, encoder_attention_heads=HEADS, max_positions=MAX_POS,
            encoder_normalize_before=pre_ln, layernorm_embedding=not pre_ln, activation_fn=activation,
        )
        base_architecture(args)
        torch.manual_seed(seed)
        model = _randomize(RobertaModel.build_model(args, _Task(d)), seed).eval()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        if legacy:
            state = _legacy_names(state)
        ckpt = {
            "model": state,
            "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": "FairseqAdam",
                                   "lr_scheduler_state": {"best": None}, "num_updates": 0}],
            "extra_state": {"train_iterator": {"epoch": 1}},
        }
        if cfg_style == "args":
            ckpt["args"] = args
        else:
            ckpt["cfg"] = {"model": args, "task": {"_name": "masked_lm"}}
        torch.save(ckpt, src / "model.pt")
        return str(src), model, d

    return make


def _legacy_names(state):
    out = {}
    for k, v in state.items():
        k = k.replace("encoder.sentence_encoder.", "decoder.sentence_encoder.")
        k = k.replace("encoder.lm_head.", "decoder.lm_head.").replace(".layernorm_embedding.", ".emb_layer_norm.")
        out[k] = v
    for k in [k for k in out if k.endswith("self_attn.q_proj.weight")]:
        p = k[: -len("q_proj.weight")]
        for kind in ("weight", "bias"):
            out[p + f"in_proj_{kind}"] = torch.cat([out.pop(p + f"{x}_proj.{kind}") for x in "qkv"])
    out.pop("decoder.sentence_encoder.version", None)
    return out


@pytest.fixture(scope="session")
def make_xlm_checkpoint(prepared_sample, tmp_path_factory):
    """``make_xlm_checkpoint(**xlm_lm config fields, seed=0)`` -> path of a
    random xlm_ds checkpoint over the sample vocabulary, trained on (as far
    as its config says) the prepared sample."""
    from xlm_ds.interop.checkpoint import (
        build_xlm_model,
        load_task_dictionary,
        make_checkpoint,
        model_config,
        save_checkpoint,
    )

    symbols = load_task_dictionary(os.path.join(prepared_sample, "dict.txt")).symbols

    def make(seed=0, **fields):
        fields = {"encoder_layers": LAYERS, "encoder_embed_dim": DIM, "encoder_ffn_embed_dim": FFN,
                  "encoder_attention_heads": HEADS, "max_positions": MAX_POS, "languages": "de,en,fr", **fields}
        cfg = model_config(**fields)
        torch.manual_seed(seed)
        model = _randomize(build_xlm_model(cfg, symbols), seed)
        path = tmp_path_factory.mktemp("xlm_ckpt") / "checkpoint.pt"
        save_checkpoint(make_checkpoint(cfg, model.state_dict(), symbols, task_data=prepared_sample), str(path))
        return str(path)

    return make


def _encode(sp, dictionary, texts):
    """<s> + pieces by name + </s>, right-padded: what xlm-ds-prepare + the xlm task feed the model."""
    rows = [[dictionary.bos()] + [dictionary.index(p) for p in sp.encode(t, out_type=str)] + [dictionary.eos()]
            for t in texts]
    width = max(map(len, rows))
    return torch.tensor([r + [dictionary.pad()] * (width - len(r)) for r in rows])


@pytest.fixture(scope="session")
def encode():
    """``encode(sp, dictionary, texts)`` -> right-padded xlm_ds ids (B, T)."""
    return _encode
