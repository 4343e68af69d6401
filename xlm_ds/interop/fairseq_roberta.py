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
import argparse
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import InteropError
from .checkpoint import (
    arch_flags,
    build_xlm_model,
    load_task_dictionary,
    make_checkpoint,
    model_config,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("model.pt",)
SPM_NAMES = ("sentencepiece.bpe.model", "spm.model")
#: file names written to the output directory
OUT_CHECKPOINT, OUT_DICT, OUT_SPM, OUT_SPM_VOCAB, OUT_REPORT = (
    "model.pt", "dict.txt", "spm.model", "spm.vocab", "import.json",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_PREFIX = re.compile(r"^(encoder|decoder)\.sentence_encoder\.")
_IGNORED = re.compile(r"(^|\.)(version|_float_tensor)$")


@dataclass
class RobertaStructure:
    """What the source model is, read from its weights (sizes, layer-norm
    placement, positions) and its config (heads, activation, dropouts)."""

    layers: int
    embed_dim: int
    ffn_dim: int
    heads: int
    vocab_size: int
    max_positions: int
    normalize_before: bool
    learned_positions: bool
    activation_fn: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0

    def fairseq_args(self) -> argparse.Namespace:
        """Arguments that make fairseq's ``roberta`` model this structure."""
        from fairseq.models.roberta.model import base_architecture

        args = argparse.Namespace(
            encoder_layers=self.layers,
            encoder_embed_dim=self.embed_dim,
            encoder_ffn_embed_dim=self.ffn_dim,
            encoder_attention_heads=self.heads,
            activation_fn=self.activation_fn,
            max_positions=self.max_positions,
            encoder_normalize_before=self.normalize_before,
            layernorm_embedding=not self.normalize_before,
            encoder_learned_pos=self.learned_positions,
            untie_weights_roberta=False,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation_dropout=self.activation_dropout,
        )
        base_architecture(args)
        return args


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


# ------------------------------------------------------------------ reading
def find_source_files(
    src: str, dict_path: Optional[str] = None, spm_path: Optional[str] = None
) -> Tuple[str, str, str]:
    """(model.pt, dict.txt, sentencepiece model) of a source given as a
    directory or as the checkpoint file itself."""
    if os.path.isdir(src):
        ckpt = next((os.path.join(src, n) for n in CHECKPOINT_NAMES if os.path.isfile(os.path.join(src, n))), None)
        if ckpt is None:
            raise InteropError(f"{src}: no {' or '.join(CHECKPOINT_NAMES)}; expected a fairseq XLM-R/RoBERTa directory")
        folder = src
    elif os.path.isfile(src):
        ckpt, folder = src, os.path.dirname(os.path.abspath(src))
    else:
        raise InteropError(f"{src}: not found; expected a directory with model.pt, dict.txt, sentencepiece.bpe.model")
    dict_path = dict_path or os.path.join(folder, "dict.txt")
    if not os.path.isfile(dict_path):
        raise InteropError(f"{dict_path}: not found; the fairseq dictionary of the checkpoint is needed (--dict)")
    if spm_path is None:
        spm_path = next((os.path.join(folder, n) for n in SPM_NAMES if os.path.isfile(os.path.join(folder, n))), None)
        if spm_path is None:
            raise InteropError(
                f"{folder}: no {' or '.join(SPM_NAMES)}; the sentencepiece model of the checkpoint is needed "
                "(--spm-model)"
            )
    elif not os.path.isfile(spm_path):
        raise InteropError(f"--spm-model {spm_path}: not found")
    return ckpt, dict_path, spm_path


def read_checkpoint(path: str) -> Dict:
    """The raw checkpoint (pickled fairseq objects: load only trusted files)."""
    try:
        try:
            # memory-mapped: tensors are paged in as they are used
            return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=False)  # legacy (non-zip) format
    except Exception as e:  # noqa: BLE001 - anything torch.load raises means "not a checkpoint"
        raise InteropError(f"{path}: cannot load a torch checkpoint ({type(e).__name__}: {e})") from None


def _as_dict(cfg) -> Dict:
    if cfg is None:
        return {}
    if isinstance(cfg, argparse.Namespace):
        return dict(vars(cfg))
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg)
    return dict(cfg) if isinstance(cfg, dict) else dict(vars(cfg))


