"""The fixes xlm-ds needs in the pinned fairseq and torch, applied
explicitly by the entry points that train or decode (the xlm-ds tasks'
``setup_task``, which fairseq-train/-generate call first, and
xlm-ds-train), never by importing the plugin (fairseq-validate loads the
checkpoint before it sets up the task: a fine-tuned translation
checkpoint's pickled Namespace then needs ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
in the environment, as benchmarks/repro's validate_mt sets it): xlm-ds-prepare and
xlm-ds-score run on fairseq as it is. ``apply()`` first checks that every
patched fairseq object still has the signature (and private fields) the
patch was written against, and stops with an error naming the patch if
not; ``registry.PATCHES`` lists each patch with its reason and its test."""
from .registry import PATCHES, FairseqCompatError, applied, apply, check  # noqa: F401
from .torch_load import trusted_checkpoints  # noqa: F401
