"""Runtime compatibility fixes for the pinned stack, in one place.

torch >= 2.6 made ``torch.load(weights_only=True)`` the default. fairseq's
checkpoints pickle argparse Namespaces and omegaconf configs, so resuming,
``fairseq-generate`` and loading a pretrained XLM fail with "Unsupported
global: argparse.Namespace". fairseq calls ``torch.load`` without the
argument, so the documented switch ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
restores the old default for those calls; an explicit ``weights_only=True``
elsewhere is unaffected. Only load checkpoints you trust (as with any
pickle).
"""
import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


# fairseq-fixed 0.12.3.1 drops the last batch when its size is not a
# multiple of --required-batch-size-multiple (default 8). In training that
# loses a few samples per epoch; in fairseq-generate and validation it
# silently leaves sentences out (4 of the sample's 500 test sentences were
# never translated, and BLEU was computed on the rest). Keep the remainder
# as a final, smaller batch, as upstream fairseq does.
import numpy as _np
from fairseq.data import data_utils as _data_utils

_batch_by_size = _data_utils.batch_by_size


def _batch_by_size_keeping_remainder(indices, *args, **kwargs):
    batches = _batch_by_size(indices, *args, **kwargs)
    n = sum(len(b) for b in batches)
    if n < len(indices):
        seen = set(_np.concatenate(batches).tolist()) if batches else set()
        rest = _np.asarray([i for i in indices if int(i) not in seen], dtype=_np.int64)
        batches = list(batches) + [rest]
    return batches


if not getattr(_batch_by_size, "_xlm_ds_patched", False):
    _batch_by_size_keeping_remainder._xlm_ds_patched = True
    _data_utils.batch_by_size = _batch_by_size_keeping_remainder


# Crash safety (docs/reliability.md), one module per fix, each idempotent:
# * fairseq writes checkpoint_last.pt by copying in place and resumes only
#   from it: atomic writes with a checksummed completeness marker, resume
#   from the newest complete checkpoint (reliability/fairseq_checkpoints.py);
# * fairseq (fp32) dies at the first NaN/inf gradient: skip and count, stop
#   after --max-nonfinite-updates in a row (reliability/nonfinite.py);
# * fairseq's daemon prefetch thread aborts the interpreter at exit
#   ("terminate called without an active exception"): stopped and joined in
#   an atexit hook (reliability/prefetch.py).
from .reliability import fairseq_checkpoints as _fairseq_checkpoints  # noqa: E402
from .reliability import nonfinite as _nonfinite  # noqa: E402
from .reliability import prefetch as _prefetch  # noqa: E402

_fairseq_checkpoints.apply()
_nonfinite.apply()
_prefetch.apply()
