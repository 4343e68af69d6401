"""The fixes xlm-ds needs in the pinned fairseq and torch, applied
explicitly by the entry points that train or decode (the xlm-ds tasks'
``setup_task``, which fairseq-train/-generate/-validate call first, and
xlm-ds-train), never by importing the plugin: xlm-ds-prepare and
xlm-ds-score run on fairseq as it is. ``apply()`` first checks that every
patched fairseq object still has the signature (and private fields) the
patch was written against, and stops with an error naming the patch if
not; ``registry.PATCHES`` lists each patch with its reason and its test."""
from .registry import PATCHES, FairseqCompatError, applied, apply, check  # noqa: F401
from .torch_load import trusted_checkpoints  # noqa: F401
