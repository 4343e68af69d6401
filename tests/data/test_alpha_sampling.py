"""q_i ∝ p_i^alpha: the formula, the integer split, and the sentences really
drawn for sentencepiece training (skewed 100:1 corpus)."""
import math

import pytest

from xlm_ds.data.alpha_sampling import allocate, smoothed_probs
from xlm_ds.data.vocab_training import plan_draws, write_sample


def test_smoothed_probs_alpha_half_on_100_to_1():
    q = smoothed_probs({"en": 100, "de": 1}, 0.5)
    # p = 100/101, 1/101 -> p^0.5 ∝ 10 : 1
    assert q["en"] == pytest.approx(10 / 11)
    assert q["de"] == pytest.approx(1 / 11)
    assert sum(q.values()) == pytest.approx(1.0)


def test_smoothed_probs_edge_cases():
    counts = {"en": 300, "de": 100, "fr": 0}
    assert smoothed_probs(counts, 1.0) == pytest.approx({"en": 0.75, "de": 0.25, "fr": 0.0})
    assert smoothed_probs(counts, 0.0) == pytest.approx({"en": 0.5, "de": 0.5, "fr": 0.0})
    assert list(smoothed_probs(counts, 0.3)) == ["en", "de", "fr"]  # keeps order
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError):
            smoothed_probs(counts, bad)
    with pytest.raises(ValueError):
        smoothed_probs({"en": 0}, 0.5)


def test_allocate_is_exact_largest_remainder():
    q = smoothed_probs({"a": 5, "b": 3, "c": 1}, 0.7)
    for total in (0, 1, 7, 1000, 12345):
        k = allocate(q, total)
        assert sum(k.values()) == total
        for lang in q:
            assert abs(k[lang] - q[lang] * total) < 1
    assert allocate({"a": 0.5, "b": 0.5}, 3) == {"a": 2, "b": 1}  # tie -> first listed


def _corpus(tmp_path, n_en=1000, n_de=10):
    en = tmp_path / "en.txt"
    de = tmp_path / "de.txt"
    en.write_text("".join(f"en sentence {i}\n" for i in range(n_en)))
    de.write_text("".join(f"de satz {i}\n" for i in range(n_de)))
    return {"en": [str(en)], "de": [str(de)]}, {"en": n_en, "de": n_de}


@pytest.mark.parametrize(
    "alpha,expected",
    [
        (0.5, {"en": 918, "de": 92}),  # 1010 * 10/11 = 918.18, 1010 / 11 = 91.8
        (1.0, {"en": 1000, "de": 10}),  # natural shares: everything once
        (0.0, {"en": 505, "de": 505}),  # uniform: de repeated 50x + 5 extra
    ],
)
def test_vocab_sample_follows_q(tmp_path, alpha, expected):
    pools, counts = _corpus(tmp_path)
    plan = plan_draws(counts, alpha, total=sum(counts.values()))
    assert plan["draws"] == expected
    out = tmp_path / "sample.txt"
    written = write_sample(pools, counts, plan["draws"], str(out), seed=7)
    lines = out.read_text().splitlines()
    got = {"en": sum(s.startswith("en ") for s in lines), "de": sum(s.startswith("de ") for s in lines)}
    assert got == written == expected
    if alpha == 0.0:  # every de sentence at least 50 times
        de = [s for s in lines if s.startswith("de ")]
        assert min(de.count(f"de satz {i}") for i in range(10)) == 50
    if alpha == 0.5:  # a real subset of en, without repetition
        en = [s for s in lines if s.startswith("en ")]
        assert len(set(en)) == len(en) == 918


def test_vocab_sample_is_deterministic(tmp_path):
    pools, counts = _corpus(tmp_path)
    draws = plan_draws(counts, 0.5, 500)["draws"]
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    write_sample(pools, counts, draws, str(a), seed=3)
    write_sample(pools, counts, draws, str(b), seed=3)
    write_sample(pools, counts, draws, str(c), seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
