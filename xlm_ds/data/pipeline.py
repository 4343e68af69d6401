"""The ``xlm-ds-prepare`` pipeline, callable without argparse.

Order of work, chosen so that bad input fails in seconds, not after an hour
of encoding:

1. validate options and the output directory;
2. pass 1 - read every file once (UTF-8, empty lines, parallel alignment)
   and count sentences; this also gives the per-language counts that the
   alpha-smoothed vocabulary sampling needs *before* drawing;
3. pass 2 - draw the vocabulary sample and train sentencepiece (or copy a
   given ``--spm-model``/``--dict`` and check they belong together);
4. pass 3 - encode + binarize every dataset in worker processes;
5. write ``dict.txt`` (counts from the train split), ``dict.{lang}.txt``
   copies for fairseq's translation task, and ``manifest.json`` last;
6. rename the temp directory to ``--out`` (see :mod:`.atomic_dir`).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Optional, Tuple

import numpy as np

from .atomic_dir import atomic_output_dir, check_output_dir, copy_replacing
from .binarize import EncoderPool, binarize_dataset, build_dictionary, id_map, worker_context
from .corpus_spec import CorpusSpec, MonoCorpus
from .errors import PrepareError
from .manifest import sha256_file, versions, write_manifest
from .sharding import sentence_range
from .text_reader import MAX_LINE_CHARS, FileStats, iter_pairs, iter_sentences, scan
from .vocab_training import SPM_THREADS, learn_vocabulary, write_spm_vocab

logger = logging.getLogger(__name__)

MODEL_TYPES = ("bpe", "unigram")
VOCAB_TEXTS = ("mono", "all")


def vocabulary_pools(datasets, stats, vocab_text: str):
    """``(counts, pools)`` of the vocabulary sample: per language, the train
    sentences it is drawn from and their files. XLM learns its BPE on
    monolingual text (``mono``); a language without any keeps its parallel
    sides, so that it still gets pieces. ``all`` adds the parallel sides of
    every language."""
    sides = {}  # lang -> [(path, lines, is_mono)]
    for key, corpora in datasets.items():
        if key[0] != "train":
            continue
        for c, st in zip(corpora, stats[key]):
            if isinstance(c, MonoCorpus):
                sides.setdefault(c.lang, []).append((c.path, st.lines, True))
            else:
                for lang, path in ((c.src, c.src_path), (c.tgt, c.tgt_path)):
                    sides.setdefault(lang, []).append((path, st.lines, False))
    counts: Dict[str, int] = {}
    pools: Dict[str, List[str]] = {}
    for lang, files in sides.items():
        has_mono = any(is_mono for _, _, is_mono in files)
        keep = [(p, n) for p, n, is_mono in files if is_mono or vocab_text == "all" or not has_mono]
        if vocab_text == "mono" and not has_mono:
            logger.info("vocabulary sample: %s has no monolingual train text; its parallel sides are used", lang)
        counts[lang] = sum(n for _, n in keep)
        pools[lang] = [p for p, _ in keep]
    return counts, pools


@dataclass
class PrepareConfig:
    """Options of ``xlm-ds-prepare`` (see ``--help`` for their meaning)."""

    out: str
    vocab_size: int = 8000
    model_type: str = "bpe"
    alpha: float = 0.5
    vocab_sentences: int = 1_000_000
    vocab_text: str = "mono"
    character_coverage: float = 0.9995
    spm_threads: int = SPM_THREADS
    spm_model: Optional[str] = None
    dict_path: Optional[str] = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 1
    overwrite: bool = False
    batch_lines: int = 10000
    progress: bool = True
    verbose: bool = False
    strict_text: bool = False
    max_line_chars: int = MAX_LINE_CHARS
    allow_smaller_vocab: bool = False
    command: Optional[List[str]] = None


def _check_vocabulary_size(reached: int, cfg: PrepareConfig, sentences: int) -> None:
    """sentencepiece (with ``hard_vocab_limit=False``) stops where the
    sample has no more pieces to merge: a smaller vocabulary than asked is
    an error unless accepted (a run sized for one vocabulary must not get
    another without a word)."""
    if reached >= cfg.vocab_size:
        return
    what = (f"--vocab-size {cfg.vocab_size}: sentencepiece reached {reached} pieces on the {sentences:,} "
            f"sentences of the vocabulary sample")
    if not cfg.allow_smaller_vocab:
        raise PrepareError(f"{what}; expected a size the corpus can give: lower --vocab-size to at most "
                           f"{reached}, or pass --allow-smaller-vocab to accept {reached}")
    logger.warning("%s; accepted (--allow-smaller-vocab)", what)


def _check_config(cfg: PrepareConfig) -> None:
    if (cfg.spm_model is None) != (cfg.dict_path is None):
        raise PrepareError("--spm-model and --dict go together; expected both (reuse a vocabulary) or neither (learn one)")
    for flag, path in (("--spm-model", cfg.spm_model), ("--dict", cfg.dict_path)):
        if path is not None and not os.path.isfile(path):
            raise PrepareError(f"{flag} {path}: file not found; expected an existing file")
    if cfg.model_type not in MODEL_TYPES:
        raise PrepareError(f"--model-type {cfg.model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    if cfg.vocab_size < 8:
        raise PrepareError(f"--vocab-size {cfg.vocab_size}; expected an integer >= 8")
    if not (cfg.alpha >= 0 and cfg.alpha == cfg.alpha and cfg.alpha != float("inf")):
        raise PrepareError(f"--alpha {cfg.alpha}; expected a finite number >= 0 (XLM uses 0.5, XLM-R 0.3)")
    if cfg.vocab_text not in VOCAB_TEXTS:
        raise PrepareError(f"--vocab-text {cfg.vocab_text!r}; expected one of {', '.join(VOCAB_TEXTS)}")
    if cfg.vocab_sentences < 1:
        raise PrepareError(f"--vocab-sentences {cfg.vocab_sentences}; expected an integer >= 1")
    if not (0 < cfg.character_coverage <= 1):
        raise PrepareError(f"--character-coverage {cfg.character_coverage}; expected a number in (0, 1]")
    if cfg.spm_threads < 1:
        raise PrepareError(f"--spm-threads {cfg.spm_threads}; expected an integer >= 1")
    if cfg.workers < 1:
        raise PrepareError(f"--workers {cfg.workers}; expected an integer >= 1")
    if cfg.max_line_chars < 1:
        raise PrepareError(f"--max-line-chars {cfg.max_line_chars}; expected an integer >= 1")
    if cfg.batch_lines < 1:
        raise PrepareError(f"--batch-lines {cfg.batch_lines}; expected an integer >= 1")


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=total, desc=desc, unit=" lines", file=sys.stderr, leave=False, mininterval=1.0, disable=None)


def _load_sp(path: str):
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as e:
        raise PrepareError(f"--spm-model {path}: cannot load a sentencepiece model ({e})") from None


def _spm_model_type(sp, default: str) -> str:
    """The model type stored in the model proto (needs protobuf)."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb  # needs protobuf

        m = pb.ModelProto()
        m.ParseFromString(sp.serialized_model_proto())
        return pb.TrainerSpec.ModelType.Name(m.trainer_spec.model_type).lower()
    except Exception:  # pragma: no cover - protobuf missing
        return default


