"""xlm-ds-export-hf: xlm_ds checkpoints -> transformers XLM-R masked LMs,
checked by equal tokenization (slow and fast tokenizers, multilingual
sample sentences) and equal logits, with and without language embeddings,
post- and pre-LN, learned and sinusoidal positions, and a dictionary whose
order differs from the tokenizer's."""
import json
import os

import pytest
import sentencepiece as spm
import torch

transformers = pytest.importorskip("transformers")

from xlm_ds.cli.export_hf import main  # noqa: E402
from xlm_ds.cli.import_xlmr import main as import_main  # noqa: E402
from xlm_ds.interop.checkpoint import load_xlm_model  # noqa: E402

TOL = 1e-5


def _export(ckpt, out, *extra):
    assert main([str(ckpt), str(out), "--quiet", *extra]) == 0
    return str(out)


def _hf(out):
    tok_slow = transformers.AutoTokenizer.from_pretrained(out, use_fast=False)
    tok_fast = transformers.AutoTokenizer.from_pretrained(out, use_fast=True)
    model = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    return tok_slow, tok_fast, model


def _check_tokenization(toks, sp, dictionary, texts, encode, perm=None):
    """HF ids (through ``perm`` when rows were permuted) == xlm_ds spm+dict ids."""
    ref = encode(sp, dictionary, texts)
    for tok in toks:
        ids = tok(texts, padding=True, return_tensors="pt")["input_ids"]
        assert ids.shape == ref.shape
        assert torch.equal(ids if perm is None else perm[ids], ref), type(tok).__name__
    return ref


def _xlm_dictionary(pre):
    from xlm_ds.interop.checkpoint import dictionary_from_symbols

    return dictionary_from_symbols(pre.dictionary_symbols)


def test_export_xlmr_equal_tokenization_and_logits(make_roberta, sentences, encode, tmp_path):
    # an imported XLM-R-style model: no language embeddings
    src, _, _ = make_roberta(seed=1)
    assert import_main([src, str(tmp_path / "imp"), "--quiet"]) == 0
    ckpt = tmp_path / "imp" / "model.pt"
    out = _export(ckpt, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "sentencepiece.bpe.model",
            "tokenizer_config.json", "xlm_ds_export.json"} <= set(os.listdir(out))
    slow, fast, hf = _hf(out)
    assert type(hf).__name__ == "XLMRobertaForMaskedLM"
    assert type(slow).__name__ == "XLMRobertaTokenizer" and type(fast).__name__ == "XLMRobertaTokenizerFast"
    assert hf.config.type_vocab_size == 1 and not hf.roberta.embeddings.token_type_embeddings.weight.any()
    model, pre = load_xlm_model(str(ckpt))
    d = _xlm_dictionary(pre)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "imp" / "spm.model"))
    texts = [s for _, s in sentences]
    tokens = _check_tokenization((slow, fast), sp, d, texts, encode)  # identical ids, no permutation
    assert len(slow) == len(d) == hf.config.vocab_size
    assert slow.mask_token_id == d.index("<mask>") and slow.pad_token_id == d.pad()
    enc = fast(texts, padding=True, return_tensors="pt")
    keep = enc["attention_mask"].bool()
    with torch.no_grad():
        ref = model(tokens)[0]
        got = hf(**enc).logits
        assert (ref[keep] - got[keep]).abs().max() <= TOL
        # hidden states too (feature extraction / fine-tuning start from these)
        h_ref = model.extract_features(tokens)
        h_got = hf.roberta(**enc).last_hidden_state
        assert (h_ref[keep] - h_got[keep]).abs().max() <= TOL
    report = json.loads(open(os.path.join(out, "xlm_ds_export.json"), encoding="utf-8").read())
    assert report["max_abs_diff"] <= TOL and report["permuted"] is False
    assert report["tokenizers_checked"] == ["XLMRobertaTokenizer", "XLMRobertaTokenizerFast"]


