"""--mono/--para flags and --corpus YAML: parsing and the error messages."""
import os

import pytest

from xlm_ds.data.corpus_spec import build_spec, load_corpus_yaml, parse_mono_flag, parse_para_flag
from xlm_ds.data.errors import PrepareError

SAMPLE_YAML = os.path.join(os.path.dirname(__file__), "..", "..", "xlm_ds", "sample_corpus", "corpus.yaml")


@pytest.fixture
def files(tmp_path):
    for name in ("a.en", "a.de", "b.en"):
        (tmp_path / name).write_text("x\n")
    return tmp_path


def test_flags(files):
    m = parse_mono_flag(f"train:en={files}/a.en")
    assert (m.split, m.lang, m.name) == ("train", "en", "en")
    p = parse_para_flag(f"valid:de-en={files}/a.de,{files}/a.en")
    assert (p.split, p.src, p.tgt, p.name) == ("valid", "de", "en", "de-en")
    assert parse_mono_flag(f"test:zh_Hans={files}/a.en").lang == "zh_Hans"
    spec = build_spec([f"train:en={files}/a.en", f"train:en={files}/b.en"], [f"train:de-en={files}/a.de,{files}/a.en"])
    assert spec.languages == ["de", "en"] and spec.pairs == ["de-en"]
    assert {k: len(v) for k, v in spec.datasets().items()} == {("train", "de-en"): 1, ("train", "en"): 2}


@pytest.mark.parametrize(
    "flag,value,expect",
    [
        ("mono", "dev:en={d}/a.en", "unknown split 'dev'; expected one of train, valid, test"),
        ("mono", "train:english={d}/a.en", "invalid language code 'english'; expected 2-3 lowercase"),
        ("mono", "train:EN={d}/a.en", "invalid language code 'EN'"),
        ("mono", "train:en={d}/missing.en", "missing.en: file not found"),
        ("mono", "train-en={d}/a.en", "expected SPLIT:LANG=PATH"),
        ("para", "train:de-en={d}/a.de", "expected SPLIT:SRC-TGT=SRC_PATH,TGT_PATH"),
        ("para", "train:deen={d}/a.de,{d}/a.en", "invalid language pair 'deen'"),
        ("para", "train:en-en={d}/a.de,{d}/a.en", "same language twice"),
        ("para", "train:de-en={d}/a.de,{d}/nope.en", "nope.en: file not found"),
    ],
)
def test_flag_errors(files, flag, value, expect):
    value = value.format(d=files)
    with pytest.raises(PrepareError) as e:
        (parse_mono_flag if flag == "mono" else parse_para_flag)(value)
    assert f"--{flag} {value!r}" in str(e.value)
    assert expect in str(e.value)


def test_no_corpus():
    with pytest.raises(PrepareError, match="no corpus given"):
        build_spec()


def test_yaml_relative_paths_and_lists(files):
    y = files / "sub" / "c.yaml"
    y.parent.mkdir()
    y.write_text(
        "mono:\n  train:\n    en: [../a.en, ../b.en]\n"
        "para:\n  valid:\n    de-en: {de: ../a.de, en: ../a.en}\n"
    )
    spec = load_corpus_yaml(str(y))
    assert [m.path for m in spec.mono] == [str(files / "a.en"), str(files / "b.en")]
    assert (spec.para[0].src_path, spec.para[0].tgt_path) == (str(files / "a.de"), str(files / "a.en"))


@pytest.mark.parametrize(
    "text,line,expect",
    [
        ("mono:\n  train:\n    en: a.en\n  dev:\n    en: a.en\n", 4, "unknown split 'dev'"),
        ("mono:\n  train:\n    en: a.en\n    German: a.de\n", 4, "invalid language code 'German'"),
        ("mono:\n  train:\n    en: missing.en\n", 3, "missing.en: file not found"),
        ("para:\n  train:\n    de-en: {de: a.de, fr: a.en}\n", 3, "expected exactly de and en"),
        ("mono:\n  train:\n    en: a.en\n    en: b.en\n", 4, "duplicate key 'en'"),
        ("mono:\n  train:\n    en: a.en\nextra: 1\n", 4, "unknown key 'extra'; expected mono or para"),
        ("mono:\n  train:\n    en: [a.en\n", 4, "invalid YAML"),
    ],
)
def test_yaml_errors_name_file_and_line(files, text, line, expect):
    y = files / "c.yaml"
    y.write_text(text)
    with pytest.raises(PrepareError) as e:
        load_corpus_yaml(str(y))
    assert f"{y}:{line}:" in str(e.value), str(e.value)
    assert expect in str(e.value)


def test_shipped_sample_yaml():
    spec = load_corpus_yaml(SAMPLE_YAML)
    assert spec.languages == ["de", "en", "fr"]
    assert spec.pairs == ["de-en", "en-fr"]
    assert len(spec.datasets()) == 15
