"""Export an xlm_ds ``xlm_lm`` checkpoint to a Hugging Face transformers
model directory (``from_pretrained``-loadable) with its tokenizer.

Model class. transformers' ``XLMRobertaForMaskedLM`` (post-LN: XLM, XLM-R
base/large) and ``XLMRobertaXLForMaskedLM`` (pre-LN: XLM-R XL/XXL) compute
exactly what xlm_ds computes: same blocks, fairseq's padding offset for
positions (``pad + 1 + i``), and RoBERTa's LM head (dense, GELU, layer norm,
tied projection + bias). transformers' ``XLMWithLMHeadModel`` cannot: its
prediction layer is a bare tied projection (no dense + layer norm), its
feed-forward width is fixed at 4 x dim and its positions start at 0 without
the padding offset. So models *with* language embeddings are exported as
XLM-R too, with the language table as the token-type table:
``token_type_ids`` = xlm_ds language ids (``config.lang2id``), per token,
which XLM-R adds to the embeddings exactly where xlm_ds adds the language
embedding. ``language=`` instead folds one language's row into a one-row
token-type table, so plain pipelines (which pass no ``token_type_ids``) get
that language.

Tokenizer and ids. ``XLMRobertaTokenizer`` maps ``<s>,<pad>,</s>,<unk>`` to
0..3, sentencepiece piece ``i >= 3`` to ``i + 1`` and ``<mask>`` to the last
id. xlm-ds-prepare's ``dict.txt`` lists every sentencepiece piece in
sentencepiece order after the 4 fairseq specials, and the ``xlm`` task
appends ``<mask>``, so the ids coincide and the export copies the embedding
as is. For any other dictionary (an imported one in frequency order, say)
the embedding rows and LM-head bias are permuted into the tokenizer's order
(HF row ``i`` = xlm_ds row of the piece HF id ``i`` stands for); xlm_ds
entries no sentencepiece piece produces are left out.
"""
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import InteropError
from .checkpoint import dictionary_from_symbols, load_xlm_model

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SPM_NAMES = ("spm.model", "sentencepiece.bpe.model")
#: how far the exported model's logits may be from xlm_ds's (fp32, eval)
TOLERANCE = 1e-4

VERIFY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Où est la gare ? Ich weiß es nicht. I don't know.",
)


@dataclass
class ExportReport:
    out_dir: str
    hf_class: str
    vocab_size: int
    permuted: bool
    dropped_ids: List[int]
    languages: List[str]
    language_input: str  # "none" | "token_type_ids" | "folded:<lang>"
    dtype: str
    max_abs_diff: Optional[float] = None
    tokenizers_checked: List[str] = field(default_factory=list)


def require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise InteropError(
            f"transformers is not installed ({e}); install the extra: pip install 'xlm-ds[hf]'"
        ) from None
    return transformers


def find_spm_model(checkpoint: str, task_data: Optional[str], override: Optional[str] = None) -> str:
    """``override``, else the sentencepiece model beside the checkpoint
    (xlm-ds-import's output), else the one of the data directory the
    checkpoint was trained on (its ``cfg.task.data``)."""
    if override:
        if not os.path.isfile(override):
            raise InteropError(f"--spm-model {override}: not found")
        return override
    folders = [os.path.dirname(os.path.abspath(checkpoint))]
    if task_data:
        folders += [p for p in str(task_data).split(os.pathsep) if p]
    for folder in folders:
        for name in SPM_NAMES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    raise InteropError(
        f"no sentencepiece model found beside {checkpoint} or in its data directory "
        f"({', '.join(folders[1:]) or 'none recorded'}); give --spm-model DATA/spm.model"
    )


def build_tokenizers(spm_path: str, model_max_length: int):
    """(slow, fast) ``XLMRobertaTokenizer`` built from the sentencepiece model."""
    from transformers import XLMRobertaTokenizer, XLMRobertaTokenizerFast

    slow = XLMRobertaTokenizer(vocab_file=spm_path, model_max_length=model_max_length)
    fast = XLMRobertaTokenizerFast(vocab_file=spm_path, model_max_length=model_max_length)
    return slow, fast