def test_export_language_embeddings_as_token_types(make_xlm_checkpoint, sentences, encode, prepared_sample, tmp_path):
    ckpt = make_xlm_checkpoint(seed=2)  # xlm_tiny-like, language embeddings de, en, fr
    out = _export(ckpt, tmp_path / "hf")
    slow, fast, hf = _hf(out)
    assert type(hf).__name__ == "XLMRobertaForMaskedLM"
    assert hf.config.type_vocab_size == 3 and hf.config.lang2id == {"de": 0, "en": 1, "fr": 2}
    model, pre = load_xlm_model(ckpt)
    d = _xlm_dictionary(pre)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(prepared_sample, "spm.model"))
    texts = [s for _, s in sentences]
    tokens = _check_tokenization((slow, fast), sp, d, texts, encode)
    enc = fast(texts, padding=True, return_tensors="pt")
    keep = enc["attention_mask"].bool()
    lang2id = hf.config.lang2id
    langs = torch.tensor([lang2id[lang] for lang, _ in sentences]).unsqueeze(1).expand_as(tokens).contiguous()
    with torch.no_grad():
        ref = model(tokens, src_langs=langs)[0]
        got = hf(**enc, token_type_ids=langs).logits
        assert (ref[keep] - got[keep]).abs().max() <= TOL
        # the language matters (else the check above proves little)
        other = hf(**enc, token_type_ids=(langs + 1) % 3).logits
        assert (ref[keep] - other[keep]).abs().max() > 1e-3

        # TLM-style input: two sentences of different languages in one sample,
        # positions restarting at the second (xlm_ds positions -> HF ids + pad + 1)
        de, en = [s for lang, s in sentences if lang == "de"][0], [s for lang, s in sentences if lang == "en"][0]
        a, b = encode(sp, d, [de])[0], encode(sp, d, [en])[0]
        pair = torch.cat([a, b]).unsqueeze(0)
        pos = torch.cat([torch.arange(len(a)), torch.arange(len(b))]).unsqueeze(0)
        pl = torch.cat([torch.full((len(a),), lang2id["de"]), torch.full((len(b),), lang2id["en"])]).unsqueeze(0)
        ref = model(pair, src_langs=pl, positions=pos)[0]
        got = hf(input_ids=pair, token_type_ids=pl, position_ids=pos + d.pad() + 1).logits
        assert (ref - got).abs().max() <= TOL


def test_export_language_folded(make_xlm_checkpoint, sentences, encode, prepared_sample, tmp_path):
    ckpt = make_xlm_checkpoint(seed=4)
    out = _export(ckpt, tmp_path / "hf", "--language", "fr")
    _, fast, hf = _hf(out)
    assert hf.config.type_vocab_size == 1 and hf.config.xlm_ds["language_input"] == "folded:fr"
    model, pre = load_xlm_model(ckpt)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(prepared_sample, "spm.model"))
    texts = [s for lang, s in sentences if lang == "fr"]
    tokens = encode(sp, _xlm_dictionary(pre), texts)
    enc = fast(texts, padding=True, return_tensors="pt")
    keep = enc["attention_mask"].bool()
    with torch.no_grad():
        ref = model(tokens, src_langs=torch.full_like(tokens, pre.languages.index("fr")))[0]
        got = hf(**enc).logits  # no token_type_ids: a plain pipeline's call
        assert (ref[keep] - got[keep]).abs().max() <= TOL


