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


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    if os.environ.get("XLM_DS_SKIP_SLURM") == "1":
        pytest.skip("XLM_DS_SKIP_SLURM=1")
    cluster_mod = _load_cluster_module()
    workdir = tmp_path_factory.mktemp("slurm")
    cluster = cluster_mod.LocalSlurm(str(workdir), cpus=2, log=lambda m: sys.stderr.write(m + "\n"))
    try:
        cluster.start()
    except cluster_mod.SlurmUnavailable as e:
        cluster.stop()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no SLURM: {e}")
    yield cluster
    cluster.stop()
    for name, proc in cluster.procs.items():
        assert proc.poll() is not None, f"{name} still running"
