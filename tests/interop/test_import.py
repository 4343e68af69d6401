"""xlm-ds-import: fairseq RoBERTa/XLM-R checkpoints (published layout, old
and new state-dict names, post- and pre-LN) -> xlm_ds, checked by equal
logits; the vocabulary it writes; its refusals; and continued pretraining
with fairseq-train from the imported checkpoint."""
import filecmp
import json
import os
import re
import subprocess
import sys

import pytest
import sentencepiece as spm
import torch

from xlm_ds.cli.import_xlmr import main
from xlm_ds.interop.checkpoint import load_xlm_model

TOL = 1e-5
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _import(src, out, *extra):
    assert main([src, str(out), "--quiet", *extra]) == 0
    return str(out)


def _fairseq_logits(model, tokens):
    with torch.no_grad():
        return model(tokens)[0]


def _xlm_logits(model, tokens, langs=None):
    with torch.no_grad():
        return model(tokens, src_langs=langs)[0]


@pytest.mark.parametrize(
    "variant",
    [
        dict(),  # post-LN (XLM-R base/large), legacy args Namespace as published
        dict(legacy=True),  # decoder.sentence_encoder.*, emb_layer_norm, fused in_proj
        dict(pre_ln=True, cfg_style="cfg"),  # pre-LN (XLM-R XL/XXL), fairseq >= 0.10 cfg
    ],
    ids=["post_ln", "legacy_names", "pre_ln"],
)
def test_import_gives_equal_logits(variant, make_roberta, sentences, encode, tmp_path):
    src, roberta, d = make_roberta(**variant)
    out = _import(src, tmp_path / "out")
    model, pre = load_xlm_model(os.path.join(out, "model.pt"))
    assert model.encoder.embed_langs is None and pre.languages == []
    assert (model.encoder.layer_norm is not None) == bool(variant.get("pre_ln"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "spm.model"))
    tokens = encode(sp, d, [s for _, s in sentences])
    keep = tokens.ne(d.pad())
    ref = _fairseq_logits(roberta, tokens)
    got = _xlm_logits(model, tokens)
    assert ref.shape == got.shape == (*tokens.shape, len(d))
    assert (ref[keep] - got[keep]).abs().max() <= TOL
    # the comparison is sensitive: a wrong layer norm shows
    with torch.no_grad():
        model.encoder.layers[0].final_layer_norm.bias.add_(1e-3)
    assert (ref[keep] - _xlm_logits(model, tokens)[keep]).abs().max() > TOL


def test_import_writes_vocabulary_and_checkpoint(make_roberta, tmp_path):
    src, _, d = make_roberta()
    out = _import(src, tmp_path / "out")
    assert sorted(os.listdir(out)) == ["dict.txt", "import.json", "model.pt", "spm.model", "spm.vocab"]
    assert filecmp.cmp(os.path.join(src, "dict.txt"), os.path.join(out, "dict.txt"), shallow=False)
    assert filecmp.cmp(os.path.join(src, "sentencepiece.bpe.model"), os.path.join(out, "spm.model"), shallow=False)
    ckpt = torch.load(os.path.join(out, "model.pt"), weights_only=False)
    assert ckpt["cfg"]["model"]["_name"] == "xlm_lm" and ckpt["cfg"]["task"]["_name"] == "xlm"
    assert ckpt["cfg"]["model"]["no_lang_embeddings"] is True
    assert ckpt["cfg"]["model"]["max_positions"] == 128
    assert ckpt["task_state"]["dictionary_symbols"] == d.symbols  # dict.txt + <mask>: the embedding rows
    assert ckpt["task_state"]["dictionary_symbols"][-1] == "<mask>"
    assert ckpt["model"]["encoder.embed_tokens.weight"].dtype == torch.float32
    assert ckpt["last_optimizer_state"] is None
    report = json.loads(open(os.path.join(out, "import.json"), encoding="utf-8").read())
    assert report["arch_flags"][:2] == ["--arch", "xlm_lm"] and "--no-lang-embeddings" in report["arch_flags"]
    assert report["max_abs_diff"] <= TOL


