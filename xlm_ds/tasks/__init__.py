"""fairseq tasks: ``xlm`` (pretraining) and ``xlm_translation`` (MT fine-tuning)."""
