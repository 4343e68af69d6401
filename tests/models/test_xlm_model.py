"""Forward-pass properties of the xlm_lm model."""
import argparse

import torch
from fairseq.data import Dictionary
from fairseq.models import ARCH_CONFIG_REGISTRY

from xlm_ds.models.xlm_encoder import XLMEncoder
from xlm_ds.models.xlm_model import XLMConfig


def tiny(n_langs=3, **over):
    d = Dictionary()
    for i in range(60):
        d.add_symbol(f"w{i}")
    args = argparse.Namespace(**over)
    ARCH_CONFIG_REGISTRY["xlm_tiny"](args)
    cfg = XLMConfig(**vars(args))
    torch.manual_seed(0)
    enc = XLMEncoder(cfg, d, n_langs).eval()
    return enc, d


def test_causal_attention_ignores_the_future():
    enc, d = tiny()
    x = torch.randint(4, len(d), (2, 12))
    y = x.clone()
    y[:, 8:] = torch.randint(4, len(d), (2, 4))
    with torch.no_grad():
        fx, _ = enc.extract_features(x, causal=True)
        fy, _ = enc.extract_features(y, causal=True)
        bx, _ = enc.extract_features(x, causal=False)
        by, _ = enc.extract_features(y, causal=False)
    assert torch.allclose(fx[:, :8], fy[:, :8], atol=1e-6)
    assert not torch.allclose(fx[:, 8:], fy[:, 8:])
    assert not torch.allclose(bx[:, :8], by[:, :8])  # bidirectional sees it


def test_causal_with_padding_matches_unpadded():
    enc, d = tiny()
    x = torch.randint(4, len(d), (1, 7))
    padded = torch.cat([x, torch.full((1, 3), d.pad())], dim=1)
    with torch.no_grad():
        a, _ = enc.extract_features(x, causal=True)
        b, _ = enc.extract_features(padded, causal=True)
    assert torch.allclose(a, b[:, :7], atol=1e-5)


def test_positions_and_languages_change_the_features():
    enc, d = tiny()
    x = torch.randint(4, len(d), (1, 10))
    langs0 = torch.zeros_like(x)
    with torch.no_grad():
        base, _ = enc.extract_features(x, langs0)
        other_lang, _ = enc.extract_features(x, langs0 + 1)
        default_pos, _ = enc.extract_features(x, langs0, torch.arange(10)[None])
        reset_pos, _ = enc.extract_features(
            x, langs0, torch.cat([torch.arange(5), torch.arange(5)])[None]
        )
    assert torch.allclose(base, default_pos, atol=1e-6)  # explicit 0..T-1 == implicit
    assert not torch.allclose(base, other_lang)
    assert not torch.allclose(base[:, 5:], reset_pos[:, 5:])


def test_lm_head_scores_only_requested_positions():
    enc, d = tiny()
    x = torch.randint(4, len(d), (2, 9))
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0, 3] = mask[1, 5] = True
    with torch.no_grad():
        part, _ = enc(x, masked_tokens=mask)
        full, _ = enc(x)
    assert part.shape == (2, len(d))
    assert torch.allclose(part, full[mask], atol=1e-5)


def test_sinusoidal_and_pre_norm_variants_run():
    enc, d = tiny(sinusoidal_positions=True, normalize_before=True)
    x = torch.randint(4, len(d), (2, 9))
    with torch.no_grad():
        out, hid = enc.extract_features(x, positions=torch.arange(9)[None].expand(2, 9),
                                        return_all_hiddens=True)
    assert out.shape == (2, 9, 64) and len(hid) == 3
