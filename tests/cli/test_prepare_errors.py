"""Bad input and interrupted runs: a clear ``xlm-ds-prepare: error:`` naming
file, line and expectation, exit status 2, and no output directory left."""
import gzip
import json

import pytest

from xlm_ds.cli.prepare import main
from xlm_ds.data import binarize

SMALL = ["--vocab-size", "300", "--workers", "1", "--quiet"]


def run(capsys, *args):
    rc = main([*args, *SMALL])
    return rc, capsys.readouterr().err


def base_args(tiny):
    return ["--para", f"train:de-en={tiny}/train.de,{tiny}/train.en", "--mono", f"train:en={tiny}/mono.en"]


@pytest.fixture(autouse=True)
def _helpers(leftovers, sample_lines):
    global LEFTOVERS, SAMPLE_LINES
    LEFTOVERS, SAMPLE_LINES = leftovers, sample_lines


def assert_failed(rc, err, out, *needles):
    assert rc == 2, err
    assert err.startswith("xlm-ds-prepare: error: "), err
    for n in needles:
        assert n in err, err
    assert LEFTOVERS(out) == []


def test_missing_file(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run(capsys, *base_args(tiny), "--mono", f"valid:en={tiny}/nope.en", "--out", str(out))
    assert_failed(rc, err, out, "nope.en: file not found", "--mono 'valid:en=")


def test_non_utf8_names_line(tiny, tmp_path, capsys):
    bad = tiny / "bad.de.gz"
    lines = [s.encode("utf-8") for s in SAMPLE_LINES("valid.de.gz", 40)]
    lines[36] = lines[36][:3] + b"\xe9" + lines[36][3:]  # latin-1 é inside line 37
    bad.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    out = tmp_path / "out"
    rc, err = run(capsys, *base_args(tiny), "--mono", f"valid:de={bad}", "--out", str(out))
    assert_failed(rc, err, out, f"{bad}:37: invalid UTF-8", "expected UTF-8 text")


def test_parallel_line_counts_differ(tiny, tmp_path, capsys):
    short = tiny / "short.en"
    short.write_text("\n".join(SAMPLE_LINES("train.de-en.en.gz", 199)) + "\n")
    out = tmp_path / "out"
    rc, err = run(capsys, "--para", f"train:de-en={tiny}/train.de,{short}", "--out", str(out))
    assert_failed(rc, err, out, f"{tiny}/train.de has 200 lines", f"{short} has 199 lines")


def test_parallel_one_sided_empty_line(tiny, tmp_path, capsys):
    en = SAMPLE_LINES("train.de-en.en.gz", 200)
    en[9] = "   "
    holed = tiny / "holed.en"
    holed.write_text("\n".join(en) + "\n")
    out = tmp_path / "out"
    rc, err = run(capsys, "--para", f"train:de-en={tiny}/train.de,{holed}", "--out", str(out))
    assert_failed(rc, err, out, f"{holed}:10: empty line, but line 10 of {tiny}/train.de is not")


def test_unknown_split(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run(capsys, *base_args(tiny), "--mono", f"dev:en={tiny}/valid.en", "--out", str(out))
    assert_failed(rc, err, out, "unknown split 'dev'; expected one of train, valid, test")


def test_empty_corpus(tiny, tmp_path, capsys):
    empty = tiny / "empty.en"
    empty.write_text("\n \n")
    out = tmp_path / "out"
    rc, err = run(capsys, *base_args(tiny), "--mono", f"valid:en={empty}", "--out", str(out))
    assert_failed(rc, err, out, f"{empty}: empty corpus")


def test_invalid_language_code(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run(capsys, "--mono", f"train:eng-US={tiny}/mono.en", "--out", str(out))
    assert_failed(rc, err, out, "invalid language code 'eng-US'", "expected 2-3 lowercase letters")


def test_yaml_error_names_line(tiny, tmp_path, capsys):
    y = tiny / "c.yaml"
    y.write_text("mono:\n  train:\n    en: mono.en\n  validation:\n    en: valid.en\n")
    out = tmp_path / "out"
    rc, err = run(capsys, "--corpus", str(y), "--out", str(out))
    assert_failed(rc, err, out, f"{y}:4: unknown split 'validation'")


def test_no_train_data_without_vocabulary(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run(capsys, "--mono", f"valid:en={tiny}/valid.en", "--out", str(out))
    assert_failed(rc, err, out, "no train corpus", "--spm-model")


def test_existing_output_refused_then_overwritten(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, *base_args(tiny), "--out", str(out))[0] == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    rc, err = run(capsys, *base_args(tiny), "--out", str(out))
    assert rc == 2 and "already holds a prepared dataset" in err and "--overwrite" in err
    assert run(capsys, *base_args(tiny), "--out", str(out), "--seed", "2", "--overwrite")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2
    assert LEFTOVERS(out) == ["out"] and first


def test_inconsistent_dict_and_spm(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, *base_args(tiny), "--out", str(out))[0] == 0
    lines = (out / "dict.txt").read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad_dict.txt"
    bad.write_text("\n".join(lines[:-10]) + "\n", encoding="utf-8")  # drop 10 pieces
    out2 = tmp_path / "out2"
    rc, err = run(capsys, *base_args(tiny), "--spm-model", str(out / "spm.model"), "--dict", str(bad), "--out", str(out2))
    assert_failed(rc, err, out2, f"{bad}: 10 of", "missing from the dictionary", "expected the dictionary")


def _explode_on_second_batch(monkeypatch, exc):
    real = binarize.encode_lines
    calls = {"n": 0}

    def flaky(lines):
        calls["n"] += 1
        if calls["n"] == 2:
            raise exc
        return real(lines)

    monkeypatch.setattr(binarize, "encode_lines", flaky)


def test_interrupted_binarization_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    _explode_on_second_batch(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "out"
    rc, err = run(capsys, *base_args(tiny), "--out", str(out), "--batch-lines", "50")
    assert rc == 130 and "interrupted" in err
    assert LEFTOVERS(out) == []


def test_crash_keeps_previous_output(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run(capsys, *base_args(tiny), "--out", str(out))[0] == 0
    before = (out / "manifest.json").read_bytes()
    _explode_on_second_batch(monkeypatch, RuntimeError("disk on fire"))
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(capsys, *base_args(tiny), "--out", str(out), "--overwrite", "--batch-lines", "50")
    assert (out / "manifest.json").read_bytes() == before  # old, complete output untouched
    assert LEFTOVERS(out) == ["out"]


def test_same_seed_same_output(tiny, tmp_path, capsys):
    outs = [tmp_path / "a", tmp_path / "b"]
    for o in outs:
        assert run(capsys, *base_args(tiny), "--out", str(o), "--model-type", "unigram")[0] == 0
    for name in ("spm.model", "dict.txt", "train.de-en.de.bin", "train.en.bin", "train.en.idx"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_same_output_whatever_the_workers(tiny, tmp_path, capsys):
    """The vocabulary must not depend on the machine's cores: a SLURM task
    with 1 CPU learned another spm.model than a 2-core laptop when
    sentencepiece's threads followed --workers. ``--spm-threads`` does
    change it (sentencepiece splits its training over the threads)."""
    def spm(name, *extra):
        out = tmp_path / name
        assert main([*base_args(tiny), "--out", str(out), "--vocab-size", "300", "--model-type", "unigram",
                     "--quiet", *extra]) == 0
        return (out / "spm.model").read_bytes(), (out / "train.en.bin").read_bytes()

    assert spm("w1", "--workers", "1") == spm("w2", "--workers", "2")
    assert spm("t1", "--spm-threads", "1")[0] != spm("t2", "--spm-threads", "2")[0]


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--corpus", "--mono", "--para", "--out", "--overwrite", "--vocab-size", "--model-type",
                 "--alpha", "--vocab-sentences", "--character-coverage", "--spm-model", "--dict",
                 "--workers", "--seed"):
        assert flag in text


# ---- what a clean corpus should not hold ([N]) -------------------------------
def test_unreachable_vocabulary_size_is_an_error_unless_accepted(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([*base_args(tiny), "--out", str(out), "--vocab-size", "200000", "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert_failed(rc, err, out, "--vocab-size 200000: sentencepiece reached ", "pieces on the ",
                  "lower --vocab-size to at most ", "--allow-smaller-vocab")
    reached = int(err.split("sentencepiece reached ")[1].split()[0])
    assert 8 < reached < 200000
    rc = main([*base_args(tiny), "--out", str(out), "--vocab-size", "200000", "--workers", "1", "--quiet",
               "--allow-smaller-vocab"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"--vocab-size 200000: sentencepiece reached {reached} pieces" in err and "accepted" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spm"]["vocab_size"] == reached and manifest["spm"]["requested_vocab_size"] == 200000


def _dirty_file(tiny):
    lines = SAMPLE_LINES("train.en.gz", 120)
    body = "\r\n".join(lines[:60]) + "\r\n" + "\n".join(lines[60:]) + "\n"  # CRLF on lines 1-60
    body = body.replace(lines[70], lines[70][:5] + "\x00" + lines[70][5:])  # NUL in line 71
    dirty = tiny / "dirty.en"
    long_line = " ".join(["word"] * 250_000)  # a 1.25 MB line: line 121
    dirty.write_bytes((body + long_line + "\n").encode("utf-8"))
    return dirty, lines


def test_cr_nul_and_long_lines_reported_and_normalised(tiny, tmp_path, capsys, caplog):
    dirty, lines = _dirty_file(tiny)
    out = tmp_path / "out"
    rc = main([*base_args(tiny), "--mono", f"valid:en={dirty}", "--out", str(out), *SMALL])
    err = capsys.readouterr().err + caplog.text
    assert rc == 0, err
    assert f"{dirty}:1: carriage return (CRLF line ends, or a CR inside a line) on 60 line(s)" in err
    assert f"{dirty}:71: NUL byte on 1 line(s)" in err
    assert f"{dirty}:121: line of over 20,000 characters (longest 1,249,999;" in err
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = {f["kind"]: f for f in manifest["text_findings"]}
    assert kinds["cr"]["lines"] == 60 and kinds["nul"]["first_line"] == 71 and kinds["long"]["first_line"] == 121
    # normalised: what is binarized equals the clean text of those lines
    from xlm_ds.data.text_reader import iter_sentences

    got = [s for batch in iter_sentences(str(dirty)) for s in batch]
    assert got[:120] == lines and "\r" not in "".join(got) and "\x00" not in "".join(got)


def test_strict_text_refuses_them(tiny, tmp_path, capsys):
    dirty, _ = _dirty_file(tiny)
    out = tmp_path / "out"
    rc, err = run(capsys, *base_args(tiny), "--mono", f"valid:en={dirty}", "--out", str(out), "--strict-text")
    assert_failed(rc, err, out, f"{dirty}:1: carriage return", "expected clean text (--strict-text")
