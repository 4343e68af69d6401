"""Start-up checks that belong to no single component: is there room on
the checkpoint filesystem for one more checkpoint?

A run that finds out at its first save (hours in) that the disk is full
loses those hours; here it stops before the first update with what was
found, where, and what is needed. The size of one checkpoint is that of the
newest one already in ``--save-dir`` when there is one, else estimated:
fp32 weights + Adam's two moments = 12 bytes per parameter (+ 10%).
"""
import os
import shutil

BYTES_PER_PARAM = 12  # fp32 weights + exp_avg + exp_avg_sq


class PreflightError(RuntimeError):
    pass


def _existing_dir(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _newest_checkpoint_size(save_dir: str) -> int:
    best, size = -1.0, 0
    if not os.path.isdir(save_dir):
        return 0
    for name in os.listdir(save_dir):
        if not name.startswith("checkpoint") or name.endswith(".complete") or ".tmp" in name:
            continue
        path = os.path.join(save_dir, name)
        mtime = os.path.getmtime(path)
        if mtime <= best:
            continue
        if os.path.isdir(path):
            n = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
        else:
            n = os.path.getsize(path)
        best, size = mtime, n
    return size


def checkpoint_bytes(save_dir: str, n_params: int) -> int:
    return _newest_checkpoint_size(save_dir) or int(n_params * BYTES_PER_PARAM * 1.1)


def check_disk_space(save_dir: str, n_params: int, no_save: bool = False) -> None:
    if no_save:
        return
    need = checkpoint_bytes(save_dir, n_params)
    where = _existing_dir(save_dir)
    free = shutil.disk_usage(where).free
    if free < need:
        raise PreflightError(
            f"--save-dir {save_dir}: {free / 2**20:.1f} MiB free on the filesystem of {where}, "
            f"one checkpoint needs {need / 2**20:.1f} MiB ({n_params:,} parameters; fp32 weights + Adam "
            "moments, or the size of the newest checkpoint there); expected at least that much free space. "
            "Free space or choose another --save-dir"
        )
