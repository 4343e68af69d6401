"""``xlm-ds-score``: sacreBLEU (and chrF) of ``fairseq-generate`` output
against the raw, detokenized reference text, with sacreBLEU's signature.

fairseq-generate's own ``--scoring sacrebleu`` scores against references
rebuilt from the binarized ids, where a piece mapped to ``<unk>`` no longer
matches the original text; scoring against the raw file is what papers
report. Hypotheses are the ``D-`` lines (sentencepiece already removed with
``--post-process sentencepiece``), put back in corpus order by their id; a
sentence with no hypothesis counts as an empty translation, never skipped.
"""
import argparse
import json
import sys
from typing import Dict, List

from sacrebleu.metrics import BLEU, CHRF

from ..data.text_reader import iter_sentences


def read_hypotheses(lines) -> Dict[int, str]:
    hyps = {}
    for line in lines:
        if line.startswith("D-"):
            head, _score, text = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            hyps[int(head[2:])] = text
    return hyps


def read_references(path: str) -> List[str]:
    return [s for batch in iter_sentences(path) for s in batch]


def score(hyps: Dict[int, str], refs: List[str]) -> dict:
    extra = sorted(i for i in hyps if i >= len(refs))
    if extra:
        raise ValueError(
            f"hypothesis ids up to {extra[-1]} but only {len(refs)} reference lines: wrong reference file?"
        )
    ordered = [hyps.get(i, "") for i in range(len(refs))]
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(ordered, [refs])
    c = chrf.corpus_score(ordered, [refs])
    return {
        "bleu": round(b.score, 2),
        "chrf": round(c.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(b),
        "sentences": len(refs),
        "missing_hypotheses": len(refs) - len([i for i in hyps if i < len(refs)]),
    }


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="xlm-ds-score",
        description="sacreBLEU/chrF of fairseq-generate output (D- lines) against a raw reference file. "
        "The last line printed is JSON.",
    )
    p.add_argument("generate_output", help="fairseq-generate stdout saved to a file, or - for stdin")
    p.add_argument("--ref", required=True, help="reference text, one sentence per line (plain or .gz)")
    args = p.parse_args(argv)
    stream = sys.stdin if args.generate_output == "-" else open(args.generate_output, encoding="utf-8")
    with stream:
        hyps = read_hypotheses(stream)
    result = score(hyps, read_references(args.ref))
    print(f"{result['bleu_detail']}")
    print(f"BLEU {result['bleu']} ({result['bleu_signature']})  chrF {result['chrf']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