def vocab_permutation(tokenizer, symbols: Sequence[str]) -> Tuple[torch.Tensor, List[int]]:
    """``perm[hf_id]`` = the xlm_ds id of the token HF id ``hf_id`` stands
    for (``<unk>``'s when xlm_ds has no such entry), and the xlm_ds ids no HF
    id reaches."""
    d = dictionary_from_symbols(symbols)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    missing = [t for t in tokens if t not in d.indices]
    if missing:
        logger.warning(
            "%d tokenizer pieces are not in the xlm_ds dictionary and get <unk>'s row (e.g. %s)",
            len(missing), ", ".join(map(repr, missing[:5])),
        )
    perm = torch.tensor([d.indices.get(t, d.unk()) for t in tokens], dtype=torch.long)
    dropped = sorted(set(range(len(symbols))) - set(perm.tolist()))
    return perm, dropped


def position_table(model) -> torch.Tensor:
    """The encoder's position-embedding rows 0 .. max_positions + pad (rows
    0..pad are the padding offset, as in HF's XLM-R); a sinusoidal table is
    written out as learned weights holding the same values."""
    enc = model.encoder
    n = enc.max_positions() + enc.padding_idx + 1
    if isinstance(enc.embed_positions, torch.nn.Embedding):
        return enc.embed_positions.weight.detach()[:n].clone()
    from fairseq.modules import SinusoidalPositionalEmbedding

    return SinusoidalPositionalEmbedding.get_embedding(n, enc.embed_tokens.embedding_dim, enc.padding_idx)


def hf_state_dict(model, perm: torch.Tensor, token_types: torch.Tensor, pre_ln: bool) -> Dict[str, torch.Tensor]:
    """xlm_ds ``xlm_lm`` weights under ``XLMRoberta(XL)ForMaskedLM`` names."""
    s = {k: v.detach() for k, v in model.state_dict().items()}
    tokens = s["encoder.embed_tokens.weight"][perm].clone()
    bias = s["encoder.lm_head.bias"][perm].clone()
    out = {
        "roberta.embeddings.word_embeddings.weight": tokens,
        "roberta.embeddings.position_embeddings.weight": position_table(model),
        "roberta.embeddings.token_type_embeddings.weight": token_types,
        "lm_head.dense.weight": s["encoder.lm_head.dense.weight"],
        "lm_head.dense.bias": s["encoder.lm_head.dense.bias"],
        "lm_head.layer_norm.weight": s["encoder.lm_head.layer_norm.weight"],
        "lm_head.layer_norm.bias": s["encoder.lm_head.layer_norm.bias"],
        "lm_head.decoder.weight": tokens,
        "lm_head.decoder.bias": bias,
        "lm_head.bias": bias,
    }
    if pre_ln:
        out["roberta.encoder.LayerNorm.weight"] = s["encoder.layer_norm.weight"]
        out["roberta.encoder.LayerNorm.bias"] = s["encoder.layer_norm.bias"]
    else:
        out["roberta.embeddings.LayerNorm.weight"] = s["encoder.layernorm_embedding.weight"]
        out["roberta.embeddings.LayerNorm.bias"] = s["encoder.layernorm_embedding.bias"]
    if pre_ln:
        names = {
            "self_attn_layer_norm": "attention.self_attn_layer_norm",
            "final_layer_norm": "LayerNorm",
        }
    else:
        names = {
            "self_attn_layer_norm": "attention.output.LayerNorm",
            "final_layer_norm": "output.LayerNorm",
        }
    names.update({
        "self_attn.q_proj": "attention.self.query",
        "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value",
        "self_attn.out_proj": "attention.output.dense",
        "fc1": "intermediate.dense",
        "fc2": "output.dense",
    })
    for i in range(len(model.encoder.layers)):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                out[f"roberta.encoder.layer.{i}.{theirs}.{p}"] = s[f"encoder.layers.{i}.{ours}.{p}"]
    return {k: v.contiguous() for k, v in out.items()}


def hf_config(cfg, vocab_size: int, n_types: int, languages: List[str], language_input: str, extra: Dict):
    from transformers import XLMRobertaConfig, XLMRobertaXLConfig

    pre_ln = bool(cfg.normalize_before)
    config_cls, arch = (XLMRobertaXLConfig, "XLMRobertaXLForMaskedLM") if pre_ln else (
        XLMRobertaConfig, "XLMRobertaForMaskedLM")
    lang2id = {lang: i for i, lang in enumerate(languages)}
    return config_cls(
        vocab_size=vocab_size,
        hidden_size=int(cfg.encoder_embed_dim),
        num_hidden_layers=int(cfg.encoder_layers),
        num_attention_heads=int(cfg.encoder_attention_heads),
        intermediate_size=int(cfg.encoder_ffn_embed_dim),
        hidden_act="gelu",
        hidden_dropout_prob=float(cfg.dropout),
        attention_probs_dropout_prob=float(cfg.attention_dropout),
        max_position_embeddings=int(cfg.max_positions) + 2,  # + pad + 1: fairseq's position offset
        type_vocab_size=n_types,
        initializer_range=0.02,
        layer_norm_eps=1e-5,  # fairseq's LayerNorm
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        position_embedding_type="absolute",
        architectures=[arch],
        lang2id=lang2id,
        id2lang={i: lang for lang, i in lang2id.items()},
        xlm_ds={"language_input": language_input, **extra},
    ), arch


