"""``xlm-ds-import``: a fairseq XLM-R / RoBERTa checkpoint (``xlmr.base``,
``xlmr.large``, ... as fairseq publishes them: ``model.pt``, ``dict.txt``,
``sentencepiece.bpe.model``) -> an xlm_ds ``xlm_lm`` checkpoint that
``fairseq-train --task xlm`` continues pretraining from, plus the
vocabulary (``dict.txt``, ``spm.model``) that ``xlm-ds-prepare --spm-model
--dict`` binarizes new data with. Documentation: docs/interop.md.

Exit status: 0 success, 2 bad input (``xlm-ds-import: error: ...``).
"""
import argparse
import logging
import shlex
import sys
from typing import List, Optional

PROG = "xlm-ds-import"

EPILOG = """\
examples:
  # XLM-R base as published by fairseq (xlmr.base.tar.gz unpacked)
  xlm-ds-import xlmr.base imported/xlmr-base

  # with language embeddings (all zero at first) for the languages of the data to
  # train on, two of which XLM-R was not trained on
  xlm-ds-import xlmr.base imported/xlmr-base-le --lang-embeddings --languages de,en,fr --add-languages sw,yo

output (OUT): model.pt (xlm_ds checkpoint), dict.txt + spm.model + spm.vocab (the
  vocabulary, ids unchanged), import.json (what was imported, fairseq-train flags).
next: xlm-ds-prepare ... --spm-model OUT/spm.model --dict OUT/dict.txt --out DATA
      fairseq-train DATA --user-dir xlm_ds --task xlm ARCH-FLAGS --finetune-from-model OUT/model.pt ...
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Import a fairseq XLM-R/RoBERTa checkpoint as an xlm_ds xlm_lm checkpoint (continued "
        "pretraining with fairseq-train --task xlm) and its vocabulary (xlm-ds-prepare --spm-model/--dict).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="directory with model.pt, dict.txt, sentencepiece.bpe.model (or the model.pt itself)")
    p.add_argument("out", help="output directory (new or empty, or replaced with --overwrite)")
    p.add_argument("--dict", dest="dict_path", metavar="FILE", help="fairseq dict.txt (default: SOURCE/dict.txt)")
    p.add_argument("--spm-model", metavar="FILE",
                   help="sentencepiece model (default: SOURCE/sentencepiece.bpe.model or SOURCE/spm.model)")
    g = p.add_argument_group("languages")
    g.add_argument("--lang-embeddings", action="store_true",
                   help="add XLM language embeddings (one row per language, all zero: the imported model is "
                   "unchanged until training moves them); without it the model is XLM-R style (xlmr_* archs)")
    g.add_argument("--languages", metavar="L1,L2,...",
                   help="the languages of the data you will train on; ids are given in sorted order, the order "
                   "xlm-ds-prepare lists them in (and so the xlm task's language ids)")
    g.add_argument("--data", metavar="DIR",
                   help="take the languages from this xlm-ds-prepare directory's manifest.json")
    g.add_argument("--add-languages", metavar="L1,L2,...",
                   help="languages the source was not trained on: merged into the list and recorded as added "
                   "(their rows start at zero too); with --data they must be among its languages")
    p.add_argument("--heads", type=int, metavar="N",
                   help="attention heads, when the checkpoint's config does not record them")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="dtype of the written weights (default: %(default)s; fairseq-train keeps fp32 master "
                   "weights either way)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip comparing fairseq RoBERTa's and the imported model's logits on a few sentences "
                   "(the check holds both models in memory at once)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return p


def setup_logging(level: int) -> None:
    log = logging.getLogger("xlm_ds")
    log.setLevel(level)
    log.propagate = False
    if not any(getattr(h, "_xlm_ds_cli", False) for h in log.handlers):
        h = logging.StreamHandler(sys.stderr)
        h._xlm_ds_cli = True
        h.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
        log.addHandler(h)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING if args.quiet else logging.INFO)
    import xlm_ds  # noqa: F401  (registers the xlm_lm model and xlm task)
    from xlm_ds.interop import InteropError
    from xlm_ds.interop.fairseq_roberta import import_roberta

    try:
        report = import_roberta(
            args.source, args.out, dict_path=args.dict_path, spm_path=args.spm_model,
            languages=args.languages, data=args.data, add_languages=args.add_languages,
            lang_embeddings=args.lang_embeddings, heads=args.heads, dtype=args.dtype,
            overwrite=args.overwrite, verify=not args.no_verify,
            command=[PROG, *(sys.argv[1:] if argv is None else argv)],
        )
    except InteropError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; {args.out} was not written", file=sys.stderr)
        return 130
    s = report.structure
    print(
        f"imported {s['layers']} layers, dim {s['embed_dim']}, ffn {s['ffn_dim']}, {s['heads']} heads, "
        f"{'pre' if s['normalize_before'] else 'post'}-LN, {report.dictionary_size} token ids, "
        f"max positions {s['max_positions']}"
        + (f"; language embeddings for {','.join(report.languages)} (zero)" if report.lang_embeddings else "")
    )
    if report.max_abs_diff is not None:
        print(f"verified: logits equal to fairseq RoBERTa's (max abs diff {report.max_abs_diff:.2e})")
    out = report.out_dir
    print(f"wrote {out}/model.pt, dict.txt, spm.model, spm.vocab, import.json")
    print("next:")
    print(f"  xlm-ds-prepare --corpus CORPUS.yaml --spm-model {out}/spm.model --dict {out}/dict.txt --out DATA")
    print(f"  fairseq-train DATA --user-dir xlm_ds --task xlm --criterion xlm_lm {shlex.join(report.arch_flags)} "
          f"--finetune-from-model {out}/model.pt ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
