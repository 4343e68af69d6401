"""What a DeepSpeed checkpoint of xlm-ds-train holds besides DeepSpeed's
own weights and optimizer state: fairseq's checkpoint fields (config, task
state, LR scheduler, update count, data iterator position, meters) in
DeepSpeed's client state, and their restoration on resume. The files and
their layout are engine/checkpoint_dir.py's."""
import logging
import os
import time
from typing import Any, Dict

from fairseq.logging import meters, metrics
from omegaconf import OmegaConf

from .checkpoint_dir import CheckpointDir, set_rng_state
from .repartition import load_dir_for

logger = logging.getLogger("xlm_ds.engine")

CHECKPOINT_FORMAT = 1


class TrainerState:
    """Mixin of the DeepSpeed trainers (trainer.py, pipeline.py)."""

    def client_state(self, extra_state: Dict[str, Any]) -> Dict[str, Any]:
        """What a fairseq checkpoint holds besides weights and optimizer
        state, under one key ("xlm_ds") of DeepSpeed's client_state."""
        return {
            "xlm_ds": {
                "format": CHECKPOINT_FORMAT,
                "pipeline": self.is_pipeline,
                "cfg": OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
                "task_state": self.task.state_dict(),
                "criterion_name": self.criterion.__class__.__name__,
                "optimizer_name": type(getattr(self.engine, "basic_optimizer", self.engine.optimizer)).__name__,
                "lr_scheduler_state": self.lr_scheduler.state_dict() if self.lr_scheduler else None,
                "num_updates": self.get_num_updates(),
                "zero_stage": self.ds.zero_stage,
                "precision": self.ds.precision,
                "world_size": self.ds.world_size,
                "extra_state": {
                    **extra_state,
                    "metrics": metrics.state_dict(),
                    "previous_training_time": self.cumulative_training_time(),
                },
                **self._extra_client_state(),
            }
        }

    def _extra_client_state(self) -> Dict[str, Any]:
        return {}

    def save_checkpoint(self, save_dir: str, tag: str, extra_state: Dict[str, Any]) -> str:
        return CheckpointDir(save_dir).save(self.engine, tag, self.client_state(extra_state), rank_state={
            "task": getattr(self.task, "rank_state_dict", dict)(),  # e.g. xlm_align's queue of this rank
        }, meta={
            "num_updates": self.get_num_updates(),
            "epoch": extra_state.get("train_iterator", {}).get("epoch"),
            "world_size": self.ds.world_size,
            "data_parallel_size": self.ds.data_parallel_size,
            "pipeline_stages": self.ds.pipeline_stages,
            "zero_stage": self.ds.zero_stage,
        })

    def load_checkpoint(self, ckpt: CheckpointDir, tag=None, reset_optimizer=False, reset_lr_scheduler=False,
                        reset_meters=False):
        """Returns the fairseq extra_state (train_iterator, metrics, ...) or
        None when ``ckpt`` holds no checkpoint."""
        if tag is None:
            tag = ckpt.resume_tag()
            if tag is None:
                logger.info("No existing checkpoint found in %s", ckpt.path)
                return None
        # through a universal checkpoint when the ZeRO partitioning changed, or
        # when the config asks for it ("checkpoint": {"load_universal": true})
        load_dir = load_dir_for(ckpt, tag, self.ds, force_universal=self.engine.load_universal_checkpoint())
        if load_dir != ckpt.path:
            # DeepSpeed reads this switch at load time (``checkpoint.load_universal`` in a config)
            self.engine._config.load_universal_checkpoint = True
        path, client = self.engine.load_checkpoint(
            load_dir,
            tag=tag,
            load_optimizer_states=not reset_optimizer,
            load_lr_scheduler_states=not reset_lr_scheduler,
            load_module_only=reset_optimizer,
        )
        if path is None:
            raise FileNotFoundError(f"{load_dir}: DeepSpeed found no checkpoint (tag {tag!r})")
        state = (client or {}).get("xlm_ds")
        if state is None:
            raise ValueError(f"{path}: not written by xlm-ds-train (no xlm_ds client state)")
        if not reset_optimizer:  # resuming this run (not initialising from another)
            if state.get("task_state"):
                self.task.load_state_dict(state["task_state"])  # e.g. xlm_align's key encoder and queue
            if self.lr_scheduler is not None and not reset_lr_scheduler and state.get("lr_scheduler_state"):
                self.lr_scheduler.load_state_dict(state["lr_scheduler_state"])
            self.set_num_updates(int(state["num_updates"]))
        extra_state = state.get("extra_state")
        rank = ckpt.rank_state(ckpt.tag_dir(tag))
        if rank is not None:
            set_rng_state(rank)
            task_rank_state = rank.get("rank_state", {}).get("task")
            if task_rank_state and not reset_optimizer:
                self.task.load_rank_state_dict(task_rank_state)
        if extra_state is not None:
            itr_state = extra_state["train_iterator"]
            if "previous_training_time" in extra_state:
                self._previous_training_time = extra_state["previous_training_time"]
                self._start_time = time.time()
            self.lr_step(itr_state["epoch"])
            if itr_state.get("version", 1) >= 2 and itr_state["iterations_in_epoch"] == 0:
                reset_meters = True
            if "metrics" in extra_state and not reset_meters:
                metrics.load_state_dict(extra_state["metrics"])
                for meter in metrics.get_meters("default"):
                    if isinstance(meter, meters.TimeMeter):
                        meter.reset()
            loaded = os.path.dirname(path) if os.path.isfile(path) else path  # universal/TAG when converted
            logger.info("Loaded checkpoint %s (epoch %d @ %d updates)", loaded, itr_state["epoch"],
                        self.get_num_updates())
        return extra_state
