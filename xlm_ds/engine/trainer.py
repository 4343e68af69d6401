"""A fairseq-``Trainer``-shaped driver around a DeepSpeed engine.

The xlm task's objective mixing is reused as is: ``task.train_step`` is
called with an optimizer adapter whose ``backward(loss)`` only *collects*
each objective's scaled loss; the trainer then sums them and calls
``engine.backward`` once per micro-batch. One backward per micro-batch is
DeepSpeed's contract (ZeRO-1 reduces gradients inside every
``engine.backward`` at an accumulation boundary, ZeRO-2/3 reduce-scatter in
backward hooks), so the sum is the robust choice; the price is that the
activations of all objectives of a micro-batch are alive together (2× for
``mlm tlm``), where fairseq-train frees each objective's graph before the
next forward. The gradient is the same: the gradient of a sum is the sum of
the gradients.

Gradient accumulation follows fairseq: ``--update-freq`` (=
``gradient_accumulation_steps``) micro-batches per update, each loss divided
by the number of micro-batches actually in the group (the last group of an
epoch may be shorter), the accumulation boundary set explicitly
(``engine.set_gradient_accumulation_boundary``) on the last one, and one
``engine.step()`` per update. Data-parallel averaging is DeepSpeed's.

Logging goes through fairseq's ``metrics`` with fairseq's names (``loss``,
``ppl``, per-objective/per-language ``mlm_en_loss``..., ``wps``, ``ups``,
``wpb``, ``bsz``, ``lr``, ``gnorm``, ``clip``, ``loss_scale``,
``train_wall``, ``wall``), so progress bars and TensorBoard look like
fairseq-train's.
"""
import logging
import math
import time
from typing import Any, Dict, Optional

import torch
from fairseq import utils
from fairseq.distributed import utils as distributed_utils
from fairseq.logging import metrics

from ..reliability.nonfinite import NonFiniteCounter, limit_from_cfg
from .deepspeed_setup import DeferredBackward, EngineLR, enable_activation_checkpointing, import_deepspeed, \
    initialize_engine
from .ds_config import ResolvedDSConfig
from .trainer_state import TrainerState

logger = logging.getLogger("xlm_ds.engine")


