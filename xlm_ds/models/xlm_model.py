"""The ``xlm_lm`` fairseq model: a cross-lingual masked/causal LM (Lample &
Conneau 2019) and, without language embeddings, XLM-R (Conneau et al. 2020).

Language ids index ``languages`` (stored in the model config so a checkpoint
is self-describing: fine-tuning, retrieval and export read the mapping from
it instead of from a data directory).
"""
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import FairseqEncoderModel, register_model
from omegaconf import open_dict

from .xlm_encoder import XLMEncoder


@dataclass
class XLMConfig(FairseqDataclass):
    encoder_layers: int = field(default=12, metadata={"help": "number of transformer blocks"})
    encoder_embed_dim: int = field(default=1024, metadata={"help": "model dimension"})
    encoder_ffn_embed_dim: int = field(default=4096, metadata={"help": "feed-forward dimension"})
    encoder_attention_heads: int = field(default=8, metadata={"help": "attention heads"})
    activation_fn: ChoiceEnum(utils.get_available_activation_fns()) = field(
        default="gelu", metadata={"help": "FFN activation (XLM: gelu)"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    attention_dropout: float = field(default=0.1, metadata={"help": "attention dropout"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    max_positions: int = field(default=512, metadata={"help": "longest input, in tokens"})
    sinusoidal_positions: bool = field(
        default=False, metadata={"help": "fixed sinusoidal instead of learned positions"}
    )
    normalize_before: bool = field(
        default=False, metadata={"help": "pre-layer-norm blocks (XLM-R XL/XXL)"}
    )
    no_lang_embeddings: bool = field(
        default=False, metadata={"help": "no language embeddings (XLM-R style)"}
    )
    shared_top_layers: int = field(
        default=-1,
        metadata={"help": "share only the top k blocks between languages, the lower ones "
                  "language-specific (Conneau et al. 2020 ablation); -1 = all shared"},
    )
    languages: str = field(
        default="",
        metadata={"help": "comma-separated language ids, in id order; filled from the task"},
    )


# registered as "xlm_lm": fairseq already has an architecture named "xlm"
# (a RoBERTa size), and architecture names share one namespace.
@register_model("xlm_lm", dataclass=XLMConfig)
class XLMModel(FairseqEncoderModel):
    def __init__(self, cfg: XLMConfig, encoder: XLMEncoder):
        super().__init__(encoder)
        self.cfg = cfg

    @classmethod
    def build_model(cls, cfg, task):
        task_langs = list(getattr(task, "languages", []) or [])
        if not cfg.languages:
            with open_dict(cfg):
                cfg.languages = ",".join(task_langs)
        elif task_langs and cfg.languages.split(",") != task_langs:
            raise ValueError(
                f"model languages {cfg.languages!r} differ from the task's "
                f"{','.join(task_langs)!r}: language ids would be misread"
            )
        n_langs = 0 if cfg.no_lang_embeddings else len(cls.languages_of(cfg))
        return cls.from_dictionary(cfg, task.source_dictionary, n_langs)

    @classmethod
    def from_dictionary(cls, cfg, dictionary, n_langs: int) -> "XLMModel":
        """The model of ``cfg`` over ``dictionary`` with ``n_langs`` language
        embeddings: what ``build_model`` builds for a task, and what the
        checkpoint loader (interop/checkpoint.py) builds without one."""
        encoder = XLMEncoder(cfg, dictionary, n_langs)
        if getattr(cfg, "shared_top_layers", -1) >= 0:
            from ..methods.sharing import share_top_layers

            share_top_layers(encoder, cfg.shared_top_layers, len(cls.languages_of(cfg)))
        return cls(cfg, encoder)

    @staticmethod
    def languages_of(cfg) -> List[str]:
        return [lang for lang in cfg.languages.split(",") if lang]

    @property
    def languages(self) -> List[str]:
        return self.languages_of(self.cfg)

    def max_positions(self):
        return self.encoder.max_positions()

    def forward(self, src_tokens, src_lengths=None, **kwargs):
        return self.encoder(src_tokens, src_lengths, **kwargs)

    def extract_features(
        self,
        tokens: torch.Tensor,
        langs: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
        return_all_hiddens: bool = False,
    ):
        """Final hidden states (B, T, C) for feature extraction and
        fine-tuning; with ``return_all_hiddens`` also every layer's output."""
        x, hiddens = self.encoder.extract_features(
            tokens, langs, positions, return_all_hiddens=return_all_hiddens
        )
        return (x, hiddens) if return_all_hiddens else x

    def output_layer(self, features, masked_tokens=None):
        return self.encoder.lm_head(features, masked_tokens=masked_tokens)
