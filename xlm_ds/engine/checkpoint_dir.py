"""The save directory of ``xlm-ds-train``: its layout, and the one place
that reads or writes it (the loop, the trainer, export, preemption and
``slurm/pretrain.sh`` all go through :class:`CheckpointDir`).

::

    SAVE_DIR/
      checkpoint{E}/  checkpoint_{E}_{U}/   one tag per save (fairseq's names without .pt):
          DeepSpeed's files (model states; ZeRO optimizer shards per rank, or per-layer
          files of a pipeline), rng_state_{R}.pt per rank, complete.json
      latest            the newest complete tag (DeepSpeed's pointer file)
      best.json         the tag with the best validation metric
      preempted.json    a signal stopped the run after saving that tag
      universal/TAG     TAG converted by DeepSpeed's ds_to_universal

A tag is written whole or not at all: every rank writes into
``.partial-TAG/``; after a barrier rank 0 writes ``complete.json`` there
(every file with its size and sha256, the update, world size, ZeRO stage,
pipeline stages), renames the directory to ``TAG`` and only then points
``latest`` at it. On resume the newest tag whose ``complete.json``
verifies is loaded, whatever ``latest`` says; newer tags that do not verify
are named in a warning.

Resuming on another layout of ranks (a ZeRO 1-3 checkpoint converted by
DeepSpeed's ``ds_to_universal``, or refused with the way out) is decided
in :mod:`.repartition` from ``complete.json``.

``python -m xlm_ds.engine.checkpoint_dir SAVE_DIR {start,resume-tag,preempted}``
answers the SLURM script.
"""
import json
import logging
import os
import random
import re
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from ..reliability.atomic import atomic_write, fsync_dir, newest_complete, sha256_file

logger = logging.getLogger("xlm_ds.checkpoints")

MANIFEST = "complete.json"
LATEST = "latest"
BEST = "best.json"
PREEMPTED = "preempted.json"
PARTIAL = ".partial-"
MODEL_STATES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")
_TAG = re.compile(r"^checkpoint(\d+|_\d+_\d+)$")


class ResumeError(RuntimeError):
    pass


class CheckpointLookupError(ValueError):
    """A tag that a command names cannot be found."""


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def tag_name(epoch: int, updates: int, epoch_checkpoint: bool) -> str:
    """``checkpoint{E}`` at the end of an epoch, ``checkpoint_{E}_{U}`` otherwise."""
    return f"checkpoint{epoch}" if epoch_checkpoint else f"checkpoint_{epoch}_{updates}"


