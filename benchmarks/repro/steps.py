"""The resumable step runner of the reproductions and its file helpers
(seed statistics, atomic JSON); imports no torch and no matplotlib."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import time
from typing import Callable, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER_DIR = os.path.join(REPO, "xlm_ds")
OUT_ROOT = os.path.join(REPO, "benchmarks", "out", "repro")


# --------------------------------------------------------------------------
# statistics and files


def mean_std(values: Sequence[float]) -> Tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and count."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan"), 0
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0, 1
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var), len(vals)


def fmt(values: Sequence[float], digits: int = 2) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "-"
    if n == 1:  # one seed has no spread: say so rather than print ± 0
        return f"{m:.{digits}f} (n=1)"
    return f"{m:.{digits}f} ± {s:.{digits}f} (n={n})"


def atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def last_json_line(text: str) -> dict:
    """The CLIs print their result as the last JSON line of stdout."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in the output")


# --------------------------------------------------------------------------
# the resumable step runner


class StepFailed(RuntimeError):
    pass


def _same_command(a: List[str], b: List[str]) -> bool:
    """Equal, allowing another path to the Python interpreter (another venv
    or symlink running the same command)."""
    py = lambda c: os.path.basename(c).startswith("python")  # noqa: E731
    return a == b or (len(a) == len(b) and a[1:] == b[1:] and py(a[0]) and py(b[0]))


@contextlib.contextmanager
def _directory_lock(directory: str):
    """Held while a step in ``directory`` is checked and run: a second
    process on the same ``--out`` (experiment 1's ``--set only=`` rows in
    parallel) waits for a step the first is running, then finds its JSON,
    instead of running it again into the same files. No lock file is left;
    closing the descriptor releases the lock, also when the process dies."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


_ATTEMPT = re.compile(r"^=== step attempt (\d+) started at (\d+(?:\.\d+)?) \(.*\); earlier attempts "
                      r"(\d+(?:\.\d+)?|unknown) s; command ([0-9a-f]+) ===$", re.M)
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", re.M)  # fairseq's log lines


def last_attempt(log_text: str) -> str:
    """A step log's output since its last attempt header (the whole text of
    a log written before the headers existed): what the finished run wrote."""
    headers = list(_ATTEMPT.finditer(log_text))
    return log_text[headers[-1].end():] if headers else log_text


def _command_id(cmd: List[str]) -> str:
    return hashlib.sha1("\0".join(cmd[1:]).encode()).hexdigest()[:12]  # any interpreter path (_same_command)


def _start_attempt(log_path: str, now: float, cmd: List[str]) -> Tuple[int, Optional[float]]:
    """Appends an attempt header to a step's log and returns (attempt
    number, seconds the earlier attempts ran; None if unknown).

    A step killed mid-run (a preempted or stopped long fine-tuning) is run
    again and resumes from its checkpoint: its log keeps every attempt's
    output, and its wall time counts every attempt, not only the last one,
    so a resumed run's reported time is its whole cost. An attempt ends at
    the log's last write (its modification time); a log written before these
    headers existed starts at its first fairseq timestamp. The log of another
    command (its result JSON deleted to run the step anew) is started over."""
    attempt, earlier, mode = 1, 0.0, "a"
    if os.path.exists(log_path) and os.path.getsize(log_path):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        ended = os.path.getmtime(log_path)
        headers = list(_ATTEMPT.finditer(text))
        if headers and headers[-1].group(4) != _command_id(cmd):
            mode = "w"
        elif headers:
            last = headers[-1]
            attempt = int(last.group(1)) + 1
            before = None if last.group(3) == "unknown" else float(last.group(3))
            earlier = None if before is None else before + max(0.0, ended - float(last.group(2)))
        else:
            attempt = 2
            first = _LOG_TIME.search(text)
            earlier = (max(0.0, ended - time.mktime(time.strptime(first.group(1), "%Y-%m-%d %H:%M:%S")))
                       if first else None)
    with open(log_path, mode, encoding="utf-8") as f:
        f.write(f"=== step attempt {attempt} started at {now:.1f} ({time.strftime('%Y-%m-%d %H:%M:%S')}); "
                f"earlier attempts {'unknown' if earlier is None else f'{earlier:.1f}'} s; "
                f"command {_command_id(cmd)} ===\n")
    return attempt, earlier


class Steps:
    """Runs commands once. ``run(result_path, cmd, parse)``: if result_path
    exists its JSON is returned (an error if it was made by another
    command: results of a changed configuration are never mixed); otherwise cmd runs with its output
    appended to ``result_path[:-5] + '.log'`` (an interrupted attempt's output stays there, and
    its time counts in wall_s), ``parse(output_text)`` turns this attempt's output
    into a dict, and that dict (plus the command and wall time) is written
    atomically to result_path. A failed command raises StepFailed with the
    end of its log and writes nothing."""

    def __init__(self, verbose: bool = True, runner: Optional[Callable] = None):
        self.verbose = verbose
        self.runner = runner or self._subprocess
        self.ran = 0
        self.skipped = 0

    @staticmethod
    def _subprocess(cmd: List[str], log_path: str) -> Tuple[int, str]:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(log_path, "a", encoding="utf-8") as log:
            start = log.tell()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        with open(log_path, encoding="utf-8", errors="replace") as log:
            log.seek(start)
            return proc.returncode, log.read()  # this attempt's output only

    def run(self, result_path: str, cmd: List[str], parse: Optional[Callable[[str], dict]] = None) -> dict:
        directory = os.path.dirname(os.path.abspath(result_path))
        os.makedirs(directory, exist_ok=True)
        with _directory_lock(directory):
            return self._run(result_path, cmd, parse)

    def _run(self, result_path: str, cmd: List[str], parse: Optional[Callable[[str], dict]]) -> dict:
        if os.path.exists(result_path):
            done = read_json(result_path)
            if not _same_command(done.get("command", cmd), cmd):
                raise StepFailed(f"{result_path} was made by a different command (changed preset or --set?); "
                                 f"use another --out or delete it.\n  was: {' '.join(done['command'])}\n  now: "
                                 f"{' '.join(cmd)}")
            self.skipped += 1
            return done
        log_path = result_path[:-5] + ".log" if result_path.endswith(".json") else result_path + ".log"
        if self.verbose:
            print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        t0 = time.time()
        attempt, earlier_s = _start_attempt(log_path, t0, cmd)
        rc, text = self.runner(cmd, log_path)
        wall = time.time() - t0
        if rc:
            raise StepFailed(f"exit {rc} after {wall:.0f}s; end of {log_path}:\n{text[-3000:]}")
        result = dict(parse(text)) if parse else {}
        result["wall_s"] = round(wall + (earlier_s or 0.0), 1)
        if attempt > 1:
            result["attempts"] = attempt
            if earlier_s is None:
                result["wall_s_note"] = "this attempt only: an earlier attempt's start is unknown"
        result["command"] = cmd
        write_json(result_path, result)
        self.ran += 1
        if self.verbose:
            print(f"  ({wall:.0f}s)", flush=True)
        return result