def source_config(ckpt: Dict) -> Dict:
    """The source's model options: ``cfg.model`` (fairseq >= 0.10) or the
    legacy ``args`` Namespace (the published XLM-R checkpoints)."""
    cfg = ckpt.get("cfg")
    model = None
    if cfg is not None:
        model = cfg.get("model") if isinstance(cfg, dict) else getattr(cfg, "model", None)
    if model is None:
        model = ckpt.get("args")
    return _as_dict(model)


def infer_structure(
    state: Dict[str, torch.Tensor], cfg: Dict, heads: Optional[int] = None, pad: int = 1
) -> RobertaStructure:
    """Sizes and layer-norm placement from the weights (old or new names);
    what weights cannot tell (heads, activation) from the config."""
    enc = {}
    for k, v in state.items():
        m = _PREFIX.match(k)
        if m:
            enc[k[m.end():]] = v
    if "embed_tokens.weight" not in enc:
        hint = ""
        if "encoder.embed_tokens.weight" in state:
            hint = " (it looks like an xlm_ds checkpoint already: use it directly)"
        raise InteropError(
            f"no encoder.sentence_encoder.embed_tokens.weight (or decoder.sentence_encoder.*) in the state dict; "
            f"expected a fairseq RoBERTa/XLM-R checkpoint{hint}"
        )
    vocab, dim = enc["embed_tokens.weight"].shape
    layer_ids = {int(m.group(1)) for k in enc for m in [re.match(r"layers\.(\d+)\.", k)] if m}
    if not layer_ids:
        raise InteropError("no encoder layers (sentence_encoder.layers.N.*) in the state dict")
    n_layers = max(layer_ids) + 1
    if "layers.0.fc1.weight" not in enc:
        raise InteropError("no sentence_encoder.layers.0.fc1.weight; not a fairseq transformer encoder layout")
    ffn = enc["layers.0.fc1.weight"].shape[0]
    has_emb_ln = "layernorm_embedding.weight" in enc or "emb_layer_norm.weight" in enc
    has_final_ln = "layer_norm.weight" in enc
    if has_emb_ln == has_final_ln:
        raise InteropError(
            "layer norms: " + ("both an embedding layer norm and a final one" if has_emb_ln else "neither an embedding "
            "layer norm nor a final one") + "; xlm_ds represents post-LN (embedding layer norm, XLM-R base/large) "
            "and pre-LN (final layer norm, XLM-R XL/XXL) models only"
        )
    if cfg.get("no_token_positional_embeddings"):
        raise InteropError("the source has no positional embeddings (--no-token-positional-embeddings); not supported")
    if cfg.get("no_scale_embedding") is False:
        raise InteropError("the source scales token embeddings by sqrt(dim) (no_scale_embedding=False); not supported")
    if cfg.get("untie_weights_roberta"):
        raise InteropError(
            "the source's LM head is not tied to its embeddings (untie_weights_roberta); xlm_ds ties them"
        )
    if "embed_positions.weight" in enc:
        learned, max_pos = True, enc["embed_positions.weight"].shape[0] - pad - 1
    else:
        learned, max_pos = False, int(cfg.get("max_positions") or cfg.get("max_source_positions") or 512)
    heads = heads or cfg.get("encoder_attention_heads")
    if not heads:
        raise InteropError("the checkpoint's config does not say the number of attention heads; give --heads")
    if dim % int(heads):
        raise InteropError(f"embedding dim {dim} is not divisible by {heads} attention heads")

    def f(key, default):
        value = cfg.get(key)
        return default if value is None else float(value)

    return RobertaStructure(
        layers=n_layers, embed_dim=int(dim), ffn_dim=int(ffn), heads=int(heads), vocab_size=int(vocab),
        max_positions=int(max_pos), normalize_before=has_final_ln, learned_positions=learned,
        activation_fn=str(cfg.get("activation_fn") or "gelu"),
        dropout=f("dropout", 0.1), attention_dropout=f("attention_dropout", 0.1),
        activation_dropout=f("activation_dropout", 0.0),
    )


class _Task:
    """What ``RobertaModel.build_model`` reads from a task."""

    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary

    def max_positions(self):
        return None


def build_fairseq_roberta(structure: RobertaStructure, dictionary, device=None):
    """fairseq's own ``roberta`` model of this structure (eval mode)."""
    from unittest import mock

    from fairseq.models.roberta import RobertaModel
    from fairseq.models.roberta import model as roberta_module

    if device is None:
        return RobertaModel.build_model(structure.fairseq_args(), _Task(dictionary)).eval()
    # fairseq's BERT init copies through the CPU, which meta tensors cannot;
    # a meta model has no values to initialise anyway
    with torch.device(device), mock.patch.object(roberta_module, "init_bert_params", lambda module: None):
        return RobertaModel.build_model(structure.fairseq_args(), _Task(dictionary)).eval()


