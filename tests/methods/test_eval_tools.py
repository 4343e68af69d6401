"""xlm-ds-retrieval, xlm-ds-classify, separate vocabularies, and the
post-pretraining alignment run end to end on tiny data."""
import gzip
import json
import os
import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(REPO, "xlm_ds", "sample_corpus")


def sample_lines(name, n):
    with gzip.open(os.path.join(SAMPLE, name), "rt", encoding="utf-8") as f:
        return [next(f).strip() for _ in range(n)]


def run_cli(module, *args, rc=0):
    """Runs a CLI's main() in this process (saves the import time of a
    subprocess); returns its stdout."""
    import contextlib
    import importlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = importlib.import_module(module).main([str(a) for a in args])
    assert code == rc, err.getvalue()[-3000:]
    return out.getvalue() if rc == 0 else err.getvalue()


@pytest.fixture(scope="module")
def parallel_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("retr")
    de, en = sample_lines("test.de-en.de.gz", 60), sample_lines("test.de-en.en.gz", 60)
    (d / "de.txt").write_text("\n".join(de) + "\n", encoding="utf-8")
    (d / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    return d, de, en


@pytest.mark.slow
def test_retrieval_cli(pretrained_tiny, parallel_files):
    d, de, en = parallel_files
    out = run_cli("xlm_ds.cli.retrieval", pretrained_tiny, "--src", f"de={d / 'de.txt'}",
                  "--tgt", f"en={d / 'en.txt'}", "--layer", "1")
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n"] == 60 and 0.0 <= res["p_at_1_src2tgt"] <= 1.0 and 0.0 <= res["p_at_1_tgt2src"] <= 1.0
    # the same file on both sides: every sentence finds itself (sanity of P@1)
    out = run_cli("xlm_ds.cli.retrieval", pretrained_tiny, "--src", f"en={d / 'en.txt'}",
                  "--tgt", f"en={d / 'en.txt'}")
    res = json.loads(out.strip().splitlines()[-1])
    assert res["p_at_1_src2tgt"] == 1.0 and res["p_at_1_tgt2src"] == 1.0


def test_p_at_1_definition():
    from xlm_ds.cli.retrieval import p_at_1

    src = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    tgt = torch.tensor([[1.0, 0.1], [1.0, 0.2], [0.9, 1.0]])
    # src->tgt: 0->0 ok, 1->2 wrong, 2->2 ok; tgt->src: 0->0 ok, 1->0 wrong, 2->2 ok
    assert p_at_1(src, tgt) == (pytest.approx(2 / 3), pytest.approx(2 / 3))


@pytest.mark.slow
def test_retrieval_language_centring(pretrained_tiny, parallel_files, tmp_path):
    d, de, en = parallel_files
    pair = ["--src", f"de={d / 'de.txt'}", "--tgt", f"en={d / 'en.txt'}", "--layer", "1"]
    last = lambda out: json.loads(out.strip().splitlines()[-1])  # noqa: E731
    raw = last(run_cli("xlm_ds.cli.retrieval", pretrained_tiny, *pair))
    own = last(run_cli("xlm_ds.cli.retrieval", pretrained_tiny, *pair, "--center"))
    assert raw["center"] is None and own["center"] == "self"
    assert -1.0 <= raw["lang_mean_cosine"] < 1.0 and own["lang_mean_cosine"] == raw["lang_mean_cosine"]
    # the same files given as "other text", every line: the same means, so the same result
    files = last(run_cli("xlm_ds.cli.retrieval", pretrained_tiny, *pair, "--center", "--center-on",
                         f"de={d / 'de.txt'}", "--center-on", f"en={d / 'en.txt'}", "--center-lines", "0"))
    assert (files["p_at_1_src2tgt"], files["p_at_1_tgt2src"]) == (own["p_at_1_src2tgt"], own["p_at_1_tgt2src"])
    assert files["lang_mean_cosine"] == pytest.approx(own["lang_mean_cosine"], abs=1e-6)
    # a file on both sides still finds itself after centring
    same = last(run_cli("xlm_ds.cli.retrieval", pretrained_tiny, "--src", f"en={d / 'en.txt'}",
                        "--tgt", f"en={d / 'en.txt'}", "--center"))
    assert same["p_at_1_src2tgt"] == 1.0 and same["lang_mean_cosine"] == pytest.approx(1.0)
    (tmp_path / "blank.txt").write_text("\n\n", encoding="utf-8")
    err = run_cli("xlm_ds.cli.retrieval", pretrained_tiny, *pair, "--center", "--center-on",
                  f"de={d / 'de.txt'}", rc=2)
    assert "exactly the two languages de and en" in err
    err = run_cli("xlm_ds.cli.retrieval", pretrained_tiny, *pair, "--center", "--center-on",
                  f"de={tmp_path / 'blank.txt'}", "--center-on", f"en={d / 'en.txt'}", rc=2)
    assert "blank.txt: no non-empty line" in err


def test_spaced_sample_and_why_centring_helps():
    from xlm_ds.cli.retrieval import p_at_1
    from xlm_ds.methods.centering import mean_cosine, spaced_sample

    lines = [f"s{i}" for i in range(10)] + [""]
    assert spaced_sample(lines, 5) == ["s0", "s2", "s4", "s6", "s8"]
    assert spaced_sample(lines, 0) == spaced_sample(lines, 50) == lines[:10]
    # translations share a neutral vector; each language adds its own large offset
    g = torch.Generator().manual_seed(0)
    neutral = torch.randn(200, 16, generator=g)
    off_a, off_b = 6 * torch.randn(16, generator=g), 6 * torch.randn(16, generator=g)
    a = neutral + 0.5 * torch.randn(200, 16, generator=g) + off_a
    b = neutral + 0.5 * torch.randn(200, 16, generator=g) + off_b
    raw, centred = p_at_1(a, b), p_at_1(a - a.mean(0), b - b.mean(0))
    assert min(centred) > 0.8 and max(raw) < min(centred) - 0.2
    assert mean_cosine(a.mean(0), b.mean(0)) < 0.5 and mean_cosine(a.mean(0), a.mean(0)) == pytest.approx(1.0)


@pytest.mark.slow
def test_retrieval_with_procrustes_and_errors(pretrained_tiny, parallel_files):
    d, _, _ = parallel_files
    out = run_cli("xlm_ds.cli.retrieval", pretrained_tiny, "--src", f"de={d / 'de.txt'}",
                  "--tgt", f"en={d / 'en.txt'}", "--tgt-checkpoint", pretrained_tiny, "--procrustes", "40")
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n"] == 20 and res["procrustes_pairs"] == 40
    err = run_cli("xlm_ds.cli.retrieval", pretrained_tiny, "--src", f"xx={d / 'de.txt'}",
                  "--tgt", f"en={d / 'en.txt'}", rc=2)
    assert "not seen in pretraining" in err


@pytest.mark.slow
def test_classify_cli_zero_shot_and_code_switch(pretrained_tiny, tmp_path):
    de, en = sample_lines("test.de-en.de.gz", 80), sample_lines("test.de-en.en.gz", 80)

    def write(lines, path):
        rows = [f"{lines[i]}\t{lines[i if i % 2 == 0 else (i * 7 + 3) % 80]}\t{'same' if i % 2 == 0 else 'other'}"
                for i in range(80)]
        path.write_text("premise\thypo\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")

    write(en, tmp_path / "en.tsv")
    write(de, tmp_path / "de.tsv")
    out = run_cli("xlm_ds.cli.classify", pretrained_tiny, "--train", f"de={tmp_path / 'de.tsv'}",
                  "--eval", f"de={tmp_path / 'de.tsv'}", "--eval", f"en={tmp_path / 'en.tsv'}",
                  "--epochs", "2", "--batch-size", "16", "--lr", "1e-3",
                  "--code-switch", f"en={tmp_path / 'en.tsv'}", "--code-switch-rate", "0.5")
    res = json.loads(out.strip().splitlines()[-1])
    assert res["labels"] == ["other", "same"] and res["updates"] == 10
    assert set(res["accuracy"]) == {"de", "en"}
    assert all(0.0 <= a <= 1.0 for a in res["accuracy"].values())


@pytest.mark.slow
def test_classify_single_sentences_learns(pretrained_tiny, tmp_path):
    """``text<TAB>label`` rows: a label the encoder can read off the text
    (question or statement) is learnt in English (zero-shot German is only
    reported: the barely trained tiny encoder does not transfer it)."""
    def write(lang, path, lo, hi):
        lines = sample_lines(f"test.de-en.{lang}.gz", 500)[lo:hi]
        questions = [x for x in lines if x.endswith("?")]
        statements = [x for x in lines if not x.endswith("?")][: len(questions)]
        rows = [f"{x}\tquestion" for x in questions] + [f"{x}\tstatement" for x in statements]
        path.write_text("text\tlabel\n" + "\n".join(sorted(rows)) + "\n", encoding="utf-8")
        return len(rows)

    n_train = write("en", tmp_path / "en.train.tsv", 0, 350)
    write("en", tmp_path / "en.test.tsv", 350, 500)
    write("de", tmp_path / "de.test.tsv", 350, 500)
    out = run_cli("xlm_ds.cli.classify", pretrained_tiny, "--train", f"en={tmp_path / 'en.train.tsv'}",
                  "--eval", f"en={tmp_path / 'en.test.tsv'}", "--eval", f"de={tmp_path / 'de.test.tsv'}",
                  "--epochs", "6", "--batch-size", "16", "--lr", "1e-3")
    res = json.loads(out.strip().splitlines()[-1])
    assert res["labels"] == ["question", "statement"] and n_train > 80
    assert res["accuracy"]["en"] > 0.8 and 0.0 <= res["accuracy"]["de"] <= 1.0, res
    assert "sentences, zero-shot" in out


def test_classify_rejects_mixed_columns_naming_the_line(pretrained_tiny, tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("one sentence\tA\nanother\tB\na premise\ta hypothesis\tA\n", encoding="utf-8")
    err = run_cli("xlm_ds.cli.classify", pretrained_tiny, "--train", f"en={train}", rc=2)
    assert f"{train}:3: expected 2 tab-separated columns like the first line, got 3" in err
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a premise\ta hypothesis\tA\n", encoding="utf-8")
    train.write_text("one sentence\tA\nanother\tB\n", encoding="utf-8")
    err = run_cli("xlm_ds.cli.classify", pretrained_tiny, "--train", f"en={train}", "--eval", f"de={pairs}", rc=2)
    assert f"{pairs}: expected single sentences (text<TAB>label) like the training file {train}" in err


def test_separate_vocabularies(prepared_sample, tmp_path):
    from fairseq.data import indexed_dataset

    from xlm_ds.methods.separate_vocab import separate_vocabularies
    from xlm_ds.tasks.data_directory import DataDirectory

    out = tmp_path / "sep"
    info = separate_vocabularies(prepared_sample, str(out))
    src, new = DataDirectory(prepared_sample), DataDirectory(str(out))
    d0, d1 = src.load_dictionary(), new.load_dictionary()
    n = info["n_normal"]
    assert len(d1) == 4 + len(src.languages) * n + 1  # + <mask>
    for name, lang in [("valid.en", "en"), ("valid.de-en.de", "de"), ("valid.de-en.en", "en")]:
        a = indexed_dataset.MMapIndexedDataset(os.path.join(prepared_sample, name))
        b = indexed_dataset.MMapIndexedDataset(str(out / name))
        off = info["offsets"][lang]
        for i in (0, 5, len(a) - 1):
            x, y = a[i].numpy().astype(np.int64), b[i].numpy().astype(np.int64)
            assert np.array_equal(np.where(x < 4, x, x + off), y)
            # the same piece, tagged with its language
            assert [d1[t] for t in y if t >= 4] == [f"{d0[t]}@{lang}" for t in x if t >= 4]
    # no id is shared between languages except the specials
    de_ids = set(np.concatenate([t.numpy() for t in indexed_dataset.MMapIndexedDataset(str(out / "valid.de"))]))
    en_ids = set(np.concatenate([t.numpy() for t in indexed_dataset.MMapIndexedDataset(str(out / "valid.en"))]))
    assert de_ids & en_ids <= {0, 1, 2, 3}


@pytest.mark.slow
def test_alignment_run_from_checkpoint(prepared_sample, pretrained_tiny, run_fairseq, tmp_path):
    log = run_fairseq(
        "train", prepared_sample, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm_align",
        "--objectives", "tlm", "--align-queue-size", "16", "--align-shuffle-rate", "0.2",
        "--align-momentum", "0.99", "--align-temperature", "0.1", "--arch", "xlm_tiny",
        "--criterion", "xlm_lm", "--tokens-per-sample", "64", "--batch-size", "4",
        "--optimizer", "adam", "--lr", "1e-4", "--max-update", "4", "--cpu", "--no-save",
        "--save-dir", str(tmp_path), "--finetune-from-model", pretrained_tiny,
        "--disable-validation", "--log-interval", "1", "--log-format", "simple",
    )
    inner = [line for line in log.splitlines() if "train_inner" in line]
    assert len(inner) == 4 and all("align_loss=" in l and "tlm_loss=" in l and "align_acc=" in l for l in inner)
