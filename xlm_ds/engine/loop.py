"""The training loop of ``xlm-ds-train``: fairseq-train's (epochs, update
groups, ``train_inner``/``train``/``valid`` logging, validation and
checkpoint intervals, stopping rules) with a DeepSpeed trainer underneath.

Checkpoints are DeepSpeed checkpoint directories ``SAVE_DIR/TAG/`` (one file
per rank for ZeRO shards, per layer for pipelines): TAG is ``checkpoint{E}``
at the end of epoch E and ``checkpoint_{E}_{U}`` mid-epoch (fairseq's
names, without ``.pt``); ``SAVE_DIR/latest`` (DeepSpeed's pointer file)
plays the part of ``checkpoint_last.pt``, and ``SAVE_DIR/best.json`` names
the tag with the best validation metric (nothing is copied).
``xlm-ds-export`` turns any of them into a plain fairseq checkpoint.
"""
import json
import logging
import math
import os
from typing import Any, Dict, Optional

import numpy as np
import torch
from fairseq import checkpoint_utils, tasks, utils
from fairseq.data import iterators
from fairseq.logging import meters, metrics, progress_bar

from ..reliability import early_stopping
from .checkpoint_dir import CheckpointDir, tag_name

logger = logging.getLogger("xlm_ds.train")


def _is_master() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier():
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


class MetricsFile:
    """``--ds-metrics-jsonl``: one JSON line per update (rank 0) with the
    unrounded loss, per-objective/per-language losses, gnorm and lr."""

    def __init__(self, path: Optional[str]):
        self.path = path if _is_master() else None
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)) or ".", exist_ok=True)

    def write(self, trainer, epoch):
        if not self.path or not trainer.last_update:
            return
        row = {"update": trainer.get_num_updates(), "epoch": epoch, "lr": trainer.get_lr(), **trainer.last_update}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


# --------------------------------------------------------------------------
# checkpoints (the layout is engine/checkpoint_dir.py's)
# --------------------------------------------------------------------------
def save_checkpoint(cfg, trainer, epoch_itr, val_loss) -> Optional[str]:
    """fairseq's ``checkpoint_utils.save_checkpoint`` for DeepSpeed
    checkpoint directories."""
    ckpt = cfg.checkpoint
    if ckpt.no_save:
        return None
    prev_best = getattr(save_checkpoint, "best", val_loss)
    if val_loss is not None:
        best_fn = max if ckpt.maximize_best_checkpoint_metric else min
        save_checkpoint.best = best_fn(val_loss, prev_best)
    epoch = epoch_itr.epoch
    updates = trainer.get_num_updates()
    tag = tag_name(epoch, updates, epoch_itr.end_of_epoch() and not ckpt.no_epoch_checkpoints
                   and epoch % ckpt.save_interval == 0)
    extra_state = {"train_iterator": epoch_itr.state_dict(), "val_loss": val_loss}
    if hasattr(save_checkpoint, "best"):
        extra_state["best"] = save_checkpoint.best
    patience = early_stopping.state_of(should_stop_early)
    if patience is not None:
        extra_state[early_stopping.KEY] = patience
    timer = meters.StopwatchMeter()
    timer.start()
    path = trainer.save_checkpoint(ckpt.save_dir, tag, extra_state)
    timer.stop()
    is_best = val_loss is not None and (
        (val_loss >= prev_best) if ckpt.maximize_best_checkpoint_metric else (val_loss <= prev_best)
    )
    if _is_master():
        directory = CheckpointDir(ckpt.save_dir)
        if is_best and not ckpt.no_last_checkpoints:
            directory.write_best(tag, ckpt.best_checkpoint_metric, val_loss, updates)
        logger.info(
            "Saved checkpoint %s (epoch %d @ %d updates, score %s) (writing took %.1f seconds)",
            path, epoch, updates, val_loss, timer.sum,
        )
        directory.prune(tag, ckpt.keep_interval_updates, ckpt.keep_last_epochs)
    _barrier()
    return path


def finetune_source(cfg) -> Optional[str]:
    """fairseq's --finetune-from-model: a plain fairseq checkpoint whose
    weights start the run when SAVE_DIR holds no checkpoint yet (optimizer,
    LR schedule, meters and data start afresh)."""
    ckpt = cfg.checkpoint
    if not ckpt.finetune_from_model:
        return None
    if ckpt.restore_file not in ("checkpoint_last.pt", "checkpoint_last"):
        raise ValueError("--finetune-from-model and --restore-file cannot be given together")
    if ckpt.reset_optimizer or ckpt.reset_lr_scheduler or ckpt.reset_meters or ckpt.reset_dataloader:
        raise ValueError("--finetune-from-model cannot be combined with --reset-*")
    if CheckpointDir(ckpt.save_dir).has_checkpoint():
        return None  # resuming the fine-tuning run itself
    if not os.path.isfile(ckpt.finetune_from_model):
        raise FileNotFoundError(f"--finetune-from-model {ckpt.finetune_from_model} does not exist")
    return ckpt.finetune_from_model


