"""xlm_ds checkpoints outside ``fairseq-train``: writing one that
``fairseq-train --restore-file`` / ``--finetune-from-model`` continues from
(import), and rebuilding the ``xlm_lm`` model of one without its data
directory (export, tests).

A written checkpoint has the keys and config layout of one saved by
``fairseq-train --task xlm`` (``cfg`` as a plain container with ``model``
= an ``xlm_lm`` config and ``task`` = an ``xlm`` config, ``model``,
``optimizer_history``, ``extra_state``, ``task_state`` with
``dictionary_symbols`` and ``languages``) and no optimizer state, so a run
restoring it starts a fresh optimizer, learning-rate schedule and data
iterator whether or not the ``--reset-*`` flags are given.
"""
import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import torch
from fairseq.data import Dictionary
from omegaconf import OmegaConf, open_dict

from . import InteropError

#: fields of an ``xlm_lm`` model config (``XLMConfig``)
_MODEL_FIELDS = None


def model_fields() -> List[str]:
    global _MODEL_FIELDS
    if _MODEL_FIELDS is None:
        from ..models.xlm_model import XLMConfig

        _MODEL_FIELDS = [f.name for f in dataclasses.fields(XLMConfig)]
    return _MODEL_FIELDS


def model_config(**fields) -> Dict:
    """A complete ``xlm_lm`` config (defaults of ``XLMConfig`` for what is
    not given) as a plain dict with ``_name``."""
    from ..models.xlm_model import XLMConfig

    unknown = set(fields) - set(model_fields())
    if unknown:
        raise TypeError(f"not xlm_lm config fields: {sorted(unknown)}")
    cfg = OmegaConf.to_container(OmegaConf.structured(XLMConfig(**fields)), enum_to_str=True)
    return {"_name": "xlm_lm", **{k: v for k, v in cfg.items() if k != "_name"}}


def languages_of(model_cfg) -> List[str]:
    return [x for x in (_get(model_cfg, "languages") or "").split(",") if x]


def _get(cfg, key, default=None):
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def dictionary_from_symbols(symbols: Sequence[str]) -> Dictionary:
    """A fairseq Dictionary holding exactly ``symbols`` in order (the
    checkpoint's ``task_state["dictionary_symbols"]``, ``<mask>`` included)."""
    d = Dictionary()  # <s>=0 <pad>=1 </s>=2 <unk>=3, as every xlm_ds dictionary
    if list(symbols[: d.nspecial]) != d.symbols:
        raise InteropError(
            f"dictionary starts with {list(symbols[:4])}; expected fairseq's specials {d.symbols}"
        )
    d.symbols = list(symbols)
    d.count = [1] * len(symbols)
    d.indices = {}
    for i, s in enumerate(symbols):
        d.indices.setdefault(s, i)
    return d


def load_task_dictionary(dict_path: str) -> Dictionary:
    """``dict.txt`` + ``<mask>``, as the ``xlm`` task (and fairseq's
    masked_lm / multilingual_masked_lm) load it."""
    d = Dictionary.load(dict_path)
    d.add_symbol("<mask>")
    return d


def build_xlm_model(model_cfg, symbols: Sequence[str], n_langs: Optional[int] = None):
    """An ``xlm_lm`` model (random weights, eval mode) for ``model_cfg``, as
    fairseq-train builds it (language-specific lower layers included);
    ``n_langs`` defaults to the config's languages (0 without language
    embeddings)."""
    from ..models.xlm_model import XLMModel

    cfg = model_cfg
    if isinstance(cfg, dict):
        cfg = OmegaConf.create({k: v for k, v in cfg.items() if k != "_name"})
    if n_langs is None:
        n_langs = 0 if _get(cfg, "no_lang_embeddings") else len(languages_of(cfg))
    return XLMModel.from_dictionary(cfg, dictionary_from_symbols(symbols), n_langs).eval()


