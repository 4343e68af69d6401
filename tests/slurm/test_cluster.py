"""Two test clusters on one machine stay independent: pytest-xdist gives
each worker its own session-scoped cluster, and the worker that finishes
first stops its cluster while the other's jobs still run. (CI, 2026-12-07:
the second cluster reused the first one's munged, the first stopped it, and
every sbatch of the second failed authentication until its 600 s timeout.)"""
import subprocess

import pytest

pytestmark = pytest.mark.slurm


def test_a_cluster_keeps_working_after_another_one_stops(clusters, tmp_path):
    first = clusters.start(tmp_path / "first")
    try:
        second = clusters.start(tmp_path / "second")
    except BaseException:
        clusters.stop(first)
        raise
    try:
        clusters.stop(first)
        out = tmp_path / "job.out"
        proc = subprocess.run(["sbatch", "--wait", "--parsable", "--time=1:00", "--output", str(out),
                               "--wrap", "srun echo still-authenticated"],
                              env=second.env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr + second.logs()
        assert "still-authenticated" in out.read_text()
    finally:
        clusters.stop(second)