def load_fairseq_weights(path: str) -> Dict[str, torch.Tensor]:
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    logger.info("loading weights from %s (optimizer, LR schedule, meters and data start afresh)", path)
    return state["model"]


def load_checkpoint(cfg, trainer):
    ckpt = cfg.checkpoint
    directory, tag = CheckpointDir.resolve_restore(ckpt.restore_file, ckpt.save_dir)
    extra_state = trainer.load_checkpoint(
        directory, tag,
        reset_optimizer=ckpt.reset_optimizer,
        reset_lr_scheduler=ckpt.reset_lr_scheduler,
        reset_meters=ckpt.reset_meters,
    )
    if extra_state is not None and not ckpt.reset_optimizer and not ckpt.reset_meters:
        if "best" in extra_state:
            save_checkpoint.best = extra_state["best"]
        early_stopping.restore(should_stop_early, extra_state)
    if extra_state is not None and not ckpt.reset_dataloader:
        itr_state = extra_state["train_iterator"]
        epoch_itr = trainer.get_train_iterator(epoch=itr_state["epoch"], load_dataset=True)
        epoch_itr.load_state_dict(itr_state)
    else:
        epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=True)
    trainer.lr_step(epoch_itr.epoch)
    return extra_state, epoch_itr


# --------------------------------------------------------------------------
# the loop (fairseq_cli.train with a DeepSpeed trainer)
# --------------------------------------------------------------------------
def _progress(cfg, itr, epoch, prefix=None, train=True):
    master = _is_master()
    return progress_bar.progress_bar(
        itr,
        log_format=cfg.common.log_format,
        log_file=cfg.common.log_file if train else None,
        log_interval=cfg.common.log_interval,
        epoch=epoch,
        prefix=prefix,
        tensorboard_logdir=cfg.common.tensorboard_logdir if master else None,
        default_log_format="tqdm" if not cfg.common.no_progress_bar else "simple",
        wandb_project=cfg.common.wandb_project if master else None,
        wandb_run_name=os.environ.get("WANDB_NAME", os.path.basename(cfg.checkpoint.save_dir)),
    )


def get_training_stats(stats: Dict[str, Any]) -> Dict[str, Any]:
    stats["wall"] = round(metrics.get_meter("default", "wall").elapsed_time, 0)
    return stats


@metrics.aggregate("train")
def train_epoch(cfg, trainer, task, epoch_itr, metrics_file, preempt=None):
    itr = epoch_itr.next_epoch_itr(
        fix_batches_to_gpus=cfg.distributed_training.fix_batches_to_gpus,
        shuffle=(epoch_itr.next_epoch_idx > cfg.dataset.curriculum),
    )
    update_freq = cfg.optimization.update_freq[0]
    itr = iterators.GroupedIterator(itr, update_freq, skip_remainder_batch=cfg.optimization.skip_remainder_batch)
    progress = _progress(cfg, itr, epoch_itr.epoch)
    trainer.begin_epoch(epoch_itr.epoch)
    valid_subsets = cfg.dataset.valid_subset.split(",")
    should_stop = False
    valid_losses = [None]
    num_updates = trainer.get_num_updates()
    logger.info("Start iterating over samples")
    for i, samples in enumerate(progress):
        with metrics.aggregate("train_inner"), torch.autograd.profiler.record_function(f"train_step-{i}"):
            log_output = trainer.train_step(samples)
        if log_output is not None:
            num_updates = trainer.get_num_updates()
            metrics_file.write(trainer, epoch_itr.epoch)
            if num_updates % cfg.common.log_interval == 0:
                stats = get_training_stats(metrics.get_smoothed_values("train_inner"))
                progress.log(stats, tag="train_inner", step=num_updates)
                metrics.reset_meters("train_inner")
        end_of_epoch = not itr.has_next()
        if preempt is not None and preempt.requested():  # collective: every rank asks at every update
            valid_losses, should_stop = save_and_stop(cfg, trainer, epoch_itr, preempt)
        else:
            valid_losses, should_stop = validate_and_save(cfg, trainer, task, epoch_itr, valid_subsets,
                                                          end_of_epoch)
        if should_stop:
            break
    logger.info("end of epoch %d (average epoch stats below)", epoch_itr.epoch)
    stats = get_training_stats(metrics.get_smoothed_values("train"))
    progress.print(stats, tag="train", step=num_updates)
    metrics.reset_meters("train")
    return valid_losses, should_stop