def test_import_language_embeddings_start_at_zero(make_roberta, sentences, encode, tmp_path):
    src, roberta, d = make_roberta(seed=3)
    out = _import(src, tmp_path / "out", "--lang-embeddings", "--languages", "de,en,fr", "--add-languages", "sw")
    model, pre = load_xlm_model(os.path.join(out, "model.pt"))
    assert pre.languages == ["de", "en", "fr", "sw"]
    table = model.encoder.embed_langs.weight
    assert table.shape == (4, 64) and not table.any()
    ckpt = torch.load(os.path.join(out, "model.pt"), weights_only=False)
    assert ckpt["task_state"]["languages"] == ["de", "en", "fr", "sw"]
    assert ckpt["xlm_ds_import"]["added_languages"] == ["sw"]
    assert ckpt["xlm_ds_import"]["language_embedding_init"] == "zeros"
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "spm.model"))
    tokens = encode(sp, d, [s for _, s in sentences])
    keep = tokens.ne(d.pad())
    langs = torch.randint(0, 4, tokens.shape, generator=torch.Generator().manual_seed(0))
    ref = _fairseq_logits(roberta, tokens)
    assert (ref[keep] - _xlm_logits(model, tokens, langs)[keep]).abs().max() <= TOL


def test_import_languages_from_data_dir(make_roberta, prepared_sample, tmp_path):
    src, _, _ = make_roberta()
    out = _import(src, tmp_path / "out", "--lang-embeddings", "--data", prepared_sample, "--add-languages", "fr")
    _, pre = load_xlm_model(os.path.join(out, "model.pt"))
    assert pre.languages == ["de", "en", "fr"] and pre.has_language_embeddings
    ckpt = torch.load(os.path.join(out, "model.pt"), weights_only=False)
    assert ckpt["xlm_ds_import"]["added_languages"] == ["fr"]


def test_import_language_ids_in_prepare_order(make_roberta, tmp_path):
    # xlm-ds-prepare lists a data directory's languages sorted: so do the ids
    src, _, _ = make_roberta()
    out = _import(src, tmp_path / "out", "--lang-embeddings", "--languages", "fr,en", "--add-languages", "af")
    _, pre = load_xlm_model(os.path.join(out, "model.pt"))
    assert pre.languages == ["af", "en", "fr"]


def _error(capsys, *argv):
    assert main([*map(str, argv), "--quiet"]) == 2
    return capsys.readouterr().err


def test_import_refusals(make_roberta, make_xlm_checkpoint, prepared_sample, tmp_path, capsys):
    src, _, _ = make_roberta()
    assert "not found" in _error(capsys, tmp_path / "missing", tmp_path / "o1")
    assert "--lang-embeddings needs the languages" in _error(capsys, src, tmp_path / "o2", "--lang-embeddings")
    assert "not languages of --data" in _error(capsys, src, tmp_path / "o3", "--data", prepared_sample,
                                               "--add-languages", "sw")
    # an xlm_ds checkpoint is not an import source
    xlm = make_xlm_checkpoint()
    assert "already" in _error(capsys, xlm, tmp_path / "o4", "--dict", os.path.join(src, "dict.txt"),
                               "--spm-model", os.path.join(src, "sentencepiece.bpe.model"))
    # a dict.txt that is not the checkpoint's
    short = tmp_path / "short.txt"
    short.write_text("".join(open(os.path.join(src, "dict.txt"), encoding="utf-8").readlines()[:-1]), encoding="utf-8")
    err = _error(capsys, src, tmp_path / "o5", "--dict", short)
    assert "embedding has 2002 rows" in err
    # output in place is kept
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("x")
    assert "not empty" in _error(capsys, src, busy)
    assert (busy / "keep").exists()
    # untied LM head
    ckpt = torch.load(os.path.join(src, "model.pt"), weights_only=False)
    ckpt["model"]["encoder.lm_head.weight"] = ckpt["model"]["encoder.lm_head.weight"] + 1
    untied = tmp_path / "untied"
    untied.mkdir()
    torch.save(ckpt, untied / "model.pt")
    for name in ("dict.txt", "sentencepiece.bpe.model"):
        os.link(os.path.join(src, name), untied / name)
    assert "xlm_ds ties them" in _error(capsys, untied, tmp_path / "o6")


