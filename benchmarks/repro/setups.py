"""The en/de/fr set-up that experiments 2, 4 and 5 share: the text, its
prepared data, held-out test sets, and the retrieval and XNLI evaluations."""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from commands import *  # noqa: F401,F403
from corpora import *  # noqa: F401,F403
from report import *  # noqa: F401,F403
from steps import *  # noqa: F401,F403


# --------------------------------------------------------------------------
# set-ups shared by several experiments (2, 4, 5)

XL_LANGS = ("de", "en", "fr")
XL_PAIRS = ("de-en", "en-fr")


# --set data=varied adds, for de-en and en-fr, the WMT news sets outside
# the 4-way 2008-2013 ones (newstest2014 stays unseen, the usual WMT test)
# and Tatoeba-Challenge pairs, to the monolingual and the parallel data.
WMT_EXTRA = {"de-en": ["newstest2015", "newstest2016", "newstest2017", "newstest2018", "newstest2019"],
             "en-fr": ["newsdiscusstest2015"]}
DATA_CHOICES = ("base", "varied")


def multilingual_data(steps: Steps, out: str, cfg: dict) -> str:
    """``multilingual_text`` prepared (shared vocabulary, binarized)."""
    mono, para = multilingual_text(out, cfg)
    return prepare(steps, os.path.join(out, "data"), mono, para, cfg["vocab_size"])


def multilingual_text(out: str, cfg: dict) -> Tuple[dict, dict]:
    """(mono, para) text files, {split: {lang or pair: file(s)}}.
    en/de/fr: monolingual = disjoint thirds of Multi30k train + WMT news
    2008-2013 (each language from other rows, so MLM never sees a sentence
    and its translation), parallel de-en and en-fr = all rows; valid =
    Multi30k val. FLORES and XNLI (the evaluation sets) are not used.

    ``cfg['data'] == 'varied'`` (default 'base') adds WMT_EXTRA and the
    Tatoeba-Challenge deu-eng/eng-fra pairs, after dropping every pair and
    line that shares a sentence with a retrieval test set (the Tatoeba test
    pairs come from the same files): parallel data less dominated by image
    captions (64% of de-en pairs in 'base', 39% in 'varied')."""
    data = cfg.get("data", "base")
    if data not in DATA_CHOICES:
        sys.exit(f"--set data={data}: expected one of {', '.join(DATA_CHOICES)}")
    corpus = Corpus(os.path.join(out, "text"))
    held = held_out_sentences(cfg, out) if data == "varied" else None
    extra = {}
    if held:
        for pair in XL_PAIRS:
            srcs = para_sources(pair, (), WMT_EXTRA[pair]) + [tatoeba(*pair.split("-"))]
            extra[pair] = corpus.para(f"extra.{pair}", pair, srcs, exclude=held)
    mono = {"train": {}, "valid": {}}
    for i, lang in enumerate(XL_LANGS):
        x = "de" if lang == "en" else lang
        srcs = [multi30k("train", lang)] + [wmt(f"{x}-en", t, lang) for t in WMT_4WAY]
        if held:  # en from the de-en extra rows (the 4-way sets' rule), each language its own third
            pair = next(p for p in XL_PAIRS if x in p.split("-"))
            srcs.append(extra[pair][pair.split("-").index(lang)])
        mono["train"][lang] = corpus.mono(f"mono.train.{lang}", srcs, cfg["mono_limit"], (i, len(XL_LANGS)),
                                          exclude=held)
        mono["valid"][lang] = corpus.mono(f"mono.valid.{lang}", [multi30k("val", lang)], cfg["valid_limit"])
    para = {"train": {}, "valid": {}}
    for pair in XL_PAIRS:
        srcs = para_sources(pair) + ([extra[pair]] if held else [])
        para["train"][pair] = corpus.para(f"para.train.{pair}", pair, srcs, cfg["para_limit"], exclude=held)
        para["valid"][pair] = corpus.para(f"para.valid.{pair}", pair, para_sources(pair, ("val",), ()),
                                          cfg["valid_limit"])
    return mono, para


