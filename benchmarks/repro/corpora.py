"""Paths of the shared corpora and the assembly of their text into the
files a reproduction prepares (``Corpus``); never used by the tests."""
from __future__ import annotations

import functools
import gzip
import os
import sys
from typing import AbstractSet, Dict, Iterable, List, Optional, Sequence, Tuple

from steps import REPO, atomic_write

# the shared corpora (docs/results.md, /work/shared/data/README.md); never used by tests
SHARED = os.environ.get("XLM_DS_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
if not os.path.isdir(SHARED) and os.path.isdir("/work/shared/data"):
    SHARED = "/work/shared/data"

# two-letter codes used in the prepared data <- the corpora's own codes
ISO3 = {"en": "eng", "de": "deu", "fr": "fra", "cs": "ces", "ro": "ron"}


# --------------------------------------------------------------------------
# corpora from the shared data directory


def shared(*parts: str) -> str:
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        sys.exit(f"missing corpus file {path} (set XLM_DS_SHARED_DATA to the shared data directory)")
    return path


def read_lines(path: str) -> List[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f]


def multi30k(split: str, lang: str) -> str:
    return shared("multi30k", f"{split}.{lang}.gz")


def wmt(pair: str, test_set: str, lang: str) -> str:
    return shared("wmt_news", pair, f"{test_set}.{lang}.gz")


WMT_4WAY = ["news-test2008", "newssyscomb2009", "newstest2009", "newstest2010",
            "newstest2011", "newstest2012", "newstest2013"]


def flores(lang: str) -> str:
    return shared("flores200_devtest", f"{ISO3[lang]}_Latn.devtest")


def ro_sts(split: str, lang: str) -> str:
    return shared("ro_sts_parallel", f"RO-STS.{split}.{lang}")


def tatoeba(lang: str, other: str = "en") -> Tuple[str, str]:
    """tatoeba_challenge_test files (lang side, other side); the pair folder
    is named in alphabetical ISO-639-3 order."""
    x, y = ISO3[lang], ISO3[other]
    folder = "-".join(sorted([x, y]))
    f = "tatoeba-test-v2021-08-07.filtered"
    return shared("tatoeba_challenge_test", folder, f"{f}.{x}"), shared("tatoeba_challenge_test", folder, f"{f}.{y}")


def normalise(sentence: str) -> str:
    """The form in which training and test sentences are compared for
    overlap: case and runs of white space do not count."""
    return " ".join(sentence.lower().split())


def xnli_dev(lang: str) -> str:
    return shared("xnli", f"dev-{lang}.tsv.gz")


DOMAINS = ("caption", "news", "wiki")
# Multi30k test sets of image captions with en, de and fr (first: the one
# used alone before 2026-12-06, so its items still come first)
CAPTION_SETS = ("test_2017_flickr", "test_2016_flickr", "test_2018_flickr")
# every item is cut to its first DOMAIN_WORDS words (items shorter in any
# language are dropped): whole sentences let length alone tell the domains
# apart (captions average 11 words, news and wiki 21-22) and length
# transfers to any language without a shared representation
DOMAIN_WORDS = 8


@functools.lru_cache(maxsize=None)
def domain_items(langs: Tuple[str, ...], words: int = DOMAIN_WORDS) -> Dict[str, Dict[str, List[str]]]:
    """{domain: {lang: sentences}}, item i the same sentence in every
    language of ``langs``, cut to its first ``words`` words (0: whole):
    image captions (Multi30k ``CAPTION_SETS``), news (the newstest2014
    sentences whose English is in both its de-en and its fr-en set) and
    Wikipedia-style text (FLORES devtest). None of them is pretraining data
    of any experiment (Multi30k train, WMT news 2008-2013, 2015-2019,
    Tatoeba)."""
    def aligned(columns: Dict[str, List[str]]) -> Dict[str, List[str]]:
        keep = [i for i in range(len(columns["en"]))
                if all(len(columns[l][i].split()) >= max(words, 1) for l in langs)]
        cut = (lambda s: " ".join(s.split()[:words])) if words else (lambda s: s.replace("\t", " "))
        return {l: [cut(columns[l][i]) for i in keep] for l in langs}

    captions = {l: [s for name in CAPTION_SETS for s in read_lines(multi30k(name, l))] for l in langs}
    news_en = read_lines(wmt("fr-en", "newstest2014", "en"))
    by_en = {x: dict(zip(read_lines(wmt(f"{x}-en", "newstest2014", "en")), read_lines(wmt(f"{x}-en", "newstest2014", x))))
             for x in langs if x != "en"}
    news_en = [s for s in news_en if s and all(s in t for t in by_en.values())]
    news = {"en": news_en, **{x: [by_en[x][s] for s in news_en] for x in by_en}}
    return {"caption": aligned(captions),
            "news": aligned(news),
            "wiki": aligned({l: read_lines(flores(l)) for l in langs})}


def para_sources(pair: str, splits: Iterable[str] = ("train",), news: Iterable[str] = WMT_4WAY) -> List[Tuple[str, str]]:
    """(file of lang a, file of lang b) lists for a pair 'a-b' from Multi30k
    and the 4-way WMT news sets (stored under xx-en)."""
    a, b = pair.split("-")
    out = [(multi30k(s, a), multi30k(s, b)) for s in splits]
    x = a if b == "en" else b
    for t in news:
        fa, fb = wmt(f"{x}-en", t, a), wmt(f"{x}-en", t, b)
        out.append((fa, fb))
    return out


class Corpus:
    """Text files assembled into ``cache`` (stripped, empty lines and pairs
    with an empty side dropped, capped, written atomically, reused if
    present). File names carry the selection (limit, slice, rows), so a
    changed preset makes new files (and so a different prepare command,
    which the step runner refuses to mix with old results)."""

    def __init__(self, cache: str):
        self.cache = cache
        os.makedirs(cache, exist_ok=True)

    def _path(self, name: str) -> str:
        return os.path.join(self.cache, name)

    def mono(self, name: str, sources: Sequence[str], limit: int = 0, part: Tuple[int, int] = (0, 1),
             exclude: Optional[AbstractSet[str]] = None) -> str:
        """Lines of ``sources`` concatenated; ``part=(i, k)`` keeps the i-th
        of k contiguous slices (disjoint monolingual data for each language
        of a multi-way parallel corpus), then the first ``limit``. Lines
        whose ``normalise``d form is in ``exclude`` (held-out test
        sentences) are dropped."""
        path = self._path(f"{name}.{limit or 'all'}.{part[0]}of{part[1]}{'.heldout-free' if exclude else ''}")
        if not os.path.exists(path):
            lines = []
            for src in sources:
                rows = read_lines(src)
                i, k = part
                n = len(rows)
                lines += [s for s in rows[i * n // k:(i + 1) * n // k] if s and not (exclude and normalise(s) in exclude)]
            if limit:
                lines = lines[:limit]
            atomic_write(path, "\n".join(lines) + "\n")
        return path

    def para(self, name: str, pair: str, sources: Sequence[Tuple[str, str]], limit: int = 0,
             unique: bool = False, exclude: Optional[AbstractSet[str]] = None) -> Tuple[str, str]:
        """``unique``: keep only pairs whose two sides each occur once (a
        retrieval test set must have one gold answer per query).
        ``exclude``: drop pairs with either side's ``normalise``d form in it."""
        a, b = pair.split("-")
        tag = f"{limit or 'all'}{'.uniq' if unique else ''}{'.heldout-free' if exclude else ''}"
        pa, pb = self._path(f"{name}.{tag}.{a}"), self._path(f"{name}.{tag}.{b}")
        if not (os.path.exists(pa) and os.path.exists(pb)):
            rows = []
            for fa, fb in sources:
                la, lb = read_lines(fa), read_lines(fb)
                if len(la) != len(lb):
                    sys.exit(f"{fa} and {fb} are not parallel ({len(la)} vs {len(lb)} lines)")
                rows += [(x, y) for x, y in zip(la, lb)
                         if x and y and not (exclude and (normalise(x) in exclude or normalise(y) in exclude))]
            if unique:
                from collections import Counter

                ca, cb = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
                rows = [r for r in rows if ca[r[0]] == 1 and cb[r[1]] == 1]
            if limit:
                rows = rows[:limit]
            atomic_write(pa, "\n".join(r[0] for r in rows) + "\n")
            atomic_write(pb, "\n".join(r[1] for r in rows) + "\n")
        return pa, pb

    def domain_tsv(self, lang: str, langs: Tuple[str, ...], start: int, stop: int) -> str:
        """``text<TAB>domain`` rows: items [start, stop) of every domain of
        ``domain_items(langs)`` in ``lang`` (the same items in each language)."""
        path = self._path(f"domain{DOMAIN_WORDS}w.{'-'.join(langs)}.{start}-{stop}.{lang}.tsv")
        if not os.path.exists(path):
            items = domain_items(tuple(langs), DOMAIN_WORDS)
            short = [d for d in DOMAINS if len(items[d][lang]) < stop]
            if short:
                sys.exit(f"domain classification: {', '.join(short)} has fewer than {stop} aligned items")
            rows = [f"{items[d][lang][i]}\t{d}" for d in DOMAINS for i in range(start, stop)]
            atomic_write(path, "\n".join(rows) + "\n")
        return path

    def tsv(self, name: str, source: str, start: int, stop: int) -> str:
        """Rows [start, stop) of an XNLI tsv."""
        path = self._path(f"{name}.{start}-{stop}.tsv")
        if not os.path.exists(path):
            rows = [r for r in read_lines(source) if r][start:stop]
            atomic_write(path, "\n".join(rows) + "\n")
        return path
