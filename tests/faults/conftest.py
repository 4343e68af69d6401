"""Helpers of the fault-injection suite: tiny fairseq-train runs through
tests/faults/fairseq_probe.py (fairseq-train + injected faults + exact
per-update losses), in subprocesses that see this checkout's xlm_ds."""
import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBE = os.path.join(REPO, "tests", "faults", "fairseq_probe.py")


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FAULT_")}
    e.update(PYTHONPATH=REPO + os.pathsep + e.get("PYTHONPATH", ""), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
             DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def fairseq_args(data, save, *extra, updates=30, validate=False):
    """``validate``: without ``--disable-validation`` (EXTRA says when)."""
    return [
        data, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm", "--arch", "xlm_tiny",
        "--criterion", "xlm_lm", "--objectives", "mlm tlm", "--tokens-per-sample", "32", "--batch-size", "8",
        "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5",
        "--max-update", str(updates), "--save-interval-updates", "10", "--no-epoch-checkpoints", "--cpu",
        "--save-dir", str(save), *([] if validate else ["--disable-validation"]), "--seed", "3",
        "--log-interval", "1", "--log-format", "simple", *map(str, extra),
    ]


def run_probe(data, save, losses, *extra, updates=30, faults=None, expect_rc=0, timeout=300):
    """fairseq-train (with faults) -> (returncode, log)."""
    return run_probe_args(fairseq_args(data, save, *extra, updates=updates), save, losses, faults, expect_rc, timeout)


def run_probe_args(args, save, losses, faults=None, expect_rc=0, timeout=300):
    """The probe with a whole fairseq-train command line (another task)."""
    cmd = [sys.executable, PROBE, *map(str, args)]
    return _run(cmd, env(FAULT_LOSSES=losses, **(faults or {})), save, expect_rc, timeout)


def _run(cmd, run_env, save, expect_rc, timeout):
    """Runs a probe, appends its log to SAVE.log -> (returncode, log)."""
    proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    log = proc.stdout + proc.stderr
    with open(str(save) + ".log", "a") as f:
        f.write(log)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, f"rc {proc.returncode}, expected {expect_rc}:\n{log[-4000:]}"
    return proc.returncode, log


def read_losses(path):
    """{update: row} of the *last* run that wrote each update."""
    rows = {}
    for line in open(path):
        r = json.loads(line)
        rows[r["update"]] = r
    return rows


def model_state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="session")
def fairseq_full(prepared_sample, tmp_path_factory):
    """The uninterrupted reference: 30 updates, checkpoints at 10/20/30."""
    out = tmp_path_factory.mktemp("fairseq_full")
    losses = str(out / "losses.jsonl")
    run_probe(prepared_sample, out / "ckpt", losses)
    return {"dir": out / "ckpt", "losses": read_losses(losses)}


@pytest.fixture(scope="session")
def probe():
    """The helpers above (test modules cannot import conftest under
    --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(run=run_probe, run_args=run_probe_args, args=fairseq_args, losses=read_losses,
                                 model=model_state, env=env, repo=REPO)


DS_PROBE = os.path.join(REPO, "tests", "faults", "ds_probe.py")


def ds_run(data, save, nproc, config, *extra, updates=10, faults=None, expect_rc=0, timeout=300, validate=False):
    """xlm-ds-train under torchrun (gloo, CPU) -> (returncode, log);
    ``validate``: without ``--disable-validation`` (EXTRA says when)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = env(**(faults or {}))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    e = {k: v for k, v in e.items() if not k.startswith("SLURM_")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(port), DS_PROBE, data, "--task", "xlm", "--arch", "xlm_tiny",
           "--criterion", "xlm_lm", "--objectives", "mlm tlm", "--tokens-per-sample", "32", "--batch-size", "8",
           "--optimizer", "adam", "--lr", "1e-3", "--max-update", str(updates), "--save-interval-updates", "4",
           "--seed", "3", "--log-interval", "1000", "--log-format", "simple",
           *([] if validate else ["--disable-validation"]), "--save-dir", str(save),
           "--ds-metrics-jsonl", str(save) + ".jsonl",
           "--deepspeed-config", os.path.join(REPO, "ds_configs", config), *map(str, extra)]
    return _run(cmd, e, save, expect_rc, timeout)


@pytest.fixture(scope="session")
def ds():
    import types

    return types.SimpleNamespace(run=ds_run, losses=read_losses)


@pytest.fixture(scope="session")
def ds_full(prepared_sample, tmp_path_factory):
    """Uninterrupted xlm-ds-train reference: 2 ranks, ZeRO-2, 10 updates,
    checkpoints at 4/8/10."""
    out = tmp_path_factory.mktemp("ds_full")
    ds_run(prepared_sample, out / "ckpt", 2, "zero2.json")
    return {"dir": out / "ckpt", "losses": read_losses(str(out / "ckpt") + ".jsonl")}
