"""80/10/10 masking and XLM's frequency-smoothed choice of masked tokens."""
import numpy as np
import pytest

from xlm_ds.data.masking import MaskingConfig, frequency_weights, mask_tokens

CFG = MaskingConfig(mask_idx=99, pad_idx=1, vocab_size=100, first_normal_idx=4)


def test_rates_over_many_draws():
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, 99, size=200)
    maskable = np.ones(200, bool)
    n_pos = chosen = masked = random = kept = 0
    for _ in range(2000):
        src, tgt = mask_tokens(tokens, maskable, CFG, rng)
        pred = tgt != CFG.pad_idx
        n_pos += len(tokens)
        chosen += pred.sum()
        masked += (src[pred] == CFG.mask_idx).sum()
        same = src[pred] == tokens[pred]
        kept += same.sum()
        random += (~same & (src[pred] != CFG.mask_idx)).sum()
        assert (tgt[pred] == tokens[pred]).all()
        assert (src[~pred] == tokens[~pred]).all()
    assert chosen / n_pos == pytest.approx(0.15, abs=0.002)
    assert masked / chosen == pytest.approx(0.8, abs=0.01)
    # a random draw equal to the original token counts as "kept": ~1/95 of 10%
    assert kept / chosen == pytest.approx(0.1 + 0.1 / 95, abs=0.01)
    assert random / chosen == pytest.approx(0.1 - 0.1 / 95, abs=0.01)


def test_random_replacements_are_normal_symbols_never_mask():
    rng = np.random.default_rng(1)
    cfg = MaskingConfig(mask_idx=99, pad_idx=1, vocab_size=100, first_normal_idx=4,
                        leave_unmasked_prob=0.0, random_token_prob=1.0)
    tokens = np.full(1000, 50)
    src, tgt = mask_tokens(tokens, np.ones(1000, bool), cfg, rng)
    drawn = src[tgt != 1]
    assert drawn.min() >= 4 and drawn.max() < 99


def test_unmaskable_positions_are_never_chosen():
    rng = np.random.default_rng(2)
    tokens = np.arange(4, 24)
    maskable = np.zeros(20, bool)
    maskable[5:10] = True
    for _ in range(200):
        _, tgt = mask_tokens(tokens, maskable, CFG, rng)
        assert (tgt[~maskable] == CFG.pad_idx).all()
        assert (tgt != CFG.pad_idx).sum() >= 1


def test_frequency_weighting_prefers_rare_tokens():
    counts = np.ones(100)
    counts[10] = 10000  # frequent
    counts[11] = 1  # rare
    w = frequency_weights(counts, 0.5, range(4))
    assert w[:4].sum() == 0
    tokens = np.array([10] * 50 + [11] * 50)
    rng = np.random.default_rng(3)
    rare = frequent = 0
    for _ in range(300):
        _, tgt = mask_tokens(tokens, np.ones(100, bool), CFG, rng, token_weights=w)
        rare += (tgt == 11).sum()
        frequent += (tgt == 10).sum()
    # weights 1 vs 10000^-0.5 = 0.01: rare tokens dominate the draws
    assert rare > 20 * frequent


def test_same_seed_epoch_index_same_mask():
    tokens = np.arange(4, 60)
    a = mask_tokens(tokens, np.ones(56, bool), CFG, np.random.default_rng([1, 2, 3]))
    b = mask_tokens(tokens, np.ones(56, bool), CFG, np.random.default_rng([1, 2, 3]))
    assert all((x == y).all() for x, y in zip(a, b))
