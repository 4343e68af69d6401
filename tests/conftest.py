"""Shared test set-up: one thread per process (2-core machines; torch's
default oversubscribes and made fairseq 10x slower) and registration of the
xlm_ds plugin."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import xlm_ds  # noqa: E402,F401  (registers tasks, models, criterions)
from xlm_ds import fairseq_compat  # noqa: E402

# in-process tests call fairseq's trainer, loaders and batching directly, as
# fairseq-train does after our task's setup_task (subprocess tests get it there)
fairseq_compat.apply()

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CORPUS = os.path.join(REPO, "xlm_ds", "sample_corpus")


@pytest.fixture(scope="session")
def prepared_sample(tmp_path_factory):
    """The shipped sample prepared once per session (2k vocabulary)."""
    out = tmp_path_factory.mktemp("prepared") / "sample"
    subprocess.run(
        [sys.executable, "-m", "xlm_ds.cli.prepare", "--corpus",
         os.path.join(SAMPLE_CORPUS, "corpus.yaml"), "--out", str(out),
         "--vocab-size", "2000", "--workers", "2"],
        check=True, capture_output=True,
    )
    return str(out)


def fairseq_cli(tool, *args, cwd=None, timeout=900):
    """Runs a fairseq console tool in this interpreter; returns the log.

    ``--data-buffer-size 0``: fairseq prefetches batches in a daemon thread;
    a short run can end while that thread is inside torch C++ code, and
    Python's shutdown then aborts the process ("terminate called without an
    active exception", exit -6) after training finished (docs/stack.md)."""
    if tool in ("train", "generate") and "--data-buffer-size" not in args:
        args = (*args, "--data-buffer-size", "0")
    proc = subprocess.run(
        [sys.executable, "-m", f"fairseq_cli.{tool}", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )
    if proc.returncode:
        raise AssertionError(
            f"fairseq {tool} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def run_fairseq():
    return fairseq_cli


@pytest.fixture(scope="session")
def pretrained_tiny(prepared_sample, tmp_path_factory):
    """A tiny MLM+TLM checkpoint (a few dozen updates) for downstream tests."""
    save = tmp_path_factory.mktemp("pretrained")
    fairseq_cli(
        "train", prepared_sample, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm",
        "--arch", "xlm_tiny", "--criterion", "xlm_lm", "--objectives", "mlm tlm",
        "--tokens-per-sample", "64", "--batch-size", "16", "--optimizer", "adam", "--lr", "1e-3",
        "--max-update", "40", "--cpu", "--save-dir", str(save), "--no-epoch-checkpoints",
        "--disable-validation", "--seed", "3",
    )
    return str(save / "checkpoint_last.pt")


@pytest.fixture(scope="session")
def repro_commands():
    """benchmarks/repro/commands.py (the experiments' command builders), for
    tests that check them against the models."""
    import importlib.util

    sys.path.insert(0, os.path.join(REPO, "benchmarks", "repro"))
    spec = importlib.util.spec_from_file_location("repro_commands", os.path.join(REPO, "benchmarks", "repro",
                                                                                 "commands.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _no_checkpoints_dir_left_in_the_checkout(request):
    """fairseq-train creates ``--save-dir`` (default ``checkpoints``, relative
    to the working directory) even with ``--no-save``: a test that forgets
    ``--save-dir`` litters the checkout a user runs the tests from."""
    stray = os.path.join(REPO, "checkpoints")
    before = os.path.exists(stray)
    yield
    if not before and os.path.exists(stray):
        pytest.fail(f"{request.node.nodeid} left {stray} behind (pass --save-dir under tmp_path)")


def pytest_collection_modifyitems(config, items):
    """Files with end-to-end runs (marked ``slow``) first, each file's tests
    in their order. ``make test`` hands whole files to two workers in
    collection order (xdist ``--dist loadfile --no-loadscope-reorder``):
    xdist's own order, by number of tests, put the files of one or two
    multi-minute runs last, and one worker ran them while the other idled."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