@pytest.mark.parametrize(
    "fields,hf_class",
    [
        (dict(normalize_before=True, no_lang_embeddings=True), "XLMRobertaXLForMaskedLM"),
        (dict(sinusoidal_positions=True), "XLMRobertaForMaskedLM"),
    ],
    ids=["pre_ln_xl", "sinusoidal"],
)
def test_export_other_structures(fields, hf_class, make_xlm_checkpoint, sentences, encode, prepared_sample, tmp_path):
    ckpt = make_xlm_checkpoint(seed=6, **fields)
    out = _export(ckpt, tmp_path / "hf")
    slow, fast, hf = _hf(out)
    assert type(hf).__name__ == hf_class
    model, pre = load_xlm_model(ckpt)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(prepared_sample, "spm.model"))
    texts = [s for _, s in sentences]
    tokens = _check_tokenization((slow, fast), sp, _xlm_dictionary(pre), texts, encode)
    enc = fast(texts, padding=True, return_tensors="pt")
    keep = enc["attention_mask"].bool()
    langs = None
    if model.encoder.embed_langs is not None:
        langs = torch.ones_like(tokens)
        enc["token_type_ids"] = langs
    with torch.no_grad():
        ref = model(tokens, src_langs=langs)[0]
        got = hf(**enc).logits
    assert (ref[keep] - got[keep]).abs().max() <= TOL


def test_export_permutes_rows_for_a_dictionary_in_another_order(make_roberta, sentences, encode, tmp_path):
    # a fairseq dictionary in frequency order, not sentencepiece order
    src, roberta, d = make_roberta(shuffled_dict=True, seed=7)
    assert import_main([src, str(tmp_path / "imp"), "--quiet"]) == 0
    out = _export(tmp_path / "imp" / "model.pt", tmp_path / "hf")
    slow, fast, hf = _hf(out)
    assert hf.config.xlm_ds["vocab_permuted"] is True
    from xlm_ds.interop.hf_export import vocab_permutation

    perm, dropped = vocab_permutation(slow, d.symbols)
    assert dropped == [] and sorted(perm.tolist()) == list(range(len(d)))
    assert not torch.equal(perm, torch.arange(len(d)))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(src, "sentencepiece.bpe.model"))
    texts = [s for _, s in sentences]
    tokens = _check_tokenization((slow, fast), sp, d, texts, encode, perm)
    enc = fast(texts, padding=True, return_tensors="pt")
    keep = enc["attention_mask"].bool()
    with torch.no_grad():
        ref = roberta(tokens)[0]  # the fairseq source itself
        got = hf(**enc).logits
    assert (ref[keep][:, perm] - got[keep]).abs().max() <= TOL
    # the fill-mask view agrees: HF's top prediction is the same piece as fairseq's
    top_ref = [d.symbols[i] for i in ref[keep].argmax(-1).tolist()]
    top_hf = slow.convert_ids_to_tokens(got[keep].argmax(-1).tolist())
    assert top_ref == top_hf


def test_export_half_precision(make_xlm_checkpoint, tmp_path):
    ckpt = make_xlm_checkpoint(seed=8)
    out = _export(ckpt, tmp_path / "hf", "--dtype", "bfloat16")
    report = json.loads(open(os.path.join(out, "xlm_ds_export.json"), encoding="utf-8").read())
    assert report["dtype"] == "bfloat16" and report["max_abs_diff"] <= 1e-4
    hf = transformers.AutoModelForMaskedLM.from_pretrained(out, dtype="auto")  # the stored dtype
    assert hf.dtype == torch.bfloat16


def test_export_refusals(make_xlm_checkpoint, make_roberta, tmp_path, capsys):
    def error(*argv):
        assert main([*map(str, argv), "--quiet"]) == 2
        return capsys.readouterr().err

    no_langs = make_xlm_checkpoint(no_lang_embeddings=True)
    assert "no language embeddings" in error(no_langs, tmp_path / "a", "--language", "en")
    with_langs = make_xlm_checkpoint()
    assert "not one of the model's languages" in error(with_langs, tmp_path / "b", "--language", "sw")
    relu = make_xlm_checkpoint(activation_fn="relu")
    assert "GELU" in error(relu, tmp_path / "c")
    assert "--spm-model" in error(with_langs, tmp_path / "d", "--spm-model", tmp_path / "nope.model")
    src, _, _ = make_roberta()
    assert "not an xlm_ds pretraining checkpoint" in error(os.path.join(src, "model.pt"), tmp_path / "e")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("x")
    assert "not empty" in error(with_langs, busy)