def count_corpora(datasets, cfg: PrepareConfig):
    """Pass 1: validate and count every corpus, one process per file (up
    to ``--workers``); ``(stats, findings)``. Reading is cheap next to
    encoding, but at CC-100 scale it is hours of I/O, so files are read in
    parallel."""
    jobs = [(key, j, c.paths) for key, corpora in datasets.items() for j, c in enumerate(corpora)]
    scan_one = partial(scan, max_line_chars=cfg.max_line_chars, strict=cfg.strict_text)
    workers = min(cfg.workers, len(jobs))
    if workers > 1:
        # closed and joined, not terminated on success (``with Pool`` does
        # terminate(), which can kill a worker holding the task queue's lock
        # and leave join() waiting on another for ever: seen here, 1 run in ~30)
        pool = worker_context().Pool(workers)
        try:
            results = pool.map(scan_one, [paths for _, _, paths in jobs], chunksize=1)
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    else:
        results = [scan_one(paths) for _, _, paths in jobs]
    stats: Dict[tuple, List[FileStats]] = {key: [None] * len(corpora) for key, corpora in datasets.items()}
    for (key, j, _), st in zip(jobs, results):
        stats[key][j] = st
    findings = []
    for key in datasets:
        logger.info("checked %s.%s: %d sentences", key[0], key[1], sum(s.lines for s in stats[key]))
        for st in stats[key]:
            for f in st.findings.values():
                logger.warning("%s; %s (--strict-text refuses them)", f.message(cfg.max_line_chars), f.handling())
                findings.append(f.as_dict())
    return stats, findings


