"""The training data across epochs, through the real loops (fairseq-train and
a 2-rank xlm-ds-train, via the fault probes): every sample the trainer is
handed is recorded (tests/faults/sample_recorder.py) and checked against
what the data path promises (docs/pretraining.md, "Epochs and shards"):

(a) the same sample is masked (shuffled, noised) differently in each epoch,
    and a block drawn twice in one epoch differently each time;
(b) each language's share of the stream is q_i (α over sentence counts, or
    UniMax), redrawn every epoch: the share of its blocks seen after k
    epochs is the with-replacement expectation 1 - (1 - 1/n)^(draws);
(c) DATA=d0:d1 trains epoch e on shard (e-1) mod 2, a language missing
    from a shard is warned about once, another vocabulary is refused;
(d) SIGKILL in epoch 2 (on shard 1), same command: the losses of every
    later update, across the epoch boundary, are bit-identical.
"""
import collections
import gzip
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from fairseq.data import Dictionary, data_utils

from xlm_ds.data.alpha_sampling import smoothed_probs
from xlm_ds.data.stream_datasets import token_blocks

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(REPO, "xlm_ds", "sample_corpus")
TPS = 32
OBJECTIVES = "mlm:en,de,fr tlm:de-en"
LANGS = ("de", "en", "fr")  # language ids in this order (sorted)

# (file, first line, last line) per shard; shard 1 has no French. The TLM
# stream is the longest: the MLM stream is resampled to its length.
SHARDS = {
    "d0": {"mono": {"en": ("train.en.gz", 0, 400), "de": ("train.de.gz", 0, 200), "fr": ("train.fr.gz", 0, 100)},
           "para": {"de-en": ("train.de-en.{}.gz", 0, 600)}},
    "d1": {"mono": {"en": ("train.en.gz", 400, 800), "de": ("train.de.gz", 200, 400)},
           "para": {"de-en": ("train.de-en.{}.gz", 600, 1200)}},
}


