"""torch >= 2.6 made ``torch.load(weights_only=True)`` the default.
fairseq's checkpoints pickle argparse Namespaces and omegaconf configs, so
resuming, fairseq-generate and loading a pretrained XLM fail with
"Unsupported global: argparse.Namespace". fairseq calls ``torch.load``
without the argument, so torch's documented switch
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` restores the old default for those
calls; a call that passes ``weights_only=True`` is unaffected. Training and
decoding set it for the process (``apply``); a tool that loads one
checkpoint through fairseq sets it for that call only
(``trusted_checkpoints``). Only load checkpoints you trust (as with any
pickle)."""
import contextlib
import os
import warnings

ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def apply() -> None:
    os.environ.setdefault(ENV, "1")


@contextlib.contextmanager
def trusted_checkpoints():
    """fairseq's ``torch.load`` calls inside the block load pickled configs."""
    before = os.environ.get(ENV)
    os.environ[ENV] = "1"
    try:
        with warnings.catch_warnings():
            # torch's notice that the variable is set, once per load
            warnings.filterwarnings("ignore", message=f".*{ENV}.*")
            yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