# --------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------
class DeepSpeedTrainer(TrainerState):
    """Data-parallel (ZeRO 0-3, offload, bf16/fp16) training of a fairseq
    model; ``PipelineTrainer`` (pipeline.py) overrides the step."""

    is_pipeline = False

    def __init__(self, cfg, task, model, criterion, ds: ResolvedDSConfig):
        self.cfg = cfg
        self.task = task
        self.criterion = criterion
        self.ds = ds
        self._num_updates = 0
        self._dummy_batch = None
        self._start_time = time.time()
        self._previous_training_time = 0.0
        self.last_update: Dict[str, Any] = {}
        self.nonfinite = NonFiniteCounter(limit_from_cfg(cfg))
        self.engine = self._build_engine(model)
        self.device = self.engine.device
        self.criterion.to(self.device)
        if self.ds.ds_scheduler:
            self.lr_scheduler = None  # DeepSpeed's scheduler, stepped by engine.step()
        else:
            from fairseq.optim import lr_scheduler

            self.lr_scheduler = lr_scheduler.build_lr_scheduler(
                cfg.lr_scheduler, EngineLR(cfg.optimizer, self.engine)
            )
            self.lr_scheduler.step_update(0)
        metrics.log_start_time("wall", priority=790, round=0)

    # ---- construction -----------------------------------------------------
    def _build_engine(self, model):
        import_deepspeed()  # first deepspeed import goes through the shm-op switch
        if self.ds.activation_checkpointing:
            n = enable_activation_checkpointing(model, self.ds.config)
            logger.info("activation checkpointing: %d blocks recomputed in backward", n)
        return initialize_engine(model, self.cfg, self.ds)

    # ---- fairseq Trainer surface used by the loop ---------------------------
    @property
    def model(self):
        return self.engine.module

    def get_model(self):
        return self.engine.module

    def get_criterion(self):
        return self.criterion

    @property
    def data_parallel_world_size(self) -> int:
        return self.ds.data_parallel_size

    def _stats_need_reduce(self) -> bool:
        """Whether the logging outputs must be summed over ranks."""
        return self.data_parallel_world_size > 1

    @property
    def data_parallel_rank(self) -> int:
        import torch.distributed as dist

        return dist.get_rank() if dist.is_initialized() else 0

    @property
    def data_parallel_process_group(self):
        return None  # the world

    @property
    def is_data_parallel_master(self) -> bool:
        import torch.distributed as dist

        return not dist.is_initialized() or dist.get_rank() == 0

    def get_num_updates(self) -> int:
        return self._num_updates

    def set_num_updates(self, num_updates: int) -> None:
        self._num_updates = num_updates
        self.lr_step_update()
        metrics.log_scalar("num_updates", self._num_updates, weight=0, priority=200)

    def get_lr(self) -> float:
        if self.lr_scheduler is not None:
            return self.lr_scheduler.optimizer.get_lr()
        return float(self.engine.get_lr()[0])

    def lr_step_begin_epoch(self, epoch):
        if self.lr_scheduler is not None:
            self.lr_scheduler.step_begin_epoch(epoch)
        return self.lr_step_update()

    def lr_step(self, epoch, val_loss=None):
        if self.lr_scheduler is not None:
            self.lr_scheduler.step(epoch, val_loss)
        return self.lr_step_update()

    def lr_step_update(self):
        if self.lr_scheduler is not None:
            new_lr = self.lr_scheduler.step_update(self.get_num_updates())
        else:
            new_lr = self.get_lr()
        metrics.log_scalar("lr", new_lr, weight=0, priority=300)
        return new_lr

    def cumulative_training_time(self) -> float:
        return self._previous_training_time + time.time() - self._start_time

    def begin_epoch(self, epoch):
        logger.info("begin training epoch %d", epoch)
        self.lr_step_begin_epoch(epoch)
        self.task.begin_epoch(epoch, self.get_model())

    def begin_valid_epoch(self, epoch):
        self.task.begin_valid_epoch(epoch, self.get_model())

    # ---- data -------------------------------------------------------------
    def _max_positions(self):
        return utils.resolve_max_positions(self.task.max_positions(), self._model_max_positions())

    def _model_max_positions(self):
        return self.get_model().max_positions()

    def get_train_iterator(self, epoch, combine=True, load_dataset=True, disable_iterator_cache=False):
        cfg = self.cfg
        if load_dataset:
            logger.info("loading train data for epoch %d", epoch)
            self.task.load_dataset(cfg.dataset.train_subset, epoch=epoch, combine=combine)
        itr = self.task.get_batch_iterator(
            dataset=self.task.dataset(cfg.dataset.train_subset),
            max_tokens=cfg.dataset.max_tokens,
            max_sentences=cfg.dataset.batch_size,
            max_positions=utils.resolve_max_positions(
                self.task.max_positions(), self._model_max_positions(), cfg.dataset.max_tokens
            ),
            ignore_invalid_inputs=True,
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
            seed=(cfg.common.seed + epoch) if cfg.dataset.update_ordered_indices_seed else cfg.common.seed,
            num_shards=self.data_parallel_world_size,
            shard_id=self.data_parallel_rank,
            num_workers=cfg.dataset.num_workers,
            epoch=epoch,
            data_buffer_size=cfg.dataset.data_buffer_size,
            disable_iterator_cache=disable_iterator_cache,
            skip_remainder_batch=cfg.optimization.skip_remainder_batch,
            grouped_shuffling=cfg.dataset.grouped_shuffling,
            update_epoch_batch_itr=cfg.dataset.update_epoch_batch_itr,
        )
        self._dummy_batch = itr.first_batch
        return itr

    def get_valid_iterator(self, subset, disable_iterator_cache=False):
        cfg = self.cfg
        itr = self.task.get_batch_iterator(
            dataset=self.task.dataset(subset),
            max_tokens=cfg.dataset.max_tokens_valid,
            max_sentences=cfg.dataset.batch_size_valid,
            max_positions=self._max_positions(),
            ignore_invalid_inputs=cfg.dataset.skip_invalid_size_inputs_valid_test,
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
            seed=cfg.common.seed,
            num_shards=self.data_parallel_world_size,
            shard_id=self.data_parallel_rank,
            num_workers=cfg.dataset.num_workers,
            epoch=1,
            data_buffer_size=cfg.dataset.data_buffer_size,
            disable_iterator_cache=disable_iterator_cache,
            skip_remainder_batch=False,
        )
        self._dummy_batch = itr.first_batch
        return itr

    def _prepare_sample(self, sample):
        if sample == "DUMMY" or not sample:
            if not self._dummy_batch or self._dummy_batch == "DUMMY":
                raise RuntimeError("no dummy batch: the data iterator yielded an empty first batch")
            sample, is_dummy = self._dummy_batch, True
        else:
            is_dummy = False
        if self.device.type != "cpu":
            sample = utils.move_to_cuda(sample, device=self.device)
        return sample, is_dummy

    def _set_seed(self):
        # as fairseq: the seed of an update depends only on its number, so a
        # resumed run draws the same dropout masks as an uninterrupted one
        utils.set_torch_seed(self.cfg.common.seed + self.get_num_updates())

    # ---- steps ------------------------------------------------------------
    @metrics.aggregate("train")
    def train_step(self, samples):
        """One update over ``samples`` (the micro-batches of one
        GroupedIterator group). Returns fairseq's logging output."""
        self._set_seed()
        self.engine.train()
        self.criterion.train()
        metrics.log_start_time("train_wall", priority=800, round=0)
        n = len(samples)
        logging_outputs, sample_size = [], 0.0
        for i, sample in enumerate(samples):
            sample, is_dummy = self._prepare_sample(sample)
            deferred = DeferredBackward()
            self.engine.set_gradient_accumulation_boundary(i == n - 1)
            _, sample_size_i, log = self.task.train_step(
                sample=sample,
                model=self.engine,
                criterion=self.criterion,
                optimizer=deferred,
                update_num=self.get_num_updates(),
                ignore_grad=is_dummy,
            )
            total = deferred.total()
            if total is None:
                raise RuntimeError("task.train_step produced no loss to backpropagate")
            self.engine.backward(total / n, scale_wrt_gas=False)
            if is_dummy:
                log = {k: v * 0 for k, v in log.items()}
                sample_size_i = 0
            logging_outputs.append(log)
            sample_size += sample_size_i
        grad_norm = self._local_grad_norm_if_needed()
        if grad_norm is not None and not math.isfinite(grad_norm):
            # plain torch optimizer (ZeRO-0, fp32): nothing in DeepSpeed checks
            # the gradients, so the update is skipped here; DeepSpeed's ZeRO
            # and fp16/bf16 optimizers skip it themselves (was_step_applied)
            self.engine.zero_grad()
            return self._finish_update(logging_outputs, sample_size, grad_norm, skipped=True)
        self.engine.step()
        if grad_norm is None:
            grad_norm = self.engine.get_global_grad_norm()
        return self._finish_update(logging_outputs, sample_size, grad_norm)

    def _local_grad_norm_if_needed(self) -> Optional[float]:
        """DeepSpeed reports the gradient norm from its ZeRO/bf16/fp16
        optimizers; with a plain fp32 optimizer (ZeRO stage 0) it computes
        none, so it is taken here from the reduced gradients."""
        if self.ds.zero_stage != 0 or self.ds.precision != "fp32":
            return None
        grads = [p.grad.detach().float() for p in self.engine.module.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        return float(torch.norm(torch.stack([torch.norm(g) for g in grads])))

    def _finish_update(self, logging_outputs, sample_size, grad_norm, skipped=False):
        applied = not skipped and self.engine.was_step_applied()
        if self.ds.precision == "fp16":
            scale = self._loss_scale()
            if scale is not None:
                metrics.log_scalar("loss_scale", scale, priority=700, round=4, weight=0)
        logging_output = None
        if applied:
            self.set_num_updates(self.get_num_updates() + 1)
            if self._stats_need_reduce():
                logging_outputs, (sample_size,) = self._aggregate_logging_outputs(logging_outputs, sample_size)
            if grad_norm is not None and not math.isfinite(float(grad_norm)):
                raise FloatingPointError(f"gradients are Nan/Inf (norm {grad_norm})")
            logging_output = self._reduce_and_log_stats(logging_outputs, sample_size, grad_norm)
        elif self.ds.precision == "fp16":
            logger.info("NOTE: gradient overflow detected, ignoring gradient (loss scale %s)", self._loss_scale())
        else:
            # fp32/bf16 have no loss scale to lower: a skipped step means a
            # NaN/inf loss or gradient (reliability/nonfinite.py)
            self.nonfinite.skipped(self.get_num_updates(), f"gradient norm {grad_norm}")
        if applied:
            self.nonfinite.ok()
        metrics.log_stop_time("train_wall")
        return logging_output

    def _loss_scale(self):
        opt = self.engine.optimizer
        for name in ("cur_scale", "loss_scale"):
            value = getattr(opt, name, None)
            if isinstance(value, (int, float)) or torch.is_tensor(value):
                return float(value)
        return None

    @metrics.aggregate("valid")
    def valid_step(self, sample):
        with torch.no_grad():
            self.engine.eval()
            self.criterion.eval()
            sample, is_dummy = self._prepare_sample(sample)
            _, sample_size, log = self.task.valid_step(sample, self.engine, self.criterion)
            if is_dummy:
                log = {k: v * 0 for k, v in log.items()}
                sample_size = 0
        logging_outputs = [log]
        if self._stats_need_reduce():
            logging_outputs, (sample_size,) = self._aggregate_logging_outputs(logging_outputs, sample_size)
        return self._reduce_and_log_stats(logging_outputs, sample_size)

    # ---- logging (fairseq's Trainer, same names) ---------------------------
    def _aggregate_logging_outputs(self, logging_outputs, *extra_stats_to_sum, group=None):
        data = {f"extra_stats_{i}": stat for i, stat in enumerate(extra_stats_to_sum)}
        keys = list(logging_outputs[0].keys()) if logging_outputs else []
        for k in keys:
            data["logging_outputs_" + k] = sum(log[k] for log in logging_outputs if k in log)
        data = distributed_utils.all_reduce_dict(data, device=self.device, group=group)
        extra = [data[f"extra_stats_{i}"] for i in range(len(extra_stats_to_sum))]
        return [{k: data["logging_outputs_" + k] for k in keys}], extra

    def _reduce_and_log_stats(self, logging_outputs, sample_size, grad_norm=None):
        if grad_norm is not None and math.isfinite(float(grad_norm)):
            grad_norm = float(grad_norm)
            metrics.log_speed("ups", 1.0, priority=100, round=2)
            metrics.log_scalar("gnorm", grad_norm, priority=400, round=3)
            clip = self.ds.gradient_clipping
            if clip > 0:
                metrics.log_scalar("clip", 100.0 if grad_norm > clip else 0.0, priority=500, round=1)
        with metrics.aggregate() as agg:
            if logging_outputs is not None:
                self.task.reduce_metrics(logging_outputs, self.get_criterion())
            logging_output = agg.get_smoothed_values()
            logging_output["sample_size"] = sample_size
            for key in ("ppl", "wps", "wpb", "bsz"):
                logging_output.pop(key, None)
        # unrounded, for --ds-metrics-jsonl and tests
        self.last_update = _exact_stats(logging_outputs, grad_norm)
        return logging_output


def _exact_stats(logging_outputs, grad_norm) -> Dict[str, Any]:
    if not logging_outputs:
        return {}
    total = {}
    for log in logging_outputs:
        for k, v in log.items():
            total[k] = total.get(k, 0.0) + float(v)
    out = {"gnorm": None if grad_norm is None else float(grad_norm)}
    n = max(total.get("sample_size", 0.0), 1.0)
    out["loss"] = total.get("loss", 0.0) / n / math.log(2)
    for k, v in total.items():
        if k.endswith("_loss") and k != "loss":
            cnt = total.get(k[: -len("_loss")] + "_n", 0.0)
            if cnt > 0:
                out[k] = v / cnt / math.log(2)
    return out
