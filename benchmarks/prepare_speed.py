#!/usr/bin/env python3
"""Binarization speed: xlm-ds-prepare vs fairseq-preprocess, same tokens.

Corpus (from ``../shared/data``, ~200k lines): Multi30k train de/en/fr as
monolingual data, WMT newstest de-en (2008-2020, B2020 left out) and fr-en
(2008-2015) as parallel data.

What is timed (all in this one process, after imports, best of ``--repeat``):

* ``ours binarize``: the binarize step of xlm-ds-prepare with ``--workers``
  processes, from the raw gzip text: read + UTF-8 check + sentencepiece
  encoding + id mapping + writing the mmap datasets;
* ``fairseq-preprocess``: ``fairseq_cli.preprocess.main`` with
  ``--srcdict/--tgtdict dict.txt --workers N --dataset-impl mmap`` on text that
  was sentencepiece-encoded beforehand (*not* timed: fairseq gets the easier
  job) - one call per monolingual language (``--only-source``) and per pair;
* ``ours end-to-end``: the whole ``prepare()`` (validation pass, vocabulary
  sampling + sentencepiece training, binarization, manifest).

The three are run in interleaved rounds, so that load from other processes on a
shared machine affects all of them alike; the load average is printed per round.

The outputs of both binarizers are compared sentence by sentence: they are
identical except where a sentencepiece piece is a Unicode whitespace
character (e.g. U+0085) that fairseq's whitespace tokenizer drops.  Prints a table and writes JSON (``--json``).

Usage: python benchmarks/prepare_speed.py [--data DIR] [--workers 2] [--repeat 3]
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def corpus_flags(data: str):
    mono = [f"train:{lang}={data}/multi30k/train.{lang}.gz" for lang in ("de", "en", "fr")]
    para = []
    for pair, tgt_first in (("de-en", False), ("fr-en", False)):
        src, tgt = pair.split("-")
        for s in sorted(glob.glob(f"{data}/wmt_news/{pair}/*.{src}.gz")):
            if "newstestB" in s:
                continue
            t = s[: -len(f".{src}.gz")] + f".{tgt}.gz"
            para.append(f"train:{pair}={s},{t}")
    return mono, para


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(REPO), "shared", "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "out", "prepare_speed.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import numpy as np
    import sentencepiece as spm
    import fairseq
    from fairseq import options
    from fairseq.data import Dictionary
    from fairseq_cli import preprocess

    from xlm_ds.data.binarize import EncoderPool, binarize_dataset, id_map
    from xlm_ds.data.corpus_spec import MonoCorpus, build_spec
    from xlm_ds.data.pipeline import PrepareConfig, prepare
    from xlm_ds.data.text_reader import iter_pairs, iter_sentences

    logging.getLogger("fairseq_cli.preprocess").setLevel(logging.WARNING)
    mono, para = corpus_flags(args.data)
    spec = build_spec(mono, para)
    work = tempfile.mkdtemp(prefix="xlmds-bench-")
    try:
        def run_end_to_end() -> float:
            t = time.perf_counter()
            run_end_to_end.manifest = prepare(spec, PrepareConfig(
                out=os.path.join(work, "ours"), vocab_size=args.vocab_size, workers=args.workers,
                progress=False, overwrite=True))
            return time.perf_counter() - t

        # ---- ours, end to end, once first: it makes the spm model / dict
        e2e = [run_end_to_end()]
        out = os.path.join(work, "ours")
        train = run_end_to_end.manifest["splits"]["train"]
        n_lines = sum(e["lines"] * (2 if "-" in k else 1) for k, e in train.items())
        n_tokens = sum(sum(e["tokens"].values()) if isinstance(e["tokens"], dict) else e["tokens"] for e in train.values())

        sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "spm.model"))
        d = Dictionary.load(os.path.join(out, "dict.txt"))
        lut = id_map(sp, d)
        datasets = spec.datasets()

        def run_ours() -> float:
            """Our binarize step only: raw gzip text -> .bin/.idx."""
            dest = os.path.join(work, "ours-bin")
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            t = time.perf_counter()
            with EncoderPool(os.path.join(out, "spm.model"), lut, args.workers) as pool:
                for (split, name), corpora in datasets.items():
                    if isinstance(corpora[0], MonoCorpus):
                        batches = ((b,) for c in corpora for b in iter_sentences(c.path))
                        prefixes = [os.path.join(dest, f"{split}.{name}")]
                    else:
                        batches = (b for c in corpora for b in iter_pairs(c.src_path, c.tgt_path))
                        prefixes = [os.path.join(dest, f"{split}.{name}.{lang}") for lang in name.split("-")]
                    binarize_dataset(pool, batches, prefixes, len(d), d.unk())
            return time.perf_counter() - t

        # ---- sentencepiece-encoded text for fairseq-preprocess (not timed)
        enc = os.path.join(work, "enc")
        os.makedirs(enc)
        t = time.perf_counter()
        for (split, name), corpora in datasets.items():
            for c in corpora:
                sides = [(name, 0)] if isinstance(c, MonoCorpus) else [(lang, i) for i, lang in enumerate(name.split("-"))]
                for lang, i in sides:
                    stem = "mono" if isinstance(c, MonoCorpus) else f"para.{name}"
                    with open(os.path.join(enc, f"{stem}.{lang}"), "a", encoding="utf-8") as f:
                        it = iter_sentences(c.path) if isinstance(c, MonoCorpus) else (b[i] for b in iter_pairs(c.src_path, c.tgt_path))
                        for batch in it:
                            f.write("\n".join(" ".join(p) for p in sp.encode(batch, out_type=str)) + "\n")
        encode_s = time.perf_counter() - t

        parser = options.get_preprocessing_parser()
        dict_path = os.path.join(out, "dict.txt")
        calls = []
        for (split, name), corpora in datasets.items():
            common = ["--workers", str(args.workers), "--dataset-impl", "mmap"]
            if isinstance(corpora[0], MonoCorpus):
                calls.append((name, ["--only-source", "--source-lang", name, "--srcdict", dict_path,
                                     "--trainpref", os.path.join(enc, "mono"), *common]))
            else:
                src, tgt = name.split("-")
                calls.append((name, ["--source-lang", src, "--target-lang", tgt, "--srcdict", dict_path,
                                     "--tgtdict", dict_path, "--trainpref", os.path.join(enc, f"para.{name}"), *common]))

        def run_fairseq() -> float:
            """fairseq-preprocess on the encoded text, one call per language / pair."""
            total = 0.0
            for name, argv in calls:
                dest = os.path.join(work, "fairseq", name)
                shutil.rmtree(dest, ignore_errors=True)
                a = parser.parse_args([*argv, "--destdir", dest])
                t = time.perf_counter()
                preprocess.main(a)
                total += time.perf_counter() - t
            return total

        # ---- timed rounds, interleaved so that a busy machine hurts all alike
        ours, fs = [], []
        for r in range(args.repeat):
            ours.append(run_ours())
            fs.append(run_fairseq())
            if r > 0:
                e2e.append(run_end_to_end())
            print(f"round {r + 1}: ours {ours[-1]:.2f}s, fairseq {fs[-1]:.2f}s, end-to-end {e2e[-1]:.2f}s "
                  f"(load average {os.getloadavg()[0]:.2f})", file=sys.stderr)

        # ---- same output?  fairseq splits the pre-encoded text on any Unicode
        # whitespace (\s), so a sentencepiece piece such as U+0085 (NEL), which
        # we map to <unk>, silently disappears there; such sentences are
        # counted as "explained" differences, anything else as a failure.
        from fairseq.data.indexed_dataset import MMapIndexedDataset

        compared = differ_explained = differ_other = 0
        examples = []
        for (split, name), corpora in datasets.items():
            if isinstance(corpora[0], MonoCorpus):
                pairs = [(f"{split}.{name}", os.path.join(work, "fairseq", name, f"train.{name}-None.{name}"))]
            else:
                pairs = [(f"{split}.{name}.{lang}", os.path.join(work, "fairseq", name, f"train.{name}.{lang}"))
                         for lang in name.split("-")]
            for ours_prefix, fs_prefix in pairs:
                a = MMapIndexedDataset(os.path.join(work, "ours-bin", ours_prefix))
                b = MMapIndexedDataset(fs_prefix)
                assert len(a) == len(b), (ours_prefix, len(a), len(b))
                compared += len(a)
                for i in np.nonzero(a.sizes != b.sizes)[0].tolist() + [
                    i for i in np.nonzero(a.sizes == b.sizes)[0].tolist() if not np.array_equal(a[i].numpy(), b[i].numpy())
                ]:
                    x, y = a[i].numpy(), b[i].numpy()
                    if np.array_equal(x[x != d.unk()], y[y != d.unk()]):
                        differ_explained += 1
                    else:
                        differ_other += 1
                        examples.append({"dataset": ours_prefix, "index": i,
                                         "ours": [d[t] for t in x.tolist()], "fairseq": [d[t] for t in y.tolist()]})

        best = {"ours_binarize": min(ours), "fairseq_preprocess": min(fs), "ours_end_to_end": min(e2e)}
        result = {
            "corpus": {"mono": mono, "para": para, "lines": n_lines, "tokens_with_eos": n_tokens},
            "workers": args.workers,
            "load_average_after": os.getloadavg(),
            "repeat": args.repeat,
            "vocab_size": sp.get_piece_size(),
            "seconds_best": best,
            "seconds_all": {"ours_binarize": ours, "fairseq_preprocess": fs, "ours_end_to_end": e2e},
            "lines_per_s": {k: n_lines / v for k, v in best.items()},
            "speedup_binarize_vs_fairseq": min(fs) / min(ours),
            "spm_encode_to_text_s_untimed_step": encode_s,
            "sentences_compared": compared,
            "sentences_differing_fairseq_dropped_whitespace_piece": differ_explained,
            "sentences_differing_otherwise": differ_other,
            "differing_otherwise_examples": examples[:5],
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "versions": {"fairseq": fairseq.__version__, "sentencepiece": spm.__version__, "numpy": np.__version__},
            "command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)

    rows = [
        ("fairseq-preprocess (pre-encoded text)", best["fairseq_preprocess"]),
        ("xlm-ds binarize (raw gzip text, incl. spm encoding)", best["ours_binarize"]),
        ("xlm-ds end-to-end (incl. vocabulary learning)", best["ours_end_to_end"]),
    ]
    print(f"\n{n_lines:,} lines, {n_tokens:,} tokens, {args.workers} workers, best of {args.repeat}")
    print(f"| {'step':<52} | {'seconds':>8} | {'lines/s':>9} | {'vs fairseq':>10} |")
    print(f"|{'-' * 54}|{'-' * 10}:|{'-' * 11}:|{'-' * 12}:|")
    for label, s in rows:
        print(f"| {label:<52} | {s:8.2f} | {n_lines / s:9,.0f} | {best['fairseq_preprocess'] / s:9.2f}x |")
    print(f"same ids in {compared - differ_explained - differ_other:,} of {compared:,} sentences; "
          f"{differ_explained} differ only by a whitespace-like piece fairseq drops (we keep it as <unk>), "
          f"{differ_other} otherwise")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
