"""xlm-ds-prepare on the shipped Tatoeba sample: manifest, layout, fairseq
readability, round trip, vocabulary reuse, byte-identity with
fairseq-preprocess, and short fairseq-train runs on the output."""
import gzip
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm
from fairseq.data import Dictionary, data_utils

from xlm_ds.cli.prepare import main
from xlm_ds.data.alpha_sampling import smoothed_probs

OPTS = ["--vocab-size", "2000", "--workers", "2", "--quiet"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, sample_dir):
    out = tmp_path_factory.mktemp("prep") / "sample-bin"
    assert main(["--corpus", os.path.join(sample_dir, "corpus.yaml"), "--out", str(out), *OPTS]) == 0
    return out


@pytest.fixture(scope="module")
def manifest(prepared):
    return json.loads((prepared / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def vocab(prepared):
    return Dictionary.load(str(prepared / "dict.txt")), spm.SentencePieceProcessor(model_file=str(prepared / "spm.model"))


def n_lines(path):
    with gzip.open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def all_datasets(manifest):
    """(split, name, side, file prefix) for every .bin/.idx pair."""
    for split, entries in manifest["splits"].items():
        for name in entries:
            sides = name.split("-") if "-" in name else [None]
            for side in sides:
                yield split, name, side, f"{split}.{name}" + (f".{side}" if side else "")


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_counts_match_inputs(prepared, manifest, sample_dir):
    assert manifest["format_version"] == 1
    assert manifest["languages"] == ["de", "en", "fr"] and manifest["pairs"] == ["de-en", "en-fr"]
    assert sorted(manifest["splits"]) == ["test", "train", "valid"]
    for split, entries in manifest["splits"].items():
        assert sorted(entries) == ["de", "de-en", "en", "en-fr", "fr"]
        for name, e in entries.items():
            if "-" in name:
                for lang in name.split("-"):
                    assert e["lines"] == n_lines(os.path.join(sample_dir, f"{split}.{name}.{lang}.gz"))
            else:
                assert e["lines"] == n_lines(os.path.join(sample_dir, f"{split}.{name}.gz"))
    assert manifest["splits"]["train"]["de-en"]["lines"] == 8000
    # vocabulary sample (XLM): q from the monolingual train counts, all 15,000 drawn
    counts = {"de": 5000, "en": 5000, "fr": 5000}
    assert manifest["vocab_text"] == "mono"
    assert manifest["vocab_sampling"] == pytest.approx(smoothed_probs(counts, 0.5))
    assert sum(manifest["vocab_sentences"].values()) == sum(counts.values())
    assert manifest["alpha"] == 0.5
    assert manifest["spm"]["sha256"] == sha(prepared / "spm.model")
    assert manifest["spm"]["model_type"] == "bpe" and manifest["spm"]["vocab_size"] == 2000
    assert manifest["dict_sha256"] == sha(prepared / "dict.txt")
    assert set(manifest["versions"]) >= {"xlm_ds", "fairseq", "sentencepiece", "torch"}


def test_layout_and_dictionary(prepared, vocab):
    d, sp = vocab
    names = set(os.listdir(prepared))
    assert {"spm.model", "spm.vocab", "dict.txt", "manifest.json", "train.en.bin", "train.en.idx",
            "train.de-en.de.bin", "train.de-en.en.idx", "valid.en-fr.fr.bin"} <= names
    assert not any(n.startswith("spm-train") for n in names)
    assert d.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert "<mask>" not in d.indices
    assert len(d) == 4 + sp.get_piece_size() - 3  # all pieces but spm's <unk>, <s>, </s>
    for i in range(sp.get_piece_size()):
        if not (sp.is_control(i) or sp.is_unknown(i)):
            assert sp.id_to_piece(i) in d.indices
    assert all(c >= 1 for c in d.count[d.nspecial:])
    assert (prepared / "dict.de.txt").read_bytes() == (prepared / "dict.txt").read_bytes()


def test_fairseq_reads_every_dataset(prepared, manifest, vocab):
    d, _ = vocab
    for split, name, side, prefix in all_datasets(manifest):
        ds = data_utils.load_indexed_dataset(str(prepared / prefix), d)
        e = manifest["splits"][split][name]
        assert len(ds) == e["lines"], prefix
        assert int(ds.sizes.sum()) == (e["tokens"][side] if side else e["tokens"]), prefix
        flat = np.concatenate([ds[i].numpy() for i in range(len(ds))])
        assert flat.max() < len(d) and not np.isin(flat, [d.bos(), d.pad()]).any()
        ends = np.cumsum(ds.sizes) - 1
        assert (flat[ends] == d.eos()).all() and (flat == d.eos()).sum() == len(ds)


def test_decode_round_trip(prepared, vocab, sample_lines):
    d, sp = vocab
    ds = data_utils.load_indexed_dataset(str(prepared / "valid.de-en.de"), d)
    lines = sample_lines("valid.de-en.de.gz")
    exact = 0
    for i in range(100):
        pieces = [d[t] for t in ds[i].tolist()[:-1]]
        text = sp.decode_pieces(pieces)
        assert text == sp.decode(sp.encode(lines[i]))
        exact += text == lines[i]
    assert exact >= 95  # the rest hold characters outside the 2000-piece vocabulary (<unk>)
    first = sp.decode_pieces([d[t] for t in ds[0].tolist()[:-1]])
    assert first == lines[0], (first, lines[0])


def test_reused_vocabulary_gives_identical_ids(prepared, tmp_path, sample_dir):
    out = tmp_path / "reuse"
    args = ["--spm-model", str(prepared / "spm.model"), "--dict", str(prepared / "dict.txt"), "--out", str(out), *OPTS]
    for split in ("valid", "test"):
        args += ["--para", f"{split}:de-en={sample_dir}/{split}.de-en.de.gz,{sample_dir}/{split}.de-en.en.gz",
                 "--mono", f"{split}:fr={sample_dir}/{split}.fr.gz"]
    assert main(args) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["vocab_sentences"] == {} and m["spm"]["reused_from"] == str(prepared / "spm.model")
    for name in ("spm.model", "dict.txt", "valid.de-en.de.bin", "valid.de-en.en.idx", "test.de-en.en.bin",
                 "valid.fr.bin", "test.fr.idx"):
        assert (out / name).read_bytes() == (prepared / name).read_bytes(), name


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.slow
def test_byte_identical_to_fairseq_preprocess(prepared, vocab, sample_lines, tmp_path):
    _, sp = vocab
    enc = tmp_path / "enc.de"
    pieces = sp.encode(sample_lines("train.de-en.de.gz"), out_type=str)
    enc.write_text("\n".join(" ".join(p) for p in pieces) + "\n", encoding="utf-8")
    dest = tmp_path / "fp"
    r = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--source-lang", "de",
         "--srcdict", str(prepared / "dict.txt"), "--trainpref", str(tmp_path / "enc"), "--destdir", str(dest),
         "--workers", "1", "--dataset-impl", "mmap"],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for ext in ("bin", "idx"):
        assert (dest / f"train.de-None.de.{ext}").read_bytes() == (prepared / f"train.de-en.de.{ext}").read_bytes()


TINY_TRAIN = ["--max-update", "2", "--max-tokens", "500", "--cpu", "--no-save", "--optimizer", "adam",
              "--lr", "1e-4", "--num-workers", "0", "--log-format", "simple", "--data-buffer-size", "0"]


@pytest.mark.slow
def test_fairseq_train_translation(prepared, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.train", str(prepared), "--task", "translation", "-s", "de", "-t", "en",
         "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
         "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
         "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", *TINY_TRAIN,
         "--save-dir", str(tmp_path)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "num_updates 2" in r.stdout + r.stderr


@pytest.mark.slow
def test_fairseq_train_language_model(prepared, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.train", str(prepared), "--task", "language_modeling",
         "--train-subset", "train.fr", "--valid-subset", "valid.fr", "--arch", "transformer_lm",
         "--decoder-layers", "1", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
         "--decoder-attention-heads", "2", "--tokens-per-sample", "64", *TINY_TRAIN, "--save-dir", str(tmp_path)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "num_updates 2" in r.stdout + r.stderr


@pytest.mark.parametrize("vocab_text,counts", [
    # English has monolingual text: only it; German has none: its parallel side
    ("mono", {"de": 200, "en": 150}),
    ("all", {"de": 200, "en": 150 + 200}),
])
def test_vocabulary_sample_text(tiny, tmp_path, vocab_text, counts):
    out = tmp_path / "out"
    assert main(["--mono", f"train:en={tiny / 'mono.en'}", "--para", f"train:de-en={tiny / 'train.de'},{tiny / 'train.en'}",
                 "--out", str(out), "--vocab-size", "300", "--workers", "1", "--quiet", "--vocab-text", vocab_text]) == 0
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert m["vocab_text"] == vocab_text
    assert m["vocab_sampling"] == pytest.approx(smoothed_probs(counts, 0.5))
    assert sum(m["vocab_sentences"].values()) == sum(counts.values())
