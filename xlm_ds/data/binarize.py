"""Sentencepiece-encode text and write fairseq mmap indexed datasets.

The output must be byte-compatible with what ``fairseq-preprocess`` writes
for the same token ids, so that every fairseq task reads it unchanged:

* the vocabulary is a :class:`fairseq.data.Dictionary` (specials
  ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3, then the sentencepiece
  pieces in sentencepiece id order);
* every sentence is stored as its token ids followed by ``eos``, exactly like
  ``Dictionary.encode_line(..., append_eos=True)`` in fairseq-preprocess;
* files are written by fairseq's own ``MMapIndexedDatasetBuilder`` (from
  ``indexed_dataset.make_builder(..., impl="mmap", vocab_size=len(dict))``,
  so the dtype is uint16 below 65,500 symbols).

Why not ``fairseq.binarizer.FileBinarizer``: it splits the input by byte
offsets (impossible for gzip), tokenises by whitespace and looks every token
up in a Python dict, one ``torch.IntTensor`` per line.  Here the main process
streams (possibly gzipped) text in large batches to worker processes; each
worker calls sentencepiece's batch encoder (C++), maps sentencepiece ids to
dictionary ids with one numpy lookup table and returns a flat array; the
main process appends whole batches to the builder in input order.  Memory is
bounded by the number of batches in flight (``2 * workers + 1``).
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import signal
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import PrepareError

logger = logging.getLogger(__name__)

#: pieces fairseq reserves (the task adds ``<mask>`` at load time); a learned
#: sentencepiece piece with one of these exact spellings would collide, so it
#: is mapped to ``<unk>`` instead (never happens on ordinary text)
RESERVED = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


# ------------------------------------------------------------ dictionary
def build_dictionary(sp) -> "fairseq.data.Dictionary":  # noqa: F821
    """A fairseq Dictionary holding every sentencepiece piece except
    sentencepiece's control and unknown symbols (count 1 each for now)."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        if piece in RESERVED:
            logger.warning("sentencepiece piece %r collides with a fairseq special symbol; mapped to <unk>", piece)
            continue
        d.add_symbol(piece, n=1)
    return d


def id_map(sp, d, dict_path: str = "dict.txt") -> np.ndarray:
    """Lookup table ``lut[spm_id] = dict_id`` (dtype fits the dataset).

    Control pieces map by name (``</s>`` -> eos), the unknown piece to
    ``<unk>``.  Raises :class:`PrepareError` if a normal piece is missing
    from ``d`` (a dictionary that does not belong to this model)."""
    from fairseq.data import indexed_dataset

    lut = np.empty(sp.get_piece_size(), dtype=np.int64)
    missing = []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_unknown(i) or (piece in RESERVED and not sp.is_control(i)):
            lut[i] = d.unk()
        elif sp.is_control(i):
            lut[i] = d.index(piece)  # <s>, </s>; <unk> if the name is not in d
        elif piece in d.indices:
            lut[i] = d.indices[piece]
        else:
            missing.append(piece)
    if missing:
        shown = ", ".join(repr(p) for p in missing[:5])
        raise PrepareError(
            f"{dict_path}: {len(missing)} of {sp.get_piece_size()} sentencepiece pieces are missing "
            f"from the dictionary (e.g. {shown}); expected the dictionary that was built with this spm.model"
        )
    return lut.astype(indexed_dataset.best_fitting_int_dtype(len(d)))


# ------------------------------------------------------------- builders
def make_builder(out_prefix: str, vocab_size: int):
    """fairseq's mmap builder with a bulk ``add_items(flat, sizes)``."""
    from fairseq.data import indexed_dataset

    base = indexed_dataset.make_builder(
        indexed_dataset.data_file_path(out_prefix), impl="mmap", vocab_size=vocab_size
    )
    return _BulkWriter(base, out_prefix)


class _BulkWriter:
    """Wraps a ``MMapIndexedDatasetBuilder``: appends whole batches.

    ``add_item`` wants one torch tensor per sentence; at millions of lines
    the per-call overhead dominates, so batches are written as one
    contiguous array (the .bin layout is the concatenation of the items
    either way) and only the sizes are handed to the builder's index.
    Falls back to ``add_item`` if the builder's internals change."""

    def __init__(self, builder, out_prefix: str):
        self.builder = builder
        self.out_prefix = out_prefix
        self.bulk = hasattr(builder, "_data_file") and isinstance(getattr(builder, "_sizes", None), list)
        self.dtype = getattr(builder, "_dtype", None)

    def add_items(self, flat: np.ndarray, sizes: np.ndarray) -> None:
        if self.bulk:
            self.builder._data_file.write(np.ascontiguousarray(flat, dtype=self.dtype).tobytes())
            self.builder._sizes.extend(sizes.tolist())
        else:  # pragma: no cover - only with a different fairseq
            import torch

            for item in np.split(flat, np.cumsum(sizes)[:-1]):
                self.builder.add_item(torch.from_numpy(item.astype(np.int64)))

    def finalize(self) -> None:
        from fairseq.data import indexed_dataset

        self.builder.finalize(indexed_dataset.index_file_path(self.out_prefix))