def check_learnable(datasets, cfg: PrepareConfig) -> None:
    if cfg.spm_model is None and not any(split == "train" for split, _ in datasets):
        raise PrepareError(
            "no train corpus; expected at least one train:... corpus to learn the vocabulary from "
            "(or --spm-model/--dict to reuse one)"
        )


def write_vocabulary(tmp: str, datasets, stats, cfg: PrepareConfig):
    """Pass 2: ``spm.model``, ``spm.vocab`` and the dictionary (counts not
    yet known) in ``tmp``, learned or reused; ``(sp, d, lut, sampling)``."""
    from fairseq.data import Dictionary

    spm_path = os.path.join(tmp, "spm.model")
    if cfg.spm_model is not None:
        shutil.copyfile(cfg.spm_model, spm_path)
        src_vocab = os.path.splitext(cfg.spm_model)[0] + ".vocab"
        sp = _load_sp(spm_path)
        if os.path.isfile(src_vocab):
            shutil.copyfile(src_vocab, os.path.join(tmp, "spm.vocab"))
        else:
            write_spm_vocab(sp, os.path.join(tmp, "spm.vocab"))
        try:
            d = Dictionary.load(cfg.dict_path)
        except Exception as e:
            raise PrepareError(f"--dict {cfg.dict_path}: cannot load a fairseq dictionary ({e})") from None
        lut = id_map(sp, d, cfg.dict_path)
        shutil.copyfile(cfg.dict_path, os.path.join(tmp, "dict.txt"))
        sampling = {"probs": {}, "draws": {}}
    else:
        lang_counts, pools = vocabulary_pools(datasets, stats, cfg.vocab_text)
        sampling = learn_vocabulary(
            pools, lang_counts, out_dir=tmp, alpha=cfg.alpha, total_sentences=cfg.vocab_sentences,
            vocab_size=cfg.vocab_size, model_type=cfg.model_type,
            character_coverage=cfg.character_coverage, num_threads=cfg.spm_threads, seed=cfg.seed,
            verbose=cfg.verbose,
        )
        sp = _load_sp(spm_path)
        _check_vocabulary_size(sp.get_piece_size(), cfg, sum(sampling["draws"].values()))
        d = build_dictionary(sp)
        lut = id_map(sp, d)
    logger.info("vocabulary: %d sentencepiece pieces, %d dictionary symbols", sp.get_piece_size(), len(d))
    return sp, d, lut, sampling


def binarize_datasets(tmp: str, datasets, stats, d, lut, cfg: PrepareConfig, count_tokens: bool,
                      ranges: Optional[Dict[tuple, Tuple[int, int]]] = None):
    """Pass 3: every dataset of ``datasets`` into ``tmp``; ``(splits,
    train_counts)``. ``ranges[key] = (lo, hi)`` keeps only sentences
    lo..hi-1 of that dataset (a shard, :mod:`.sharding`)."""
    splits: Dict[str, Dict] = {}
    train_counts = np.zeros(len(d), dtype=np.int64)
    with EncoderPool(os.path.join(tmp, "spm.model"), lut, cfg.workers) as pool:
        for (split, name), corpora in datasets.items():
            span = (ranges or {}).get((split, name))
            total = sum(s.lines for s in stats[(split, name)]) if span is None else span[1] - span[0]
            bar = _progress_bar(total, f"{split}.{name}", cfg.progress)
            t1 = time.time()
            fstats = FileStats()
            if isinstance(corpora[0], MonoCorpus):
                sides = [name]
                prefixes = [os.path.join(tmp, f"{split}.{name}")]
                read = lambda c: ((b,) for b in iter_sentences(c.path, fstats, cfg.batch_lines))  # noqa: E731
            else:
                sides = [corpora[0].src, corpora[0].tgt]
                prefixes = [os.path.join(tmp, f"{split}.{name}.{lang}") for lang in sides]
                read = lambda c: iter_pairs(c.src_path, c.tgt_path, fstats, cfg.batch_lines)  # noqa: E731
            if span is None:
                batches = (b for c in corpora for b in read(c))
            else:
                batches = sentence_range(corpora, [s.lines for s in stats[(split, name)]], span, read)
            counted = count_tokens and split == "train"
            res = binarize_dataset(
                pool, batches, prefixes, len(d), d.unk(), count_tokens=counted,
                progress=bar.update if bar is not None else None,
            )
            if bar is not None:
                bar.close()
            if counted:
                for r in res:
                    train_counts += r.counts
            entry = {
                "lines": res[0].lines,
                "tokens": res[0].tokens if len(res) == 1 else {lang: r.tokens for lang, r in zip(sides, res)},
                "unk": res[0].unk if len(res) == 1 else {lang: r.unk for lang, r in zip(sides, res)},
                "empty_skipped": fstats.empty if span is None else None,
                "files": [c.path if isinstance(c, MonoCorpus) else [c.src_path, c.tgt_path] for c in corpora],
            }
            if span is not None:
                entry["sentences"] = list(span)
            splits.setdefault(split, {})[name] = entry
            logger.info(
                "binarized %s.%s: %d lines, %s tokens in %.1fs",
                split, name, entry["lines"], entry["tokens"], time.time() - t1,
            )
    return splits, train_counts


