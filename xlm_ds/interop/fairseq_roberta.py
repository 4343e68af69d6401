"""Import a fairseq RoBERTa / XLM-R checkpoint as an xlm_ds ``xlm_lm`` model.

Source layout (as fairseq publishes ``xlmr.base``/``xlmr.large``): a
directory with ``model.pt`` (``{"model": state dict, "args" or "cfg": ...}``),
``dict.txt`` and ``sentencepiece.bpe.model``.

State-dict names. Current fairseq writes ``encoder.sentence_encoder.*`` and
``encoder.lm_head.*``; checkpoints from 2019 (the published XLM-R ones among
them) write ``decoder.sentence_encoder.*``, ``...emb_layer_norm.*`` and may
hold a fused ``self_attn.in_proj_weight``. They are brought to the current
names by fairseq's own upgrade code (``RobertaModel.upgrade_state_dict``,
which renames and calls every submodule's ``upgrade_state_dict_named``), run
on a copy of the model built on the ``meta`` device, so no second copy of
the weights is allocated. After that the mapping is a prefix rename, since
xlm_ds uses fairseq's submodule names::

    encoder.sentence_encoder.X  ->  encoder.X      (embed_tokens, embed_positions,
                                                   layernorm_embedding, layers.N.*, layer_norm)
    encoder.lm_head.X           ->  encoder.lm_head.X

Vocabulary. Token ids are ``dict.txt`` + ``<mask>`` (fairseq's masked_lm and
xlm_ds's ``xlm`` task both append ``<mask>`` at load time), which is the row
order of the checkpoint's embedding. The import copies ``dict.txt``
unchanged, so ids stay those rows, and the sentencepiece model as
``spm.model``; ``xlm-ds-prepare`` maps sentencepiece pieces to dictionary
ids *by name*, so new data binarized with ``--spm-model OUT/spm.model --dict
OUT/dict.txt`` gets exactly the ids fairseq's XLM-R would have used.

Language embeddings (``lang_embeddings=True``): RoBERTa/XLM-R has none. A
table with one row per language is added and every row, of the listed and of
the added languages alike, starts at **zero**: the imported model computes
exactly what the source computed whatever language ids it is given, and a
zero row still receives the gradient of its language's tokens during
continued pretraining, so each language learns its own offset from there.
Language ids are the sorted language names, the order xlm-ds-prepare writes
to a manifest and the ``xlm`` task numbers languages in.
"""
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import InteropError
from .checkpoint import arch_flags, build_xlm_model, make_checkpoint, model_config, save_checkpoint
from .roberta_source import (
    build_fairseq_roberta,
    check_vocabulary,
    find_source_files,
    infer_structure,
    read_checkpoint,
    source_config,
    to_xlm_state,
    upgrade_state,
)

logger = logging.getLogger(__name__)

#: file names written to the output directory
OUT_CHECKPOINT, OUT_DICT, OUT_SPM, OUT_SPM_VOCAB, OUT_REPORT = (
    "model.pt", "dict.txt", "spm.model", "spm.vocab", "import.json",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}



@dataclass
class ImportReport:
    out_dir: str
    checkpoint: str
    structure: Dict
    model_cfg: Dict
    languages: List[str]
    added_languages: List[str]
    lang_embeddings: bool
    dictionary_size: int
    arch_flags: List[str]
    dropped_keys: List[str] = field(default_factory=list)
    max_abs_diff: Optional[float] = None


def _language_list(text: Optional[str], flag: str) -> List[str]:
    langs = [x.strip() for x in (text or "").split(",") if x.strip()]
    for lang in langs:
        if not re.fullmatch(r"[A-Za-z0-9_]+", lang):
            raise InteropError(f"{flag}: {lang!r} is not a language id (letters, digits, _)")
    return langs