def upgrade_state(state: Dict[str, torch.Tensor], structure: RobertaStructure, dictionary) -> Tuple[Dict, List[str]]:
    """fairseq's upgrade of old names (decoder.*, emb_layer_norm, fused
    in_proj) applied to ``state``; checks the result has exactly the
    parameters of fairseq's model of this structure. Returns (state,
    dropped keys)."""
    meta = build_fairseq_roberta(structure, dictionary, device="meta")
    # before upgrading: fairseq's upgrade may drop the final layer norm from
    # the (meta) model when the checkpoint has no encoder version key
    expected = {k: v.shape for k, v in meta.state_dict().items() if not _IGNORED.search(k)}
    state = dict(state)
    fairseq_logger = logging.getLogger("fairseq.models.roberta.model")
    level = fairseq_logger.level
    fairseq_logger.setLevel(logging.ERROR)  # "deleting classification head": reported by us below
    try:
        meta.upgrade_state_dict(state)
    finally:
        fairseq_logger.setLevel(level)
    dropped = sorted(k for k in state if k not in expected)
    missing = sorted(k for k in expected if k not in state)
    if missing:
        raise InteropError(
            f"{len(missing)} parameters of a fairseq RoBERTa with {structure.layers} layers are missing from the "
            f"checkpoint, e.g. {', '.join(missing[:4])}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(s)}"
        for k, s in expected.items() if tuple(state[k].shape) != tuple(s)
    ]
    if wrong:
        raise InteropError("unexpected parameter shapes: " + "; ".join(wrong[:4]))
    for k in dropped:
        del state[k]
    return state, [k for k in dropped if not _IGNORED.search(k)]


def to_xlm_state(state: Dict[str, torch.Tensor], n_langs: int = 0, dtype=torch.float32) -> Dict[str, torch.Tensor]:
    """fairseq RoBERTa names (current) -> xlm_ds ``xlm_lm`` names; with
    ``n_langs`` a zero language-embedding table is added."""
    tokens = state["encoder.sentence_encoder.embed_tokens.weight"]
    head = state["encoder.lm_head.weight"]
    if head is not tokens and not torch.equal(head, tokens):
        raise InteropError("the LM head's output weight differs from the token embeddings; xlm_ds ties them")
    out = {}
    for k, v in state.items():
        if k.startswith("encoder.sentence_encoder."):
            out["encoder." + k[len("encoder.sentence_encoder."):]] = v
        elif k.startswith("encoder.lm_head."):
            out[k] = v
        else:
            raise InteropError(f"unexpected parameter {k}")
    if n_langs:
        out["encoder.embed_langs.weight"] = torch.zeros(n_langs, tokens.shape[1])
    return {k: v.detach().to(dtype).clone() if v.is_floating_point() else v.clone() for k, v in out.items()}


def check_vocabulary(dict_path: str, spm_path: str, n_rows: int):
    """The task dictionary (dict.txt + <mask>) must have one entry per
    embedding row, and every sentencepiece piece must be in it (else
    ``xlm-ds-prepare --dict`` refuses the pair). Returns (dictionary, spm)."""
    import sentencepiece as spm

    from ..data.binarize import id_map
    from ..data.errors import PrepareError

    try:
        dictionary = load_task_dictionary(dict_path)
    except Exception as e:  # noqa: BLE001
        raise InteropError(f"{dict_path}: cannot load a fairseq dictionary ({e})") from None
    if len(dictionary) != n_rows:
        raise InteropError(
            f"{dict_path}: {len(dictionary) - 1} entries + <mask> = {len(dictionary)} token ids, but the checkpoint's "
            f"embedding has {n_rows} rows; expected the dict.txt published with this checkpoint"
        )
    try:
        sp = spm.SentencePieceProcessor(model_file=spm_path)
    except Exception as e:  # noqa: BLE001
        raise InteropError(f"{spm_path}: cannot load a sentencepiece model ({e})") from None
    try:
        id_map(sp, dictionary, dict_path)
    except PrepareError as e:
        raise InteropError(f"{e} (checked against {spm_path})") from None
    return dictionary, sp


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
