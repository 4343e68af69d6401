"""Multi-process part of tests/engine/test_engine.py, run by it under
``torchrun --nproc-per-node 2`` (gloo, CPU): one launch trains every
configuration in turn, in-process (``xlm_ds.cli.train.run_training`` without
tearing the process group down), so the ~20 s start-up of two Python
processes is paid once.

    harness.py DATA OUT

writes OUT/NAME.jsonl (per-update losses, rank 0), DeepSpeed checkpoints in
OUT/NAME/, and OUT/NAME.logits.pt (rank 0: a batch and the engine's logits on
it, for the export check), then OUT/done.json.
"""
import json
import os
import sys
import time

import torch


def base_args(data, out, name, config, objectives="mlm tlm", updates=3, extra=()):
    return [
        data, "--task", "xlm", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
        "--objectives", objectives, "--tokens-per-sample", "32", "--batch-size", "8",
        "--optimizer", "adam", "--lr", "1e-3", "--max-update", str(updates), "--seed", "3",
        "--log-interval", "1000", "--log-format", "simple", "--disable-validation",
        "--save-dir", os.path.join(out, name), "--ds-metrics-jsonl", os.path.join(out, f"{name}.jsonl"),
        "--deepspeed-config", os.path.join("ds_configs", config), *extra,
    ]


def save_logits(trainer, path):
    """The engine's output on a fixed mlm batch (rank 0's first batch)."""
    import torch.distributed as dist

    trainer.task.load_dataset("valid", epoch=1)
    itr = trainer.get_valid_iterator("valid").next_epoch_itr(shuffle=False)
    sample = next(iter(itr))
    if trainer.is_pipeline:
        logits = trainer.logits(sample)
        holder = 1  # last stage
    else:
        sample, _ = trainer._prepare_sample(sample)
        sub = sample["mlm"]
        trainer.engine.eval()
        with torch.no_grad():
            logits, _ = trainer.engine(
                **sub["net_input"], masked_tokens=sub["target"].ne(trainer.task.dictionary.pad())
            )
        logits = logits.float().cpu()
        holder = 0
    if dist.get_rank() == holder:
        torch.save({"mlm": sample["mlm"], "logits": logits}, path)
    dist.barrier()


def main():
    data, out = sys.argv[1], sys.argv[2]
    from xlm_ds.cli.train import _setup_logging, run_training

    _setup_logging()
    timings = {}

    def run(name, config, **kw):
        start = time.time()
        trainer = run_training(base_args(data, out, name, config, **kw), destroy_process_group=False)
        timings[name] = round(time.time() - start, 2)
        return trainer

    # ZeRO stages, offload, bf16, activation checkpointing: 3 updates each
    for name in ("zero0", "zero1", "zero2", "zero3", "zero3_offload", "zero2_bf16", "zero2_actckpt"):
        trainer = run(name, f"{name}.json")
        if name in ("zero0", "zero3"):
            save_logits(trainer, os.path.join(out, f"{name}.logits.pt"))
        del trainer

    # save at 3, resume from it, compare with an uninterrupted 6-update run
    for config in ("zero1", "zero3"):
        run(f"{config}_full", f"{config}.json", updates=6, extra=["--save-interval-updates", "3"])
        run(
            f"{config}_resumed", f"{config}.json", updates=6,
            extra=["--restore-file", os.path.join(out, f"{config}_full", "checkpoint_1_3")],
        )

    # (last: a pipeline engine leaves DeepSpeed's global model-parallel
    # groups set, which a later plain engine in the same process trips on)
    # 2-stage pipeline (ZeRO-1) against data parallelism from the same
    # weights: pipeline batches b0,b1 (accumulation 2) = data-parallel rank 0
    # b0 + rank 1 b1; no dropout (stages draw from their own random streams)
    import torch.distributed as dist

    init = os.path.join(out, "init.pt")
    if dist.get_rank() == 0:
        from xlm_ds.engine.export import export

        export(os.path.join(out, "zero0"), init)
    dist.barrier()
    same = ["--dropout", "0", "--attention-dropout", "0", "--finetune-from-model", init]
    # every objective, and language-specific lower blocks; 10 updates each,
    # from the weights of the same seed
    no_dropout = ["--dropout", "0", "--attention-dropout", "0"]
    mixed = dict(objectives="mlm tlm clm", updates=10)
    shared = dict(objectives="mlm tlm", updates=10, extra=["--shared-top-layers", "1"])
    run("dp_mlm", "zero0.json", objectives="mlm", extra=same)
    run("dp_mixed", "zero0.json", **mixed, extra=no_dropout)
    run("dp_shared", "zero0.json", **{**shared, "extra": shared["extra"] + no_dropout})
    trainer = run("pipeline", "pipeline.json", objectives="mlm", extra=same + ["--update-freq", "2"])
    save_logits(trainer, os.path.join(out, "pipeline.logits.pt"))
    del trainer
    run("pipe_mixed", "pipeline.json", **mixed, extra=no_dropout + ["--update-freq", "2"])
    run("pipe_shared", "pipeline.json", **{**shared, "extra": shared["extra"] + no_dropout + ["--update-freq", "2"]})

    if dist.get_rank() == 0:
        with open(os.path.join(out, "done.json"), "w") as f:
            json.dump({"timings": timings}, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
