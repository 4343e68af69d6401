"""``sbatch slurm/pretrain.sh`` on a real single-node SLURM (started here,
see cluster.py): a 2-task DeepSpeed ZeRO-1 job completes and leaves a
checkpoint; the same job sent SIGUSR1 mid-run saves, requeues itself,
resumes, and ends with exactly the updates (and losses) of the
uninterrupted run.

Needs root and apt (installs slurmctld, slurmd, slurm-client, munge when
missing); skipped when XLM_DS_SKIP_SLURM=1 (conftest.py). About 4 minutes
on 2 cores.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(REPO, "slurm", "pretrain.sh")
MAX_UPDATE = 150
SIGNAL_AFTER = 10  # updates seen before the signal is sent


def _job_name(save_dir):
    return "xlmds-" + os.path.basename(os.path.dirname(save_dir))


def _sbatch_cmd(out, save_dir, metrics, log):
    return [
        "sbatch", "--wait", "--parsable", "--job-name", _job_name(save_dir),
        "--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=15:00",
        "--output", log, SCRIPT, out, "ds_configs/zero1.json",
        "--arch", "xlm_tiny", "--tokens-per-sample", "32", "--batch-size", "8",
        "--max-update", str(MAX_UPDATE), "--warmup-updates", "10", "--lr", "1e-3", "--seed", "3",
        "--save-interval-updates", "50", "--disable-validation", "--log-interval", "50",
        "--ds-metrics-jsonl", metrics,
    ]


def _env(slurm, save_dir):
    return slurm.env(XLM_DS_PYTHON=sys.executable, SAVE_DIR=save_dir, OMP_NUM_THREADS="1",
                     MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _read(path):
    return open(path, errors="replace").read() if os.path.exists(path) else ""


@pytest.fixture(scope="module")
def uninterrupted(slurm, prepared_sample, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job_plain")
    save, metrics, log = str(tmp / "ckpt"), str(tmp / "metrics.jsonl"), str(tmp / "job.out")
    t0 = time.time()
    proc = subprocess.run(_sbatch_cmd(prepared_sample, save, metrics, log), cwd=REPO, env=_env(slurm, save),
                          capture_output=True, text=True, timeout=600)
    elapsed = time.time() - t0
    job_id = proc.stdout.strip().split(";")[0]
    return dict(proc=proc, job_id=job_id, save=save, metrics=metrics, log=log, elapsed=elapsed)


def test_pretrain_job_completes_with_a_checkpoint(slurm, uninterrupted):
    run = uninterrupted
    assert run["proc"].returncode == 0, run["proc"].stderr + _read(run["log"])[-4000:] + slurm.logs()
    job = slurm.job(run["job_id"])
    assert job.get("JobState") == "COMPLETED", job
    assert job.get("ExitCode") == "0:0", job
    comp = slurm.jobcomp_records(run["job_id"])
    assert comp and comp[-1]["JobState"] == "COMPLETED", comp
    log = _read(run["log"])
    assert "launch: slurm, rank 0 of 2" in log
    assert "ZeRO stage 1" in log
    rows = _rows(run["metrics"])
    assert [r["update"] for r in rows] == list(range(1, MAX_UPDATE + 1))
    with open(os.path.join(run["save"], "latest")) as f:
        tag = f.read().strip()
    assert tag == f"checkpoint_1_{MAX_UPDATE}"
    tag_dir = os.path.join(run["save"], tag)
    shards = [n for n in os.listdir(tag_dir) if n.startswith("zero_pp_rank_")]
    assert len(shards) == 2, os.listdir(tag_dir)  # one ZeRO shard per task
    assert not os.path.exists(os.path.join(run["save"], "preempted.json"))


def test_preempted_job_requeues_and_resumes_exactly(slurm, prepared_sample, uninterrupted, tmp_path):
    assert uninterrupted["proc"].returncode == 0, "the uninterrupted job failed (see the test above)"
    save, metrics, log = str(tmp_path / "ckpt"), str(tmp_path / "metrics.jsonl"), str(tmp_path / "job.out")
    proc = subprocess.Popen(_sbatch_cmd(prepared_sample, save, metrics, log), cwd=REPO, env=_env(slurm, save),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate())))
    reader.start()
    # the job id: squeue by name (sbatch --parsable prints it only at the end with --wait)
    deadline = time.time() + 300
    job_id = None
    while time.time() < deadline and proc.poll() is None:
        q = subprocess.run(["squeue", "-h", "-n", _job_name(save), "-o", "%i"], env=slurm.env(),
                           capture_output=True, text=True)
        job_id = q.stdout.strip() or None
        if job_id and len(_rows(metrics)) >= SIGNAL_AFTER:
            break
        time.sleep(0.2)
    assert job_id and len(_rows(metrics)) >= SIGNAL_AFTER, _read(log)[-4000:]
    signalled_at = len(_rows(metrics))
    assert signalled_at < MAX_UPDATE, "training finished before the signal could be sent"
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm.env(), check=True)
    reader.join(timeout=540)
    assert not reader.is_alive(), "sbatch --wait did not return"
    text = _read(log)
    assert proc.returncode == 0, out.get("stderr", "") + text[-6000:] + slurm.logs()

    # signal -> save -> requeue -> resume
    assert "got SIGUSR1" in text, text[-4000:]
    m = re.search(r"preemption: saving a checkpoint at update (\d+)", text)
    assert m, text[-4000:]
    stopped = int(m.group(1))
    assert signalled_at <= stopped < MAX_UPDATE
    assert f"requeueing job {job_id}" in text
    assert "restart 1 " in text
    assert re.search(rf"resuming from .*checkpoint_1_{stopped}\b", text), text[-4000:]
    assert re.search(rf"Loaded checkpoint .*checkpoint_1_{stopped} \(epoch 1 @ {stopped} updates\)", text)

    job = slurm.job(job_id)
    assert job.get("JobState") == "COMPLETED" and job.get("Restarts") == "1", job
    assert job.get("ExitCode") == "0:0", job
    states = [r["JobState"] for r in slurm.jobcomp_records(job_id)]
    assert states[-1] == "COMPLETED" and len(states) == 2, states

    # nothing lost, nothing counted twice, and the same training as without the interruption
    rows = _rows(metrics)
    assert [r["update"] for r in rows] == list(range(1, MAX_UPDATE + 1))
    ref = {r["update"]: r for r in _rows(uninterrupted["metrics"])}
    for r in rows:
        assert r["loss"] == pytest.approx(ref[r["update"]]["loss"], rel=1e-4, abs=1e-4), r["update"]
        assert r["lr"] == pytest.approx(ref[r["update"]]["lr"], rel=1e-6)
    with open(os.path.join(save, "latest")) as f:
        assert f.read().strip() == f"checkpoint_1_{MAX_UPDATE}"
    assert not os.path.exists(os.path.join(save, "preempted.json"))