def check_exportable(cfg, state) -> None:
    if str(cfg.activation_fn) != "gelu":
        raise InteropError(
            f"activation_fn={cfg.activation_fn}: transformers' XLM-R LM head always applies GELU while xlm_ds's "
            "applies the model's activation; only gelu models export exactly"
        )
    if int(state["encoder.embed_tokens.weight"].shape[0]) < 5:
        raise InteropError("the dictionary is too small to be an xlm_ds dictionary")


def export_hf(
    checkpoint: str,
    out_dir: str,
    *,
    spm_model: Optional[str] = None,
    language: Optional[str] = None,
    dtype: str = "float32",
    overwrite: bool = False,
    verify: bool = True,
    sentences: Optional[Sequence[str]] = None,
) -> ExportReport:
    """Write ``out_dir`` (config.json, model.safetensors, tokenizer files,
    xlm_ds_export.json); with ``verify`` reload it and compare tokenization
    and logits with xlm_ds on ``sentences``."""
    require_transformers()
    from ..data.atomic_dir import atomic_output_dir

    if dtype not in DTYPES:
        raise InteropError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise InteropError(f"{out_dir}: exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise InteropError(f"{out_dir}: exists and is not empty; pass --overwrite to replace it")
    model, pre = load_xlm_model(checkpoint)
    cfg = pre.cfg
    check_exportable(cfg, pre.state)
    spm_path = find_spm_model(checkpoint, None if spm_model else _task_data(checkpoint), spm_model)
    languages = list(pre.languages)
    langs = model.encoder.embed_langs
    dim = int(cfg.encoder_embed_dim)
    if language is not None:
        if langs is None:
            raise InteropError(f"--language {language}: the model has no language embeddings")
        if language not in languages:
            raise InteropError(f"--language {language}: not one of the model's languages ({', '.join(languages)})")
        token_types = langs.weight.detach()[languages.index(language)].unsqueeze(0).clone()
        language_input = f"folded:{language}"
    elif langs is not None:
        if langs.num_embeddings != len(languages):
            raise InteropError(
                f"{checkpoint}: {langs.num_embeddings} language embeddings but {len(languages)} languages recorded"
            )
        token_types = langs.weight.detach().clone()
        language_input = "token_type_ids"
    else:
        token_types = torch.zeros(1, dim)
        language_input = "none"

    slow, fast = build_tokenizers(spm_path, int(cfg.max_positions))
    perm, dropped = vocab_permutation(slow, pre.dictionary_symbols)
    permuted = not (len(perm) == len(pre.dictionary_symbols) and torch.equal(perm, torch.arange(len(perm))))
    if dropped:
        logger.warning(
            "%d xlm_ds dictionary entries have no tokenizer id and are left out of the export: %s",
            len(dropped), ", ".join(repr(pre.dictionary_symbols[i]) for i in dropped[:8]),
        )
    extra = {
        "source_checkpoint": os.path.abspath(checkpoint),
        "languages": languages,
        "sinusoidal_positions": bool(cfg.sinusoidal_positions),
        "vocab_permuted": permuted,
    }
    config, arch = hf_config(cfg, len(perm), token_types.shape[0], languages if language_input == "token_type_ids"
                             else [], language_input, extra)
    import transformers

    hf = getattr(transformers, arch)(config)
    state = hf_state_dict(model, perm, token_types, bool(cfg.normalize_before))
    result = hf.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or result.unexpected_keys:  # a bug in the mapping, not bad input
        raise RuntimeError(f"HF state dict mismatch: missing {missing}, unexpected {result.unexpected_keys}")
    hf.tie_weights()
    hf = hf.to(DTYPES[dtype]).eval()
    report = ExportReport(
        out_dir=os.path.abspath(out_dir), hf_class=arch, vocab_size=len(perm), permuted=permuted,
        dropped_ids=dropped, languages=languages, language_input=language_input, dtype=dtype,
    )
    with atomic_output_dir(os.path.abspath(out_dir), overwrite=True) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        fast.save_pretrained(tmp)  # tokenizer.json + sentencepiece.bpe.model for the slow one
        del hf
        if verify:
            diff, checked = verify_export(
                tmp, model, pre.dictionary_symbols, spm_path, perm, language, languages if langs is not None else [],
                DTYPES[dtype], sentences or VERIFY_SENTENCES,
            )
            report.max_abs_diff, report.tokenizers_checked = diff, checked
        with open(os.path.join(tmp, "xlm_ds_export.json"), "w", encoding="utf-8") as f:
            json.dump(asdict(report), f, indent=2)
            f.write("\n")
    return report


def _task_data(checkpoint: str) -> Optional[str]:
    """The checkpoint's ``cfg.task.data`` (only a hint where spm.model is)."""
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - e.g. a legacy (non-zip) file cannot be memory-mapped
        return None
    cfg = ckpt.get("cfg") or {}
    task = cfg.get("task") if isinstance(cfg, dict) else getattr(cfg, "task", None)
    if task is None:
        return None
    return task.get("data") if isinstance(task, dict) else getattr(task, "data", None)


def encode_xlm(sp, symbols: Sequence[str], sentences: Sequence[str]) -> torch.Tensor:
    """xlm_ds ids: ``<s>`` + sentencepiece pieces looked up by name (as
    xlm-ds-prepare maps them) + ``</s>``, right-padded."""
    from ..data.binarize import id_map

    d = dictionary_from_symbols(symbols)
    lut = torch.from_numpy(id_map(sp, d).astype("int64"))
    rows = [[d.bos()] + lut[sp.encode(s)].tolist() + [d.eos()] for s in sentences]
    width = max(map(len, rows))
    return torch.tensor([r + [d.pad()] * (width - len(r)) for r in rows])


@torch.no_grad()
def verify_export(
    hf_dir: str,
    model,
    symbols: Sequence[str],
    spm_path: str,
    perm: torch.Tensor,
    language: Optional[str],
    languages: List[str],
    dtype: torch.dtype,
    sentences: Sequence[str],
) -> Tuple[float, List[str]]:
    """Reload ``hf_dir`` with ``from_pretrained``; check both tokenizers give
    the xlm_ds ids (through ``perm``) and the logits match xlm_ds's."""
    import sentencepiece as spm
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=spm_path)
    ref_ids = encode_xlm(sp, symbols, sentences)
    checked = []
    hf_ids = attention = None
    for use_fast in (False, True):
        tok = AutoTokenizer.from_pretrained(hf_dir, use_fast=use_fast)
        enc = tok(list(sentences), padding=True, return_tensors="pt")
        got = perm[enc["input_ids"]]
        if got.shape != ref_ids.shape or not torch.equal(got, ref_ids):
            bad = next(i for i in range(len(sentences)) if i >= got.shape[0] or
                       got[i].tolist()[: ref_ids.shape[1]] != ref_ids[i].tolist())
            raise InteropError(
                f"{type(tok).__name__} tokenizes {sentences[bad]!r} differently from xlm_ds "
                f"({enc['input_ids'][bad].tolist()} vs xlm_ds {ref_ids[bad].tolist()})"
            )
        checked.append(type(tok).__name__)
        hf_ids, attention = enc["input_ids"], enc["attention_mask"]
    hf = AutoModelForMaskedLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    # the reference in the same precision as the export
    ref_model = model
    if dtype != torch.float32:
        import copy

        ref_model = copy.deepcopy(model).to(dtype).float()
    keep = attention.bool()
    if language is not None:
        lang_ids = torch.full_like(ref_ids, languages.index(language) if languages else 0)
        ref = ref_model(ref_ids, src_langs=lang_ids)[0]
        out = hf(input_ids=hf_ids, attention_mask=attention).logits
    elif languages:
        lang_ids = (torch.arange(len(sentences)) % len(languages)).unsqueeze(1).expand_as(ref_ids).contiguous()
        ref = ref_model(ref_ids, src_langs=lang_ids)[0]
        out = hf(input_ids=hf_ids, attention_mask=attention, token_type_ids=lang_ids).logits
    else:
        ref = ref_model(ref_ids)[0]
        out = hf(input_ids=hf_ids, attention_mask=attention).logits
    diff = float((out[keep] - ref[keep][:, perm]).abs().max())
    if not diff <= TOLERANCE:
        raise InteropError(f"exported model's logits differ from xlm_ds's by {diff:.3g} (> {TOLERANCE}); please report")
    return diff, checked
