"""``xlm-ds-prepare --num-shards N``, on one machine and stage by stage:
the shards hold the one-machine preparation's vocabulary and ids, every
stage is atomic and resumable, wrong use is a clear error, and
``fairseq-train OUT`` trains epoch e on shard (e-1) mod N."""
import json
import os
import re
import subprocess
import sys

import pytest
from fairseq.data import MMapIndexedDataset

from xlm_ds.cli.prepare import main

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SMALL = ["--vocab-size", "300", "--workers", "2", "--quiet"]


def corpus(tiny):
    return ["--para", f"train:de-en={tiny}/train.de,{tiny}/train.en", "--mono", f"train:en={tiny}/mono.en",
            "--mono", f"valid:en={tiny}/valid.en"]


def prepare(tiny, out, *extra):
    return main([*corpus(tiny), "--out", str(out), *SMALL, *extra])


def ids(prefix):
    ds = MMapIndexedDataset(str(prefix))
    return [ds[i].tolist() for i in range(len(ds))]


def prefixes(manifest):
    for split, entries in manifest["splits"].items():
        for name in entries:
            for side in (name.split("-") if "-" in name else [None]):
                yield split, f"{split}.{name}" + (f".{side}" if side else "")


def assert_same_as_one_machine(one, sharded, n):
    """Same spm.model and dict.txt; train = the shards concatenated in
    order; valid in shard 0, byte for byte."""
    m_one = json.loads((one / "manifest.json").read_text())
    m_top = json.loads((sharded / "manifest.json").read_text())
    assert m_top["shards"] == [f"shard{i}" for i in range(n)]
    for name in ("spm.model", "dict.txt"):
        assert (sharded / name).read_bytes() == (one / name).read_bytes(), name
    for i in range(n):
        assert (sharded / f"shard{i}" / "spm.model").read_bytes() == (one / "spm.model").read_bytes()
        sym = lambda p: [line.split()[0] for line in p.read_text().splitlines()]  # noqa: E731
        assert sym(sharded / f"shard{i}" / "dict.txt") == sym(one / "dict.txt")
    for split, prefix in prefixes(m_one):
        if split == "train":
            parts = [ids(sharded / f"shard{i}" / prefix) for i in range(n)]
            assert all(parts), prefix  # every shard holds every train dataset
            assert sum(parts, []) == ids(one / prefix), prefix
        else:
            for ext in ("bin", "idx"):
                assert (sharded / "shard0" / f"{prefix}.{ext}").read_bytes() == (one / f"{prefix}.{ext}").read_bytes()
            assert not (sharded / "shard1" / f"{prefix}.bin").exists()
    for split, entries in m_one["splits"].items():
        for name, e in entries.items():
            top = m_top["splits"][split][name]
            assert {k: top[k] for k in ("lines", "tokens", "unk", "empty_skipped")} == \
                   {k: e[k] for k in ("lines", "tokens", "unk", "empty_skipped")}, (split, name)


@pytest.fixture
def one(tiny, tmp_path):
    out = tmp_path / "one"
    assert prepare(tiny, out) == 0
    return out


def test_one_machine_shards_equal_the_single_directory(tiny, tmp_path, one):
    out = tmp_path / "sharded"
    assert prepare(tiny, out, "--num-shards", "3") == 0
    assert_same_as_one_machine(one, out, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "one", "sharded"]  # no temp directory left


def test_stages_in_any_order_equal_one_machine_and_resume(tiny, tmp_path, one, capsys):
    out = tmp_path / "staged"
    assert prepare(tiny, out, "--stage", "vocab", "--num-shards", "3") == 0
    assert prepare(tiny, out, "--stage", "finalize", "--if-complete") == 0  # nothing to do yet
    assert not (out / "manifest.json").exists()
    for i in (2, 0):
        assert prepare(tiny, out, "--stage", "shard", "--shard", str(i)) == 0
    capsys.readouterr()
    assert prepare(tiny, out, "--stage", "finalize") == 2
    assert "shard(s) 1 of 3 missing or incomplete" in capsys.readouterr().err
    before = (out / "shard0" / "manifest.json").stat().st_mtime_ns
    for i in (1, 0):  # shard 0 again (a requeued array task): kept as it is
        assert prepare(tiny, out, "--stage", "shard", "--shard", str(i)) == 0
    assert (out / "shard0" / "manifest.json").stat().st_mtime_ns == before
    assert prepare(tiny, out, "--stage", "finalize", "--if-complete") == 0
    assert_same_as_one_machine(one, out, 3)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_misuse_of_stages_is_a_clear_error(tiny, tmp_path, capsys):
    out = tmp_path / "staged"

    def fails(*args, needle):
        assert prepare(tiny, out, *args) == 2
        err = capsys.readouterr().err
        assert err.startswith("xlm-ds-prepare: error: ") and needle in err, err

    fails("--stage", "shard", "--shard", "0", needle="vocab/vocab.json: not found; expected the vocab stage")
    # a failed vocab stage tells the waiting shard tasks at once
    fails("--stage", "vocab", "--num-shards", "2", "--vocab-size", "200000", needle="--vocab-size 200000")
    fails("--stage", "shard", "--shard", "1", "--wait-for-vocab", "600",
          needle="the vocabulary stage failed: --vocab-size 200000")
    assert prepare(tiny, out, "--stage", "vocab", "--num-shards", "2") == 0
    fails("--stage", "vocab", "--num-shards", "3", needle="made with other settings")
    fails("--stage", "shard", "--shard", "2", needle="--shard 2; expected 0..1")
    with open(tiny / "mono.en", "a", encoding="utf-8") as f:
        f.write("one more line\n")
    fails("--stage", "shard", "--shard", "0", needle=f"{tiny}/mono.en: ")
    fails("--num-shards", "0", needle="--num-shards 0; expected an integer >= 1")


def _train(data, save, *extra):
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", os.path.join(REPO, "xlm_ds"),
           "--task", "xlm", "--arch", "xlm_tiny", "--criterion", "xlm_lm", "--objectives", "mlm tlm",
           "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3", "--cpu",
           "--max-epoch", "4", "--save-dir", str(save), "--no-save", "--disable-validation", "--seed", "2",
           "--log-format", "simple", "--log-interval", "1", "--num-workers", "0", "--data-buffer-size", "0", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    return log, [float(x) for x in re.findall(r"\| loss ([0-9.]+) \|", log)]


@pytest.mark.slow
def test_fairseq_train_on_a_sharded_directory_trains_each_shard_in_turn(tiny, tmp_path):
    out = tmp_path / "sharded"
    assert prepare(tiny, out, "--num-shards", "3") == 0
    log, losses = _train(out, tmp_path / "a")
    for epoch, k in ((1, 0), (2, 1), (3, 2), (4, 0)):
        assert f"epoch {epoch}: train from shard {k} of 3: {out / f'shard{k}'}" in log
    # the directory stands for its shards: the same run as DATA=shard0:shard1:shard2
    explicit = os.pathsep.join(str(out / f"shard{i}") for i in range(3))
    _, same = _train(explicit, tmp_path / "b")
    assert len(losses) == 4 and losses == same  # one per epoch
    assert losses[-1] < losses[0]
