#!/usr/bin/env python3
"""Build ``xlm_ds/sample_corpus/`` from the Tatoeba-Challenge test sets.

The sample is what tests, demos and docs run ``xlm-ds-prepare`` on, so it has
to be small (well under a few MB), real multilingual text, and free of
leakage between splits.  This script is the exact recipe that produced the
shipped files; it is NOT run by the tests (they never read ../shared).

Source: ``../shared/data/tatoeba_challenge_test`` (Helsinki-NLP
Tatoeba-Challenge test v2021-08-07, filtered; Tatoeba data is CC BY 2.0 FR).

Selection (deterministic: ``random.Random(SEED)`` shuffles, sorted inputs):

* pools: deu-eng is split into a de-en pool and an English-monolingual pool,
  eng-fra into an en-fr pool and a second English-monolingual pool, deu-fra
  into a German half and a French half (the mono de / fr sides are therefore
  not translations of each other);
* phase 1 picks every valid/test set first and records the normalised
  sentences (lowercase, non-word characters removed, as in SOURCE.md) of each
  language in a held-out set;
* phase 2 picks the train sets, skipping any line (or pair) whose sentence in
  either language is held out.  So no test/valid source or target sentence of
  any pair or language appears in any train file (Tatoeba repeats a source
  sentence with several translations, which a plain line split would leak).

Output: gzip files with mtime 0 and no embedded name (byte-reproducible),
ISO 639-1 codes, fairseq-like names: ``{split}.{src}-{tgt}.{lang}.gz`` for
parallel and ``{split}.{lang}.gz`` for monolingual data.

Usage: python benchmarks/make_sample_corpus.py [--src DIR] [--out DIR]
"""
import argparse
import gzip
import io
import random
import re
from pathlib import Path

SEED = 1234
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "tatoeba_challenge_test"
DEFAULT_OUT = REPO / "xlm_ds" / "sample_corpus"
ISO1 = {"deu": "de", "eng": "en", "fra": "fr"}

# (pair dir, fairseq pair name, (test, valid, train)) sizes in lines
PARA = {"de-en": ("deu-eng", 500, 300, 8000), "en-fr": ("eng-fra", 300, 300, 6000)}
MONO = {"en": (300, 300, 5000), "de": (300, 300, 5000), "fr": (300, 300, 5000)}
PARA_POOL = {"de-en": 11000, "en-fr": 8000}  # the rest of the pair goes to mono en


def norm(s):
    return re.sub(r"\W+", "", s.lower())


def read_pair(src_dir, name):
    a, b = name.split("-")
    base = src_dir / name / "tatoeba-test-v2021-08-07.filtered"
    la = (base.parent / f"{base.name}.{a}").read_text(encoding="utf-8").split("\n")
    lb = (base.parent / f"{base.name}.{b}").read_text(encoding="utf-8").split("\n")
    if la and la[-1] == "":
        la.pop()
    if lb and lb[-1] == "":
        lb.pop()
    assert len(la) == len(lb), name
    return [(x.strip(), y.strip()) for x, y in zip(la, lb) if x.strip() and y.strip()]


def shuffled(items, tag):
    items = list(items)
    random.Random(f"{SEED}-{tag}").shuffle(items)
    return items


def take(pool, n, langs, held, used, dedupe=False):
    """First n unused items of pool none of whose sentences is held out.

    dedupe: also skip an item whose (first) sentence was already taken here.
    """
    out, seen = [], set()
    for i, item in enumerate(pool):
        if len(out) == n:
            break
        if i in used:
            continue
        keys = [norm(s) for s in item]
        if any(not k or k in held[lang] for k, lang in zip(keys, langs)):
            continue
        if dedupe and keys[0] in seen:
            continue
        seen.add(keys[0])
        used.add(i)
        out.append(item)
    if len(out) < n:
        raise SystemExit(f"not enough lines for {langs}: wanted {n}, got {len(out)}")
    return out


def write_gz(path, lines):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    path.write_bytes(buf.getvalue())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    deen = shuffled(read_pair(args.src, "deu-eng"), "deu-eng")
    enfr = shuffled(read_pair(args.src, "eng-fra"), "eng-fra")
    defr = shuffled(read_pair(args.src, "deu-fra"), "deu-fra")
    pools = {
        "de-en": deen[: PARA_POOL["de-en"]],
        "en-fr": enfr[: PARA_POOL["en-fr"]],
        # one-element tuples so that take() treats mono and para alike
        "en": [(e,) for _, e in deen[PARA_POOL["de-en"]:]]
        + [(e,) for e, _ in enfr[PARA_POOL["en-fr"]:]],
        "de": [(d,) for d, _ in defr[: len(defr) // 2]],
        "fr": [(f,) for _, f in defr[len(defr) // 2:]],
    }
    langs = {"de-en": ("de", "en"), "en-fr": ("en", "fr"), "en": ("en",), "de": ("de",), "fr": ("fr",)}
    sizes = {k: v[1:] for k, v in PARA.items()} | MONO
    held = {"en": set(), "de": set(), "fr": set()}
    used = {k: set() for k in pools}
    picked = {}
    # phase 1: test then valid sets; each one avoids what is already held out
    # (so test and valid never share a sentence), then joins the held-out set
    for name in ["de-en", "en-fr", "en", "de", "fr"]:
        for split, n in zip(("test", "valid"), sizes[name][:2]):
            sel = take(pools[name], n, langs[name], held, used[name], dedupe=len(langs[name]) == 1)
            picked[(split, name)] = sel
            for item in sel:
                for s, lang in zip(item, langs[name]):
                    held[lang].add(norm(s))
    # phase 2: train sets avoid every held-out sentence; mono train is deduplicated
    for name in ["de-en", "en-fr", "en", "de", "fr"]:
        picked[("train", name)] = take(
            pools[name], sizes[name][2], langs[name], held, used[name], dedupe=len(langs[name]) == 1
        )

    args.out.mkdir(parents=True, exist_ok=True)
    for (split, name), items in sorted(picked.items()):
        for j, lang in enumerate(langs[name]):
            fname = f"{split}.{name}.{lang}.gz" if len(langs[name]) == 2 else f"{split}.{lang}.gz"
            write_gz(args.out / fname, [it[j] for it in items])
            print(f"{fname}\t{len(items)}")


if __name__ == "__main__":
    main()
