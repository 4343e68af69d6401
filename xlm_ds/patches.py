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
