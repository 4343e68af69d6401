"""Pipeline parallelism for the ``xlm`` task: the encoder's own layers
(``XLMEncoder.pipeline_layers``, models/encoder_stages.py) as a DeepSpeed
``PipelineModule``, partitioned by parameter count.

Every objective of the task trains: an update of ``--update-freq`` batches
of K objectives (``mlm tlm clm`` in any mix) is a pipeline schedule of
K × update-freq micro-batches, one objective's batch each (its own shape,
positions and attention mask travel with it). The loss and the
per-objective, per-language statistics come from the task's criterion
(``XLMLMCriterion.loss_of_logits``) on the last stage; the objective
weighting is the task's (``objective_loss``), and since DeepSpeed divides
each micro-batch's loss by the K × update-freq micro-batches of the
schedule, the loss handed to it is K times the task's: the gradient is
that of fairseq-train and of the data-parallel engine on the same batches.

The token table is shared by the first stage (lookup) and the last (the
LM head's projection) through DeepSpeed's ``TiedLayerSpec``; its gradient
is all-reduced between the two. Only the ``xlm`` task trains in a pipeline
(xlm_phased changes objectives mid-run, xlm_align adds a momentum encoder):
the others train with the ZeRO configs.
"""
import copy
import logging
from typing import Any, Dict, List

import torch
from fairseq.logging import metrics

from ..models.encoder_stages import EncoderSource, default_positions
from .deepspeed_setup import import_deepspeed, initialize_engine
from .trainer import DeepSpeedTrainer

logger = logging.getLogger("xlm_ds.engine.pipeline")


class PipelineLoss:
    """The criterion on the last stage: one pipeline micro-batch = one
    objective's batch; keeps each micro-batch's (objective, predicted
    positions, criterion log) for the trainer."""

    def __init__(self, task, criterion):
        self.task = task
        self.criterion = criterion
        self.objectives = list(task.objectives)
        self.entries: List[tuple] = []
        self.__name__ = "PipelineLoss"

    def __call__(self, logits, labels):
        target, langs, meta = labels
        obj = self.objectives[int(meta[0])]
        loss, n_pred, log = self.criterion.loss_of_logits(
            logits, target, langs, obj.kind, int(meta[1]), int(meta[2]))
        self.entries.append((obj, n_pred, log))
        return self.task.objective_loss(obj, loss, n_pred) * len(self.objectives)


def build_pipeline_module(cfg, task, criterion, model, ds):
    """The PipelineModule of ``model``'s encoder (an ``xlm_lm`` model of the
    ``xlm`` task); ``model`` must not be used afterwards (the stages keep
    only their own submodules)."""
    import_deepspeed()
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    from ..models.xlm_model import XLMModel
    from ..tasks.xlm_task import XLMTask

    if type(task) is not XLMTask:
        raise ValueError(
            f"pipeline parallelism trains the xlm task (any mix of mlm, tlm, clm), not {cfg.task._name!r}; "
            "train it with a ZeRO config"
        )
    if not isinstance(model, XLMModel):
        raise ValueError(f"pipeline parallelism trains the xlm_lm architectures, not {cfg.model._name!r}")
    source = EncoderSource(model.encoder)
    layers = model.encoder.pipeline_layers()
    specs = []
    for layer in layers:
        if layer.tied:
            specs.append(TiedLayerSpec(layer.tied, layer.cls, source, *layer.args, forward_fn=layer.forward,
                                       tied_weight_attr=["embed_tokens.weight"]))
        else:
            specs.append(LayerSpec(layer.cls, source, *layer.args))
    pipe_cfg = ds.config.get("pipeline", {})
    loss_fn = PipelineLoss(task, criterion)
    module = PipelineModule(
        layers=specs,
        num_stages=ds.pipeline_stages,
        loss_fn=loss_fn,
        partition_method=pipe_cfg.get("partition", "parameters"),
        activation_checkpoint_interval=int(pipe_cfg.get("activation_checkpoint_interval", 0)),
        # only transformer blocks: a checkpointed embedding (integer inputs)
        # would get no gradient with reentrant checkpointing
        checkpointable_layers=["BlockStage"],
        dynamic_shape=True,  # every micro-batch has its own shape
    )
    source.release()  # the other stages' submodules can go
    module.xlm_loss = loss_fn
    module.xlm_max_positions = model.max_positions()
    module.xlm_layout = [list(layer.state) if layer.state else None for layer in layers]
    return module


def schedule_config(ds, n_objectives: int) -> Dict[str, Any]:
    """The DeepSpeed config of a pipeline whose update runs every
    objective's batch of every accumulated step: K × update-freq
    micro-batches."""
    config = copy.deepcopy(ds.config)
    gas = ds.gradient_accumulation_steps * n_objectives
    config["gradient_accumulation_steps"] = gas
    config["train_batch_size"] = ds.micro_batch_size * gas * ds.data_parallel_size
    return config