def held_out_sentences(cfg: dict, out: str) -> frozenset:
    """Every sentence (``normalise``d, all languages) of the retrieval test
    sets, which no training file may contain."""
    return frozenset(normalise(s) for files in retrieval_test_sets(cfg, out).values() for f in files
                     for s in read_lines(f) if s)


RETRIEVAL_SETS = ("FLORES", "Tatoeba", "Multi30k")


def retrieval_groups(cfg: dict) -> Dict[str, List[str]]:
    """Table/plot groups of the retrieval columns: one per test set and layer."""
    return {f"{name} layer {layer}": [f"{name} L{layer} {x}" for p in ("de", "fr") for x in (f"{p}→en", f"en→{p}")]
            for name in RETRIEVAL_SETS for layer in cfg["retrieval_layers"]}


def retrieval_test_sets(cfg: dict, out: str) -> Dict[Tuple[str, str], Tuple[str, str]]:
    """(set, lang) -> (lang file, en file): FLORES-200 devtest (1,012
    multi-way pairs, Wikipedia), Tatoeba-Challenge test (short everyday
    sentences) and Multi30k test_2016_flickr (image captions: the training
    domain, held out); of the last two only pairs whose sides are unique,
    first ``retrieval_max`` or 1,000. None is in any training set of these
    scripts."""
    corpus = Corpus(os.path.join(out, "text"))
    n = cfg["retrieval_max"] or 1000
    sets = {}
    for lang in ("de", "fr"):
        sets[("FLORES", lang)] = (flores(lang), flores("en"))
        sets[("Tatoeba", lang)] = corpus.para(f"tatoeba.{lang}-en", f"{lang}-en", [tatoeba(lang)], n, unique=True)
        sets[("Multi30k", lang)] = corpus.para(f"multi30k-test.{lang}-en", f"{lang}-en",
                                               para_sources(f"{lang}-en", ("test_2016_flickr",), ()), n, unique=True)
    return sets


TEXT_MEANS = " (text means)"


def eval_retrieval(steps: Steps, ckpt: str, run: str, cfg: dict, row: Dict[str, list], out: str, center=None,
                   only: Sequence[str] = RETRIEVAL_SETS, cosines: Optional[Dict[str, list]] = None) -> None:
    """xlm-ds-retrieval P@1 (%) both ways, de-en and fr-en, on each test set
    in ``only`` at each layer of cfg['retrieval_layers']; appended to row.
    ``center``: None = plain cosine; "self" = language-centred on each test
    file's own mean; {lang: text file} = centred on each language's mean over
    that text (columns end in TEXT_MEANS). ``cosines`` collects the cosine
    between the two languages' mean vectors (column "SET Lk xx-en")."""
    on_text = center not in (None, "self")
    tag = ".centred-text" if on_text else ".centred" if center else ""
    suffix = TEXT_MEANS if on_text else ""
    for (name, lang), (fx, fen) in retrieval_test_sets(cfg, out).items():
        if name not in only:
            continue
        flags = ["--center"] if center else []
        if on_text:
            flags += ["--center-on", f"{lang}={center[lang]}", "--center-on", f"en={center['en']}"]
        for layer in cfg["retrieval_layers"]:
            r = retrieval(steps, ckpt, (lang, fx), ("en", fen),
                          os.path.join(run, f"retrieval.{name}.{lang}-en.L{layer}{tag}.json"), layer,
                          cfg["retrieval_max"], flags)
            row.setdefault(f"{name} L{layer} {lang}→en{suffix}", []).append(100 * r["p_at_1_src2tgt"])
            row.setdefault(f"{name} L{layer} en→{lang}{suffix}", []).append(100 * r["p_at_1_tgt2src"])
            if cosines is not None:
                cosines.setdefault(f"{name} L{layer} {lang}-en", []).append(r["lang_mean_cosine"])


def language_offset_groups(cfg: dict) -> Dict[str, List[str]]:
    """Groups of ``eval_retrieval``'s ``cosines`` columns: one per layer."""
    return {f"layer {layer}": [f"{name} L{layer} {p}-en" for name in RETRIEVAL_SETS for p in ("de", "fr")]
            for layer in cfg["retrieval_layers"]}