def should_stop_early(cfg, valid_loss) -> bool:
    if valid_loss is None or cfg.checkpoint.patience <= 0:
        return False

    def is_better(a, b):
        return a > b if cfg.checkpoint.maximize_best_checkpoint_metric else a < b

    prev_best = getattr(should_stop_early, "best", None)
    if prev_best is None or is_better(valid_loss, prev_best):
        should_stop_early.best = valid_loss
        should_stop_early.num_runs = 0
        return False
    should_stop_early.num_runs += 1
    if should_stop_early.num_runs >= cfg.checkpoint.patience:
        logger.info("early stop since valid performance hasn't improved for last %d runs", cfg.checkpoint.patience)
        return True
    return False


def save_and_stop(cfg, trainer, epoch_itr, preempt):
    """A signal asked the run to stop (engine/preemption.py): save at this
    update without validating (the time before SIGKILL is short), leave
    ``preempted.json`` beside the checkpoint, and stop."""
    num_updates = trainer.get_num_updates()
    logger.info("preemption: saving a checkpoint at update %d and stopping (%s)", num_updates, preempt.reason())
    path = save_checkpoint(cfg, trainer, epoch_itr, None)
    if _is_master() and not cfg.checkpoint.no_save:
        CheckpointDir(cfg.checkpoint.save_dir).write_preempted(
            num_updates, epoch_itr.epoch, os.path.basename(path) if path else None, preempt.reason())
    _barrier()
    preempt.stopped(num_updates)
    return [None], True


def validate_and_save(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch):
    num_updates = trainer.get_num_updates()
    max_update = cfg.optimization.max_update or math.inf
    should_stop = False
    if num_updates >= max_update:
        should_stop = True
        logger.info("Stopping training due to num_updates: %d >= max_update: %s", num_updates, max_update)
    hours = trainer.cumulative_training_time() / 3600
    if cfg.optimization.stop_time_hours > 0 and hours > cfg.optimization.stop_time_hours:
        should_stop = True
        logger.info("Stopping training due to cumulative_training_time: %s > stop_time_hours", hours)
    do_save = (
        (end_of_epoch and epoch_itr.epoch % cfg.checkpoint.save_interval == 0)
        or should_stop
        or (
            cfg.checkpoint.save_interval_updates > 0
            and num_updates > 0
            and num_updates % cfg.checkpoint.save_interval_updates == 0
            and num_updates >= cfg.dataset.validate_after_updates
        )
    )
    do_validate = (
        (
            (not end_of_epoch and do_save)
            or (end_of_epoch and epoch_itr.epoch % cfg.dataset.validate_interval == 0)
            or should_stop
            or (
                cfg.dataset.validate_interval_updates > 0
                and num_updates > 0
                and num_updates % cfg.dataset.validate_interval_updates == 0
            )
        )
        and not cfg.dataset.disable_validation
        and num_updates >= cfg.dataset.validate_after_updates
    )
    valid_losses = [None]
    if do_validate:
        valid_losses = validate(cfg, trainer, task, epoch_itr, valid_subsets)
    should_stop |= should_stop_early(cfg, valid_losses[0])
    if do_save or should_stop:
        save_checkpoint(cfg, trainer, epoch_itr, valid_losses[0])
    return valid_losses, should_stop


def validate(cfg, trainer, task, epoch_itr, subsets):
    if cfg.dataset.fixed_validation_seed is not None:
        utils.set_torch_seed(cfg.dataset.fixed_validation_seed)
    trainer.begin_valid_epoch(epoch_itr.epoch)
    valid_losses = []
    for subset_idx, subset in enumerate(subsets):
        logger.info('begin validation on "%s" subset', subset)
        itr = trainer.get_valid_iterator(subset).next_epoch_itr(shuffle=False, set_dataset_epoch=False)
        progress = _progress(cfg, itr, epoch_itr.epoch, prefix=f"valid on '{subset}' subset", train=False)
        with metrics.aggregate(new_root=True) as agg:
            for i, sample in enumerate(progress):
                if cfg.dataset.max_valid_steps is not None and i > cfg.dataset.max_valid_steps:
                    break
                trainer.valid_step(sample)
        stats = agg.get_smoothed_values()
        stats["num_updates"] = trainer.get_num_updates()
        if subset_idx == 0 and hasattr(save_checkpoint, "best"):
            key = f"best_{cfg.checkpoint.best_checkpoint_metric}"
            best_fn = max if cfg.checkpoint.maximize_best_checkpoint_metric else min
            stats[key] = best_fn(save_checkpoint.best, stats[cfg.checkpoint.best_checkpoint_metric])
        progress.print(stats, tag=subset, step=trainer.get_num_updates())
        valid_losses.append(stats[cfg.checkpoint.best_checkpoint_metric])
    return valid_losses


