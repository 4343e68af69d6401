"""Data preparation for xlm-ds: text corpora -> one shared sentencepiece
vocabulary + fairseq mmap datasets + manifest.json (see docs/prepare.md).

The modules are small and independent so that the training task can reuse
pieces (``alpha_sampling.smoothed_probs``, ``manifest.read_manifest``)
without importing the whole pipeline.
"""
