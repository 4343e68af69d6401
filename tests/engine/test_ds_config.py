"""DeepSpeed config checks: each mistake is reported by message, before any
process group exists."""
import glob
import json
import os
import subprocess
import sys
import time

import pytest

from xlm_ds.engine import ds_config
from xlm_ds.engine.ds_config import DSConfigError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = os.path.join(REPO, "ds_configs")


def write(tmp_path, config, name="ds.json"):
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return str(path)


def check(config, world=2, **kw):
    kw.setdefault("client_optimizer", "adam")
    return ds_config.validate(config, "cfg.json", world, **kw)


def error_of(config, world=2, **kw):
    with pytest.raises(DSConfigError) as e:
        check(config, world, **kw)
    return str(e.value)


def test_shipped_configs_are_valid():
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.json")))
    assert {"zero0.json", "zero1.json", "zero2.json", "zero3.json", "zero3_offload.json", "zero2_bf16.json",
            "zero3_fp16.json", "zero2_actckpt.json", "pipeline.json"} <= set(names)
    for name in names:
        ds = ds_config.load_and_validate(os.path.join(CONFIGS, name), 2, batch_size=8, client_optimizer="adam")
        assert ds.train_batch_size == 8 * ds.gradient_accumulation_steps * ds.data_parallel_size
    pipe = ds_config.load_and_validate(os.path.join(CONFIGS, "pipeline.json"), 4, batch_size=8,
                                       update_freq=[4], client_optimizer="adam")
    assert (pipe.pipeline_stages, pipe.data_parallel_size, pipe.train_batch_size) == (2, 2, 64)


def test_file_not_found_suggests_the_close_name(tmp_path):
    (tmp_path / "zero2.json").write_text("{}")
    with pytest.raises(DSConfigError, match=r"zero22\.json: DeepSpeed config not found.*did you mean .*zero2\.json"):
        ds_config.load(str(tmp_path / "zero22.json"))


def test_invalid_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "train_micro_batch_size_per_gpu": 8,\n  "zero_optimization": {"stage": 2\n')
    with pytest.raises(DSConfigError) as e:
        ds_config.load(path)
    msg = str(e.value)
    assert f"{path}:4:1: invalid JSON" in msg, msg
    assert "line 4" in msg


def test_duplicate_key(tmp_path):
    path = write(tmp_path, '{"zero_optimization": {"stage": 1}, "zero_optimization": {"stage": 2}}')
    with pytest.raises(DSConfigError, match="duplicate key 'zero_optimization'"):
        ds_config.load(path)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"train_micro_batch_size_per_gpu": 8, "zero_optimisation": {"stage": 2}},
         "unknown top-level key 'zero_optimisation' (did you mean 'zero_optimization'?)"),
        ({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stgae": 2}},
         "unknown key 'zero_optimization.stgae' (did you mean 'stage'?)"),
        ({"train_micro_batch_size_per_gpu": 8, "zero_force_ds_cpu_optimizer": False,
          "zero_optimization": {"stage": 3, "offload_optimizer": {"devcie": "cpu"}}},
         "unknown key 'zero_optimization.offload_optimizer.devcie' (did you mean 'device'?)"),
        ({"train_micro_batch_size_per_gpu": 8, "bf16": {"enable": True}},
         "unknown key 'bf16.enable' (did you mean 'enabled'?)"),
        ({"train_micro_batch_size_per_gpu": 8, "pipeline": {"stage": 2}},
         "unknown key 'pipeline.stage' (did you mean 'stages'?)"),
        ({"train_micro_batch_size_per_gpu": 8, "optimizer": {"type": "Adam", "param": {}}},
         "unknown key 'optimizer.param' (did you mean 'params'?)"),
        ({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 2, "reduce_bucket_size": "big"}},
         "zero_optimization.reduce_bucket_size"),
    ],
)
def test_unknown_keys_and_bad_values(config, message):
    kw = {"client_optimizer": None} if "optimizer" in config else {}
    assert message in error_of(config, **kw)


