"""Resuming a DeepSpeed checkpoint on another layout of ranks.

A ZeRO 1-3 checkpoint is partitioned by data-parallel rank and DeepSpeed
cannot load it onto another number of ranks; a ZeRO-0 one is whole on
every rank. The tag's ``complete.json`` says how it was written, so the
choice is made before DeepSpeed is asked: load it as it is, convert it
once with DeepSpeed's own ``ds_to_universal`` into ``universal/TAG``
(which DeepSpeed repartitions on load), or refuse with the way out.
"""
import logging
import os
import shutil

from ..reliability.atomic import fsync_dir
from .checkpoint_dir import MODEL_STATES, CheckpointDir, ResumeError, barrier, rank

logger = logging.getLogger("xlm_ds.checkpoints")


def load_dir_for(ckpt: CheckpointDir, tag: str, ds, force_universal: bool = False) -> str:
    """Where DeepSpeed loads ``tag`` from: ``ckpt.path``, or ``universal``
    when the tag has to be repartitioned (or the config asks for it)."""
    if force_universal or needs_repartition(ckpt, tag, ds):
        return universal(ckpt, tag)
    return ckpt.path


def needs_repartition(ckpt: CheckpointDir, tag: str, ds) -> bool:
    manifest = ckpt.manifest(tag)
    if manifest is None:
        return False
    saved_dp = int(manifest.get("data_parallel_size", ds.data_parallel_size))
    saved_stage = int(manifest.get("zero_stage", ds.zero_stage))
    saved_pp = int(manifest.get("pipeline_stages", 1) or 1)
    where = ckpt.tag_dir(tag)
    if saved_dp == ds.data_parallel_size and saved_pp == ds.pipeline_stages:
        return False
    if saved_pp == ds.pipeline_stages and saved_stage == 0 and ds.zero_stage == 0:
        logger.warning(
            "%s was written by %d data-parallel ranks, resuming on %d: weights and optimizer state are "
            "complete (ZeRO-0 does not partition them); the data iterator restarts its position per shard",
            where, saved_dp, ds.data_parallel_size)
        return False
    if saved_pp == 1 and ds.pipeline_stages == 1 and saved_stage == ds.zero_stage:
        logger.warning(
            "%s was written by %d data-parallel ranks (ZeRO stage %d), resuming on %d: loading it through a "
            "DeepSpeed universal checkpoint (weights, optimizer moments, lr schedule and update count carry "
            "over; the data order is that of the new sharding, so losses are not those of the original run)",
            where, saved_dp, saved_stage, ds.data_parallel_size)
        return True
    raise ResumeError(
        f"{where}: written by {manifest.get('world_size')} ranks ({saved_dp} data-parallel, ZeRO stage "
        f"{saved_stage}, {saved_pp} pipeline stages), this run has {ds.world_size} ({ds.data_parallel_size} "
        f"data-parallel, ZeRO stage {ds.zero_stage}, {ds.pipeline_stages} pipeline stages). A universal "
        "checkpoint repartitions ZeRO state across data-parallel ranks at the same ZeRO stage without pipeline "
        f"parallelism only. Either resume with the original layout, or consolidate and continue with fresh "
        f"optimizer state: xlm-ds-export {ckpt.path} --tag {tag} --out {tag}.pt, then start a new --save-dir "
        f"with --finetune-from-model {tag}.pt"
    )


def universal(ckpt: CheckpointDir, tag: str) -> str:
    """Converts ``tag`` with DeepSpeed's ``ds_to_universal`` (rank 0,
    once; others wait) into ``universal/TAG`` (through a temporary
    directory renamed into place) and returns ``universal``."""
    from argparse import Namespace

    out_root = os.path.join(ckpt.path, "universal")
    target = os.path.join(out_root, tag)
    if rank() == 0 and not os.path.isfile(os.path.join(target, MODEL_STATES[0])):
        from deepspeed.checkpoint import ds_to_universal

        tmp = target + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(out_root, exist_ok=True)
        ds_to_universal.main(Namespace(
            input_folder=ckpt.tag_dir(tag), output_folder=tmp, num_extract_workers=1,
            num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True,
        ))
        os.replace(tmp, target)
        fsync_dir(out_root)
        logger.info("converted %s to the universal checkpoint %s", ckpt.tag_dir(tag), target)
    barrier()
    return out_root
