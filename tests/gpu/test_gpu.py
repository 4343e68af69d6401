"""What only a GPU exercises (``pytest -m gpu``; ``benchmarks/gpu_check.sh``
runs them). Skipped where torch sees no CUDA device, so ``make test`` on the
CPU machines only checks that they collect.

- xlm-ds-train with ZeRO-2 and ZeRO-3 in bf16 and ZeRO-2 in fp16 with
  dynamic loss scaling, one rank on one GPU (NCCL): losses finite and
  falling, fp16's loss scale logged;
- SDPA takes the flash kernel when there is no padding mask and the
  memory-efficient one with a mask (restricting SDPA to that kernel makes
  any other choice an error);
- the LM head scores only the masked positions, and those logits equal the
  full head's at the same positions.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(data, out, config, updates=20):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DS_ACCELERATOR="cuda", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", "0"))
    metrics = os.path.join(out, "metrics.jsonl")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port", "29517",
           "-m", "xlm_ds.cli.train", data, "--task", "xlm", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
           "--objectives", "mlm tlm", "--tokens-per-sample", "64", "--batch-size", "16", "--optimizer", "adam",
           "--lr", "2e-3", "--max-update", str(updates), "--seed", "1", "--log-interval", "1",
           "--log-format", "simple", "--disable-validation", "--save-dir", os.path.join(out, "ckpt"),
           "--ds-metrics-jsonl", metrics, "--deepspeed-config", os.path.join("ds_configs", config)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    with open(metrics) as f:
        rows = [json.loads(line) for line in f]
    return rows, log


@pytest.mark.parametrize("config", ["zero2_bf16.json", "zero3_bf16.json", "zero2_fp16.json"])
def test_deepspeed_trains_on_one_gpu(prepared_sample, tmp_path, config):
    rows, log = _train(prepared_sample, str(tmp_path), config)
    losses = [r["loss"] for r in rows]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
    assert "nccl" in log.lower() or "cuda" in log.lower()
    if "fp16" in config:
        assert "loss_scale" in log, log[-3000:]


def _attention(device="cuda"):
    from xlm_ds.models.attention import SelfAttention

    torch.manual_seed(0)
    return SelfAttention(256, 4, dropout=0.1).to(device).train()


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_takes_the_fused_kernels(masked, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    attn = _attention()
    x = torch.randn(4, 128, 256, device="cuda", requires_grad=True)
    pad = torch.zeros(4, 128, dtype=torch.bool, device="cuda")
    pad[0, 100:] = True
    backend = SDPBackend.EFFICIENT_ATTENTION if masked else SDPBackend.FLASH_ATTENTION
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([backend]):
        out = attn(x, key_padding_mask=pad if masked else None, causal=causal)
        out.float().sum().backward()
    assert out.shape == x.shape and torch.isfinite(x.grad).all()


def test_lm_head_scores_only_masked_positions(pretrained_tiny):
    from xlm_ds.interop.checkpoint import load_xlm_model

    model = load_xlm_model(pretrained_tiny)[0].cuda()
    tokens = torch.randint(5, 100, (4, 64), device="cuda")
    masked = torch.rand(tokens.shape, device="cuda") < 0.15
    with torch.no_grad():
        part, _ = model(tokens, masked_tokens=masked)
        full, _ = model(tokens)
    assert part.shape[0] == int(masked.sum())
    torch.testing.assert_close(part, full[masked], rtol=1e-4, atol=1e-4)
