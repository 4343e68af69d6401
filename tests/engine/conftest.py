"""Fixtures of the DeepSpeed engine tests (shared as fixtures: the suite
runs with --import-mode=importlib)."""
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    """A clean launch environment: one thread per process (2-core
    machines), DeepSpeed's CPU accelerator, no inherited rank variables."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("SLURM_") and k not in (
            "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def engine_env():
    """``engine_env(**extra)``: environment for launched ranks."""
    return _env


@pytest.fixture(scope="session")
def free_port():
    return _free_port


@pytest.fixture(scope="session")
def ds_data(tmp_path_factory):
    """The shipped sample corpus (de/en/fr + de-en, en-fr), 2000 types."""
    out = tmp_path_factory.mktemp("engine") / "data"
    subprocess.run(
        [sys.executable, "-m", "xlm_ds.cli.prepare", "--corpus",
         os.path.join(REPO, "xlm_ds", "sample_corpus", "corpus.yaml"), "--out", str(out), "--vocab-size", "2000"],
        cwd=REPO, env=_env(), check=True, capture_output=True, timeout=300,
    )
    return str(out)
