"""``sbatch --array=0-2 slurm/prepare.sh`` on the real single-node SLURM of
conftest.py: three array tasks prepare the shipped sample as three shards
(task 0 learns the vocabulary, the others wait for it, the last to finish
writes the top manifest); the shards hold the one-machine preparation's
dictionary and ids, and fairseq-train trains 20 updates on them.

About 1.5 minutes on 2 cores (the cluster itself is shared with
test_slurm_pretrain.py)."""
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(REPO, "xlm_ds", "sample_corpus", "corpus.yaml")
SHARDS = 3


def _equality_checks():
    """tests/cli/test_prepare_shards.py's comparison with the one-machine
    preparation, the same check for the local and the SLURM stages."""
    path = os.path.join(REPO, "tests", "cli", "test_prepare_shards.py")
    spec = importlib.util.spec_from_file_location("xlm_ds_test_prepare_shards", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read(path):
    return open(path, errors="replace").read() if os.path.exists(path) else ""


@pytest.fixture(scope="module")
def array_job(slurm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepare_array")
    out, log = tmp / "out", str(tmp / "task-%a.out")
    cmd = ["sbatch", "--wait", "--parsable", "--job-name", "xlmds-prepare-test", f"--array=0-{SHARDS - 1}",
           "--cpus-per-task=1", "--time=10:00", "--output", log,
           os.path.join(REPO, "slurm", "prepare.sh"), CORPUS, str(out), "--vocab-size", "2000"]
    env = slurm.env(XLM_DS_PYTHON=sys.executable, OMP_NUM_THREADS="1", WAIT_FOR_VOCAB="300")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    logs = "".join(_read(str(tmp / f"task-{i}.out")) for i in range(SHARDS))
    assert proc.returncode == 0, proc.stderr + logs[-6000:] + slurm.logs()
    return dict(out=out, job_id=proc.stdout.strip().split(";")[0], logs=logs)


def test_array_tasks_complete_and_write_the_top_manifest(slurm, array_job):
    for i in range(SHARDS):
        job = slurm.job(f"{array_job['job_id']}_{i}")
        assert job.get("JobState") == "COMPLETED" and job.get("ExitCode") == "0:0", job
        assert f"shard {i} of {SHARDS}" in array_job["logs"]
    manifest = json.loads((array_job["out"] / "manifest.json").read_text())
    assert manifest["shards"] == [f"shard{i}" for i in range(SHARDS)]
    assert f"{array_job['out']} complete" in array_job["logs"]
    assert not [p for p in array_job["out"].rglob("*") if ".tmp-" in p.name]


def test_shards_hold_the_one_machine_dictionary_and_ids(array_job, prepared_sample):
    _equality_checks().assert_same_as_one_machine(pathlib.Path(prepared_sample), array_job["out"], SHARDS)


def test_fairseq_train_runs_20_updates_on_the_shards(array_job, tmp_path):
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(array_job["out"]),
           "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm", "--arch", "xlm_tiny",
           "--criterion", "xlm_lm", "--objectives", "mlm tlm", "--tokens-per-sample", "32", "--batch-size", "8",
           "--optimizer", "adam", "--lr", "2e-3", "--cpu", "--max-update", "20", "--save-dir", str(tmp_path),
           "--no-save", "--disable-validation", "--seed", "2", "--log-format", "simple", "--log-interval", "5",
           "--num-workers", "0", "--data-buffer-size", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f"train from shard 0 of {SHARDS}" in log
    losses = [float(x) for x in re.findall(r"epoch \d+: +\d+ / \d+ loss=([0-9.]+)", log)]
    assert re.search(r"num_updates 20\b", log), log[-3000:]
    assert len(losses) == 4 and losses[-1] < losses[0], losses  # every 5 updates
