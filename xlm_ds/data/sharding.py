"""Which sentences of a corpus go into shard i of N.

Every train dataset (one language, or one pair) is cut into N contiguous
ranges of its sentences, in input order, so that the shards concatenated
are exactly the one-machine preparation (same ids, same order) and every
shard holds every language in proportion. The sentence counts come from
pass 1, so a shard opens only the files its range overlaps and stops
reading at the end of its range; inside a file it reads from the start (a
gzip stream cannot seek), which is why corpora as large as CC-100's should
come as several files per language.
"""
from typing import Callable, Iterable, Iterator, List, Sequence, Tuple


def shard_range(sentences: int, index: int, num_shards: int) -> Tuple[int, int]:
    """Sentences ``lo..hi-1`` of shard ``index``: sizes differ by at most one."""
    return sentences * index // num_shards, sentences * (index + 1) // num_shards


def sentence_range(corpora: Sequence, counts: Sequence[int], span: Tuple[int, int],
                   read: Callable[[object], Iterable[Tuple[List[str], ...]]]) -> Iterator[Tuple[List[str], ...]]:
    """The batches of sentences ``span`` of the concatenated ``corpora``
    (``counts[j]`` sentences in corpus j; ``read(corpus)`` yields batches,
    tuples of aligned sentence lists)."""
    lo, hi = span
    offset = 0
    for corpus, n in zip(corpora, counts):
        a, b = max(lo - offset, 0), min(hi - offset, n)
        offset += n
        if a >= b:
            continue  # not opened at all
        seen = 0
        batches = iter(read(corpus))
        try:
            for batch in batches:
                m = len(batch[0])
                s, e = max(a - seen, 0), min(b - seen, m)
                seen += m
                if s < e:
                    yield tuple(side[s:e] for side in batch)
                if seen >= b:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
