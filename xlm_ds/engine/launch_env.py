"""The process-group environment of a training process, whichever launcher
started it.

``torchrun`` and the ``deepspeed`` launcher export the variables of
``env://`` initialisation (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). ``srun`` exports SLURM's own (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID, SLURM_STEP_NODELIST, ...), which neither torch.distributed nor
``deepspeed.init_distributed`` reads (DeepSpeed falls back to MPI discovery
and fails without mpi4py). :func:`setup_environment` maps SLURM's variables
onto torch's before any process-group work, and gives a lone process (no
launcher at all) a world of one.

Pure Python: no torch, no deepspeed (unit-testable with a faked
environment).
"""
import os
import re
import socket
from dataclasses import dataclass
from typing import Dict, List, MutableMapping, Optional

TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class LaunchEnvError(RuntimeError):
    pass


@dataclass(frozen=True)
class LaunchInfo:
    launcher: str  # "torchrun/deepspeed" | "slurm" | "single"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    node_rank: int = 0
    nodes: tuple = ()


# --------------------------------------------------------------------------
# SLURM host lists: "node[01-03,07],gpu5", "rack[1-2]-n[1,3]", "a,b"
# --------------------------------------------------------------------------
def _split_top_level(text: str, sep: str = ",") -> List[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise LaunchEnvError(f"host list {text!r}: unbalanced ']'")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise LaunchEnvError(f"host list {text!r}: unbalanced '['")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_range(spec: str, text: str) -> List[str]:
    out = []
    for item in spec.split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise LaunchEnvError(f"host list {text!r}: cannot read range {item!r}")
        lo, hi = m.group(1), m.group(2)
        if hi is None:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise LaunchEnvError(f"host list {text!r}: range {item!r} runs backwards")
        width = len(lo)  # SLURM keeps the zero padding of the first number
        out.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    return out


def _expand_host(pattern: str, text: str) -> List[str]:
    m = re.search(r"\[([^\[\]]*)\]", pattern)
    if not m:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end():]
    return [
        host
        for value in _expand_range(m.group(1), text)
        for host in _expand_host(head + value + tail, text)
    ]


def expand_nodelist(text: str) -> List[str]:
    """SLURM's compressed host list -> host names, in order.

    >>> expand_nodelist("node[01-03,07],gpu5")
    ['node01', 'node02', 'node03', 'node07', 'gpu5']
    """
    if not text or not text.strip():
        raise LaunchEnvError("empty SLURM node list")
    return [host for item in _split_top_level(text.strip()) for host in _expand_host(item, text)]


def _tasks_per_node(text: str) -> List[int]:
    """SLURM_TASKS_PER_NODE / SLURM_STEP_TASKS_PER_NODE: '2(x3),1' -> [2, 2, 2, 1]."""
    counts = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise LaunchEnvError(f"cannot read tasks per node {text!r}")
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts


def _int(env, name) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise LaunchEnvError(f"{name}={env[name]!r} is not an integer") from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_port(job_id: Optional[str]) -> int:
    """A port derived from the job id, so that two jobs sharing a node do
    not collide (all ranks of a job compute the same one)."""
    if job_id and job_id.isdigit():
        return 15000 + int(job_id) % 20000
    return 29500


def describe(env: Optional[MutableMapping[str, str]] = None) -> LaunchInfo:
    """The launch as the environment describes it, without changing it."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in env]
        if missing and _int(env, "WORLD_SIZE") > 1:
            raise LaunchEnvError(
                f"RANK and WORLD_SIZE are set but {', '.join(missing)} is not; "
                "launch with torchrun, the deepspeed launcher or srun"
            )
        world = _int(env, "WORLD_SIZE")
        return LaunchInfo(
            "torchrun/deepspeed",
            _int(env, "RANK"),
            world,
            _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
            _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world,
            env.get("MASTER_ADDR", "127.0.0.1"),
            int(env.get("MASTER_PORT", "0") or 0),
            _int(env, "GROUP_RANK") if "GROUP_RANK" in env else 0,
        )
    if "SLURM_PROCID" in env:
        return _describe_slurm(env)
    return LaunchInfo("single", 0, 1, 0, 1, "127.0.0.1", 0)


def _describe_slurm(env) -> LaunchInfo:
    rank = _int(env, "SLURM_PROCID")
    world_var = next((v for v in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS") if v in env), None)
    if world_var is None:
        raise LaunchEnvError("SLURM_PROCID is set but none of SLURM_STEP_NUM_TASKS/SLURM_NTASKS is")
    world = _int(env, world_var)
    if not 0 <= rank < world:
        raise LaunchEnvError(f"SLURM_PROCID={rank} outside {world_var}={world}")
    nodelist_var = next(
        (v for v in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST") if env.get(v)), None
    )
    if nodelist_var is None:
        raise LaunchEnvError("SLURM_PROCID is set but no SLURM_STEP_NODELIST/SLURM_JOB_NODELIST")
    nodes = expand_nodelist(env[nodelist_var])
    local_rank = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
    node_rank = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
    per_node_var = next(
        (v for v in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE") if env.get(v)), None
    )
    if per_node_var:
        counts = _tasks_per_node(env[per_node_var])
        local_world = counts[node_rank] if node_rank < len(counts) else counts[-1]
    else:
        local_world = max(1, world // max(1, len(nodes)))
    return LaunchInfo(
        "slurm",
        rank,
        world,
        local_rank,
        local_world,
        env.get("MASTER_ADDR") or nodes[0],
        int(env.get("MASTER_PORT") or slurm_port(env.get("SLURM_JOB_ID"))),
        node_rank,
        tuple(nodes),
    )


def torch_env(info: LaunchInfo) -> Dict[str, str]:
    return {
        "RANK": str(info.rank),
        "WORLD_SIZE": str(info.world_size),
        "LOCAL_RANK": str(info.local_rank),
        "LOCAL_WORLD_SIZE": str(info.local_world_size),
        "MASTER_ADDR": info.master_addr,
        "MASTER_PORT": str(info.master_port or _free_port()),
        "GROUP_RANK": str(info.node_rank),
    }


def setup_environment(env: Optional[MutableMapping[str, str]] = None) -> LaunchInfo:
    """Fill RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (env://) from
    SLURM's variables or for a single process; a launcher's own values win."""
    env = os.environ if env is None else env
    info = describe(env)
    if info.launcher == "torchrun/deepspeed":
        env.setdefault("LOCAL_RANK", str(info.local_rank))
        if info.world_size == 1:
            env.setdefault("MASTER_ADDR", "127.0.0.1")
            env.setdefault("MASTER_PORT", str(_free_port()))
        return info
    values = torch_env(info)
    for key, value in values.items():
        env[key] = value
    return LaunchInfo(**{**info.__dict__, "master_port": int(values["MASTER_PORT"])})


def world_size_from_env(env: Optional[MutableMapping[str, str]] = None) -> int:
    """The world size a launch will have, readable before any process group
    exists (used to check the batch-size arithmetic of a DeepSpeed config)."""
    return describe(env).world_size
