"""The source side of an XLM-R / RoBERTa import (interop/fairseq_roberta.py):
finding its files, reading its checkpoint, inferring the model's structure
from its weights and config, bringing 2019 state-dict names to today's with
fairseq's own upgrade code (on a meta-device model), renaming to xlm_ds's
names, and checking the vocabulary against the sentencepiece model."""
import argparse
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from . import InteropError
from .checkpoint import load_task_dictionary

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("model.pt",)
SPM_NAMES = ("sentencepiece.bpe.model", "spm.model")
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
