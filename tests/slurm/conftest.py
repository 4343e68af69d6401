"""One real single-node SLURM per test session (cluster.py), shared by the
pretraining and the preparation jobs: starting it costs seconds and apt
installs the first time. Skipped when XLM_DS_SKIP_SLURM=1, or when SLURM
cannot be started outside CI (in CI that is a failure)."""
import importlib.util
import os
import sys

import pytest


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location("xlm_ds_test_slurm_cluster",
                                                  os.path.join(os.path.dirname(__file__), "cluster.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def start_cluster(workdir):
    """A started LocalSlurm in workdir; skips the test where SLURM cannot be
    had outside CI (in CI that is a failure)."""
    if os.environ.get("XLM_DS_SKIP_SLURM") == "1":
        pytest.skip("XLM_DS_SKIP_SLURM=1")
    cluster_mod = _load_cluster_module()
    cluster = cluster_mod.LocalSlurm(str(workdir), cpus=2, log=lambda m: sys.stderr.write(m + "\n"))
    try:
        cluster.start()
    except cluster_mod.SlurmUnavailable as e:
        cluster.stop()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no SLURM: {e}")
    return cluster


def stop_cluster(cluster):
    cluster.stop()
    for name, proc in cluster.procs.items():
        assert proc.poll() is not None, f"{name} still running"


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    stop_cluster(cluster)


@pytest.fixture(scope="session")
def clusters():
    """start_cluster / stop_cluster for tests that need clusters of their
    own (test modules cannot import conftest under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(start=start_cluster, stop=stop_cluster)
