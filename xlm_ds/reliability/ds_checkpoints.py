"""Completeness of xlm-ds-train's DeepSpeed checkpoint directories.

``engine.save_checkpoint`` writes one or more files per rank into
``SAVE_DIR/TAG/`` with plain ``torch.save`` and then rewrites
``SAVE_DIR/latest`` in place; a kill in between leaves a tag that loads
half (or a ``latest`` that is empty). Here, after every rank has written
its files (a barrier), rank 0 writes ``TAG/complete.json`` — every file of
the tag with its size and sha256, the update, world size and ZeRO stage —
atomically, and only then points ``latest`` at the tag (atomically too;
DeepSpeed's own ``latest`` write is switched off). On resume the newest tag
whose manifest verifies is loaded, whatever ``latest`` says; each newer
tag that does not verify is named in a warning.

A ZeRO stage 1-3 checkpoint is partitioned by data-parallel rank; DeepSpeed
cannot load it as such onto another number of ranks ("Automatic adjustment
of ZeRO's optimizer state partitioning ... not supported"). That case is
detected from the manifest before DeepSpeed is asked and the tag is
converted once, by DeepSpeed's own ``ds_to_universal``, into a universal
checkpoint (``SAVE_DIR/universal/TAG``: one unpartitioned fp32 file per
parameter and optimizer moment) that DeepSpeed repartitions on load (see
:func:`needs_repartition`, :func:`universal_checkpoint`). Pipeline-parallel
checkpoints are refused with the way out.
"""
import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from .atomic import atomic_write, fsync_dir, newest_complete, sha256_file

logger = logging.getLogger("xlm_ds.reliability")

MANIFEST = "complete.json"


class ResumeError(RuntimeError):
    pass


def _files(tag_dir: str) -> List[str]:
    out = []
    for root, _, names in os.walk(tag_dir):
        for n in names:
            if n == MANIFEST or ".tmp-" in n:
                continue
            out.append(os.path.relpath(os.path.join(root, n), tag_dir))
    return sorted(out)


def write_manifest(save_dir: str, tag: str, meta: Dict[str, Any]) -> str:
    """Rank 0, after every rank has saved: TAG/complete.json, then latest."""
    tag_dir = os.path.join(save_dir, tag)
    files = {name: {"size": os.path.getsize(os.path.join(tag_dir, name)),
                    "sha256": sha256_file(os.path.join(tag_dir, name))} for name in _files(tag_dir)}
    body = json.dumps({"tag": tag, **meta, "files": files}, indent=1).encode()
    path = os.path.join(tag_dir, MANIFEST)
    atomic_write(path, lambda f: f.write(body), marker=False)
    atomic_write(os.path.join(save_dir, "latest"), lambda f: f.write(tag.encode()), marker=False)
    fsync_dir(save_dir)
    return path


