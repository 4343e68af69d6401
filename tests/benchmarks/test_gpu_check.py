"""benchmarks/gpu_check.sh on a machine without a GPU: it says it skipped
and succeeds (its GPU path is run on a GPU machine, docs/benchmarks.md)."""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_check_skips_cleanly_without_a_gpu(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu_check: skipped: torch sees no CUDA GPU" in proc.stdout
    assert not (tmp_path / "out").exists()  # nothing half-made