XNLI_COLUMNS = ["XNLI en", "XNLI de (0-shot)", "XNLI fr (0-shot)"]
XNLI_GROUP = {"XNLI accuracy (fine-tuned on en)": XNLI_COLUMNS}


def eval_xnli(steps: Steps, ckpt: str, run: str, cfg: dict, seed: int, row: Dict[str, list], out: str) -> None:
    """xlm-ds-classify: fine-tuned on the first cfg['xnli_train'] rows of
    XNLI dev en, accuracy (%) on the remaining rows in en, de, fr (the
    labelled XNLI dev is the only labelled NLI data available)."""
    corpus = Corpus(os.path.join(out, "text"))
    n, m = cfg["xnli_train"], cfg["xnli_train"] + cfg["xnli_eval"]
    train_set = corpus.tsv("xnli.en", xnli_dev("en"), 0, n)
    evals = [(lang, corpus.tsv(f"xnli.{lang}", xnli_dev(lang), n, m)) for lang in XL_LANGS]
    r = classify(steps, ckpt, ("en", train_set), evals, os.path.join(run, "xnli.json"), seed, cfg["xnli_epochs"],
                 cfg["xnli_lr"])
    _append_accuracy(row, XNLI_COLUMNS, r)


def _append_accuracy(row: Dict[str, list], columns: Sequence[str], result: dict) -> None:
    """xlm-ds-classify's accuracies (%) in en, de, fr into ``columns``."""
    for col, lang in zip(columns, ("en", "de", "fr")):
        row.setdefault(col, []).append(100 * result["accuracy"][lang])


DOMAIN_COLUMNS = ["domain en", "domain de (0-shot)", "domain fr (0-shot)"]
DOMAIN_GROUP = {"Domain accuracy (fine-tuned on en: caption / news / wiki)": DOMAIN_COLUMNS}


def _domain_sets(corpus: Corpus, cfg: dict) -> Tuple[str, List[Tuple[str, str]]]:
    n, m = cfg["domain_train"], cfg["domain_train"] + cfg["domain_eval"]
    return (corpus.domain_tsv("en", XL_LANGS, 0, n),
            [(lang, corpus.domain_tsv(lang, XL_LANGS, n, m)) for lang in ("en", "de", "fr")])


def eval_domain(steps: Steps, ckpt: str, run: str, cfg: dict, seed: int, row: Dict[str, list], out: str) -> None:
    """The proxy of zero-shot XNLI that these small encoders can learn:
    xlm-ds-classify fine-tuned (as for XNLI: whole encoder + linear head, 3
    balanced classes) on cfg['domain_train'] English items per domain
    labelled with their source (caption / news / wiki, ``domain_items``:
    the first 8 words of each sentence, so length does not give the label
    away), accuracy (%) on the next cfg['domain_eval'] items of each domain
    in en, de and fr (the same items translated). Same protocol and chance
    level as XNLI, a task learnable from content words, so the English
    accuracy is well above chance and what de/fr keep of it measures
    transfer; ``surface_baseline`` is what needs no encoder at all."""
    train_set, evals = _domain_sets(Corpus(os.path.join(out, "text")), cfg)
    r = classify(steps, ckpt, ("en", train_set), evals, os.path.join(run, f"domain{DOMAIN_WORDS}w.json"), seed,
                 cfg["domain_epochs"], cfg["xnli_lr"])
    _append_accuracy(row, DOMAIN_COLUMNS, r)


SURFACE_ROW = "surface cues only (no encoder)"


def surface_baseline(steps: Steps, cfg: dict, out: str) -> Dict[str, list]:
    """The domain task's row for a classifier of language-independent
    surface cues (``surface_cues.py``: length, punctuation, digits,
    capitals), trained on the same English items: zero-shot accuracy up to
    this level needs no cross-lingual representation."""
    train_set, evals = _domain_sets(Corpus(os.path.join(out, "text")), cfg)
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "surface_cues.py"),
           "--train", train_set] + [f"{lang}={path}" for lang, path in evals]
    row: Dict[str, list] = {}
    _append_accuracy(row, DOMAIN_COLUMNS, steps.run(os.path.join(out, f"surface_cues{DOMAIN_WORDS}w.json"), cmd,
                                                    parse=last_json_line))
    return row
