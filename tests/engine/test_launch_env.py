"""SLURM / torchrun / single-process -> env:// variables, with faked
environments (no process is launched)."""
import pytest

from xlm_ds.engine import launch_env
from xlm_ds.engine.launch_env import LaunchEnvError, expand_nodelist


@pytest.mark.parametrize(
    "text,hosts",
    [
        ("node[01-03,07],gpu5", ["node01", "node02", "node03", "node07", "gpu5"]),
        ("gpu5", ["gpu5"]),
        ("a,b,c", ["a", "b", "c"]),
        ("n[8-11]", ["n8", "n9", "n10", "n11"]),
        ("n[008-010]", ["n008", "n009", "n010"]),
        ("rack[1-2]-n[1,3]", ["rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"]),
        ("x[1],y[2-3],z", ["x1", "y2", "y3", "z"]),
        ("node-a[1-2].cluster", ["node-a1.cluster", "node-a2.cluster"]),
    ],
)
def test_expand_nodelist(text, hosts):
    assert expand_nodelist(text) == hosts


@pytest.mark.parametrize("text", ["node[01-03", "node01-03]", "n[3-1]", "n[a-b]", ""])
def test_expand_nodelist_errors(text):
    with pytest.raises(LaunchEnvError):
        expand_nodelist(text)


def _slurm(rank, local, node, **extra):
    env = {
        "SLURM_PROCID": str(rank),
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": str(local),
        "SLURM_NODEID": str(node),
        "SLURM_JOB_NODELIST": "node[01-03,07]",
        "SLURM_TASKS_PER_NODE": "2(x4)",
        "SLURM_JOB_ID": "123456",
    }
    env.update(extra)
    return env


def test_slurm_multi_node_mapping():
    """8 tasks on 4 nodes (2 per node): rank 5 is the second task of the
    third node; the master is the first node of the list."""
    env = _slurm(5, 1, 2)
    info = launch_env.setup_environment(env)
    assert info.launcher == "slurm"
    assert env["RANK"] == "5"
    assert env["WORLD_SIZE"] == "8"
    assert env["LOCAL_RANK"] == "1"
    assert env["LOCAL_WORLD_SIZE"] == "2"
    assert env["GROUP_RANK"] == "2"
    assert env["MASTER_ADDR"] == "node01"
    assert env["MASTER_PORT"] == str(15000 + 123456 % 20000)
    assert info.nodes == ("node01", "node02", "node03", "node07")
    # every rank of the job agrees on the rendezvous
    others = [_slurm(r, r % 2, r // 2) for r in range(8)]
    for e in others:
        launch_env.setup_environment(e)
    assert {(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in others} == {("node01", env["MASTER_PORT"])}
    assert sorted(int(e["RANK"]) for e in others) == list(range(8))


def test_slurm_step_variables_win_over_job_ones():
    """srun -N2 -n4 inside a larger allocation: the step's node list and
    task count, not the job's."""
    env = _slurm(
        3, 1, 1,
        SLURM_STEP_NODELIST="gpu[5-6]",
        SLURM_STEP_NUM_TASKS="4",
        SLURM_STEP_TASKS_PER_NODE="2(x2)",
    )
    launch_env.setup_environment(env)
    assert (env["WORLD_SIZE"], env["MASTER_ADDR"], env["LOCAL_WORLD_SIZE"]) == ("4", "gpu5", "2")


def test_slurm_uneven_tasks_per_node_and_explicit_master():
    env = _slurm(4, 0, 2, SLURM_NTASKS="5", SLURM_TASKS_PER_NODE="2(x2),1",
                 MASTER_ADDR="10.0.0.1", MASTER_PORT="29999")
    launch_env.setup_environment(env)
    assert env["LOCAL_WORLD_SIZE"] == "1"
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("10.0.0.1", "29999")


def test_torchrun_and_deepspeed_launcher_values_are_kept():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234",
           **_slurm(0, 0, 0)}
    info = launch_env.setup_environment(env)
    assert info.launcher == "torchrun/deepspeed"
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("1", "2", "h")


def test_single_process_gets_a_world_of_one():
    env = {}
    info = launch_env.setup_environment(env)
    assert info.launcher == "single"
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == ("0", "1", "0", "127.0.0.1")
    assert int(env["MASTER_PORT"]) > 0


@pytest.mark.parametrize(
    "env,message",
    [
        ({"SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "n1"}, "SLURM_NTASKS"),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "NODELIST"),
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n1"}, "outside"),
        ({"SLURM_PROCID": "x", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n1"}, "not an integer"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR"),
    ],
)
def test_bad_environments(env, message):
    with pytest.raises(LaunchEnvError, match=message):
        launch_env.setup_environment(dict(env))


def test_world_size_is_known_before_any_process_group():
    assert launch_env.world_size_from_env(_slurm(0, 0, 0)) == 8
    assert launch_env.world_size_from_env({"RANK": "0", "WORLD_SIZE": "4", "MASTER_ADDR": "a",
                                           "MASTER_PORT": "1"}) == 4
    assert launch_env.world_size_from_env({}) == 1