def run(cfg, ds, metrics_jsonl: Optional[str] = None, preempt=None):
    """Train with DeepSpeed; the process group must exist already.
    ``preempt`` (engine/preemption.PreemptionHook) is asked at every update
    whether a signal wants the run saved and stopped."""
    import torch.distributed as dist

    from .pipeline import PipelineTrainer, build_pipeline_module
    from .trainer import DeepSpeedTrainer

    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world != ds.world_size:
        raise RuntimeError(f"process group has {world} ranks but the config was checked for {ds.world_size}")
    cfg.distributed_training.distributed_rank = rank
    cfg.distributed_training.distributed_world_size = world
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    metrics.reset()
    for fn in (save_checkpoint, should_stop_early):
        for attr in ("best", "num_runs"):
            if hasattr(fn, attr):
                delattr(fn, attr)
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    if rank == 0:
        checkpoint_utils.verify_checkpoint_directory(cfg.checkpoint.save_dir)
        for warning in ds.warnings:
            logger.warning(warning)
    logger.info(cfg)
    logger.info(
        "DeepSpeed config %s: ZeRO stage %d, %s, %d rank(s) = %d data-parallel × %d pipeline stage(s), "
        "micro-batch %d × accumulation %d -> %d sentences per objective per update",
        ds.path, ds.zero_stage, ds.precision, world, ds.data_parallel_size, ds.pipeline_stages,
        ds.micro_batch_size, ds.gradient_accumulation_steps, ds.train_batch_size,
    )
    task = tasks.setup_task(cfg.task)
    criterion = task.build_criterion(cfg.criterion)
    init_from = finetune_source(cfg)
    model = task.build_model(cfg.model)
    if init_from:
        model.load_state_dict(load_fairseq_weights(init_from), strict=True, model_cfg=cfg.model)
    logger.info(model)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("task: %s, model: %s, criterion: %s", type(task).__name__, type(model).__name__,
                type(criterion).__name__)
    logger.info("num. model params: {:,} (num. trained: {:,})".format(
        n_params, sum(p.numel() for p in model.parameters() if p.requires_grad)))
    if ds.pipeline:  # the stages keep their own layers of the model, the rest is freed
        trainer = PipelineTrainer(cfg, task, build_pipeline_module(cfg, task, criterion, model, ds), criterion, ds)
    else:
        trainer = DeepSpeedTrainer(cfg, task, model, criterion, ds)
    del model
    if not cfg.dataset.disable_validation:
        for subset in cfg.dataset.valid_subset.split(","):
            task.load_dataset(subset, combine=False, epoch=1)
    logger.info("training on %d ranks; max sentences per rank and objective = %s", world,
                cfg.dataset.batch_size)
    from ..reliability.preflight import check_disk_space

    check_disk_space(cfg.checkpoint.save_dir, sum(p.numel() for p in trainer.model.parameters()),
                     cfg.checkpoint.no_save)
    if preempt is not None and rank == 0 and not cfg.checkpoint.no_save:
        CheckpointDir(cfg.checkpoint.save_dir).clear_preempted()  # an earlier run's marker must not outlive it
    extra_state, epoch_itr = load_checkpoint(cfg, trainer)
    metrics_file = MetricsFile(metrics_jsonl)
    max_epoch = cfg.optimization.max_epoch or math.inf
    lr = trainer.get_lr()
    train_meter = meters.StopwatchMeter()
    train_meter.start()
    while epoch_itr.next_epoch_idx <= max_epoch:
        if lr <= cfg.optimization.stop_min_lr:
            logger.info("stopping training because current learning rate (%s) is <= --stop-min-lr", lr)
            break
        valid_losses, should_stop = train_epoch(cfg, trainer, task, epoch_itr, metrics_file, preempt)
        if should_stop:
            break
        lr = trainer.lr_step(epoch_itr.epoch, valid_losses[0])
        # as fairseq-train: the data is reloaded only when it is sharded; an
        # unsharded task's datasets redraw their samples in set_epoch
        sharded = task.has_sharded_data("train")
        epoch_itr = trainer.get_train_iterator(
            epoch_itr.next_epoch_idx, load_dataset=sharded, disable_iterator_cache=sharded
        )
    train_meter.stop()
    logger.info("done training in %.1f seconds", train_meter.sum)
    return trainer
