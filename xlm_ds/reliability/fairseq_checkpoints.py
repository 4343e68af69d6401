"""fairseq-train's checkpoints made crash-safe, from the plugin.

fairseq 0.12 writes ``checkpoint_E_U.pt`` through ``NAME.tmp`` + rename
but without ``fsync`` (a power loss can leave a renamed, empty file), then
*copies* it onto ``checkpoint_last.pt`` in place (``PathManager.copy``: a
kill during the copy leaves a truncated ``checkpoint_last.pt``, and the
next run dies in ``torch.load`` or, worse, resumes nothing). On resume it
only ever looks at ``checkpoint_last.pt``.

Three patches (applied by ``xlm_ds.fairseq_compat`` when training starts):

* ``checkpoint_utils.torch_persistent_save`` -> :func:`atomic.atomic_write`
  (temp + fsync + rename + completeness marker with sha256). A full disk
  raises ``CheckpointWriteError`` at once (fairseq retried 3 times, 7.5 s)
  and leaves the earlier checkpoints as they were.
* the ``PathManager`` that ``checkpoint_utils`` copies with: local copies
  are atomic and carry the marker.
* ``checkpoint_utils.load_checkpoint`` (called once, before the first
  update): checks the free space for one checkpoint (preflight.py); with the default ``--restore-file
  checkpoint_last.pt``, the newest *complete* checkpoint of ``--save-dir``
  is resumed; each newer one that fails its checksum is named in a warning.
  An explicit ``--restore-file`` that fails its checksum is an error.
  A resumed run also gets its task's own state back (``task_state``, which
  fairseq saves in every checkpoint but restores only when loading a model
  for inference): xlm_align's key encoder and queue; and its ``--patience``
  count (early_stopping.py), which the patched save puts in every training
  checkpoint's ``extra_state``.
"""
import logging
import os
import re

from . import early_stopping
from .atomic import (
    atomic_copy,
    atomic_write,
    newest_complete,
    read_marker,
    remove_orphan_markers,
    verify,
)

logger = logging.getLogger("xlm_ds.reliability")

_CANDIDATE = re.compile(r"^checkpoint(_last|\d+|_\d+_\d+|_best)\.pt$")


class CheckpointCorruptError(RuntimeError):
    pass


def _meta(obj):
    """What the marker records about a fairseq checkpoint (for ordering)."""
    meta = {}
    try:
        meta["num_updates"] = int(obj["optimizer_history"][-1]["num_updates"])
        itr = obj["extra_state"]["train_iterator"]
        meta["epoch"] = int(itr["epoch"])
        meta["iterations_in_epoch"] = int(itr.get("iterations_in_epoch", 0))
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    return meta


def torch_persistent_save(obj, filename, async_write: bool = False):  # noqa: ARG001 - fairseq's signature
    """Every file atomically (temp + fsync + rename); training checkpoints
    (``checkpoint*.pt``, ``crash.pt``, the engine's ``rng_state_R.pt``) with
    their completeness marker. Exported/imported models (``model.pt``) get
    no marker file beside them."""
    import torch

    name = os.path.basename(filename)
    marker = name.startswith(("checkpoint", "rng_state_")) or name == "crash.pt"
    extra = obj.get("extra_state") if isinstance(obj, dict) else None
    if isinstance(extra, dict) and "train_iterator" in extra:  # a training checkpoint of fairseq-train
        patience = early_stopping.state_of(early_stopping.fairseq_train_counter())
        if patience is not None:
            extra[early_stopping.KEY] = patience
    atomic_write(filename, lambda f: torch.save(obj, f), _meta(obj), marker=marker)
    if marker:
        remove_orphan_markers(os.path.dirname(os.path.abspath(filename)))


def _path_manager_with_atomic_copy(path_manager):
    class AtomicCopyPathManager(path_manager):
        @staticmethod
        def copy(src_path, dst_path, overwrite=False):
            if path_manager.path_requires_pathmanager(src_path) or path_manager.path_requires_pathmanager(dst_path):
                return path_manager.copy(src_path, dst_path, overwrite=overwrite)
            if os.path.exists(dst_path) and not overwrite:
                return False
            atomic_copy(src_path, dst_path)
            return True

    AtomicCopyPathManager._xlm_ds_patched = True
    return AtomicCopyPathManager