# --------------------------------------------------------------- workers
_W: Dict = {}


def _init_worker(spm_path: str, lut: np.ndarray, in_pool: bool = False) -> None:
    import sentencepiece as spm

    if in_pool:
        # Ctrl-C goes to the whole process group: let only the main process
        # react (it terminates the pool); SIGTERM from Pool.terminate() must
        # kill, not run the CLI's SIGTERM handler inherited through fork
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    _W["sp"] = spm.SentencePieceProcessor(model_file=spm_path)
    _W["lut"] = lut


def encode_lines(lines: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """``(flat dict ids incl. one eos per line, sizes)`` for a batch."""
    # C++ batch encoder; eos = spm </s>, mapped below.  num_threads=1: the
    # parallelism is our worker processes (spm's default would start one
    # thread per CPU in *every* worker and oversubscribe the machine)
    ids = _W["sp"].encode(list(lines), add_eos=True, num_threads=1)
    sizes = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(sizes.sum()))
    return _W["lut"][flat], sizes


def _encode_task(batch: Tuple[Sequence[str], ...]) -> Tuple[Tuple[np.ndarray, np.ndarray], ...]:
    return tuple(encode_lines(side) for side in batch)


def worker_context():
    """fork where there is one: the workers of prepare need only
    sentencepiece + numpy, and spawning would re-import torch/fairseq in
    every worker (seconds each)."""
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()


class EncoderPool:
    """Worker processes that encode batches; results come back in order.

    ``workers <= 1`` encodes in the calling process (no pool, easy to debug).
    Use as a context manager: on any exception (KeyboardInterrupt included)
    the workers are terminated, not waited for."""

    def __init__(self, spm_path: str, lut: np.ndarray, workers: int):
        self.workers = max(1, int(workers))
        self.pool = None
        if self.workers > 1:
            self.pool = worker_context().Pool(self.workers, initializer=_init_worker, initargs=(spm_path, lut, True))
        else:
            _init_worker(spm_path, lut)

    def __enter__(self) -> "EncoderPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()

    def imap(self, batches: Iterable[Tuple[Sequence[str], ...]]) -> Iterator:
        """Ordered map of :func:`_encode_task` with bounded batches in flight."""
        if self.pool is None:
            for b in batches:
                yield _encode_task(b)
            return
        inflight: deque = deque()
        for b in batches:
            inflight.append(self.pool.apply_async(_encode_task, (b,)))
            if len(inflight) > 2 * self.workers:
                yield inflight.popleft().get()
        while inflight:
            yield inflight.popleft().get()


# --------------------------------------------------------------- datasets
@dataclass
class SideStats:
    """What was written to one .bin/.idx pair."""

    lines: int = 0
    tokens: int = 0  #: including one eos per line
    unk: int = 0  #: tokens mapped to <unk>
    counts: Optional[np.ndarray] = field(default=None, repr=False)  #: per dict id


def binarize_dataset(
    pool: EncoderPool,
    batches: Iterable[Tuple[List[str], ...]],
    out_prefixes: Sequence[str],
    vocab_size: int,
    unk: int,
    count_tokens: bool = False,
    progress: Optional[Callable[[int], None]] = None,
) -> List[SideStats]:
    """Encode ``batches`` (tuples of 1 side for mono, 2 for parallel) into one
    dataset per side, ``{prefix}.bin/.idx``.  With ``count_tokens`` the
    per-id token counts are accumulated (for the dictionary counts)."""
    writers = [make_builder(p, vocab_size) for p in out_prefixes]
    stats = [SideStats(counts=np.zeros(vocab_size, dtype=np.int64) if count_tokens else None) for _ in out_prefixes]
    for result in pool.imap(batches):
        for w, st, (flat, sizes) in zip(writers, stats, result):
            w.add_items(flat, sizes)
            st.lines += len(sizes)
            st.tokens += int(flat.size)
            st.unk += int(np.count_nonzero(flat == unk))
            if count_tokens:
                st.counts += np.bincount(flat, minlength=vocab_size)
        if progress is not None:
            progress(len(result[0][1]))
    for w in writers:
        w.finalize()
    return stats
