"""``xlm-ds-prepare``: text corpora -> shared sentencepiece vocabulary +
fairseq binary datasets + manifest.json, ready for ``fairseq-train
--user-dir xlm_ds``.  Full documentation: docs/prepare.md.

Exit status: 0 success, 2 bad input (``xlm-ds-prepare: error: ...``, like
argparse), 130 interrupted (Ctrl-C) / 143 terminated (SIGTERM); in every
failure case ``--out`` is left as it was (no half-written directory).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import List, Optional

PROG = "xlm-ds-prepare"

EPILOG = """\
examples:
  # the shipped sample (Tatoeba en/de/fr), vocabulary learned with alpha=0.5
  xlm-ds-prepare --corpus xlm_ds/sample_corpus/corpus.yaml --out data-bin/sample

  # flags instead of YAML; several files per split/language are concatenated
  xlm-ds-prepare --mono train:en=en.1.gz --mono train:en=en.2.gz --mono valid:en=en.valid \\
      --para train:de-en=train.de,train.en --vocab-size 32000 --model-type unigram --out data-bin/x

  # fine-tuning data with the pretraining vocabulary (identical ids)
  xlm-ds-prepare --para train:de-en=ft.de,ft.en --spm-model data-bin/x/spm.model \\
      --dict data-bin/x/dict.txt --out data-bin/ft

output (--out DIR): spm.model, spm.vocab, dict.txt (+ dict.LANG.txt copies),
  {split}.{lang}.bin/.idx (monolingual), {split}.{src}-{tgt}.{lang}.bin/.idx
  (parallel), manifest.json (written last; marks DIR as complete).
  With --num-shards N: DIR/vocab, DIR/shard0..N-1 (each as above) and
  DIR/manifest.json listing them.

  # 3 shards on SLURM, one array task each (task 0 also learns the vocabulary)
  sbatch --array=0-2 slurm/prepare.sh corpus.yaml data-bin/cc
