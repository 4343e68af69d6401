"""A real single-node SLURM on localhost, for tests of slurm/*.sh.

    with LocalSlurm(workdir) as slurm:
        env = slurm.env()            # SLURM_CONF=... for sbatch/squeue/scontrol
        subprocess.run(["sbatch", "--wait", ...], env=env)

Installs slurmctld, slurmd, slurm-client and munge with apt when they are
missing (root; Debian 12 ships Slurm 22.05), starts a private munged (its
own key and socket, named in slurm.conf's AuthInfo), ``slurmctld -D`` and
``slurmd -D -N localhost`` with a minimal slurm.conf under ``workdir``
(``SLURM_CONF`` points the clients at it; /etc/slurm and /etc/munge are not
touched), and stops everything it started by pid on exit.

Each cluster owns its munged: pytest-xdist workers each start a cluster,
and one that reused another's daemon lost its authentication (every sbatch
call failing, ``sbatch --wait`` hanging) when that worker finished first
and stopped it.

``python tests/slurm/cluster.py WORKDIR`` stands one up until Ctrl-C (for
trying the scripts by hand).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "munged")


class SlurmUnavailable(RuntimeError):
    pass


def _which(name):
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


def ensure_installed(log=print):
    if all(_which(b) for b in BINARIES):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("SLURM is not installed and cannot be (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    t0 = time.time()
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    log(f"installed {' '.join(PACKAGES)} in {time.time() - t0:.0f}s")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge_works(socket_path):
    munge, unmunge = _which("munge"), _which("unmunge")
    if not munge or not unmunge:
        return False
    try:
        cred = subprocess.run([munge, "-n", "-S", socket_path], capture_output=True, timeout=10)
        if cred.returncode:
            return False
        return subprocess.run([unmunge, "-S", socket_path], input=cred.stdout, capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LocalSlurm:
    def __init__(self, workdir, cpus=None, log=print):
        self.dir = os.path.abspath(workdir)
        self.cpus = cpus or 2
        self.log = log
        self.procs = {}
        self.munged_pid = None
        self.munge_dir = None
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.jobcomp = os.path.join(self.dir, "jobcomp.txt")

    # ------------------------------------------------------------------
    def env(self, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        env["SLURM_CONF"] = self.conf
        env.update(extra)
        return env

    def _write_conf(self):
        for sub in ("state", "spool", "log"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        host = socket.gethostname().split(".")[0]
        d = self.dir
        conf = f"""\
ClusterName=xlmdstest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
InactiveLimit=0
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as f:
            f.write(conf)

    @property
    def munge_socket(self):
        return os.path.join(self.munge_dir, "munge.socket")

    def _start_munge(self):
        # munged wants every directory above its socket searchable by all,
        # which pytest's 0700 tmp dirs are not: a 0755 dir of our own in /tmp
        self.munge_dir = tempfile.mkdtemp(prefix="xlmds-munge-")
        os.chmod(self.munge_dir, 0o755)
        key = os.path.join(self.munge_dir, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        pidfile = os.path.join(self.munge_dir, "munged.pid")
        proc = subprocess.run(
            [_which("munged"), f"--socket={self.munge_socket}", f"--key-file={key}", f"--pid-file={pidfile}",
             f"--seed-file={os.path.join(self.munge_dir, 'munged.seed')}",
             f"--log-file={os.path.join(self.dir, 'log', 'munged.log')}"],
            capture_output=True, text=True, timeout=30)
        if proc.returncode:
            raise SlurmUnavailable(f"munged failed to start: {proc.stderr.strip()}")
        for _ in range(50):
            if os.path.exists(pidfile) and _munge_works(self.munge_socket):
                break
            time.sleep(0.2)
        else:
            raise SlurmUnavailable("munged did not come up")
        with open(pidfile) as f:
            self.munged_pid = int(f.read().strip())

    def _start(self, name, cmd):
        log = open(os.path.join(self.dir, "log", f"{name}.out"), "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def start(self, timeout=60):
        ensure_installed(self.log)
        os.makedirs(os.path.join(self.dir, "log"), exist_ok=True)
        self._start_munge()
        self._write_conf()
        self._start("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", self.conf])
        self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), timeout, "slurmctld")
        self._start("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", self.conf])
        self._wait(lambda: self._ok(["sinfo", "-h", "-o", "%t"], "idle"), timeout, "slurmd (node idle)")
        return self

    def _ok(self, cmd, needle):
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and needle in proc.stdout

    def _wait(self, cond, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited ({p.returncode}):\n{self.logs()}")
            if cond():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"{what} not ready after {timeout}s:\n{self.logs()}")

    def logs(self, tail=3000):
        out = []
        logdir = os.path.join(self.dir, "log")
        for name in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else ():
            with open(os.path.join(logdir, name), errors="replace") as f:
                out.append(f"--- {name}\n{f.read()[-tail:]}")
        return "\n".join(out)

    def stop(self):
        # jobs first (their steps are children of slurmd's slurmstepd)
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user", "root"], env=self.env(), capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self._kill_stepds()
        if self.munged_pid:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
                for _ in range(50):
                    os.kill(self.munged_pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                pass
            self.munged_pid = None
        if self.munge_dir:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None

    def _kill_stepds(self):
        """slurmstepd processes of this cluster's jobs outlive slurmd: end
        them by pid (only those whose command line names our spool dir or
        config is not knowable, so: those whose parent chain is gone and
        whose environment carries our SLURM_CONF)."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                if not cmd or not cmd[0].endswith(b"slurmstepd"):
                    continue
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read()
                if f"SLURM_CONF={self.conf}".encode() in env:
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------
    def job(self, job_id):
        """scontrol show job -o as a dict ({} once the job is forgotten)."""
        proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], env=self.env(),
                              capture_output=True, text=True, timeout=30)
        if proc.returncode:
            return {}
        out = {}
        for item in proc.stdout.split():
            if "=" in item:
                k, v = item.split("=", 1)
                out.setdefault(k, v)
        return out

    def jobcomp_records(self, job_id=None):
        """The jobcomp/filetxt lines as dicts (JobId, JobState, ...)."""
        if not os.path.exists(self.jobcomp):
            return []
        rows = []
        with open(self.jobcomp) as f:
            for line in f:
                row = dict(item.split("=", 1) for item in line.split() if "=" in item)
                if job_id is None or row.get("JobId") == str(job_id):
                    rows.append(row)
        return rows


if __name__ == "__main__":
    with LocalSlurm(sys.argv[1] if len(sys.argv) > 1 else "/tmp/xlm-ds-slurm") as s:
        print(f"export SLURM_CONF={s.conf}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
