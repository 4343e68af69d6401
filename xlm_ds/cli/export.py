"""``xlm-ds-export``: a DeepSpeed checkpoint of xlm-ds-train (ZeRO 0-3 or
pipeline) -> one plain fairseq checkpoint file.

    xlm-ds-export checkpoints/run1 --out model.pt            # SAVE_DIR/latest
    xlm-ds-export checkpoints/run1 --tag checkpoint_1_5000 --out model.pt
    xlm-ds-export checkpoints/run1/checkpoint3 --out model.pt
    xlm-ds-export checkpoints/run1 --tag best --out model_best.pt

The output loads with ``fairseq.checkpoint_utils.load_model_ensemble_and_task``
(give ``arg_overrides={"data": DIR}`` if the training data directory moved),
fairseq-validate, and ``--init-encoder``/``--init-decoder`` of the
``xlm_transformer`` MT model. It runs on one CPU process; no GPU and no
process group are needed. Exit status: 0 done, 2 bad input, 130 interrupted.
"""
import argparse
import logging
import os
import sys
import time
from typing import List, Optional

PROG = "xlm-ds-export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Consolidate a DeepSpeed (ZeRO or pipeline) checkpoint written by xlm-ds-train "
        "into a plain fairseq checkpoint with fp32 weights.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="save directory (with 'latest') or one tag directory in it")
    p.add_argument("--tag", default=None, help="checkpoint tag in the save directory ('best' = best.json)")
    p.add_argument("--out", required=True, help="fairseq checkpoint file to write")
    p.add_argument("--no-check", action="store_true", help="skip rebuilding the model to check the weights")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        stream=sys.stdout,
        force=True,
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    from xlm_ds.engine.export import ExportError, export
    from xlm_ds.fairseq_compat import trusted_checkpoints

    start = time.time()
    try:
        with trusted_checkpoints():
            state = export(args.checkpoint, args.out, tag=args.tag, check=not args.no_check)
    except (ExportError, FileNotFoundError) as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    except KeyboardInterrupt:
        return 130
    n = sum(v.numel() for v in {id(v): v for v in state["model"].values()}.values())  # tied once
    logging.getLogger(PROG).info(
        "wrote %s: %d tensors, %.1fM weights, %d updates (%.1fs)",
        args.out, len(state["model"]), n / 1e6, state["optimizer_history"][-1]["num_updates"],
        time.time() - start,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