def test_batch_arithmetic_states_the_formula():
    msg = error_of({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 16, "gradient_accumulation_steps": 1})
    assert ("train_batch_size 64 != train_micro_batch_size_per_gpu × gradient_accumulation_steps × "
            "data-parallel size = 16 × 1 × 2 = 32") in msg
    msg = error_of({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 16, "gradient_accumulation_steps": 1,
                    "pipeline": {"stages": 2}}, world=4)
    assert "= 16 × 1 × 2 = 32 with data-parallel size 2 (world size 4 / 2 pipeline stages)" in msg
    assert "not a multiple" in error_of({"train_batch_size": 60, "train_micro_batch_size_per_gpu": 16})
    # derived like DeepSpeed does, and written back for it
    ds = check({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 16}, world=2)
    assert (ds.gradient_accumulation_steps, ds.config["gradient_accumulation_steps"]) == (2, 2)
    ds = check({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"},
               world=2, batch_size=8, update_freq=[3])
    assert (ds.micro_batch_size, ds.gradient_accumulation_steps, ds.train_batch_size) == (8, 3, 48)


def test_fairseq_options_must_agree_with_the_config():
    cfg = {"train_micro_batch_size_per_gpu": 16, "gradient_accumulation_steps": 2}
    assert "--batch-size 8 disagrees with cfg.json: train_micro_batch_size_per_gpu 16" in error_of(cfg, batch_size=8)
    assert "--update-freq 4 disagrees with cfg.json: gradient_accumulation_steps 2" in error_of(cfg, update_freq=[4])
    assert "--clip-norm 1.0 disagrees" in error_of({**cfg, "gradient_clipping": 0.5}, clip_norm=1.0)
    assert check(cfg, clip_norm=1.0).config["gradient_clipping"] == 1.0
    assert "keep one" in error_of({**cfg, "optimizer": {"type": "Adam"}}, client_optimizer="adam")
    assert "no optimizer" in error_of(cfg, client_optimizer=None)
    assert "--lr-scheduler inverse_sqrt and cfg.json's \"scheduler\"" in error_of(
        {**cfg, "scheduler": {"type": "WarmupLR"}}, lr_scheduler="inverse_sqrt")
    assert "--fp16/--bf16 are fairseq's own" in error_of(cfg, fairseq_bf16=True)
    ds_opt = {**cfg, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}
    assert "optimizer.params.lr 0.001 disagrees with --lr 0.25" in error_of(ds_opt, client_optimizer=None, lr=0.25)
    assert check(ds_opt, client_optimizer=None, lr=1e-3).ds_optimizer


def test_pipeline_refuses_zero_2_and_3():
    msg = error_of({"train_micro_batch_size_per_gpu": 8, "pipeline": {"stages": 2}, "zero_optimization": {"stage": 2}})
    assert "pipeline parallelism (pipeline.stages=2) cannot be combined with ZeRO stage 2" in msg
    assert "set zero_optimization.stage to 1" in msg
    assert "does not divide the world size 3" in error_of(
        {"train_micro_batch_size_per_gpu": 8, "pipeline": {"stages": 2}}, world=3)


def test_offload_and_precision_rules():
    offload = {"train_micro_batch_size_per_gpu": 8,
               "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}
    assert "needs \"zero_force_ds_cpu_optimizer\": false" in error_of(offload)
    assert check({**offload, "zero_force_ds_cpu_optimizer": False}).offload_optimizer
    assert "offload_param needs stage 3" in error_of(
        {"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}})
    assert "fp16 and bf16 are both enabled" in error_of(
        {"train_micro_batch_size_per_gpu": 8, "fp16": {"enabled": True}, "bf16": {"enabled": True}})

    class NoFp16:
        def is_fp16_supported(self):
            return False

        def device_name(self):
            return "cpu"

    assert "does not support it; use a bf16 config on CPU" in error_of(
        {"train_micro_batch_size_per_gpu": 8, "fp16": {"enabled": True}}, accelerator=NoFp16())


def test_activation_partitioning_needs_model_parallelism():
    msg = error_of({"train_micro_batch_size_per_gpu": 8,
                    "activation_checkpointing": {"partition_activations": True, "cpu_checkpointing": True}})
    assert "activation_checkpointing.partition_activations/cpu_checkpointing work on activations partitioned" in msg


def test_every_problem_is_listed_at_once():
    msg = error_of({"train_batch_size": 7, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                    "zero_optimisation": {}, "pipeline": {"stages": 2}, "zero_optimization": {"stage": 3}})
    assert len(msg.splitlines()) >= 3


def test_cli_reports_config_errors_before_joining_a_process_group(tmp_path):
    """A launch of 2 ranks where only rank 0 exists: joining the process
    group would block; the config error must come first, exit status 2."""
    bad = write(tmp_path, {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 16,
                           "gradient_accumulation_steps": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE"))}
    env.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1",
               OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "xlm_ds.train", str(tmp_path), "--task", "xlm", "--arch", "xlm_tiny",
         "--criterion", "xlm_lm", "--optimizer", "adam", "--deepspeed-config", bad],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"xlm-ds-train: error: {bad}: train_batch_size 64 != " in proc.stderr
    assert "= 16 × 1 × 2 = 32" in proc.stderr
    assert time.time() - start < 60
