"""Language sampling within a stream: α (XLM) and UniMax (Chung et al. 2023)
against hand-computed values for a 3-language example, the run length that
UniMax's budget comes from, and the errors of bad options."""
import types

import pytest

from xlm_ds.data.alpha_sampling import smoothed_probs
from xlm_ds.data.unimax import unimax_budgets, unimax_probs
from xlm_ds.tasks.language_mix import LanguageMix, LanguageMixError, RunLength, resampled_sizes

SENTENCES = {"en": 800, "de": 150, "sw": 50}


def test_alpha_three_languages_by_hand():
    # p = 0.8, 0.15, 0.05; p^0.5 = 0.894427, 0.387298, 0.223607 (sum 1.505332)
    q = smoothed_probs(SENTENCES, 0.5)
    assert q == pytest.approx({"en": 0.594173, "de": 0.257284, "sw": 0.148543}, abs=1e-6)
    # α = 0.3: p^0.3 = 0.935275, 0.566046, 0.407091 (sum 1.908412)
    assert smoothed_probs(SENTENCES, 0.3) == pytest.approx({"en": 0.490081, "de": 0.296598, "sw": 0.213320},
                                                           abs=1e-6)


def test_unimax_three_languages_by_hand():
    # budget 900, at most 2 epochs: sw min(900/3, 2*50) = 100; de min(800/2, 300) = 300;
    # en min(500/1, 1600) = 500
    assert unimax_budgets(SENTENCES, 900, 2) == {"en": 500, "de": 300, "sw": 100}
    q = unimax_probs(SENTENCES, 900, 2)
    assert q == pytest.approx({"en": 5 / 9, "de": 1 / 3, "sw": 1 / 9})
    assert list(q) == ["en", "de", "sw"]  # keeps the caller's order
    # a budget every language can take: uniform
    assert unimax_probs(SENTENCES, 90, 2) == pytest.approx({"en": 1 / 3, "de": 1 / 3, "sw": 1 / 3})
    # every language capped (5000 > 2 * 1000): the natural proportions
    assert unimax_budgets(SENTENCES, 5000, 2) == {"en": 1600, "de": 300, "sw": 100}
    assert unimax_probs(SENTENCES, 5000, 2) == pytest.approx({"en": 0.8, "de": 0.15, "sw": 0.05})


@pytest.mark.parametrize("budget,epochs", [(0, 1), (-5, 1), (100, 0), (float("nan"), 1)])
def test_unimax_rejects_bad_budget_or_cap(budget, epochs):
    with pytest.raises(ValueError):
        unimax_probs(SENTENCES, budget, epochs)


def test_mix_counts_sentences_or_tokens():
    tokens = {"en": 8000, "de": 3000, "sw": 2000}
    samples = {"en": 250, "de": 95, "sw": 63}
    alpha = LanguageMix("alpha", alpha=0.5)
    assert alpha.probabilities("mlm", SENTENCES, tokens, samples, 408) == pytest.approx(smoothed_probs(SENTENCES, 0.5))
    by_tokens = LanguageMix("alpha", alpha=0.5, unit="tokens")
    assert by_tokens.probabilities("mlm", SENTENCES, tokens, samples, 408) == pytest.approx(smoothed_probs(tokens, 0.5))
    # UniMax works on the stream's samples: 2 epochs of 500 samples, cap 1.5
    unimax = LanguageMix("unimax", unimax_max_epochs=1.5, run=RunLength(epochs=2))
    assert unimax.probabilities("mlm", SENTENCES, tokens, samples, length=500) == pytest.approx(
        unimax_probs(samples, 2 * 500, 1.5))
    q = {"en": 0.5, "de": 0.3, "sw": 0.2}
    assert resampled_sizes(q, samples, 500) == pytest.approx({k: q[k] * 500 / samples[k] for k in q})


def _cfg(**kw):
    base = dict(unimax_budget=0, max_update=0, batch_size=None, distributed_world_size=1, update_freq=[1],
                max_epoch=0)
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_run_length_from_the_training_options():
    run = RunLength.from_cfg(_cfg(max_update=100, batch_size=16, distributed_world_size=2, update_freq=[4]))
    assert run.samples == 100 * 16 * 2 * 4 and "--max-update 100" in run.source
    assert run.epochs_per_shard(epoch_length=1600, num_shards=2) == pytest.approx(12800 / 3200)
    assert RunLength.from_cfg(_cfg(max_epoch=6)).epochs_per_shard(1000, num_shards=3) == 2
    assert RunLength.from_cfg(_cfg(unimax_budget=5000, max_update=100, batch_size=8)).samples == 5000
    with pytest.raises(LanguageMixError, match="needs the run's length: give --max-update with --batch-size"):
        RunLength.from_cfg(_cfg(max_update=100))
    # outside fairseq-train the interpolations stay unresolved strings
    with pytest.raises(LanguageMixError):
        RunLength.from_cfg(_cfg(max_update="${optimization.max_update}", batch_size="${dataset.batch_size}"))


@pytest.mark.parametrize("kw,message", [
    ({"method": "temperature"}, "--lang-sampling 'temperature'; expected one of alpha, unimax"),
    ({"unit": "words"}, "--lang-sampling-unit 'words'; expected one of sentences, tokens"),
    ({"alpha": -1}, "--lang-sampling-alpha -1"),
    ({"unimax_max_epochs": 0}, "--unimax-max-epochs 0"),
])
def test_bad_options_are_named(kw, message):
    with pytest.raises(LanguageMixError, match=message.replace("(", r"\(")):
        LanguageMix(**kw)