def write_dictionary(tmp: str, d, train_counts: Optional[np.ndarray], languages) -> str:
    """``dict.txt`` with counts = token frequency in train, floor 1 (a tool
    that drops zero-count entries keeps every piece); ``train_counts=None``
    keeps the file already there (a reused ``--dict``). Copies
    ``dict.{lang}.txt`` for fairseq's translation task."""
    from fairseq.data import Dictionary

    dict_path = os.path.join(tmp, "dict.txt")
    if train_counts is not None:
        for i in range(d.nspecial, len(d)):
            d.count[i] = max(1, int(train_counts[i]))
        part = f"{dict_path}.tmp-{os.getpid()}"  # replaced whole: the top of a sharded OUT is live
        d.save(part)
        if Dictionary.load(part).symbols != d.symbols:  # e.g. a piece the text format cannot hold
            raise RuntimeError(f"{dict_path}: does not load back to the same symbols")
        os.replace(part, dict_path)
    for lang in languages:
        copy_replacing(dict_path, os.path.join(tmp, f"dict.{lang}.txt"))
    return dict_path


def spm_entry(sp, spm_path: str, cfg: PrepareConfig) -> Dict:
    reuse = cfg.spm_model is not None
    return {
        "model_type": _spm_model_type(sp, "unknown" if reuse else cfg.model_type),
        "vocab_size": sp.get_piece_size(),
        "requested_vocab_size": None if reuse else cfg.vocab_size,
        "character_coverage": None if reuse else cfg.character_coverage,
        "threads": None if reuse else cfg.spm_threads,  # the model depends on it (vocab_training.py)
        "sha256": sha256_file(spm_path),
        "reused_from": os.path.abspath(cfg.spm_model) if reuse else None,
    }


def base_manifest(spec: CorpusSpec, cfg: PrepareConfig, sampling, findings, spm: Dict) -> Dict:
    """The manifest entries every output (directory, shard, top) shares."""
    reuse = cfg.spm_model is not None
    return {
        "alpha": float(cfg.alpha),
        "vocab_sampling": sampling["probs"],
        "vocab_sentences": sampling["draws"],
        "vocab_text": None if reuse else cfg.vocab_text,
        "languages": spec.languages,
        "pairs": spec.pairs,
        "text_findings": findings,
        "spm": spm,
        "seed": cfg.seed,
        "versions": versions(),
        "command": cfg.command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def prepare(spec: CorpusSpec, cfg: PrepareConfig) -> Dict:
    """Run the whole pipeline; returns the manifest written to ``cfg.out``."""
    t0 = time.time()
    _check_config(cfg)
    check_output_dir(os.path.abspath(cfg.out), cfg.overwrite)
    reuse = cfg.spm_model is not None
    datasets = spec.datasets()
    stats, findings = count_corpora(datasets, cfg)
    check_learnable(datasets, cfg)

    with atomic_output_dir(cfg.out, cfg.overwrite) as tmp:
        sp, d, lut, sampling = write_vocabulary(tmp, datasets, stats, cfg)
        splits, train_counts = binarize_datasets(tmp, datasets, stats, d, lut, cfg, count_tokens=not reuse)
        dict_path = write_dictionary(tmp, d, None if reuse else train_counts, spec.languages)
        manifest = base_manifest(spec, cfg, sampling, findings, spm_entry(sp, os.path.join(tmp, "spm.model"), cfg))
        manifest.update(splits=splits, dict_size=len(d), dict_sha256=sha256_file(dict_path), dtype=str(lut.dtype))
        write_manifest(tmp, manifest)
    logger.info("wrote %s in %.1fs", cfg.out, time.time() - t0)
    return {"format_version": 1, **manifest}


__all__ = ["PrepareConfig", "prepare", "MODEL_TYPES", "VOCAB_TEXTS"]