# ---------------------------------------------------------------- training
def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _small_corpus(tmp_path, sample_dir):
    """A few hundred lines of the sample, mono en/de + parallel de-en, as text."""
    import gzip

    d = tmp_path / "text"
    d.mkdir()
    for name, n in (("train.en", 300), ("train.de", 300), ("train.de-en.de", 300), ("train.de-en.en", 300),
                    ("valid.en", 50), ("valid.de", 50)):
        with gzip.open(os.path.join(sample_dir, name + ".gz"), "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
        (d / name).write_text("".join(lines), encoding="utf-8")
    return d


TRAIN = ["--user-dir", "xlm_ds", "--task", "xlm", "--criterion", "xlm_lm", "--objectives", "mlm tlm",
         "--tokens-per-sample", "64", "--batch-size", "16", "--optimizer", "adam", "--lr", "1e-3",
         "--cpu", "--num-workers", "0", "--log-format", "simple", "--no-epoch-checkpoints", "--seed", "1",
         "--data-buffer-size", "0"]  # no prefetch thread to abort at exit (docs/stack.md)


@pytest.mark.slow
def test_fairseq_train_continues_from_import(make_roberta, tmp_path):
    from xlm_ds.cli.prepare import main as prepare

    src, _, _ = make_roberta(seed=5)
    imported = tmp_path / "imported"
    _import(src, imported, "--lang-embeddings", "--languages", "de,en")
    text = _small_corpus(tmp_path, os.path.join(REPO, "xlm_ds", "sample_corpus"))
    data = tmp_path / "data"
    assert prepare([
        "--mono", f"train:en={text}/train.en", "--mono", f"train:de={text}/train.de",
        "--mono", f"valid:en={text}/valid.en", "--mono", f"valid:de={text}/valid.de",
        "--para", f"train:de-en={text}/train.de-en.de,{text}/train.de-en.en",
        "--spm-model", str(imported / "spm.model"), "--dict", str(imported / "dict.txt"),
        "--out", str(data), "--workers", "1", "--quiet",
    ]) == 0
    report = json.loads((imported / "import.json").read_text(encoding="utf-8"))
    arch = report["arch_flags"]
    assert "--no-lang-embeddings" not in arch
    save = tmp_path / "ck"
    r = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.train", str(data), *TRAIN, *arch, "--max-update", "20",
         "--log-interval", "10", "--save-dir", str(save), "--restore-file", str(imported / "model.pt"),
         "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler"],
        capture_output=True, text=True, env=_env(), timeout=600, cwd=REPO,
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert f"Loaded checkpoint {imported / 'model.pt'} (epoch 1 @ 0 updates)" in log
    losses = [float(x) for x in re.findall(r"train_inner \| epoch 001: +\d+ / \d+ loss=([0-9.]+)", log)]
    assert len(losses) == 2 and all(map(lambda x: x == x and x < 1e3, losses)), log[-3000:]
    assert losses[1] < losses[0]
    # training moved the imported weights a little (Adam, lr 1e-3, 20 steps), not replaced them
    start = torch.load(imported / "model.pt", weights_only=False)["model"]
    end = torch.load(save / "checkpoint_last.pt", weights_only=False)["model"]
    for key in ("encoder.embed_tokens.weight", "encoder.layers.1.fc2.weight", "encoder.lm_head.dense.weight"):
        delta = (end[key] - start[key]).abs().max()
        assert 0 < delta < 0.05, (key, delta)
    assert end["encoder.embed_langs.weight"].abs().max() > 0  # zero rows learned

    # --finetune-from-model: the same start, and a re-run resumes from checkpoint_last instead
    save2 = tmp_path / "ck2"
    r = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.train", str(data), *TRAIN, *arch, "--max-update", "2",
         "--save-dir", str(save2), "--finetune-from-model", str(imported / "model.pt")],
        capture_output=True, text=True, env=_env(), timeout=600, cwd=REPO,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert f"loading pretrained model from {imported / 'model.pt'}" in r.stdout + r.stderr

    # and the continued checkpoint exports to transformers (spm.model found via its data dir)
    pytest.importorskip("transformers")
    from xlm_ds.interop.hf_export import export_hf

    rep = export_hf(str(save / "checkpoint_last.pt"), str(tmp_path / "hf"))
    assert rep.language_input == "token_type_ids" and rep.languages == ["de", "en"]
    assert rep.max_abs_diff <= TOL and not rep.permuted
