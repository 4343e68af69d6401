"""DeepSpeed training of xlm_ds models (the only package that imports
deepspeed; model, task and data code stay DeepSpeed-free).

* ``launch_env``: SLURM / torchrun / deepspeed-launcher -> env:// variables
* ``ds_config``: load and check a DeepSpeed JSON config before any process group
* ``deepspeed_setup``: the deepspeed import, process group, optimizer, ``deepspeed.initialize``,
  activation checkpointing
* ``trainer``: the data-parallel (ZeRO 0-3) trainer, fairseq-Trainer shaped;
  ``trainer_state``: the fairseq checkpoint fields it saves and restores
* ``pipeline``: the encoder's own layers as a PipelineModule (every objective), and its trainer
* ``loop``: fairseq-train's loop (logging, validation, checkpoints)
* ``checkpoint_dir``: the save directory (tags, completeness, latest, best, resume,
  preemption marker): the only code that reads or writes it; ``repartition``: resuming it
  on another layout of ranks (DeepSpeed's universal conversion)
* ``preemption``: signals -> save and stop at the next update (a hook the loop asks)
* ``export``: DeepSpeed checkpoint -> plain fairseq checkpoint

Submodules are imported on demand so that ``launch_env`` and ``ds_config``
load without torch.distributed work.
"""