def load_xlm_model(path: str):
    """The one loader of an xlm_ds pretraining checkpoint outside training
    (export, retrieval, classification, tests): (model with the checkpoint's
    weights in fp32 and eval mode, :class:`~xlm_ds.models.pretrained.PretrainedXLM`)."""
    from ..models.pretrained import PretrainedCheckpointError, PretrainedXLM

    try:
        pre = PretrainedXLM.load(path)
    except PretrainedCheckpointError as e:
        raise InteropError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - fairseq's loader fails in many ways on foreign files
        raise InteropError(
            f"{path}: cannot load as a fairseq checkpoint ({type(e).__name__}: {e}); expected one written by "
            "fairseq-train --task xlm or xlm-ds-import"
        ) from None
    if not pre.dictionary_symbols:
        raise InteropError(
            f"{path}: no task_state['dictionary_symbols']; expected a checkpoint written by "
            "fairseq-train --task xlm or xlm-ds-import"
        )
    langs = pre.state.get("encoder.embed_langs.weight")
    model = build_xlm_model(pre.cfg, pre.dictionary_symbols, 0 if langs is None else langs.shape[0])
    state = {k: v.float() if v.is_floating_point() else v for k, v in pre.state.items()}
    model.load_state_dict(state, strict=True)
    return model.float().eval(), pre


def make_checkpoint(
    model_cfg: Dict,
    state: Dict[str, torch.Tensor],
    symbols: Sequence[str],
    task_data: str = "",
    extra: Optional[Dict] = None,
) -> Dict:
    """The dict ``fairseq-train`` would save for this model after 0
    updates, without optimizer state; ``extra`` goes to the top-level key
    ``xlm_ds_import`` (ignored by fairseq)."""
    from fairseq.dataclass.configs import FairseqConfig

    from ..tasks.xlm_task import XLMTaskConfig

    cfg = OmegaConf.structured(FairseqConfig())
    tokens_per_sample = min(XLMTaskConfig.tokens_per_sample, int(model_cfg["max_positions"]))
    task = OmegaConf.structured(XLMTaskConfig(data=task_data, tokens_per_sample=tokens_per_sample))
    with open_dict(cfg):
        cfg.model = OmegaConf.create(model_cfg)
        cfg.task = task
        cfg.task._name = "xlm"
    languages = languages_of(model_cfg)
    ckpt = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": state,
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "XLMLMCriterion",
                "optimizer_name": "none",
                "lr_scheduler_state": {},
                "num_updates": 0,
            }
        ],
        "task_state": {"dictionary_symbols": list(symbols), "languages": languages},
        "extra_state": {
            "train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True, "version": 2},
            "previous_training_time": 0.0,
            "val_loss": None,
        },
        "last_optimizer_state": None,
    }
    if extra is not None:
        ckpt["xlm_ds_import"] = extra
    return ckpt


def save_checkpoint(ckpt: Dict, path: str) -> None:
    """Atomic (temp file + fsync + rename)."""
    from ..reliability.fairseq_checkpoints import torch_persistent_save

    torch_persistent_save(ckpt, path)


def arch_flags(model_cfg) -> List[str]:
    """``fairseq-train`` model flags that build this model: a named
    architecture when one matches exactly, otherwise ``xlm_lm`` with sizes."""
    from ..models.architectures import ARCHITECTURES

    g = lambda k: _get(model_cfg, k)  # noqa: E731
    lang_emb = not g("no_lang_embeddings")
    sizes = (g("encoder_layers"), g("encoder_embed_dim"), g("encoder_ffn_embed_dim"), g("encoder_attention_heads"))
    defaults = model_config()
    plain = (
        g("activation_fn") == defaults["activation_fn"]
        and g("max_positions") == defaults["max_positions"]
        and not g("sinusoidal_positions")
    )
    for name, (layers, dim, ffn, heads, pre_ln, with_langs) in ARCHITECTURES.items():
        same_kind = bool(g("normalize_before")) == pre_ln and lang_emb == with_langs
        if plain and same_kind and sizes == (layers, dim, ffn, heads):
            return ["--arch", name]
    flags = [
        "--arch", "xlm_lm",
        "--encoder-layers", str(sizes[0]), "--encoder-embed-dim", str(sizes[1]),
        "--encoder-ffn-embed-dim", str(sizes[2]), "--encoder-attention-heads", str(sizes[3]),
        "--max-positions", str(g("max_positions")),
    ]
    if g("activation_fn") != defaults["activation_fn"]:
        flags += ["--activation-fn", str(g("activation_fn"))]
    if g("normalize_before"):
        flags.append("--normalize-before")
    if g("sinusoidal_positions"):
        flags.append("--sinusoidal-positions")
    if not lang_emb:
        flags.append("--no-lang-embeddings")
    return flags