def _write(root, name, lo, hi):
    with gzip.open(os.path.join(SAMPLE, name), "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()[lo:hi]
    path = os.path.join(root, f"{name}.{lo}-{hi}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _prepare(root, shard, out, *extra):
    args = []
    for lang, (name, lo, hi) in SHARDS[shard]["mono"].items():
        args += ["--mono", f"train:{lang}={_write(root, name, lo, hi)}"]
    for pair, (name, lo, hi) in SHARDS[shard]["para"].items():
        sides = [_write(root, name.format(side), lo, hi) for side in pair.split("-")]
        args += ["--para", f"train:{pair}={','.join(sides)}"]
    subprocess.run([sys.executable, "-m", "xlm_ds.cli.prepare", *args, "--out", out, "--workers", "1", *extra],
                   check=True, capture_output=True, cwd=REPO)
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("epoch_shards"))
    d0 = _prepare(root, "d0", os.path.join(root, "d0"), "--vocab-size", "500")
    d1 = _prepare(root, "d1", os.path.join(root, "d1"), "--spm-model", os.path.join(d0, "spm.model"),
                  "--dict", os.path.join(d0, "dict.txt"))
    other = _prepare(root, "d1", os.path.join(root, "other"), "--vocab-size", "400")
    return {"d0": d0, "d1": d1, "other": other}


# --------------------------------------------------------------------------
# reading what was recorded
# --------------------------------------------------------------------------
def _records(prefix):
    rows = []
    for rank in (0, 1):
        path = f"{prefix}.{rank}"
        if os.path.exists(path):
            rows += [json.loads(line) for line in open(path)]
    assert rows, f"nothing recorded in {prefix}.*"
    return rows


def _blocks(data, lang):
    d = Dictionary.load(os.path.join(data, "dict.txt"))
    mono = data_utils.load_indexed_dataset(os.path.join(data, f"train.{lang}"), d, "mmap")
    return mono, token_blocks(mono, TPS - 1, d.pad(), d.eos())


def _pairs(data):
    d = Dictionary.load(os.path.join(data, "dict.txt"))
    return len(data_utils.load_indexed_dataset(os.path.join(data, "train.de-en.de"), d, "mmap"))


def _original(row):
    """The unmasked tokens of an MLM/TLM sample: targets where predicted."""
    return [t if t != 1 else s for s, t in zip(row["source"], row["target"])]


def _draws(rows, stream):
    """{(lang, id): [(epoch, source, target), ...]} of one stream."""
    out = collections.defaultdict(list)
    for r in rows:
        if r["stream"] == stream:
            out[(r["lang"], r["id"])].append((r["epoch"], tuple(r["source"]), tuple(r["target"])))
    return out


def _identical_share(draws, across_epochs):
    same = total = 0
    for seen in draws.values():
        for i in range(len(seen)):
            for j in range(i + 1, len(seen)):
                if (seen[i][0] != seen[j][0]) == across_epochs:
                    total += 1
                    same += seen[i][1:] == seen[j][1:]
    return same, total


def check_fresh_epochs(rows, data, epochs=3, streams=("mlm", "tlm")):
    """(a) and (b) for a run of ``epochs`` epochs on the one directory ``data``."""
    assert {r["epoch"] for r in rows} == set(range(1, epochs + 1))
    for stream in streams:
        draws = _draws(rows, stream)
        same, total = _identical_share(draws, across_epochs=True)
        assert total > 50, (stream, total)
        assert same / total < 0.2, f"{stream}: {same} of {total} repeats across epochs are the same sample"
        same, total = _identical_share(draws, across_epochs=False)
        if total:
            assert same / total < 0.2, f"{stream}: {same} of {total} repeats within an epoch are the same sample"
    # (b) per epoch, each language draws q_i (α = 0.7 over sentence counts)
    # of an MLM stream as long as the epoch (the TLM stream's pairs), fresh
    # each epoch: distinct blocks follow the with-replacement expectation
    sizes = {lang: _blocks(data, lang) for lang in LANGS}
    sentences = {lang: len(mono) for lang, (mono, _) in sizes.items()}
    blocks = {lang: len(b) for lang, (_, b) in sizes.items()}
    q = smoothed_probs(sentences, 0.7)
    length = max(sum(blocks.values()), _pairs(data))
    mlm = [r for r in rows if r["stream"] == "mlm"]
    for i, lang in enumerate(LANGS):
        n = blocks[lang]
        per_epoch = collections.Counter(r["epoch"] for r in mlm if r["lang"] == i)
        expected_draws = math.ceil(n * (q[lang] * length / n))
        assert all(per_epoch[e] == expected_draws for e in range(1, epochs + 1)), (lang, per_epoch, expected_draws)
        seen = len({r["id"] for r in mlm if r["lang"] == i}) / n
        expect = 1 - (1 - 1 / n) ** (epochs * expected_draws)
        tolerance = 4 * math.sqrt(expect * (1 - expect) / n) + 1 / n
        print(f"{lang}: {n} blocks, {expected_draws} draws/epoch, seen {seen:.3f}, expected {expect:.3f}")
        assert abs(seen - expect) <= tolerance, (lang, seen, expect, tolerance)
        for r in mlm:
            if r["lang"] == i and r["epoch"] == 1:
                assert _original(r)[1:] == sizes[lang][1][r["id"]].tolist()
                break


def check_shards_in_order(rows, shards, epochs=3):
    """(c): epoch e's MLM samples are blocks of shard (e-1) mod 2."""
    order = [shards["d0"], shards["d1"]]
    blocks = {(k, lang): _blocks(path, lang)[1] for k, path in enumerate(order) for lang in ("de", "en")}
    for e in range(1, epochs + 1):
        k = (e - 1) % 2
        mlm = [r for r in rows if r["stream"] == "mlm" and r["epoch"] == e]
        assert mlm, e
        langs = {LANGS[r["lang"]] for r in mlm}
        assert langs == ({"de", "en", "fr"} if k == 0 else {"de", "en"}), (e, langs)
        for r in mlm:
            lang = LANGS[r["lang"]]
            if lang != "fr":
                assert _original(r)[1:] == blocks[(k, lang)][r["id"]].tolist(), (e, lang, r["id"])


def kill_point(rows, interval):
    """An update inside epoch 2 after its first mid-epoch checkpoint."""
    ep2 = sorted({r["update"] for r in rows if r["epoch"] == 2})
    first_save = next(u for u in ep2 if u % interval == 0)
    assert first_save < ep2[-1] - 1, (ep2, interval)
    return random.Random().randint(first_save + 1, ep2[-1])


# --------------------------------------------------------------------------
# fairseq-train
# --------------------------------------------------------------------------
def _fs_run(probe, data, save, *extra, faults=None, expect_rc=0):
    return probe.run(data, save, str(save) + ".losses", "--objectives", OBJECTIVES, "--max-epoch", "3",
                     "--log-interval", "100", *extra, updates=0, faults=faults, expect_rc=expect_rc)


def test_fairseq_train_draws_every_epoch_afresh(shards, probe, tmp_path):
    save = tmp_path / "ckpt"
    _fs_run(probe, shards["d0"], save, "--no-save", faults={"FAULT_SAMPLES": tmp_path / "samples"})
    check_fresh_epochs(_records(tmp_path / "samples"), shards["d0"])


def test_fairseq_train_shards_in_order_and_sigkill_in_epoch_2_resumes_exactly(shards, probe, tmp_path):
    data = shards["d0"] + os.pathsep + shards["d1"]
    ref = tmp_path / "ref"
    _, log = _fs_run(probe, data, ref, faults={"FAULT_SAMPLES": tmp_path / "ref.samples"})
    rows = _records(tmp_path / "ref.samples")
    check_shards_in_order(rows, shards)
    for e, k in ((1, 0), (2, 1), (3, 0)):
        assert f"epoch {e}: train from shard {k} of 2: {(shards['d0'], shards['d1'])[k]}" in log
    assert log.count(f"shard 1 ({shards['d1']}) has no train data for fr") == 1
    kill_at = kill_point(rows, 10)
    print(f"SIGKILL inside update {kill_at}")
    save = tmp_path / "ckpt"
    rc, _ = _fs_run(probe, data, save, faults={"FAULT_KILL_AT_UPDATE": kill_at}, expect_rc=None)
    assert rc == -9, rc
    _, log = _fs_run(probe, data, save)
    resumed = (kill_at - 1) // 10 * 10
    assert f"(epoch 2 @ {resumed} updates)" in log and f"epoch 2: train from shard 1 of 2" in log
    got, want = probe.losses(str(save) + ".losses"), probe.losses(str(ref) + ".losses")
    assert max(want) > max(u for u in {r["update"] for r in rows if r["epoch"] == 2})  # epoch 3 compared too
    for u in range(resumed + 1, max(want) + 1):
        assert got[u]["loss"] == want[u]["loss"] and got[u]["gnorm"] == want[u]["gnorm"], u


def test_shard_with_another_vocabulary_is_refused(shards, probe, tmp_path):
    rc, log = _fs_run(probe, shards["d0"] + os.pathsep + shards["other"], tmp_path / "ckpt", expect_rc=None)
    assert rc != 0
    assert f"{os.path.join(shards['other'], 'dict.txt')}: shard 1 has another dictionary than shard 0" in log
    assert "entry " in log and "--spm-model" in log


def test_unimax_shares_the_run_uniformly_with_its_cap(shards, probe, tmp_path):
    """2 epochs, UniMax at most 5 passes per language: French (the smallest)
    gets exactly its cap, German and English share the rest equally."""
    from xlm_ds.data.unimax import unimax_probs

    _fs_run(probe, shards["d0"], tmp_path / "ckpt", "--no-save", "--max-epoch", "2", "--lang-sampling", "unimax",
            "--unimax-max-epochs", "5", faults={"FAULT_SAMPLES": tmp_path / "samples"})
    rows = [r for r in _records(tmp_path / "samples") if r["stream"] == "mlm"]
    blocks = {lang: len(_blocks(shards["d0"], lang)[1]) for lang in LANGS}
    length = max(sum(blocks.values()), _pairs(shards["d0"]))
    q = unimax_probs(blocks, 2 * length, 5)
    for i, lang in enumerate(LANGS):
        per_epoch = collections.Counter(r["epoch"] for r in rows if r["lang"] == i)
        assert per_epoch[1] == per_epoch[2] == math.ceil(q[lang] * length), (lang, per_epoch)
        assert 2 * per_epoch[1] <= 5 * blocks[lang] + 2
    assert 2 * math.ceil(q["fr"] * length) >= 5 * blocks["fr"] - 2  # French is capped
    assert q["de"] == pytest.approx(q["en"])  # the others share the rest


TASKS = {
    "xlm_phased": (["--task", "xlm_phased", "--phases", "0=mlm:en; 20=mlm tlm:de-en"], ("mlm",)),
    "xlm_align": (["--task", "xlm_align", "--objectives", "tlm:de-en", "--align-shuffle-rate", "0.9",
                   "--align-queue-size", "16"], ("tlm", "align")),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_draws_its_randomness_afresh(task, shards, probe, tmp_path):
    extra, streams = TASKS[task]
    _fs_run(probe, shards["d0"], tmp_path / "ckpt", "--no-save", *extra, faults={"FAULT_SAMPLES": tmp_path / "s"})
    rows = _records(tmp_path / "s")
    if task == "xlm_phased":
        rows = [dict(r, stream=r["stream"].split(":")[0]) for r in rows]
    for stream in streams:
        same, total = _identical_share(_draws(rows, stream), across_epochs=True)
        assert total > 20 and same / total < 0.25, (stream, same, total)


# --------------------------------------------------------------------------
# xlm-ds-train, 2 ranks (ZeRO-2)
# --------------------------------------------------------------------------
def _ds_run(ds, data, save, *extra, faults=None, expect_rc=0):
    return ds.run(data, save, 2, "zero2.json", "--objectives", OBJECTIVES, "--max-epoch", "3",
                  *extra, updates=0, faults=faults, expect_rc=expect_rc)


def test_xlm_ds_train_draws_every_epoch_afresh(shards, ds, tmp_path):
    _ds_run(ds, shards["d0"], tmp_path / "ckpt", "--no-save", faults={"FAULT_SAMPLES": tmp_path / "samples"})
    rows = _records(tmp_path / "samples")
    check_fresh_epochs(rows, shards["d0"])


def test_xlm_ds_train_shards_in_order_and_sigkill_in_epoch_2_resumes_exactly(shards, ds, tmp_path):
    data = shards["d0"] + os.pathsep + shards["d1"]
    ref = tmp_path / "ref"
    _, log = _ds_run(ds, data, ref, "--save-interval-updates", "5", faults={"FAULT_SAMPLES": tmp_path / "ref.s"})
    rows = _records(tmp_path / "ref.s")
    check_shards_in_order(rows, shards)
    assert f"epoch 2: train from shard 1 of 2: {shards['d1']}" in log
    kill_at = kill_point(rows, 5)
    print(f"SIGKILL inside update {kill_at} (both ranks)")
    save = tmp_path / "ckpt"
    rc, _ = _ds_run(ds, data, save, "--save-interval-updates", "5", faults={"FAULT_KILL_AT_UPDATE": kill_at},
                    expect_rc=None)
    assert rc != 0
    _, log = _ds_run(ds, data, save, "--save-interval-updates", "5")
    resumed = (kill_at - 1) // 5 * 5
    assert f"(epoch 2 @ {resumed} updates)" in log and "epoch 2: train from shard 1 of 2" in log
    got, want = ds.losses(str(save) + ".jsonl"), ds.losses(str(ref) + ".jsonl")
    assert max(want) == max(got) and max(want) > max(r["update"] for r in rows if r["epoch"] == 2)
    for u in range(resumed + 1, max(want) + 1):
        assert got[u]["loss"] == want[u]["loss"] and got[u]["gnorm"] == want[u]["gnorm"], u