def resolve_languages(
    languages: Optional[str], data: Optional[str], add_languages: Optional[str]
) -> Tuple[List[str], List[str]]:
    """(all languages in id order, the added ones).

    Ids follow the sorted order, because that is the order of the
    ``languages`` xlm-ds-prepare writes to a manifest, i.e. the ``xlm``
    task's language ids. With ``data``, every added language must be one of
    its languages: the task builds one embedding row per data language, and a
    checkpoint with another number of rows does not restore."""
    if languages and data:
        raise InteropError("give --languages or --data, not both")
    base = _language_list(languages, "--languages")
    if data:
        manifest = os.path.join(data, "manifest.json")
        if not os.path.isfile(manifest):
            raise InteropError(f"--data {data}: no manifest.json; expected a directory written by xlm-ds-prepare")
        with open(manifest, encoding="utf-8") as f:
            base = list(json.load(f)["languages"])
    added = _language_list(add_languages, "--add-languages")
    if data:
        outside = [x for x in added if x not in base]
        if outside:
            raise InteropError(
                f"--add-languages {','.join(outside)}: not languages of --data {data} ({','.join(base)}); "
                "prepare the data with them first (the model gets one language embedding per data language)"
            )
    return sorted(set(base) | set(added)), sorted(set(added))


# ------------------------------------------------------------------ import
def import_roberta(
    src: str,
    out_dir: str,
    *,
    dict_path: Optional[str] = None,
    spm_path: Optional[str] = None,
    languages: Optional[str] = None,
    data: Optional[str] = None,
    add_languages: Optional[str] = None,
    lang_embeddings: bool = False,
    heads: Optional[int] = None,
    dtype: str = "float32",
    overwrite: bool = False,
    verify: bool = True,
    command: Optional[Sequence[str]] = None,
) -> ImportReport:
    """Write ``out_dir/{model.pt, dict.txt, spm.model, spm.vocab, import.json}``."""
    from ..data.atomic_dir import atomic_output_dir
    from ..data.vocab_training import write_spm_vocab

    if dtype not in DTYPES:
        raise InteropError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    _check_out_dir(out_dir, overwrite)
    all_langs, added = resolve_languages(languages, data, add_languages)
    if lang_embeddings and not all_langs:
        raise InteropError(
            "--lang-embeddings needs the languages, in the id order of the data you will train on: "
            "--data DATA_DIR (reads its manifest.json) or --languages en,de,..."
        )
    ckpt_path, dict_path, spm_path = find_source_files(src, dict_path, spm_path)
    logger.info("reading %s", ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise InteropError(f"{ckpt_path}: no 'model' state dict; expected a fairseq checkpoint")
    cfg = source_config(ckpt)
    state = ckpt["model"]
    structure = infer_structure(state, cfg, heads)
    dictionary, sp = check_vocabulary(dict_path, spm_path, structure.vocab_size)
    if dictionary.pad() != 1:
        raise InteropError(f"{dict_path}: <pad> is id {dictionary.pad()}; expected fairseq's 1")
    state, dropped = upgrade_state(state, structure, dictionary)
    if dropped:
        logger.warning("not imported (not part of the masked LM): %s", ", ".join(dropped))
    n_langs = len(all_langs) if lang_embeddings else 0
    xlm_state = to_xlm_state(state, n_langs, DTYPES[dtype])
    model_cfg = model_config(
        encoder_layers=structure.layers,
        encoder_embed_dim=structure.embed_dim,
        encoder_ffn_embed_dim=structure.ffn_dim,
        encoder_attention_heads=structure.heads,
        activation_fn=structure.activation_fn,
        dropout=structure.dropout,
        attention_dropout=structure.attention_dropout,
        activation_dropout=structure.activation_dropout,
        max_positions=structure.max_positions,
        sinusoidal_positions=not structure.learned_positions,
        normalize_before=structure.normalize_before,
        no_lang_embeddings=not lang_embeddings,
        languages=",".join(all_langs),
    )
    _check_xlm_keys(model_cfg, dictionary.symbols, n_langs, xlm_state)
    max_diff = None
    if verify:
        max_diff = verify_import(structure, state, model_cfg, dictionary, sp, xlm_state, n_langs, DTYPES[dtype])
        logger.debug("verified: fairseq RoBERTa and xlm_ds logits differ by at most %.2e", max_diff)
    del state
    out_abs = os.path.abspath(out_dir)
    extra = {
        "source": os.path.abspath(ckpt_path),
        "source_format": "fairseq-roberta",
        "source_arch": cfg.get("arch") or cfg.get("_name"),
        "added_languages": added,
        "language_embedding_init": "zeros" if lang_embeddings else None,
        "command": list(command) if command else None,
    }
    ckpt_out = make_checkpoint(model_cfg, xlm_state, dictionary.symbols, task_data=out_abs, extra=extra)
    report = ImportReport(
        out_dir=out_abs, checkpoint=os.path.join(out_abs, OUT_CHECKPOINT), structure=asdict(structure),
        model_cfg=model_cfg, languages=all_langs, added_languages=added, lang_embeddings=lang_embeddings,
        dictionary_size=len(dictionary), arch_flags=arch_flags(model_cfg), dropped_keys=dropped,
        max_abs_diff=max_diff,
    )
    with atomic_output_dir(out_abs, overwrite=True) as tmp:
        save_checkpoint(ckpt_out, os.path.join(tmp, OUT_CHECKPOINT))
        shutil.copyfile(dict_path, os.path.join(tmp, OUT_DICT))
        shutil.copyfile(spm_path, os.path.join(tmp, OUT_SPM))
        write_spm_vocab(sp, os.path.join(tmp, OUT_SPM_VOCAB))
        with open(os.path.join(tmp, OUT_REPORT), "w", encoding="utf-8") as f:
            json.dump({**asdict(report), "source": extra["source"], "command": extra["command"]}, f, indent=2)
            f.write("\n")
    return report


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise InteropError(f"{out_dir}: exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise InteropError(f"{out_dir}: exists and is not empty; pass --overwrite to replace it")


def _check_xlm_keys(model_cfg, symbols, n_langs, xlm_state) -> None:
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_xlm_model(model_cfg, symbols, n_langs).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in xlm_state.items()}
    if expected != got:  # a bug in the mapping, not bad input
        diff = sorted(set(expected.items()) ^ set(got.items()))
        raise RuntimeError(f"xlm_ds state dict does not match the xlm_lm model: {diff[:6]}")


VERIFY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
)


