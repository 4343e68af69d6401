"""Models: the XLM encoder (pretraining) and the translation model initialised from it."""
