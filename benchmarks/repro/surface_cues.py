"""The floor of a zero-shot classification proxy: what a classifier gets
from surface cues that mean the same in every language (length in
characters and words, commas, other punctuation, digits, capitals, a final
full stop), trained on the English rows and applied unchanged to the
translated ones. A zero-shot accuracy at or below this needs no
cross-lingual representation at all, so the reproductions print it beside
the encoders (``setups.surface_baseline``).

The classifier is scikit-learn's Gaussian naive Bayes (one mean and
variance per feature and class: nothing to tune).

    python benchmarks/repro/surface_cues.py --train TRAIN.tsv en=EVAL.en.tsv de=EVAL.de.tsv

Input rows are ``text<TAB>label`` (as for xlm-ds-classify); prints one JSON
line ``{"accuracy": {lang: fraction}, "n": {lang: rows}}``.
"""
import argparse
import json
import math
import re
import sys
from typing import List, Tuple

FEATURES = ("log chars", "log words", "commas", "other punctuation", "digits", "capitals", "final full stop")


def features(text: str) -> List[float]:
    return [math.log(1 + len(text)), math.log(1 + len(text.split())), text.count(","),
            len(re.findall(r"[^\w\s,]", text)), sum(c.isdigit() for c in text), sum(c.isupper() for c in text),
            float(text.rstrip().endswith("."))]


def read_rows(path: str) -> List[Tuple[str, str]]:
    """``(text, label)`` rows, read by xlm-ds-classify's own reader (same
    format, header and errors naming file and line)."""
    from xlm_ds.cli.classify import read_tsv

    try:
        rows = read_tsv(path)
    except ValueError as e:
        sys.exit(str(e))
    if not rows:
        sys.exit(f"{path}: no rows")
    if rows[0][1] is not None:
        sys.exit(f"{path}: expected single sentences (text<TAB>label), got premise<TAB>hypothesis<TAB>label")
    return [(text, label) for text, _, label in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="TSV of text<TAB>label rows (the English training rows)")
    p.add_argument("eval", nargs="+", metavar="LANG=TSV", help="rows to classify, one file per language")
    args = p.parse_args(argv)
    from sklearn.naive_bayes import GaussianNB

    train = read_rows(args.train)
    model = GaussianNB().fit([features(t) for t, _ in train], [y for _, y in train])
    acc, n = {}, {}
    for spec in args.eval:
        lang, sep, path = spec.partition("=")
        if not sep or not lang or not path:
            p.error(f"{spec!r}: expected LANG=TSV")
        rows = read_rows(path)
        predicted = model.predict([features(t) for t, _ in rows])
        acc[lang] = sum(p == y for p, (_, y) in zip(predicted, rows)) / len(rows)
        n[lang] = len(rows)
    print(json.dumps({"accuracy": acc, "n": n, "features": list(FEATURES)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
