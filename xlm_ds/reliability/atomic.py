"""Atomic, verifiable checkpoint files.

A checkpoint that a crash (SIGKILL, node loss, full disk) leaves half
written must never be taken for a good one. Every file is therefore
written as ``NAME.tmp-PID`` (hashed while it is written), flushed and
``fsync``-ed, renamed onto ``NAME`` (atomic on POSIX), the directory
``fsync``-ed, and only then a completeness marker ``NAME.complete`` (JSON:
size, sha256, what the file holds) is written the same way. A file without
its marker, or whose size/sha256 differ from it, is incomplete.

Reading checks the marker (:func:`verify`); :func:`newest_complete` picks the
most advanced verified checkpoint among candidates and says which ones it
skipped and why.
"""
import errno
import hashlib
import json
import logging
import os
import shutil
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

logger = logging.getLogger("xlm_ds.reliability")

MARKER_SUFFIX = ".complete"
_CHUNK = 1 << 20


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous ones are untouched."""


class _HashingWriter:
    """File-object wrapper: hashes and counts the bytes that pass."""

    def __init__(self, f):
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self.error = None

    def write(self, data):
        try:
            n = self._f.write(data)
        except OSError as e:
            # torch.save's zip writer turns it into "RuntimeError: unexpected
            # pos"; kept so that the caller can say "no space left"
            self.error = e
            raise
        self.sha.update(memoryview(data)[: n if n is not None else len(data)])
        self.size += n if n is not None else len(data)
        return n

    def flush(self):
        self._f.flush()

    def __getattr__(self, name):  # seek/tell/fileno for writers that ask
        return getattr(self._f, name)


def marker_path(path: str) -> str:
    return path + MARKER_SUFFIX


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_marker(path: str, size: int, sha: str, meta: Optional[Dict[str, Any]]) -> None:
    marker = marker_path(path)
    tmp = f"{marker}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"file": os.path.basename(path), "size": size, "sha256": sha, **(meta or {})}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    fsync_dir(os.path.dirname(path))


def atomic_write(path: str, write: Callable[[Any], None], meta: Optional[Dict[str, Any]] = None,
                 marker: bool = True) -> Dict[str, Any]:
    """Writes ``path`` through ``write(fileobj)`` atomically, with its marker
    (``marker=False``: atomic only, for files that are small and parsed,
    such as ``latest``).

    On any failure (ENOSPC included) the temporary file is removed and
    ``path`` / its marker are left as they were; the error is re-raised as
    :class:`CheckpointWriteError` naming the file."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    w = None
    # the old marker goes first: between the rename and the new marker the
    # file must read as incomplete, never as complete with a stale checksum
    try:
        with open(tmp, "wb") as raw:
            w = _HashingWriter(raw)
            write(w)
            raw.flush()
            os.fsync(raw.fileno())
        try:
            os.remove(marker_path(path))
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
        fsync_dir(directory)
        if marker:
            _write_marker(path, w.size, w.sha.hexdigest(), meta)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if w is not None and w.error is not None:
            e = w.error
        if isinstance(e, OSError):
            what = "no space left on device" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
            raise CheckpointWriteError(
                e.errno, f"checkpoint {path} not written ({what}); the previous checkpoints are untouched"
            ) from e
        raise
    return {"size": w.size, "sha256": w.sha.hexdigest()}


def atomic_copy(src: str, dst: str) -> None:
    """Copies a verified file and its marker atomically (``checkpoint_last.pt``
    from ``checkpoint_E_U.pt``)."""
    meta = read_marker(src) or {}
    meta = {k: v for k, v in meta.items() if k not in ("file", "size", "sha256")}

    def write(f):
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f, _CHUNK)

    atomic_write(dst, write, meta)


def read_marker(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(marker_path(path), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def verify(path: str) -> Tuple[bool, str]:
    """(complete, reason): the file exists, has its marker, and its size
    and sha256 are the marker's."""
    if not os.path.isfile(path):
        return False, "missing"
    marker = read_marker(path)
    if marker is None:
        return False, f"no completeness marker {os.path.basename(marker_path(path))} (the write did not finish)"
    size = os.path.getsize(path)
    if size != marker.get("size"):
        return False, f"size {size} bytes, the marker says {marker.get('size')} (truncated)"
    digest = sha256_file(path)
    if digest != marker.get("sha256"):
        return False, f"sha256 {digest[:12]}..., the marker says {str(marker.get('sha256'))[:12]}... (corrupted)"
    return True, "ok"


def newest_complete(candidates: Iterable[str], verifier: Callable[[str], Tuple[bool, str]] = verify,
                    order: Optional[Callable[[str], Any]] = None) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The most advanced candidate that verifies, and the (path, reason) of
    every more advanced one that did not. ``order`` ranks candidates
    (default: the marker's ``num_updates``, then modification time)."""
    order = order or _progress_key
    skipped = []
    for path in sorted(set(candidates), key=order, reverse=True):
        ok, reason = verifier(path)
        if ok:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def _progress_key(path: str):
    marker = read_marker(path) or {}
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        mtime = 0.0
    return (int(marker.get("num_updates", -1)), mtime)


def remove_orphan_markers(directory: str) -> None:
    """Markers whose checkpoint was deleted (fairseq's pruning removes the
    ``.pt`` only)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.endswith(MARKER_SUFFIX) and not os.path.exists(os.path.join(directory, name[: -len(MARKER_SUFFIX)])):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass
