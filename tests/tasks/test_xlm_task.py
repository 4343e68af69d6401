"""The xlm task's datasets: streams, TLM pairs, language sampling, batches."""
import argparse
import math

import numpy as np
import pytest
import torch
from fairseq.data import ResamplingDataset

from xlm_ds.data.alpha_sampling import smoothed_probs
from xlm_ds.tasks.objectives import ObjectiveError, parse_objectives


def make_task(data, objectives="mlm tlm", **kw):
    from xlm_ds.tasks.xlm_task import XLMTask, XLMTaskConfig

    cfg = XLMTaskConfig(data=data, objectives=objectives, seed=1, **kw)
    return XLMTask.setup_task(cfg)


def test_mlm_stream_crosses_sentence_boundaries(prepared_sample):
    task = make_task(prepared_sample, "mlm:en", tokens_per_sample=64, mask_prob=0.15)
    task.load_dataset("valid")
    ds = task.dataset("valid").datasets["mlm"]
    d = task.dictionary
    sample = ds[0]
    full = torch.where(sample["target"].ne(d.pad()), sample["target"], sample["source"])
    assert len(full) == 64 and full[0] == d.bos()
    # more than one sentence separator inside one stream: sentences are joined
    assert int((full[1:] == d.eos()).sum()) >= 2
    # the stream is the corpus itself, in order: the first block holds the
    # first sentences of valid.en
    mono = task.shards.first.load("valid", "en", d)
    first = torch.cat([mono[0], mono[1]])[:20]
    assert torch.equal(full[1:21][sample["target"][1:21].eq(d.pad())],
                       first[sample["target"][1:21].eq(d.pad())])
    assert (sample["langs"] == task.lang2id["en"]).all()


def test_tlm_resets_positions_and_tags_languages(prepared_sample):
    task = make_task(prepared_sample, "tlm:de-en")
    task.load_dataset("valid")
    ds = task.dataset("valid").datasets["tlm"]
    d = task.dictionary
    s = ds[3]
    src = task.shards.first.load("valid", "de-en.de", d)[3]
    tgt = task.shards.first.load("valid", "de-en.en", d)[3]
    n_src = len(src) + 1
    assert s["positions"].tolist() == list(range(n_src)) + list(range(len(tgt) + 1))
    assert s["langs"].tolist() == [task.lang2id["de"]] * n_src + [task.lang2id["en"]] * (len(tgt) + 1)
    restored = torch.where(s["target"].ne(d.pad()), s["target"], s["source"])
    assert torch.equal(restored, torch.cat([torch.tensor([d.bos()]), src, torch.tensor([d.bos()]), tgt]))
    # both sides are masked somewhere over a few samples
    sides = set()
    for i in range(20):
        t = ds[i]
        pred = t["target"].ne(d.pad())
        sides |= set(t["langs"][pred].tolist())
    assert sides == {task.lang2id["de"], task.lang2id["en"]}


def test_language_sampling_follows_alpha(prepared_sample):
    # train: en-fr has 6000 pairs, de-en 8000: resampled sizes follow q ∝ p^α
    for alpha in (0.0, 0.5, 1.0):
        task = make_task(prepared_sample, "tlm", lang_sampling_alpha=alpha)
        task.load_dataset("train")
        concat = task.dataset("train").datasets["tlm"]
        sizes = {"de-en": 8000, "en-fr": 6000}
        expected = smoothed_probs(sizes, alpha)
        got = [len(ds) for ds in concat.datasets]
        assert all(isinstance(ds, ResamplingDataset) for ds in concat.datasets)
        total = sum(got)
        for (key, q), n in zip(expected.items(), got):
            assert n / total == pytest.approx(q, abs=1e-3), (alpha, key)


def test_batch_has_one_sub_batch_per_objective(prepared_sample):
    task = make_task(prepared_sample, "mlm:en,de tlm:de-en clm:fr")
    task.load_dataset("valid")
    ds = task.dataset("valid")
    ds.ordered_indices()
    batch = ds.collater([ds[i] for i in range(4)])
    assert set(batch) == {"mlm", "tlm", "clm"}
    assert batch["clm"]["net_input"]["causal"] is True
    assert "positions" in batch["tlm"]["net_input"]
    clm = batch["clm"]
    # CLM predicts the next token: source shifted right by one
    assert torch.equal(clm["net_input"]["src_tokens"][:, 1:], clm["target"][:, :-1])


@pytest.mark.parametrize(
    "spec,message",
    [
        ("mlm:xx", "mlm:xx is not in the data directory"),
        ("tlm:de-fr", "tlm:de-fr is not in the data directory"),
        ("mlm tlm:de-en@abc", "not a number"),
        ("nsp:en", "cannot parse 'nsp:en'"),
        ("mlm:en mlm:de", "given twice"),
    ],
)
def test_objective_errors_are_clear(spec, message):
    with pytest.raises(ObjectiveError, match=message):
        parse_objectives(spec, ["de", "en", "fr"], ["de-en", "en-fr"])


def test_missing_data_directory_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json: not found"):
        make_task(str(tmp_path))
