"""Every change xlm-ds makes to fairseq (and one to torch) at run time: what
it replaces, why, the test that shows the fix, and the signature it was
written against. ``apply()`` checks all of them before changing anything,
so a fairseq whose internals moved stops training at start-up with the
name of the patch instead of misbehaving later."""
import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

logger = logging.getLogger(__name__)

TESTED_FAIRSEQ = "0.12.3.1"  # fairseq-fixed (docs/stack.md)


class FairseqCompatError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    """``module:qualname`` of a replaced object, its parameters, and private
    attributes its source must still set or read."""

    path: str
    params: Tuple[str, ...]
    fields: Tuple[str, ...] = ()

    def resolve(self):
        module, qualname = self.path.split(":")
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return inspect.unwrap(obj)


@dataclass(frozen=True)
class Patch:
    name: str
    reason: str
    test: str
    apply: str  # module:function that applies it (apply() below calls each once per process)
    targets: Tuple[Target, ...]


PATCHES: Tuple[Patch, ...] = (
    Patch(
        "torch-load-pickled-configs",
        "torch >= 2.6 loads weights only; fairseq checkpoints pickle their configs",
        "tests/e2e/test_mt_e2e.py (resume, fairseq-generate)",
        "xlm_ds.fairseq_compat.torch_load:apply",
        (Target("torch:load", ("f", "map_location", "pickle_module", "weights_only", "mmap", "pickle_load_args")),),
    ),
    Patch(
        "keep-last-batch",
        "fairseq-fixed's batch_by_size drops a last batch smaller than --required-batch-size-multiple",
        "tests/e2e/test_mt_e2e.py (all 500 hypotheses)",
        "xlm_ds.fairseq_compat.batching:apply",
        (Target("fairseq.data.data_utils:batch_by_size",
                ("indices", "num_tokens_fn", "num_tokens_vec", "max_tokens", "max_sentences",
                 "required_batch_size_multiple", "fixed_shapes")),),
    ),
    Patch(
        "atomic-checkpoints",
        "fairseq copies checkpoint_last.pt in place without fsync and resumes only from it",
        "tests/faults/test_fairseq_faults.py",
        "xlm_ds.reliability.fairseq_checkpoints:apply",
        (Target("fairseq.checkpoint_utils:torch_persistent_save", ("obj", "filename", "async_write")),
         Target("fairseq.checkpoint_utils:PathManager.copy", ("src_path", "dst_path", "overwrite")),
         Target("fairseq.checkpoint_utils:load_checkpoint", ("cfg", "trainer", "passthrough_args"))),
    ),
    Patch(
        "skip-nonfinite-updates",
        "fairseq (fp32) stops at the first NaN/inf gradient; skip and count instead",
        "tests/faults/test_fairseq_faults.py",
        "xlm_ds.reliability.nonfinite:apply",
        (Target("fairseq.trainer:Trainer.train_step", ("self", "samples", "raise_oom")),
         Target("fairseq.trainer:Trainer.clip_grad_norm", ("self", "clip_norm"))),
    ),
    Patch(
        "cpu-no-repeat-ngram",
        "fairseq's --no-repeat-ngram-size blocks nothing without its CUDA extension (fairseq#5206)",
        "tests/compat/test_ngram_blocking.py",
        "xlm_ds.fairseq_compat.ngram_blocking:apply",
        (Target("fairseq.ngram_repeat_block:NGramRepeatBlock._no_repeat_ngram",
                ("self", "tokens", "lprobs", "bsz", "beam_size", "step")),),
    ),
    Patch(
        "join-prefetch-thread",
        "fairseq's daemon prefetch thread aborts the interpreter at exit",
        "tests/faults/test_prefetch_exit.py",
        "xlm_ds.reliability.prefetch:apply",
        (Target("fairseq.data.iterators:BackgroundConsumer.__init__",
                ("self", "queue", "source", "max_len", "cuda_device"),
                fields=("self._queue", "self._source", "self._max_len", "self.count", "self.cuda_device")),),
    ),
)

_applied: List[str] = []


def _mismatch(target: Target) -> Optional[str]:
    try:
        obj = target.resolve()
    except (ImportError, AttributeError) as e:
        return f"{target.path} is gone ({e})"
    params = tuple(inspect.signature(obj).parameters)
    if params != target.params:
        return f"{target.path}{params} has changed; expected parameters {target.params}"
    if target.fields:
        source = inspect.getsource(obj)
        missing = [f for f in target.fields if f not in source]
        if missing:
            return f"{target.path} no longer uses {', '.join(missing)}"
    return None


def check(patches=PATCHES) -> None:
    """Raises FairseqCompatError naming every patch whose target changed."""
    import fairseq

    problems = [(p, m) for p in patches for t in p.targets for m in [_mismatch(t)] if m]
    if problems:
        lines = [f"  patch {p.name!r} ({p.reason}; {p.apply.split(':')[0]}): {m}" for p, m in problems]
        raise FairseqCompatError(
            f"xlm-ds cannot apply its fairseq fixes to fairseq {fairseq.__version__} (tested with "
            f"{TESTED_FAIRSEQ}):\n" + "\n".join(lines)
            + f"\ninstall the tested fairseq (pip install fairseq-fixed=={TESTED_FAIRSEQ}, docs/stack.md) "
            "or port these patches (xlm_ds/fairseq_compat/registry.py)"
        )
    if fairseq.__version__ != TESTED_FAIRSEQ:
        logger.warning("fairseq %s: xlm-ds's fairseq fixes were tested with %s (their targets check out)",
                       fairseq.__version__, TESTED_FAIRSEQ)


def apply() -> None:
    """Checks, then applies every patch once per process."""
    if _applied:
        return
    check()
    for patch in PATCHES:
        module, function = patch.apply.split(":")
        fn: Callable[[], None] = getattr(importlib.import_module(module), function)
        fn()
        _applied.append(patch.name)


def applied() -> List[str]:
    """Names of the patches applied in this process (none until apply())."""
    return list(_applied)