"""


def build_parser() -> argparse.ArgumentParser:
    from xlm_ds.data.corpus_spec import SPLITS
    from xlm_ds.data.text_reader import MAX_LINE_CHARS
    from xlm_ds.data.vocab_training import SPM_THREADS

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Learn one shared sentencepiece vocabulary on alpha-smoothed per-language\n"
        "samples and binarize monolingual and parallel corpora into fairseq mmap datasets\n"
        "(XLM data preparation; docs/prepare.md).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("corpus (at least one; all may be repeated and combined)")
    g.add_argument("--corpus", metavar="FILE", action="append", default=[],
                   help="YAML corpus description (format in docs/prepare.md); relative paths are "
                   "relative to the YAML file")
    g.add_argument("--mono", metavar="SPLIT:LANG=PATH", action="append", default=[],
                   help=f"monolingual text file, plain or gzip, one sentence per line; SPLIT in "
                   f"{{{','.join(SPLITS)}}}, LANG like en, de, zh_Hans")
    g.add_argument("--para", metavar="SPLIT:SRC-TGT=SRC_PATH,TGT_PATH", action="append", default=[],
                   help="parallel corpus: two line-aligned files")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="output directory (written atomically; refused if it already holds a prepared "
                   "dataset unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    v = p.add_argument_group("vocabulary")
    v.add_argument("--vocab-size", type=int, default=8000, metavar="N",
                   help="sentencepiece vocabulary size, an upper bound on tiny corpora (default: %(default)s)")
    v.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe",
                   help="sentencepiece model type (default: %(default)s)")
    v.add_argument("--alpha", type=float, default=0.5,
                   help="smoothing exponent: language i contributes q_i ∝ p_i^alpha of the vocabulary "
                   "sentences; 1 = natural shares, 0 = uniform (default: %(default)s, as in XLM)")
    v.add_argument("--vocab-text", choices=("mono", "all"), default="mono",
                   help="text the vocabulary sample is drawn from: mono = the monolingual train corpora, "
                   "as XLM (a language with none contributes its parallel sides); all = both sides of "
                   "the parallel train corpora too (default: %(default)s)")
    v.add_argument("--vocab-sentences", type=int, default=1_000_000, metavar="N",
                   help="total sentences drawn for vocabulary learning, capped by the number of train "
                   "sentences (default: %(default)s)")
    v.add_argument("--character-coverage", type=float, default=0.9995, metavar="F",
                   help="sentencepiece character coverage (default: %(default)s)")
    v.add_argument("--spm-threads", type=int, default=SPM_THREADS, metavar="N",
                   help="sentencepiece training threads. Sentencepiece splits its training over the threads, "
                   "so the vocabulary depends on N: keep it fixed (not the machine's core count) and the "
                   "same command gives the same vocabulary on any machine (default: %(default)s)")
    v.add_argument("--spm-model", metavar="FILE",
                   help="reuse this sentencepiece model instead of learning one (needs --dict)")
    v.add_argument("--dict", dest="dict_path", metavar="FILE",
                   help="fairseq dict.txt that belongs to --spm-model (copied unchanged)")
    v.add_argument("--allow-smaller-vocab", action="store_true",
                   help="accept a vocabulary smaller than --vocab-size when the corpus cannot give more "
                   "pieces (default: an error naming the size reached)")
    t = p.add_argument_group("text checks (pass 1; each finding reported once per file with its first line)")
    t.add_argument("--strict-text", action="store_true",
                   help="refuse carriage returns, NUL bytes and over-long lines (default: CRs stripped or "
                   "made spaces, NULs removed, long lines kept, each reported)")
    t.add_argument("--max-line-chars", type=int, default=MAX_LINE_CHARS, metavar="N",
                   help="report lines longer than N characters (default: %(default)s)")

    s = p.add_argument_group("shards and stages (CC-100-size corpora; sbatch --array=0-$((N-1)) slurm/prepare.sh)")
    s.add_argument("--num-shards", type=int, default=1, metavar="N",
                   help="cut every train dataset into N shards: OUT/shard0..N-1, each a complete prepared "
                   "directory, and OUT/manifest.json listing them (fairseq-train OUT trains epoch e on shard "
                   "(e-1) mod N); 1 = one directory as always (default: %(default)s)")
    s.add_argument("--stage", choices=("all", "vocab", "shard", "finalize"), default="all",
                   help="all = every stage here (default); vocab = count the corpus and learn the vocabulary "
                   "(OUT/vocab); shard = binarize shard --shard I; finalize = check the shards and write "
                   "OUT/manifest.json. The vocab stage fixes --num-shards; the later stages read it from OUT/vocab")
    s.add_argument("--shard", type=int, metavar="I", help="shard index (0-based) of --stage shard")
    s.add_argument("--wait-for-vocab", type=float, default=0, metavar="SECONDS",
                   help="shard/finalize: wait up to SECONDS for another job's vocab stage (default: %(default)s)")
    s.add_argument("--if-complete", action="store_true",
                   help="finalize: only when every shard is complete, else exit 0 (each array task tries; "
                   "the last to finish writes the manifest)")

    r = p.add_argument_group("run")
    r.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="encoder processes (the output does not depend on N; default: CPU count, %(default)s)")
    r.add_argument("--seed", type=int, default=1, help="seed of the vocabulary sample (default: %(default)s)")
    r.add_argument("--batch-lines", type=int, default=10000, metavar="N",
                   help="sentences per batch sent to a worker (default: %(default)s)")
    r.add_argument("--quiet", action="store_true", help="only warnings and errors, no progress bars")
    r.add_argument("--verbose", action="store_true", help="also show sentencepiece's training log")
    return p


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* sys.stderr (main() may run many times in one
    process, e.g. under pytest, which swaps sys.stderr per test)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(level: int) -> None:
    """Our own handler on the ``xlm_ds`` logger: importing fairseq/deepspeed
    may already have configured the root logger, so basicConfig is no-op."""
    log = logging.getLogger("xlm_ds")
    log.setLevel(level)
    log.propagate = False
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
        log.addHandler(h)


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by hand
    raise SystemExit(128 + signum)  # unwinds through the cleanup of the temp directory


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(logging.WARNING if args.quiet else logging.INFO)
    from xlm_ds.data.corpus_spec import build_spec
    from xlm_ds.data.errors import PrepareError
    from xlm_ds.data.pipeline import PrepareConfig, prepare

    cfg = PrepareConfig(
        out=args.out, vocab_size=args.vocab_size, model_type=args.model_type, alpha=args.alpha,
        vocab_sentences=args.vocab_sentences, vocab_text=args.vocab_text,
        character_coverage=args.character_coverage, spm_threads=args.spm_threads,
        spm_model=args.spm_model, dict_path=args.dict_path, workers=args.workers, seed=args.seed,
        overwrite=args.overwrite, batch_lines=args.batch_lines, progress=not args.quiet,
        verbose=args.verbose, strict_text=args.strict_text, max_line_chars=args.max_line_chars,
        allow_smaller_vocab=args.allow_smaller_vocab, command=[PROG, *(sys.argv[1:] if argv is None else argv)],
    )
    old = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        spec = build_spec(args.mono, args.para, args.corpus)
        if args.num_shards < 1:
            raise PrepareError(f"--num-shards {args.num_shards}; expected an integer >= 1")
        if args.num_shards == 1 and args.stage == "all":
            prepare(spec, cfg)
        else:
            from xlm_ds.data.stages import prepare_stage

            prepare_stage(spec, cfg, args.stage, num_shards=args.num_shards, shard=args.shard,
                          if_complete=args.if_complete, wait_seconds=args.wait_for_vocab)
    except PrepareError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; {args.out} was not written", file=sys.stderr)
        return 130
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    return 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