def find_resume_checkpoint(save_dir: str):
    """The checkpoint of ``save_dir`` to resume: the newest that verifies
    (marker + size + sha256); else, for directories written before the
    markers existed, the newest without a marker. None when there is none."""
    if not os.path.isdir(save_dir):
        return None
    candidates = [os.path.join(save_dir, n) for n in os.listdir(save_dir) if _CANDIDATE.match(n)]
    if not candidates:
        return None
    best, skipped = newest_complete(candidates)
    for path, reason in skipped:
        logger.warning("skipping checkpoint %s: %s", path, reason)
    if best is not None:
        return best
    legacy = [p for p in candidates if read_marker(p) is None]
    if legacy:
        path = max(legacy, key=os.path.getmtime)
        logger.warning("no checkpoint in %s has a completeness marker; resuming the newest, %s, unverified",
                       save_dir, path)
        return path
    raise CheckpointCorruptError(
        f"{save_dir}: every checkpoint fails its checksum ("
        + "; ".join(f"{os.path.basename(p)}: {r}" for p, r in skipped)
        + "); expected at least one complete checkpoint. Move them away to start afresh."
    )


def restore_run_state(task, path: str, patience: bool) -> None:
    """fairseq's trainer saves ``task.state_dict()`` in every checkpoint but
    never gives it back on resume (only ``load_model_ensemble_and_task``
    does): a task with state of its own (xlm_align's key encoder and queue)
    would resume without it. ``patience``: also fairseq-train's early-stopping
    count (early_stopping.py). Reads only these entries (mmap)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # not a zip file (legacy torch.save format)
        state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("task_state"):
        task.load_state_dict(state["task_state"])
    restored = patience and early_stopping.restore(early_stopping.fairseq_train_counter(), state.get("extra_state"))
    if restored:
        logger.info("early stopping resumed: best %s, %d validation(s) without improvement",
                    restored["best"], restored["num_runs"])


def load_checkpoint(original):
    def patched(cfg, trainer, **passthrough_args):
        from omegaconf import open_dict

        from .preflight import check_disk_space

        # the first point where fairseq-train knows both the model and --save-dir
        check_disk_space(cfg.save_dir, sum(p.numel() for p in trainer.model.parameters()), cfg.no_save)

        resumed = None  # a checkpoint of this run (not a --finetune-from-model start)
        redirect = False  # resume `resumed` instead of the checkpoint_last.pt fairseq would load
        if cfg.restore_file == "checkpoint_last.pt" and not trainer.checkpoint_suffix:
            last = os.path.join(cfg.save_dir, "checkpoint_last.pt")
            chosen = find_resume_checkpoint(cfg.save_dir)
            if chosen is not None and os.path.abspath(chosen) != os.path.abspath(last):
                logger.info("resuming from %s (the newest complete checkpoint)", chosen)
                resumed, redirect = chosen, True
            elif os.path.isfile(last):
                resumed = last
        else:
            if os.path.isfile(cfg.restore_file) and read_marker(cfg.restore_file) is not None:
                ok, reason = verify(cfg.restore_file)
                if not ok:
                    raise CheckpointCorruptError(
                        f"--restore-file {cfg.restore_file}: {reason}; expected a complete checkpoint")
            if os.path.isfile(cfg.restore_file) and not (cfg.reset_optimizer or cfg.reset_dataloader):
                resumed = cfg.restore_file
        saved = (cfg.restore_file, cfg.finetune_from_model)
        if redirect:
            with open_dict(cfg):
                cfg.restore_file, cfg.finetune_from_model = resumed, None
        try:
            out = original(cfg, trainer, **passthrough_args)
        finally:
            if redirect:
                with open_dict(cfg):
                    cfg.restore_file, cfg.finetune_from_model = saved
        if resumed is not None:
            # on the conditions fairseq gives ``best`` back on
            restore_run_state(trainer.task, resumed, patience=not (cfg.reset_optimizer or cfg.reset_meters))
        return out

    patched._xlm_ds_patched = True
    patched.__wrapped__ = original
    return patched


def apply() -> None:
    from fairseq import checkpoint_utils

    if getattr(checkpoint_utils.torch_persistent_save, "_xlm_ds_patched", False):
        return
    torch_persistent_save._xlm_ds_patched = True
    checkpoint_utils.torch_persistent_save = torch_persistent_save
    checkpoint_utils.PathManager = _path_manager_with_atomic_copy(checkpoint_utils.PathManager)
    checkpoint_utils.load_checkpoint = load_checkpoint(checkpoint_utils.load_checkpoint)
