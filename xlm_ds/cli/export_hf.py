"""``xlm-ds-export-hf``: an xlm_ds checkpoint -> a Hugging Face transformers
directory (``XLMRobertaForMaskedLM``, or ``XLMRobertaXLForMaskedLM`` for
pre-LN models) with an ``XLMRobertaTokenizer(Fast)`` made from the
sentencepiece model. Needs the ``[hf]`` extra. Documentation:
docs/interop.md.

Exit status: 0 success, 2 bad input (``xlm-ds-export-hf: error: ...``).
"""
import argparse
import logging
import sys
from typing import List, Optional

from .import_xlmr import setup_logging

PROG = "xlm-ds-export-hf"

EPILOG = """\
examples:
  xlm-ds-export-hf checkpoints/pretrain/checkpoint_best.pt hf/xlm-sample
  # a model with language embeddings, for pipelines that pass no token_type_ids:
  xlm-ds-export-hf checkpoints/pretrain/checkpoint_best.pt hf/xlm-sample-de --language de

then:
  from transformers import AutoTokenizer, AutoModelForMaskedLM
  tok = AutoTokenizer.from_pretrained("hf/xlm-sample"); model = AutoModelForMaskedLM.from_pretrained("hf/xlm-sample")
  # language embeddings: token_type_ids = language ids (model.config.lang2id), one per token
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export an xlm_ds checkpoint (fairseq-train --task xlm, or xlm-ds-import) to a Hugging Face "
        "transformers XLM-R masked-LM directory with its tokenizer; checks the export gives xlm_ds's "
        "token ids and logits.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="xlm_ds checkpoint (.pt)")
    p.add_argument("out", help="output directory (new or empty, or replaced with --overwrite)")
    p.add_argument("--spm-model", metavar="FILE",
                   help="sentencepiece model of the checkpoint's vocabulary (default: spm.model beside the "
                   "checkpoint, else in the data directory recorded in it)")
    p.add_argument("--language", metavar="LANG",
                   help="models with language embeddings: fold this language's embedding in, so that inputs "
                   "without token_type_ids are read as LANG (default: token_type_ids = language ids)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="dtype of the written weights (default: %(default)s)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip reloading the export and comparing its tokenization and logits with xlm_ds")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING if args.quiet else logging.INFO)
    import xlm_ds  # noqa: F401
    from xlm_ds.interop import InteropError
    from xlm_ds.interop.hf_export import export_hf

    try:
        report = export_hf(
            args.checkpoint, args.out, spm_model=args.spm_model, language=args.language, dtype=args.dtype,
            overwrite=args.overwrite, verify=not args.no_verify,
        )
    except InteropError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; {args.out} was not written", file=sys.stderr)
        return 130
    ids = ", ".join(f"{lang}={i}" for i, lang in enumerate(report.languages))
    langs = {
        "none": "no language embeddings",
        "token_type_ids": f"languages as token_type_ids: {ids}",
    }.get(report.language_input, f"language {report.language_input.split(':', 1)[-1]} folded in")
    print(f"wrote {report.out_dir}: {report.hf_class}, {report.vocab_size} token ids"
          f"{' (rows permuted to the tokenizer order)' if report.permuted else ''}, {langs}, {report.dtype}")
    if report.max_abs_diff is not None:
        print(f"verified: {' and '.join(report.tokenizers_checked)} give xlm_ds's ids; logits equal "
              f"(max abs diff {report.max_abs_diff:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