class PipelineTrainer(DeepSpeedTrainer):
    """``engine.train_batch`` over the objectives' batches of an update;
    data-parallel replicas read disjoint shards (sharded by data-parallel
    rank, so all stages of a pipeline read the same batches), statistics
    come from the last stage and are summed over the world."""

    is_pipeline = True

    def _build_engine(self, module):
        self.loss_fn = module.xlm_loss
        self.objectives = self.loss_fn.objectives
        config = schedule_config(self.ds, len(self.objectives))
        if self.ds.zero_stage == 0 and self.ds.precision == "fp32":
            logger.warning("pipeline with ZeRO-0 in fp32: no optimizer checks the gradients before a step, so a "
                           "non-finite update is not skipped (ZeRO-1, as ds_configs/pipeline.json, skips it)")
        logger.info("pipeline: %d stage(s), %d objective(s) × %d accumulated batch(es) = %d micro-batches "
                    "per update", self.ds.pipeline_stages, len(self.objectives),
                    self.ds.gradient_accumulation_steps, config["gradient_accumulation_steps"])
        return initialize_engine(module, self.cfg, self.ds, config=config)

    def _model_max_positions(self):
        return self.engine.module.xlm_max_positions

    @property
    def data_parallel_rank(self) -> int:
        return self.engine.grid.get_data_parallel_rank()

    @property
    def is_last_stage(self) -> bool:
        return self.engine.is_last_stage()

    def _stats_need_reduce(self) -> bool:
        return self.ds.world_size > 1  # they live on the last stage of each replica

    def begin_epoch(self, epoch):
        logger.info("begin training epoch %d", epoch)
        self.lr_step_begin_epoch(epoch)

    def begin_valid_epoch(self, epoch):
        pass

    # ---- micro-batches ----------------------------------------------------
    def _micro_batch(self, index, sub, dummy):
        """(first stage's inputs, last stage's labels) of one objective's batch."""
        net = sub["net_input"]
        tokens, langs, target = net["src_tokens"], net["src_langs"], sub["target"]
        positions = net.get("positions")
        if positions is None:
            positions = default_positions(tokens, self.task.dictionary.pad())
        if dummy:  # nothing predicted: zero loss, zero gradient
            target = torch.full_like(target, self.task.dictionary.pad())
        causal = torch.tensor([1 if net.get("causal") else 0], device=tokens.device)
        meta = torch.tensor([index, sub["ntokens"], sub["nsentences"]], device=tokens.device)
        return (tokens, langs, positions, causal, target), (target, langs, meta)

    def _micro_batches(self, samples):
        batches, dummies = [], []
        for sample in samples:
            sample, is_dummy = self._prepare_sample(sample)
            for index, obj in enumerate(self.objectives):
                sub = sample.get(obj.kind) if sample else None
                if not sub:  # every batch of the xlm task holds every objective
                    raise RuntimeError(f"pipeline training needs the {obj.kind} stream in every batch")
                batches.append(self._micro_batch(index, sub, is_dummy))
            dummies.append(is_dummy)
        return batches, dummies

    def _logs(self, dummies):
        """The task's logging output per batch (zeros on other stages and
        for dummy batches), from the criterion logs of the last stage."""
        entries, self.loss_fn.entries = self.loss_fn.entries, []
        empty = self.task.log_of_objectives([])
        k = len(self.objectives)
        logs = []
        for i, dummy in enumerate(dummies):
            if not self.is_last_stage or dummy:
                logs.append({key: 0 for key in empty})
                continue
            log = self.task.log_of_objectives(entries[i * k:(i + 1) * k])
            logs.append({key: log.get(key, 0) for key in empty})  # the same keys on every rank
        return logs

    def _run(self, samples, train: bool):
        batches, dummies = self._micro_batches(samples)
        self.loss_fn.entries = []
        if train:
            self.engine.train_batch(data_iter=iter(batches))
        else:
            self.engine.eval_batch(data_iter=iter(batches), num_micro_batches=len(batches))
        logs = self._logs(dummies)
        sample_size = float(sum(1 for d in dummies if not d)) if self.is_last_stage else 0.0
        return logs, sample_size

    # ---- steps --------------------------------------------------------------
    @metrics.aggregate("train")
    def train_step(self, samples):
        self._set_seed()
        metrics.log_start_time("train_wall", priority=800, round=0)
        if len(samples) != self.ds.gradient_accumulation_steps:
            raise RuntimeError(
                f"the pipeline engine runs exactly {self.ds.gradient_accumulation_steps} batches per update, got "
                f"{len(samples)} (pass --skip-remainder-batch with gradient accumulation)"
            )
        logs, sample_size = self._run(samples, train=True)
        return self._finish_update(logs, sample_size, self.engine.get_global_grad_norm())

    @metrics.aggregate("valid")
    def valid_step(self, sample):
        with torch.no_grad():
            logs, sample_size = self._run([sample], train=False)
        if self._stats_need_reduce():
            logs, (sample_size,) = self._aggregate_logging_outputs(logs, sample_size)
        return self._reduce_and_log_stats(logs, sample_size)

    def _extra_client_state(self):
        return {"pipeline_layout": self.engine.module.xlm_layout, "pipeline_stages": self.ds.pipeline_stages}

    def logits(self, sample, kind="mlm"):
        """Logits of the predicted positions of ``sample``'s ``kind`` batch,
        on the last stage (None elsewhere); for tests and export checks."""
        sample, _ = self._prepare_sample(sample)
        index = [o.kind for o in self.objectives].index(kind)
        batch = self._micro_batch(index, sample[kind], False)
        _, out = self.engine.eval_batch(data_iter=iter([batch]), return_logits=True, num_micro_batches=1)
        self.loss_fn.entries = []
        out = out if self.engine.is_last_stage() else None
        return None if out is None else out.detach().float().cpu()
