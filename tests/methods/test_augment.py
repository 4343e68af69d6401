"""Input shuffling and code-switching happen at their configured rates."""
import numpy as np
import pytest

from xlm_ds.methods.augment import code_switch, shuffle_tokens


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_shuffle_rate_and_invariants(rate):
    rng = np.random.default_rng(0)
    tokens = np.array([0] + list(range(10, 30)) + [2])
    n, hits, changed = 4000, 0, 0
    for _ in range(n):
        out, shuffled = shuffle_tokens(tokens, rate, rng)
        hits += shuffled
        changed += not np.array_equal(out, tokens)
        assert out[0] == 0 and out[-1] == 2  # <s> and </s> stay in place
        assert sorted(out.tolist()) == sorted(tokens.tolist())  # a permutation
    assert hits / n == pytest.approx(rate, abs=0.025)
    # a 20-token permutation is (almost) never the identity
    assert changed / n == pytest.approx(rate, abs=0.025)


def test_align_dataset_shuffles_queries_at_rate(prepared_sample):
    from xlm_ds.tasks.alignment_task import AlignTaskConfig, AlignXLMTask

    task = AlignXLMTask.setup_task(AlignTaskConfig(
        data=prepared_sample, objectives="tlm", seed=1, align_shuffle_rate=0.25))
    task.load_dataset("train")
    ds = task.dataset("train").datasets["align"]
    n = 2000
    rate = np.mean([ds[i]["shuffled"] for i in range(n)])
    assert rate == pytest.approx(0.25, abs=0.03)
    # keys are never shuffled; valid queries are never shuffled
    task.load_dataset("valid")
    vds = task.dataset("valid").datasets["align"]
    assert not any(vds[i]["shuffled"] for i in range(100))


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.7, 1.0])
def test_code_switch_rate(rate):
    rng = np.random.default_rng(1)
    src = [f"de{i}" for i in range(20000)]
    en = [f"en{i}" for i in range(20000)]
    out, switched = code_switch(src, en, rate, rng)
    assert switched.mean() == pytest.approx(rate, abs=0.015)
    for i in range(0, 20000, 997):
        assert out[i] == (en[i] if switched[i] else src[i])
    with pytest.raises(ValueError):
        code_switch(src, en[:-1], rate, rng)
