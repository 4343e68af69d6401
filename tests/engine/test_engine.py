"""DeepSpeed engine, multi-process on CPU (gloo): ZeRO 0-3, ZeRO-3 offload,
bf16, activation checkpointing and a 2-stage pipeline train; fp32 losses
agree across stages; save -> resume continues exactly; export -> fairseq
gives the engine's logits; the real entry point runs under torchrun, a
SLURM (srun) environment and the deepspeed launcher.

One torchrun launch (tests/engine/harness.py) trains all the
configurations in-process; its outputs are checked by several tests.
"""
import glob
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from xlm_ds.engine.export import export
from xlm_ds.models.pretrained import PretrainedXLM

pytestmark = pytest.mark.slow

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PYTHON = sys.executable
FP32_STAGES = ("zero1", "zero2", "zero3", "zero3_offload", "zero2_actckpt")


def _run(cmd, env, timeout, log):
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    with open(log, "w") as f:
        f.write(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, f"{' '.join(cmd[:6])}... failed, see {log}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def harness(ds_data, tmp_path_factory, engine_env, free_port):
    out = tmp_path_factory.mktemp("harness")
    _run(
        [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(free_port()), os.path.join(REPO, "tests", "engine", "harness.py"), ds_data, str(out)],
        engine_env(), 600, str(out / "harness.log"),
    )
    assert (out / "done.json").is_file()
    return out


def losses(out, name):
    rows = [json.loads(line) for line in open(os.path.join(out, f"{name}.jsonl"))]
    return {r["update"]: r for r in rows}


def test_fp32_losses_agree_across_zero_stages(harness):
    ref = losses(harness, "zero0")
    assert sorted(ref) == [1, 2, 3]
    for name in FP32_STAGES:
        got = losses(harness, name)
        assert sorted(got) == [1, 2, 3], name
        for u in ref:
            assert got[u]["loss"] == pytest.approx(ref[u]["loss"], abs=1e-5), (name, u)
            assert got[u]["gnorm"] == pytest.approx(ref[u]["gnorm"], rel=1e-4), (name, u)
            for key in ref[u]:
                if key.endswith("_loss"):
                    assert got[u][key] == pytest.approx(ref[u][key], abs=1e-4), (name, u, key)


def test_bf16_trains_close_to_fp32(harness):
    ref, got = losses(harness, "zero0"), losses(harness, "zero2_bf16")
    for u in ref:
        assert math.isfinite(got[u]["loss"]) and math.isfinite(got[u]["gnorm"])
        assert abs(got[u]["loss"] - ref[u]["loss"]) < 0.05


@pytest.mark.parametrize("stage", ["zero1", "zero3"])
def test_resume_continues_exactly(harness, stage, tmp_path):
    full, resumed = losses(harness, f"{stage}_full"), losses(harness, f"{stage}_resumed")
    assert sorted(full) == [1, 2, 3, 4, 5, 6]
    assert sorted(resumed) == [4, 5, 6]
    for u in (4, 5, 6):
        assert resumed[u]["loss"] == full[u]["loss"], u
        assert resumed[u]["gnorm"] == pytest.approx(full[u]["gnorm"], rel=1e-9, abs=1e-12), u
        assert {k for k in resumed[u] if k.endswith("_loss")} == {k for k in full[u] if k.endswith("_loss")}
    a = export(os.path.join(harness, f"{stage}_full"), str(tmp_path / "a.pt"))["model"]
    b = export(os.path.join(harness, f"{stage}_resumed"), str(tmp_path / "b.pt"))["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pipeline_matches_data_parallel(harness, tmp_path):
    """2 stages with accumulation 2 over b0, b1 = 2 data-parallel ranks over
    b0 and b1, from the same weights: same losses and same weights after."""
    dp, pipe = losses(harness, "dp_mlm"), losses(harness, "pipeline")
    assert sorted(pipe) == [1, 2, 3]
    for u in dp:
        assert pipe[u]["loss"] == pytest.approx(dp[u]["loss"], abs=1e-5), u
        assert pipe[u]["gnorm"] == pytest.approx(dp[u]["gnorm"], rel=1e-4), u
    a = export(os.path.join(harness, "dp_mlm"), str(tmp_path / "dp.pt"))["model"]
    b = export(os.path.join(harness, "pipeline"), str(tmp_path / "pipe.pt"))["model"]
    assert a.keys() == b.keys()
    for k in a:
        # the key bias has a zero gradient in exact arithmetic (softmax is
        # shift-invariant): Adam turns rounding noise into steps of ~lr
        atol = 3e-3 if k.endswith("k_proj.bias") else 1e-5
        assert torch.allclose(a[k], b[k], atol=atol), k
    # the tied projection stayed tied
    assert torch.equal(b["encoder.lm_head.weight"], b["encoder.embed_tokens.weight"])
    layer_files = glob.glob(os.path.join(harness, "pipeline", "checkpoint_1_3", "layer_*-model_states.pt"))
    assert len(layer_files) >= 4


@pytest.mark.parametrize("name", ["mixed", "shared"])
def test_pipeline_trains_every_objective_and_shared_layers_as_data_parallel(harness, name, tmp_path):
    """2 stages over the objectives' batches of b0, b1 = 2 data-parallel
    ranks over b0 and b1: mlm+tlm+clm, and --shared-top-layers (lower
    blocks one copy per language), 10 updates from the same seed's weights:
    the same losses (per objective and language too) to 1e-5, and the same
    weights after."""
    dp, pipe = losses(harness, f"dp_{name}"), losses(harness, f"pipe_{name}")
    assert sorted(pipe) == sorted(dp) == list(range(1, 11))
    kinds = {"mixed": ("mlm", "tlm", "clm"), "shared": ("mlm", "tlm")}[name]
    for u in dp:
        assert pipe[u]["loss"] == pytest.approx(dp[u]["loss"], abs=1e-5), u
        assert pipe[u]["gnorm"] == pytest.approx(dp[u]["gnorm"], rel=1e-4), u
        keys = {k for k in dp[u] if k.endswith("_loss")}
        assert {f"{kind}_loss" for kind in kinds} <= keys and keys == {k for k in pipe[u] if k.endswith("_loss")}
        for key in keys:
            assert pipe[u][key] == pytest.approx(dp[u][key], abs=1e-5), (u, key)
    a = export(os.path.join(harness, f"dp_{name}"), str(tmp_path / "dp.pt"))["model"]
    b = export(os.path.join(harness, f"pipe_{name}"), str(tmp_path / "pipe.pt"))["model"]
    assert a.keys() == b.keys()
    if name == "shared":
        assert any(".per_lang.2." in k for k in a)  # fr's copy of the lower block
    for k in a:
        atol = 3e-3 if k.endswith("k_proj.bias") else 1e-4
        assert torch.allclose(a[k], b[k], atol=atol), k


@pytest.mark.parametrize("name", ["zero0", "zero3", "pipeline"])
def test_export_loads_in_fairseq_with_the_engines_logits(harness, ds_data, name, tmp_path, engine_env):
    out = str(tmp_path / f"{name}.pt")
    if name == "zero3":  # the console script, once
        _run([PYTHON, "-m", "xlm_ds.cli.export", os.path.join(harness, name), "--out", out],
             engine_env(), 120, str(tmp_path / "export.log"))
    else:
        export(os.path.join(harness, name), out)
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    assert {"args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state",
            "last_optimizer_state"} <= set(ckpt)
    assert ckpt["task_state"]["languages"] == ["de", "en", "fr"]
    assert ckpt["optimizer_history"][-1]["num_updates"] == 3
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([out], arg_overrides={"data": ds_data})
    model = models[0].eval()
    saved = torch.load(os.path.join(harness, f"{name}.logits.pt"), weights_only=False)
    mlm = saved["mlm"]
    with torch.no_grad():
        logits, _ = model(**mlm["net_input"], masked_tokens=mlm["target"].ne(task.dictionary.pad()))
    assert logits.shape == saved["logits"].shape
    assert torch.allclose(logits, saved["logits"], atol=1e-4), (logits - saved["logits"]).abs().max()


def test_exported_checkpoint_initialises_the_mt_encoder(harness, ds_data, tmp_path):
    out = str(tmp_path / "zero3.pt")
    state = export(os.path.join(harness, "zero3"), out)
    pre = PretrainedXLM.load(out)
    assert pre.languages == ["de", "en", "fr"] and pre.dictionary_symbols
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        ds_data, "--user-dir", "xlm_ds", "--task", "xlm_translation", "-s", "de", "-t", "en",
        "--arch", "xlm_transformer", "--cpu", "--init-encoder", out,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    mt = task.build_model(cfg.model).state_dict()
    for name in ("layers.0.fc1.weight", "layers.1.self_attn.q_proj.weight", "embed_positions.weight"):
        assert torch.equal(mt[f"encoder.{name}"], state["model"][f"encoder.{name}"]), name


# --------------------------------------------------------------------------
# the entry point under real launchers
# --------------------------------------------------------------------------
FAIRSEQ_TRAIN_TAGS = {"loss", "ppl", "wps", "ups", "wpb", "bsz", "lr", "gnorm", "train_wall", "wall"}
FAIRSEQ_VALID_TAGS = {"loss", "ppl", "wps", "wpb", "bsz"}


def _cli_args(data, save_dir, config, updates, *extra):
    return [
        "-m", "xlm_ds.train", data, "--task", "xlm", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
        "--objectives", "mlm tlm", "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam",
        "--lr", "1e-3", "--max-update", str(updates), "--log-format", "simple", "--save-dir", save_dir,
        "--deepspeed-config", os.path.join(REPO, "ds_configs", config),
        "--ds-metrics-jsonl", os.path.join(save_dir, "metrics.jsonl"), *extra,
    ]


def _tb_tags(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for sub in sorted(os.listdir(logdir)):
        acc = EventAccumulator(os.path.join(logdir, sub))
        acc.Reload()
        tags[sub] = set(acc.Tags()["scalars"])
    return tags


def test_cli_under_srun_with_tensorboard(ds_data, tmp_path, engine_env, free_port):
    """Two ranks that know only SLURM's variables (what srun gives them)."""
    save, tb = str(tmp_path / "ckpt"), str(tmp_path / "tb")
    port = free_port()
    procs = []
    for rank in range(2):
        env = engine_env(
            SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NODEID="0", SLURM_NTASKS="2",
            SLURM_STEP_NUM_TASKS="2", SLURM_STEP_NODELIST="localhost", SLURM_JOB_NODELIST="localhost",
            SLURM_TASKS_PER_NODE="2", SLURM_JOB_ID="777", SLURM_STEP_ID="0", MASTER_PORT=str(port),
        )
        cmd = [PYTHON, *_cli_args(ds_data, save, "zero2.json", 4, "--log-interval", "2",
                                  "--tensorboard-logdir", tb)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    (tmp_path / "rank0.log").write_text(outs[0])
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "launch: slurm, rank 0 of 2" in outs[0]
    rows = [json.loads(line) for line in open(os.path.join(save, "metrics.jsonl"))]
    assert [r["update"] for r in rows] == [1, 2, 3, 4]
    assert os.path.isfile(os.path.join(save, "latest"))
    tags = _tb_tags(tb)
    assert set(tags) == {"train_inner", "train", "valid"}
    for sub, generic in (("train_inner", FAIRSEQ_TRAIN_TAGS), ("train", FAIRSEQ_TRAIN_TAGS),
                         ("valid", FAIRSEQ_VALID_TAGS)):
        assert generic <= tags[sub], (sub, generic - tags[sub])
        extra = tags[sub] - generic
        assert {"mlm_loss", "tlm_loss", "mlm_ppl", "tlm_ppl"} <= extra
        # fairseq-train's per-objective / per-language names, nothing else
        import re

        assert all(re.fullmatch(r"(mlm|tlm)(_(de|en|fr))?_(loss|ppl)", t) for t in extra), extra
        assert any(re.fullmatch(r"mlm_(de|en|fr)_loss", t) for t in extra)


def test_cli_under_the_deepspeed_launcher(ds_data, tmp_path, engine_env, free_port):
    save = str(tmp_path / "ckpt")
    launcher = os.path.join(os.path.dirname(PYTHON), "deepspeed")
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(free_port()), "--module",
           *_cli_args(ds_data, save, "zero1.json", 2, "--no-save", "--disable-validation")[1:]]
    proc = _run(cmd, engine_env(), 300, str(tmp_path / "ds.log"))
    rows = [json.loads(line) for line in open(os.path.join(save, "metrics.jsonl"))]
    assert [r["update"] for r in rows] == [1, 2]
    assert "launch: torchrun/deepspeed, rank 0 of 2" in proc.stdout
