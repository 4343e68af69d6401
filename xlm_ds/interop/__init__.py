"""Interoperability with other XLM-R implementations.

* :mod:`.fairseq_roberta` — import a fairseq RoBERTa / XLM-R checkpoint (the
  layout fairseq publishes ``xlmr.base``/``xlmr.large`` in) as an xlm_ds
  ``xlm_lm`` checkpoint plus a vocabulary ``xlm-ds-prepare`` can reuse
  (``xlm-ds-import``); :mod:`.roberta_source` reads and upgrades the source;
* :mod:`.hf_export` — export an xlm_ds checkpoint to a Hugging Face
  transformers model directory with its tokenizer (``xlm-ds-export-hf``;
  needs the ``[hf]`` extra);
* :mod:`.checkpoint` — what both share: writing a checkpoint that
  ``fairseq-train`` restores and rebuilding an ``xlm_lm`` model from one.

Full documentation: docs/interop.md.
"""


class InteropError(ValueError):
    """A checkpoint, vocabulary or option that cannot be converted; the
    message is user-facing (the CLIs print it and exit with status 2)."""
