"""DeepSpeed training of xlm_ds models (the only package that imports
deepspeed; model, task and data code stay DeepSpeed-free).

* ``launch_env``: SLURM / torchrun / deepspeed-launcher -> env:// variables
* ``ds_config``: load and check a DeepSpeed JSON config before any process group
* ``trainer``: the data-parallel (ZeRO 0-3) trainer, fairseq-Trainer shaped
* ``pipeline``: the XLM encoder as a PipelineModule, and its trainer
* ``loop``: fairseq-train's loop (logging, validation, checkpoints)
* ``export``: DeepSpeed checkpoint -> plain fairseq checkpoint

Submodules are imported on demand so that ``launch_env`` and ``ds_config``
load without torch.distributed work.
"""
