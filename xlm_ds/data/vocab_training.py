"""Learn the ONE sentencepiece model shared by all languages.

XLM learns a single subword vocabulary on sentences sampled per language
with the smoothed distribution ``q_i ∝ p_i ** alpha`` (see
:mod:`.alpha_sampling`), so that low-resource languages get enough pieces.

Memory stays bounded whatever the corpus size: the number of sentences
drawn per language (``k_i``, at most ``--vocab-sentences`` in total) is known
before reading, so we pick the line indices to keep up front (``O(k_i)``
memory), stream every file once and write the chosen lines to a temporary
file that sentencepiece trains on.  No corpus is ever held in memory.

If a language must contribute more sentences than it has (``k_i > n_i``,
which is exactly what smoothing asks for low-resource languages) each of its
sentences is written ``k_i // n_i`` times and ``k_i % n_i`` random ones once
more.  The repetition is intended: sentencepiece counts frequencies, so
repeating is what gives the language its share ``q_i`` of the statistics.

Deterministic: the draw uses ``random.Random(f"{seed}:{lang}")`` (string
seeds are hashed with SHA-512, independent of ``PYTHONHASHSEED``) and
sentencepiece's generator is seeded too.
"""
from __future__ import annotations

import io
import logging
import os
import random
from typing import Dict, List, Mapping, Sequence

import numpy as np

from .alpha_sampling import allocate, smoothed_probs
from .text_reader import iter_sentences

logger = logging.getLogger(__name__)

# Sentencepiece's trainer splits its work over num_threads, and the model it
# learns depends on that number (not on the cores it runs on): a fixed count
# makes a vocabulary reproducible across machines (16 threads on 2 cores
# trained as fast as 2 threads, docs/prepare.md).
SPM_THREADS = 16


def plan_draws(counts: Mapping[str, int], alpha: float, total: int) -> Dict[str, Dict]:
    """Return ``{"probs": {lang: q}, "draws": {lang: k}}`` for ``total``
    sentences split across languages with ``q ∝ p ** alpha``."""
    probs = smoothed_probs(counts, alpha)
    return {"probs": probs, "draws": allocate(probs, total)}


def _chosen_indices(n: int, k: int, rng: random.Random) -> np.ndarray:
    """Sorted indices in ``[0, n)`` of the ``k % n`` extra draws (``O(k)`` memory)."""
    extra = k % n if n else 0
    # random.sample on a range does not materialise the range
    return np.array(sorted(rng.sample(range(n), extra)), dtype=np.int64)


def write_sample(
    pools: Mapping[str, Sequence[str]],
    counts: Mapping[str, int],
    draws: Mapping[str, int],
    out_path: str,
    seed: int,
) -> Dict[str, int]:
    """Write ``draws[lang]`` sentences of each language to ``out_path``.

    ``pools[lang]`` lists the files whose non-empty lines (``counts[lang]``
    of them in total, validated beforehand) form the language's pool.
    Returns the number of sentences written per language."""
    written: Dict[str, int] = {}
    with open(out_path, "w", encoding="utf-8") as out:
        for lang in sorted(pools):
            n, k = counts[lang], draws.get(lang, 0)
            if k == 0 or n == 0:
                written[lang] = 0
                continue
            reps = k // n
            chosen = _chosen_indices(n, k, random.Random(f"{seed}:{lang}"))
            pos = 0  # index of the first line of the current batch in the pool
            m = 0
            for path in pools[lang]:
                for batch in iter_sentences(path):
                    end = pos + len(batch)
                    if reps:
                        block = "\n".join(batch) + "\n"
                        for _ in range(reps):  # not block * reps: reps may be huge
                            out.write(block)
                        m += reps * len(batch)
                    lo, hi = np.searchsorted(chosen, [pos, end])
                    if hi > lo:
                        out.write("\n".join(batch[i - pos] for i in chosen[lo:hi].tolist()) + "\n")
                        m += int(hi - lo)
                    pos = end
            if pos != n:  # files changed since they were scanned
                raise RuntimeError(f"{lang}: expected {n} sentences in {list(pools[lang])}, read {pos}")
            written[lang] = m
            logger.info("vocabulary sample: %s: %d of %d sentences (x%d + %d)", lang, m, n, reps, len(chosen))
    return written


def train_sentencepiece(
    input_path: str,
    model_prefix: str,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    num_threads: int,
    seed: int,
    verbose: bool = False,
) -> None:
    """Train ``{model_prefix}.model/.vocab`` on the sampled sentences.

    ``hard_vocab_limit=False`` makes ``vocab_size`` an upper bound, so tiny
    corpora (tests, samples) yield a smaller vocabulary instead of failing.
    Special pieces keep sentencepiece's defaults (``<unk>``=0, ``<s>``=1,
    ``</s>``=2, no pad); they are control symbols and are left out of the
    fairseq dictionary, which has its own."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    # Feed an iterator and take the model back in memory instead of passing
    # file names: sentencepiece records input/model_prefix paths in the model
    # proto, which would make spm.model differ between output directories.
    model = io.BytesIO()
    with open(input_path, "r", encoding="utf-8") as f:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(line.rstrip("\n") for line in f),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            hard_vocab_limit=False,
            input_sentence_size=0,  # we already sampled: use every line given
            num_threads=max(1, num_threads),
            minloglevel=0 if verbose else 2,
        )
    with open(model_prefix + ".model", "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    write_spm_vocab(sp, model_prefix + ".vocab")


def write_spm_vocab(sp, path: str) -> None:
    """``spm.vocab`` as ``spm_train`` writes it: piece TAB score per line."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")


def learn_vocabulary(
    pools: Mapping[str, List[str]],
    counts: Mapping[str, int],
    *,
    out_dir: str,
    alpha: float,
    total_sentences: int,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    num_threads: int,
    seed: int,
    verbose: bool = False,
) -> Dict:
    """Sample, train ``out_dir/spm.model`` and return the sampling report
    ``{"probs", "draws"}`` (``draws`` = sentences actually written)."""
    total = min(total_sentences, sum(counts.values()))
    plan = plan_draws(counts, alpha, total)
    sample_path = os.path.join(out_dir, "spm-train-sample.txt")
    try:
        plan["draws"] = write_sample(pools, counts, plan["draws"], sample_path, seed)
        logger.info("training sentencepiece (%s, vocab %d) on %d sentences", model_type, vocab_size, total)
        train_sentencepiece(
            sample_path, os.path.join(out_dir, "spm"), vocab_size, model_type,
            character_coverage, num_threads, seed, verbose,
        )
    finally:
        if os.path.exists(sample_path):
            os.remove(sample_path)
    return plan