def rng_state() -> Dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointDir:
    def __init__(self, path: str):
        self.path = path

    def tag_dir(self, tag: str) -> str:
        return os.path.join(self.path, tag)

    def tags(self) -> List[str]:
        if not os.path.isdir(self.path):
            return []
        return [n for n in os.listdir(self.path) if _TAG.match(n) and os.path.isdir(self.tag_dir(n))]

    # ---- pointers ---------------------------------------------------------
    def _read(self, name: str) -> Optional[str]:
        try:
            with open(os.path.join(self.path, name), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write(self, name: str, text: str) -> None:
        atomic_write(os.path.join(self.path, name), lambda f: f.write(text.encode()), marker=False)

    def latest(self) -> Optional[str]:
        text = self._read(LATEST)
        return text.strip() or None if text is not None else None

    def has_checkpoint(self) -> bool:
        return self.latest() is not None

    def best(self) -> Optional[Dict[str, Any]]:
        text = self._read(BEST)
        return json.loads(text) if text else None

    def write_best(self, tag: str, metric: str, value: float, updates: int) -> None:
        self._write(BEST, json.dumps({"tag": tag, metric: value, "num_updates": updates}))

    def write_preempted(self, num_updates: int, epoch: int, tag: Optional[str], signal: str) -> None:
        os.makedirs(self.path, exist_ok=True)
        self._write(PREEMPTED, json.dumps({
            "signal": signal, "num_updates": num_updates, "epoch": epoch, "checkpoint": tag,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT", "0"), "time": time.time(),
        }))

    def preempted(self) -> Optional[Dict[str, Any]]:
        text = self._read(PREEMPTED)
        return json.loads(text) if text else None

    def clear_preempted(self) -> None:
        try:
            os.remove(os.path.join(self.path, PREEMPTED))
        except FileNotFoundError:
            pass

    # ---- writing (collective: every rank calls it) ------------------------
    def save(self, engine, tag: str, client_state: Dict[str, Any], meta: Dict[str, Any],
             rank_state: Optional[Dict[str, Any]] = None) -> str:
        """Every rank's files of ``tag`` (DeepSpeed's; ``rng_state_R.pt``:
        RNG states and ``rank_state``), then (rank 0) ``complete.json``, the
        rename into place and ``latest``."""
        from ..reliability.fairseq_checkpoints import torch_persistent_save

        partial = PARTIAL + tag
        if rank() == 0:
            os.makedirs(self.path, exist_ok=True)
            for name in os.listdir(self.path):  # what crashed saves left
                if name.startswith(PARTIAL):
                    shutil.rmtree(self.tag_dir(name), ignore_errors=True)
            os.makedirs(self.tag_dir(partial))
        barrier()
        torch_persistent_save({**rng_state(), "rank_state": rank_state or {}},
                              os.path.join(self.tag_dir(partial), f"rng_state_{rank()}.pt"))
        engine.save_checkpoint(self.path, tag=partial, client_state=client_state, save_latest=False)
        barrier()
        if rank() == 0:
            self._seal(partial, tag, meta)
        barrier()
        return self.tag_dir(tag)

    def _seal(self, partial: str, tag: str, meta: Dict[str, Any]) -> None:
        src = self.tag_dir(partial)
        files = {name: {"size": os.path.getsize(os.path.join(src, name)), "sha256": sha256_file(os.path.join(src, name))}
                 for name in _files(src)}
        body = json.dumps({"tag": tag, **meta, "files": files}, indent=1).encode()
        atomic_write(os.path.join(src, MANIFEST), lambda f: f.write(body), marker=False)
        dst = self.tag_dir(tag)
        if os.path.exists(dst):  # the same tag saved again (e.g. the final save)
            old = self.tag_dir(PARTIAL + "old-" + tag)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            os.replace(src, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(src, dst)
        fsync_dir(self.path)
        self._write(LATEST, tag)
        fsync_dir(self.path)

    def prune(self, current: str, keep_interval_updates: int, keep_last_epochs: int) -> None:
        """fairseq's --keep-interval-updates / --keep-last-epochs; never the
        current, best or latest tag."""
        best = self.best() or {}
        keep = {current, best.get("tag"), self.latest()}
        tags = self.tags()
        mid = sorted((t for t in tags if t.count("_") == 2), key=lambda t: int(t.split("_")[2]), reverse=True)
        ends = sorted((t for t in tags if t.count("_") == 0), key=lambda t: int(t[len("checkpoint"):]), reverse=True)
        doomed = (mid[keep_interval_updates:] if keep_interval_updates > 0 else []) + \
                 (ends[keep_last_epochs:] if keep_last_epochs > 0 else [])
        for tag in doomed:
            if tag not in keep:
                shutil.rmtree(self.tag_dir(tag), ignore_errors=True)

    # ---- completeness and resuming -----------------------------------------
    def manifest(self, tag: str) -> Optional[Dict[str, Any]]:
        try:
            with open(os.path.join(self.tag_dir(tag), MANIFEST), encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def verify(self, tag: str) -> Tuple[bool, str]:
        manifest = self.manifest(tag)
        if manifest is None:
            return False, f"no {MANIFEST} (the save did not finish on every rank)"
        for name, want in manifest["files"].items():
            path = os.path.join(self.tag_dir(tag), name)
            if not os.path.isfile(path):
                return False, f"{name} is missing"
            size = os.path.getsize(path)
            if size != want["size"]:
                return False, f"{name}: size {size} bytes, the manifest says {want['size']} (truncated)"
            if sha256_file(path) != want["sha256"]:
                return False, f"{name}: sha256 differs from the manifest (corrupted)"
        return True, "ok"

    def _order(self, tag: str):
        """Update count from the manifest, else from the name, so that an
        incomplete newer tag ranks as newer and is reported."""
        updates = (self.manifest(tag) or {}).get("num_updates")
        if updates is None:
            m = re.match(r"^checkpoint_\d+_(\d+)$", tag)
            updates = int(m.group(1)) if m else -1
        return int(updates), os.path.getmtime(self.tag_dir(tag))

    def resume_tag(self) -> Optional[str]:
        """The newest complete tag; for directories written before the
        manifests, ``latest``; None when there is no checkpoint."""
        tags = self.tags()
        best, skipped = newest_complete(tags, verifier=self.verify, order=self._order)
        for tag, reason in skipped:
            logger.warning("skipping checkpoint %s: %s", self.tag_dir(tag), reason)
        if best is not None:
            return best
        if any(self.manifest(t) is not None for t in tags):
            raise ResumeError(
                f"{self.path}: no complete checkpoint ("
                + "; ".join(f"{t}: {r}" for t, r in skipped)
                + "); expected at least one tag whose complete.json verifies. Move them away to start afresh."
            )
        tag = self.latest()
        if tag:
            logger.warning("%s: checkpoints without %s (older xlm-ds); resuming %s unverified", self.path, MANIFEST, tag)
        return tag

    def rank_state(self, tag_dir: str) -> Optional[Dict[str, Any]]:
        """This rank's RNG states (and ``rank_state``) saved with the tag
        (None if absent)."""
        import torch

        path = os.path.join(tag_dir, f"rng_state_{rank()}.pt")
        return torch.load(path, weights_only=False) if os.path.isfile(path) else None

    # ---- looking a tag up (export) -----------------------------------------
    @staticmethod
    def model_states_file(tag_dir: str) -> Optional[str]:
        """DeepSpeed's model-states file of a tag (ZeRO-3 names it per rank)."""
        for name in MODEL_STATES:
            if os.path.isfile(os.path.join(tag_dir, name)):
                return os.path.join(tag_dir, name)
        return None

    @classmethod
    def lookup(cls, checkpoint: str, tag: Optional[str] = None) -> Tuple["CheckpointDir", str]:
        """(save directory, tag) named by ``SAVE_DIR`` (+ ``tag``, else
        ``latest``), ``SAVE_DIR/TAG``, or ``tag="best"`` (best.json)."""
        checkpoint = os.path.abspath(checkpoint)
        if not os.path.isdir(checkpoint):
            raise CheckpointLookupError(f"{checkpoint}: not a DeepSpeed checkpoint directory")
        if tag is None and cls.model_states_file(checkpoint):
            return cls(os.path.dirname(checkpoint)), os.path.basename(checkpoint)
        ckpt = cls(checkpoint)
        if tag == "best":
            best = ckpt.best()
            if best is None:
                raise CheckpointLookupError(
                    f"{os.path.join(checkpoint, BEST)}: not found (no validation-tracked best checkpoint)")
            tag = best["tag"]
        if tag is None:
            tag = ckpt.latest()
            if tag is None:
                raise CheckpointLookupError(
                    f"{checkpoint}: no '{LATEST}' file; name a tag with --tag (found: "
                    f"{', '.join(sorted(ckpt.tags())) or 'none'})")
        if not cls.model_states_file(ckpt.tag_dir(tag)):
            raise CheckpointLookupError(f"{ckpt.tag_dir(tag)}: no {MODEL_STATES[0]} (not a DeepSpeed checkpoint)")
        return ckpt, tag

    @classmethod
    def resolve_restore(cls, restore_file: str, save_dir: str) -> Tuple["CheckpointDir", Optional[str]]:
        """``--restore-file``: the default ``checkpoint_last.pt`` means the
        save directory's newest complete tag (tag None); otherwise a tag
        directory (DIR/TAG or TAG in the save directory) or a save directory."""
        if restore_file in ("checkpoint_last.pt", "checkpoint_last"):
            return cls(save_dir), None
        restore = restore_file[:-3] if restore_file.endswith(".pt") and not os.path.exists(restore_file) \
            else restore_file
        if not os.path.isabs(restore) and not os.path.exists(restore):
            restore = os.path.join(save_dir, restore)
        if os.path.isfile(os.path.join(restore, LATEST)):
            return cls(restore), None
        if os.path.isdir(restore):
            restore = os.path.abspath(restore)
            return cls(os.path.dirname(restore)), os.path.basename(restore)
        raise FileNotFoundError(f"--restore-file {restore_file}: no DeepSpeed checkpoint there")


def _files(tag_dir: str) -> List[str]:
    out = []
    for root, _, names in os.walk(tag_dir):
        for n in names:
            if n == MANIFEST or ".tmp-" in n:
                continue
            out.append(os.path.relpath(os.path.join(root, n), tag_dir))
    return sorted(out)


def main(argv=None) -> int:
    """For slurm/pretrain.sh: ``start`` forgets an earlier run's
    preempted.json and prints the tag a restart resumes (nothing when
    none); ``resume-tag`` prints that tag (exit 1: none); ``preempted``
    prints the marker (exit 1: none)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m xlm_ds.engine.checkpoint_dir")
    p.add_argument("save_dir")
    p.add_argument("what", choices=("start", "resume-tag", "preempted"))
    args = p.parse_args(argv)
    ckpt = CheckpointDir(args.save_dir)
    if args.what == "start":
        ckpt.clear_preempted()
        print(ckpt.resume_tag() or "")
        return 0
    answer = ckpt.resume_tag() if args.what == "resume-tag" else ckpt.preempted()
    if answer is None:
        return 1
    print(answer if isinstance(answer, str) else json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