def encode(sp, dictionary, sentences: Sequence[str]) -> torch.Tensor:
    """``<s> pieces </s>`` ids (as fairseq's XLM-R hub interface and the xlm
    task's streams start a sample), right-padded."""
    rows = [[dictionary.bos()] + [dictionary.index(p) for p in sp.encode(s, out_type=str)] + [dictionary.eos()]
            for s in sentences]
    width = max(map(len, rows))
    return torch.tensor([r + [dictionary.pad()] * (width - len(r)) for r in rows])


@torch.no_grad()
def verify_import(
    structure, fairseq_state, model_cfg, dictionary, sp, xlm_state, n_langs, dtype=torch.float32
) -> float:
    """Max |logit difference| between fairseq's RoBERTa with the source
    weights and the xlm_ds model with the imported ones, on a few
    sentences (non-padding positions), both in fp32 (the source rounded to
    ``dtype`` first, as the import stored it). Raises if above 1e-4."""
    tokens = encode(sp, dictionary, VERIFY_SENTENCES)
    tokens = tokens[:, : structure.max_positions]
    keep = tokens.ne(dictionary.pad())
    roberta = build_fairseq_roberta(structure, dictionary).float()
    state = {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in fairseq_state.items()}
    # a current version: fairseq's load would otherwise treat the stack as
    # pre-2019 (no final layer norm) once more
    state["encoder.sentence_encoder.version"] = torch.Tensor([3])
    roberta.load_state_dict(state, strict=True)
    ref = roberta(tokens)[0][keep]
    del roberta
    model = build_xlm_model(model_cfg, dictionary.symbols, n_langs).float()
    model.load_state_dict({k: v.float() for k, v in xlm_state.items()}, strict=True)
    langs = torch.zeros_like(tokens) if n_langs else None
    got = model(tokens, src_langs=langs)[0][keep]
    diff = float((ref - got).abs().max())
    if not diff <= 1e-4:
        raise InteropError(f"imported model's logits differ from fairseq's by {diff:.3g} (> 1e-4); please report")
    return diff
