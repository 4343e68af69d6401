"""End to end: fairseq-train --task xlm with MLM+TLM on the shipped sample.

The model must learn more than token frequencies: validation MLM loss of
every language falls below that language's unigram entropy (the loss of the
best context-free predictor), computed here from the training data.
"""
import glob
import math
import os
import re

import numpy as np
import pytest
from fairseq.data import Dictionary, data_utils

pytestmark = pytest.mark.slow

LANGS = ("de", "en", "fr")


def unigram_entropy_bits(data_dir, lang):
    d = Dictionary.load(os.path.join(data_dir, "dict.txt"))
    ds = data_utils.load_indexed_dataset(os.path.join(data_dir, f"train.{lang}"), d, "mmap")
    counts = np.bincount(np.concatenate([ds[i].numpy() for i in range(len(ds))]), minlength=len(d))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def tensorboard_scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir)
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_mlm_tlm_pretraining_learns_every_language(prepared_sample, run_fairseq, tmp_path):
    tb = tmp_path / "tb"
    log = run_fairseq(
        "train", prepared_sample, "--user-dir", "xlm_ds", "--task", "xlm", "--arch", "xlm_tiny",
        "--criterion", "xlm_lm", "--objectives", "mlm:en,de,fr tlm:de-en,en-fr",
        "--tokens-per-sample", "64", "--batch-size", "32", "--optimizer", "adam",
        "--adam-betas", "(0.9,0.98)", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "50", "--max-update", "600", "--validate-interval-updates", "300",
        "--dropout", "0", "--attention-dropout", "0",
        "--cpu", "--save-dir", tmp_path / "ck", "--no-epoch-checkpoints", "--log-format", "simple",
        "--log-interval", "1", "--tensorboard-logdir", tb, "--seed", "1",
    )
    assert "done training" in log
    valid = tensorboard_scalars(str(tb / "valid"))
    train = tensorboard_scalars(str(tb / "train_inner"))
    for lang in LANGS:
        h = unigram_entropy_bits(prepared_sample, lang)
        first, last = valid[f"mlm_{lang}_loss"][0], valid[f"mlm_{lang}_loss"][-1]
        assert last < first, (lang, first, last)
        assert last < h, f"{lang}: validation MLM loss {last:.2f} bits >= unigram entropy {h:.2f}"
        assert f"tlm_{lang}_loss" in valid and f"mlm_{lang}_ppl" in valid
        assert f"mlm_{lang}_loss" in train
    for tag in ("wps", "lr", "gnorm", "loss", "ppl"):
        assert tag in train, tag
