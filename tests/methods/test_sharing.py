"""--shared-top-layers k: exactly the top k blocks are shared (same
parameter objects for every language), the lower ones are per language."""
import pytest
import torch
from omegaconf import OmegaConf

from xlm_ds.methods.sharing import LanguageRoutedLayer, shared_parameters
from xlm_ds.models.xlm_model import XLMConfig, XLMModel


class _Dict:
    def __init__(self, n=50):
        self.n = n

    def __len__(self):
        return self.n

    def pad(self):
        return 1


class _Task:
    source_dictionary = _Dict()
    languages = ["de", "en", "fr"]


def build(k, layers=4):
    cfg = XLMConfig(encoder_layers=layers, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
                    encoder_attention_heads=2, dropout=0.0, attention_dropout=0.0,
                    max_positions=32, shared_top_layers=k)
    return XLMModel.build_model(OmegaConf.structured(cfg), _Task())


@pytest.mark.parametrize("k", [0, 1, 3])
def test_top_k_blocks_shared_by_identity(k):
    enc = build(k).encoder
    n = len(enc.layers)
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        shared, distinct = shared_parameters(enc, a, b)
        assert shared == list(range(n - k, n))
        assert distinct == list(range(n - k))
    for i in range(n - k):
        layer = enc.layers[i]
        assert isinstance(layer, LanguageRoutedLayer) and len(layer.per_lang) == 3
        ids = [{id(p) for p in blk.parameters()} for blk in layer.per_lang]
        assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    # embeddings and LM head are shared by all languages
    assert enc.lm_head.weight is enc.embed_tokens.weight


def test_default_shares_everything_and_params_scale():
    full = build(-1)
    assert not any(isinstance(l, LanguageRoutedLayer) for l in full.encoder.layers)
    assert build(4).state_dict().keys() == full.state_dict().keys()  # k = all blocks
    per_block = sum(p.numel() for p in full.encoder.layers[0].parameters())
    n_full = sum(p.numel() for p in full.parameters())
    n_k1 = sum(p.numel() for p in build(1).parameters())
    assert n_k1 - n_full == 3 * 2 * per_block  # 3 lower blocks, 2 extra copies each


def test_routing_uses_each_tokens_language():
    model = build(1, layers=2).eval()
    enc = model.encoder
    tokens = torch.randint(4, 50, (2, 6))
    langs = torch.tensor([[0] * 6, [2] * 6])
    x, _ = enc.extract_features(tokens, langs)
    for row, lang in ((0, 0), (1, 2)):
        h = enc.embed(tokens[row:row + 1], langs[row:row + 1])
        h = enc.layers[0].per_lang[lang](h)
        h = enc.layers[1](h)
        assert torch.allclose(x[row:row + 1], h, atol=1e-5)
    with pytest.raises(ValueError, match="language"):
        enc.extract_features(tokens, None)
