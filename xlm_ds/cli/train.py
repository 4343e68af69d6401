"""``xlm-ds-train``: fairseq-train's command line, trained by DeepSpeed.

    xlm-ds-train DATA --task xlm --arch xlmr_base --criterion xlm_lm \\
        --objectives "mlm tlm" --optimizer adam --lr 5e-4 --max-update 100000 \\
        --deepspeed-config ds_configs/zero2.json

Every fairseq training option is accepted (the xlm_ds plugin is imported, so
``--user-dir xlm_ds`` is optional); the DeepSpeed JSON config decides ZeRO
stage, offload, precision, activation checkpointing and pipeline stages, and
owns the batch arithmetic (``train_micro_batch_size_per_gpu`` =
``--batch-size``, ``gradient_accumulation_steps`` = ``--update-freq``; the
options may be omitted, or must agree). The config is checked before any
process-group work.

Launch with ``torchrun --nproc-per-node N -m xlm_ds.train ...``, the
``deepspeed`` launcher, or ``srun`` (SLURM variables are mapped onto
torch.distributed's; see docs/deepspeed.md). Exit status: 0 done, 2 bad
command line or config (``xlm-ds-train: error: ...``), 1 failure in
training.
"""
import logging
import os
import sys
from typing import List, Optional

PROG = "xlm-ds-train"


def _setup_logging():
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        stream=sys.stdout,
        force=True,
    )


def add_engine_args(parser):
    group = parser.add_argument_group("DeepSpeed (xlm-ds-train)")
    group.add_argument(
        "--deepspeed-config", "--deepspeed_config", metavar="JSON", default=None,
        help="DeepSpeed config (ds_configs/*.json): ZeRO stage, offload, precision, "
        "activation checkpointing, pipeline stages, batch sizes",
    )
    group.add_argument(
        "--ds-metrics-jsonl", metavar="FILE", default=None,
        help="write one JSON line per update with unrounded loss/gnorm/lr (rank 0)",
    )
    group.add_argument("--deepspeed", action="store_true", help=argparse_suppress())
    return group


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def parse(argv: Optional[List[str]] = None):
    import xlm_ds  # noqa: F401  (registers task, models, criterion)
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    parser.prog = PROG
    add_engine_args(parser)
    args = options.parse_args_and_arch(parser, input_args=argv)
    cfg = convert_namespace_to_omegaconf(args)
    return parser, args, cfg


def check(args, cfg):
    """Launch environment + DeepSpeed config, before any process group."""
    from xlm_ds.engine import ds_config, launch_env

    info = launch_env.setup_environment()
    accelerator = None
    try:
        from deepspeed.accelerator import get_accelerator

        accelerator = get_accelerator()
    except Exception:  # pragma: no cover - deepspeed missing is reported below
        pass
    ds = ds_config.load_and_validate(
        args.deepspeed_config,
        info.world_size,
        batch_size=cfg.dataset.batch_size,
        update_freq=list(cfg.optimization.update_freq),
        clip_norm=float(cfg.optimization.clip_norm or 0.0),
        client_optimizer=cfg.optimizer._name if cfg.optimizer is not None else None,
        lr_scheduler=cfg.lr_scheduler._name if cfg.lr_scheduler is not None else None,
        lr=float(cfg.optimization.lr[0]),
        fairseq_fp16=bool(cfg.common.fp16),
        fairseq_bf16=bool(cfg.common.bf16),
        accelerator=accelerator,
    )
    # the config is the single source of the batch arithmetic from here on
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.dataset.batch_size = ds.micro_batch_size
        if cfg.dataset.batch_size_valid is None:
            cfg.dataset.batch_size_valid = ds.micro_batch_size
        cfg.optimization.update_freq = [ds.gradient_accumulation_steps]
        cfg.optimization.clip_norm = ds.gradient_clipping
        if ds.pipeline and ds.gradient_accumulation_steps > 1:
            cfg.optimization.skip_remainder_batch = True
    return info, ds


def run_training(argv: Optional[List[str]] = None, destroy_process_group: bool = True, preempt=None):
    """Parse, check, join (or reuse) the process group and train; returns
    the trainer. Raises DSConfigError/LaunchEnvError on bad input.
    ``preempt``: engine/preemption's hook (saves and stops on a signal)."""
    parser, args, cfg = parse(argv)
    info, ds = check(args, cfg)
    from xlm_ds.engine import deepspeed_setup, loop

    logging.getLogger(PROG).info(
        "launch: %s, rank %d of %d (local rank %d), master %s:%d",
        info.launcher, info.rank, info.world_size, info.local_rank, info.master_addr, info.master_port,
    )
    deepspeed_setup.init_distributed()
    try:
        return loop.run(cfg, ds, metrics_jsonl=args.ds_metrics_jsonl, preempt=preempt)
    finally:
        import torch.distributed as dist

        if destroy_process_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def main(argv: Optional[List[str]] = None, preempt=None) -> int:
    _setup_logging()
    from xlm_ds.engine.ds_config import DSConfigError
    from xlm_ds.engine.launch_env import LaunchEnvError
    from xlm_ds.fairseq_compat import FairseqCompatError, apply
    from xlm_ds.engine.checkpoint_dir import ResumeError
    from xlm_ds.reliability.preflight import PreflightError

    try:
        apply()
        run_training(argv, preempt=preempt)
    except (DSConfigError, LaunchEnvError, ResumeError, PreflightError, FairseqCompatError) as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 2
    return 0


def preemptible_main(argv: Optional[List[str]] = None, early=()) -> int:
    """``xlm-ds-train`` that, on SIGUSR1/SIGTERM (``XLM_DS_PREEMPT_SIGNALS``),
    saves a checkpoint at the end of the current update, writes
    ``SAVE_DIR/preempted.json`` and exits 0 (slurm/pretrain.sh requeues the
    job then). ``early``: signals caught before the heavy imports."""
    from xlm_ds.engine import preemption

    preemption.install()
    preemption.received_early(early)
    return main(argv, preempt=preemption.PreemptionHook())


if __name__ == "__main__":
    sys.exit(main())