def read_manifest(tag_dir: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(tag_dir, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def verify_tag(tag_dir: str) -> Tuple[bool, str]:
    manifest = read_manifest(tag_dir)
    if manifest is None:
        return False, f"no {MANIFEST} (the save did not finish on every rank)"
    for name, want in manifest["files"].items():
        path = os.path.join(tag_dir, name)
        if not os.path.isfile(path):
            return False, f"{name} is missing"
        size = os.path.getsize(path)
        if size != want["size"]:
            return False, f"{name}: size {size} bytes, the manifest says {want['size']} (truncated)"
        if sha256_file(path) != want["sha256"]:
            return False, f"{name}: sha256 differs from the manifest (corrupted)"
    return True, "ok"


def _order(tag_dir: str):
    """Update count from the manifest, else from the name (checkpoint_E_U),
    so that an incomplete newer tag is ranked as newer and reported."""
    manifest = read_manifest(tag_dir) or {}
    updates = manifest.get("num_updates")
    if updates is None:
        m = re.match(r"^checkpoint_\d+_(\d+)$", os.path.basename(tag_dir))
        updates = int(m.group(1)) if m else -1
    return (int(updates), os.path.getmtime(tag_dir))


def find_resume_tag(save_dir: str) -> Optional[str]:
    """The tag to resume in ``save_dir``: the newest complete one; for
    directories written before the manifests, DeepSpeed's ``latest``; None
    when there is no checkpoint."""
    if not os.path.isdir(save_dir):
        return None
    tags = [os.path.join(save_dir, n) for n in os.listdir(save_dir)
            if n.startswith("checkpoint") and os.path.isdir(os.path.join(save_dir, n))]
    best, skipped = newest_complete(tags, verifier=verify_tag, order=_order)
    for path, reason in skipped:
        logger.warning("skipping checkpoint %s: %s", path, reason)
    if best is not None:
        return os.path.basename(best)
    latest = os.path.join(save_dir, "latest")
    if any(read_manifest(t) is not None for t in tags):
        raise ResumeError(
            f"{save_dir}: no complete checkpoint ("
            + "; ".join(f"{os.path.basename(p)}: {r}" for p, r in skipped)
            + "); expected at least one tag whose complete.json verifies. Move them away to start afresh."
        )
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as f:
            tag = f.read().strip()
        if tag:
            logger.warning("%s: checkpoints without %s (older xlm-ds); resuming %s unverified", save_dir, MANIFEST, tag)
            return tag
    return None


def needs_repartition(tag_dir: str, zero_stage: int, world_size: int, data_parallel_size: int,
                      pipeline_stages: int = 1) -> bool:
    """True when the tag's ZeRO partitioning does not fit this run (it must
    then be loaded through a universal checkpoint); refuses, with the way
    out, what DeepSpeed cannot repartition here."""
    manifest = read_manifest(tag_dir)
    if manifest is None:
        return False
    saved_dp = int(manifest.get("data_parallel_size", data_parallel_size))
    saved_stage = int(manifest.get("zero_stage", zero_stage))
    if saved_dp == data_parallel_size:
        return False
    if saved_stage == 0 and zero_stage == 0:
        logger.warning(
            "%s was written by %d data-parallel ranks, resuming on %d: weights and optimizer state are "
            "complete (ZeRO-0 does not partition them); the data iterator restarts its position per shard",
            tag_dir, saved_dp, data_parallel_size)
        return False
    saved_pp = int(manifest.get("pipeline_stages", 1) or 1)
    if saved_pp == 1 and pipeline_stages == 1 and saved_stage == zero_stage:
        logger.warning(
            "%s was written by %d data-parallel ranks (ZeRO stage %d), resuming on %d: loading it through a "
            "DeepSpeed universal checkpoint (weights, optimizer moments, lr schedule and update count carry "
            "over; the data order is that of the new sharding, so losses are not those of the original run)",
            tag_dir, saved_dp, saved_stage, data_parallel_size)
        return True
    save_dir, tag = os.path.split(os.path.abspath(tag_dir))
    raise ResumeError(
        f"{tag_dir}: written by {manifest.get('world_size')} ranks ({saved_dp} data-parallel, ZeRO stage "
        f"{saved_stage}, {saved_pp} pipeline stages), this run has {world_size} ({data_parallel_size} "
        f"data-parallel, ZeRO stage {zero_stage}, {pipeline_stages} pipeline stages). A universal checkpoint "
        "repartitions ZeRO state across data-parallel ranks at the same ZeRO stage without pipeline "
        f"parallelism only. Either resume with the original layout, or consolidate and continue with fresh "
        f"optimizer state: xlm-ds-export {save_dir} --tag {tag} --out {tag}.pt, then start a new --save-dir "
        f"with --finetune-from-model {tag}.pt"
    )


def universal_checkpoint(save_dir: str, tag: str) -> str:
    """Converts ``SAVE_DIR/TAG`` with DeepSpeed's ``ds_to_universal`` (rank 0,
    once; others wait) and returns the directory to load tag ``TAG`` from.
    The conversion goes to a temporary directory renamed into place, so a
    crash mid-conversion leaves nothing that looks converted."""
    import shutil
    from argparse import Namespace

    import torch.distributed as dist

    out_root = os.path.join(save_dir, "universal")
    target = os.path.join(out_root, tag)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and not os.path.isfile(os.path.join(target, "mp_rank_00_model_states.pt")):
        from deepspeed.checkpoint import ds_to_universal

        tmp = target + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(out_root, exist_ok=True)
        ds_to_universal.main(Namespace(
            input_folder=os.path.join(save_dir, tag), output_folder=tmp, num_extract_workers=1,
            num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True,
        ))
        os.replace(tmp, target)
        fsync_dir(out_root)
        logger.info("converted %s to the universal checkpoint %s", os.path.join(save_dir, tag), target)
    if dist.is_initialized():
        dist.barrier()
    return out_root
