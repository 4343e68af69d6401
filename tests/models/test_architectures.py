"""Parameter counts of the named sizes, built on the meta device (no memory)
and compared with the published figures for a 250k vocabulary."""
import argparse

import pytest
import torch
from fairseq.models import ARCH_CONFIG_REGISTRY

from xlm_ds.models.xlm_encoder import XLMEncoder
from xlm_ds.models.xlm_model import XLMConfig


class _Vocab:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def pad(self):
        return 1


def count(arch: str, vocab: int, n_langs: int = 15) -> int:
    args = argparse.Namespace()
    ARCH_CONFIG_REGISTRY[arch](args)
    cfg = XLMConfig(**vars(args))
    with torch.device("meta"):
        enc = XLMEncoder(cfg, _Vocab(vocab), 0 if cfg.no_lang_embeddings else n_langs)
    assert all(p.is_meta for p in enc.parameters())
    return sum(p.numel() for p in enc.parameters())


@pytest.mark.parametrize(
    "arch,published",
    [
        ("xlmr_base", 270e6),  # Conneau et al. 2020, Table 7 (278M exactly counted)
        ("xlmr_large", 560e6),
        ("xlmr_xl", 3.5e9),  # Goyal et al. 2021
        ("xlmr_xxl", 10.7e9),
    ],
)
def test_xlmr_sizes_match_published(arch, published):
    n = count(arch, 250002)
    assert abs(n - published) / published < 0.035, f"{arch}: {n / 1e6:.1f}M vs {published / 1e6:.0f}M"


def test_xlm_paper_size():
    # XLM's XNLI-15 MLM+TLM model: 12 layers, 1024 dim, 95k BPE codes, ~250M
    n = count("xlm_1024", 95000)
    assert abs(n - 250e6) / 250e6 < 0.02


def test_pre_layer_norm_only_for_xl_sizes():
    for arch, pre in [("xlmr_large", False), ("xlmr_xl", True), ("xlmr_xxl", True)]:
        args = argparse.Namespace()
        ARCH_CONFIG_REGISTRY[arch](args)
        assert args.normalize_before is pre


def test_command_line_overrides_architecture():
    args = argparse.Namespace(encoder_layers=3)
    ARCH_CONFIG_REGISTRY["xlmr_base"](args)
    assert args.encoder_layers == 3 and args.encoder_embed_dim == 768
