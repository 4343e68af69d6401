"""``xlm-ds-prepare --num-shards N``: preparation in stages that separate
jobs can run (one SLURM array task per shard, ``slurm/prepare.sh``).

    OUT/vocab/      stage ``vocab``: pass 1 (counts, per file in parallel)
                    and pass 2 (spm.model, dict.txt); ``vocab.json`` last
    OUT/shardI/     stage ``shard --shard I``: a complete prepared directory
                    with sentences lo..hi-1 of every train dataset
                    (:mod:`.sharding`); shard 0 also holds valid and test
    OUT/manifest.json  stage ``finalize``: checks every shard, writes
                    dict.txt with the corpus's counts and the top manifest
                    listing the shards; ``fairseq-train OUT`` then trains
                    epoch e on shard (e-1) mod N

Each stage's output is atomic (``vocab.json``, a shard's ``manifest.json``
and the top ``manifest.json`` are written last), so a job that dies leaves
nothing that looks complete, and a stage that finds its own output already
complete keeps it: a requeued or resubmitted array task redoes only what is
missing. The shards concatenated equal the one-machine preparation: same
``spm.model``, same dictionary symbols, same ids in the same order.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Dict, Optional

import numpy as np

from .atomic_dir import atomic_output_dir, check_output_dir, copy_replacing
from .binarize import id_map
from .corpus_spec import CorpusSpec
from .errors import PrepareError
from .manifest import MANIFEST, read_manifest, sha256_file, write_json, write_manifest
from .pipeline import (PrepareConfig, _check_config, _load_sp, base_manifest, binarize_datasets,
                       check_learnable, count_corpora, spm_entry, write_dictionary, write_vocabulary)
from .sharding import shard_range
from .text_reader import FileStats

logger = logging.getLogger(__name__)

VOCAB_DIR = "vocab"
VOCAB_MARKER = "vocab.json"
FAILED_MARKER = "vocab.failed"
COUNTS = "token_counts.npy"  #: raw train counts of a shard (dict.txt floors them at 1)


def shard_dir(root: str, index: int) -> str:
    return os.path.join(root, f"shard{index}")


def _corpus_record(datasets, stats) -> Dict:
    """What the later stages need of pass 1, and what tells them that the
    corpus is still the one the vocabulary was learned on."""
    out = {}
    for (split, name), corpora in datasets.items():
        out[f"{split}.{name}"] = [
            {"paths": list(c.paths), "sentences": st.lines, "empty": st.empty,
             "bytes": [os.path.getsize(p) for p in c.paths]}
            for c, st in zip(corpora, stats[(split, name)])
        ]
    return out


def _stats_from_record(datasets, record: Dict, marker: str):
    """Pass 1's counts as recorded by the vocab stage; an error if the
    corpus given now is another one or a file changed size since."""
    now = {f"{s}.{n}" for s, n in datasets}
    if now != set(record):
        raise PrepareError(
            f"{marker}: the vocabulary stage saw the datasets {sorted(record)}, this command gives "
            f"{sorted(now)}; expected the same --corpus/--mono/--para in every stage"
        )
    stats = {}
    for key, corpora in datasets.items():
        entries = record[f"{key[0]}.{key[1]}"]
        if [list(c.paths) for c in corpora] != [e["paths"] for e in entries]:
            raise PrepareError(f"{marker}: {key[0]}.{key[1]} was made of {[e['paths'] for e in entries]}, this "
                               f"command gives {[list(c.paths) for c in corpora]}; expected the same files")
        for e in entries:
            for path, size in zip(e["paths"], e["bytes"]):
                got = os.path.getsize(path) if os.path.exists(path) else None
                if got != size:
                    raise PrepareError(f"{path}: {size} bytes when the vocabulary stage read it, {got} now; "
                                       f"expected an unchanged corpus (re-run the vocab stage with --overwrite)")
        stats[key] = [FileStats(lines=e["sentences"], empty=e["empty"]) for e in entries]
    return stats


def _vocab_settings(cfg: PrepareConfig) -> Dict:
    keys = ("vocab_size", "model_type", "alpha", "vocab_sentences", "vocab_text", "character_coverage",
            "spm_threads", "seed", "allow_smaller_vocab")
    reuse = {"spm_model": cfg.spm_model and os.path.abspath(cfg.spm_model),
             "dict": cfg.dict_path and os.path.abspath(cfg.dict_path)}
    return {**{k: getattr(cfg, k) for k in keys}, **reuse}


def _read_json(path: str) -> Optional[Dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_vocab(root: str) -> Optional[Dict]:
    return _read_json(os.path.join(root, VOCAB_DIR, VOCAB_MARKER))


def vocab_stage(spec: CorpusSpec, cfg: PrepareConfig, root: str, num_shards: int) -> Dict:
    """Pass 1 and pass 2 into ``root/vocab``; kept if already done with the
    same corpus and settings."""
    datasets = spec.datasets()
    done = _read_vocab(root)
    if done is not None and not cfg.overwrite:
        if done["settings"] != _vocab_settings(cfg) or done["num_shards"] != num_shards:
            raise PrepareError(
                f"{os.path.join(root, VOCAB_DIR, VOCAB_MARKER)}: made with other settings "
                f"({done['settings']}, {done['num_shards']} shards); expected the same options in every stage, "
                f"or --overwrite to start again"
            )
        _stats_from_record(datasets, done["corpus"], os.path.join(root, VOCAB_DIR, VOCAB_MARKER))
        logger.info("vocabulary stage already done: %s", os.path.join(root, VOCAB_DIR))
        return done
    try:
        os.remove(os.path.join(root, FAILED_MARKER))
    except FileNotFoundError:
        pass
    stats, findings = count_corpora(datasets, cfg)
    check_learnable(datasets, cfg)
    with atomic_output_dir(os.path.join(root, VOCAB_DIR), overwrite=True) as tmp:
        sp, d, lut, sampling = write_vocabulary(tmp, datasets, stats, cfg)
        d.save(os.path.join(tmp, "dict.txt"))
        record = {
            "format_version": 1, "num_shards": num_shards, "settings": _vocab_settings(cfg),
            "corpus": _corpus_record(datasets, stats),
            "manifest": base_manifest(spec, cfg, sampling, findings, spm_entry(sp, os.path.join(tmp, "spm.model"),
                                                                                cfg)),
            "dtype": str(lut.dtype),
        }
        write_json(os.path.join(tmp, VOCAB_MARKER), record)
    return record


def record_vocab_failure(root: str, error: Exception) -> None:
    """Tells the waiting shard tasks of this array job that they will not
    get a vocabulary."""
    if os.path.isdir(root):
        write_json(os.path.join(root, FAILED_MARKER), {"error": str(error), "job": _array_job()})


def _array_job() -> Optional[str]:
    return os.environ.get("SLURM_ARRAY_JOB_ID")


def wait_for_vocab(root: str, seconds: float) -> Dict:
    """The vocab stage's record, waiting up to ``seconds`` for another job
    (array task 0) to write it."""
    deadline = time.time() + seconds
    while True:
        done = _read_vocab(root)
        if done is not None:
            return done
        failed = _read_json(os.path.join(root, FAILED_MARKER))
        # a resubmitted array ignores the marker of an earlier job (its task 0 removes it)
        if failed is not None and failed.get("job") == _array_job():
            raise PrepareError(f"{os.path.join(root, FAILED_MARKER)}: the vocabulary stage failed: {failed['error']}")
        if time.time() >= deadline:
            waited = f" after waiting {seconds:.0f}s" if seconds else ""
            raise PrepareError(f"{os.path.join(root, VOCAB_DIR, VOCAB_MARKER)}: not found{waited}; expected "
                               f"the vocab stage to have run (xlm-ds-prepare --stage vocab ... --out {root})")
        time.sleep(min(5.0, max(deadline - time.time(), 0.1)))


def _shard_done(path: str, index: int, record: Dict) -> bool:
    try:
        m = read_manifest(path)
    except PrepareError:
        return False
    s = m.get("shard", {})
    return (s.get("index"), s.get("num_shards"), m["spm"]["sha256"]) == (
        index, record["num_shards"], record["manifest"]["spm"]["sha256"])


def shard_stage(spec: CorpusSpec, cfg: PrepareConfig, root: str, index: int, record: Dict) -> None:
    """Shard ``index`` into ``root/shardI``; kept if already complete."""
    from fairseq.data import Dictionary

    n = record["num_shards"]
    if not 0 <= index < n:
        raise PrepareError(f"--shard {index}; expected 0..{n - 1} (the vocab stage was run for {n} shards)")
    out = shard_dir(root, index)
    if _shard_done(out, index, record) and not cfg.overwrite:
        logger.info("shard %d of %d already complete: %s", index, n, out)
        return
    marker = os.path.join(root, VOCAB_DIR, VOCAB_MARKER)
    datasets = spec.datasets()
    stats = _stats_from_record(datasets, record["corpus"], marker)
    if index > 0:  # validation and test are read from shard 0 only
        datasets = {k: v for k, v in datasets.items() if k[0] == "train"}
    ranges = {k: shard_range(sum(s.lines for s in stats[k]), index, n) for k in datasets if k[0] == "train"}
    vocab = os.path.join(root, VOCAB_DIR)
    with atomic_output_dir(out, overwrite=True) as tmp:
        for name in ("spm.model", "spm.vocab"):
            shutil.copyfile(os.path.join(vocab, name), os.path.join(tmp, name))
        sp = _load_sp(os.path.join(tmp, "spm.model"))
        d = Dictionary.load(os.path.join(vocab, "dict.txt"))
        lut = id_map(sp, d, os.path.join(vocab, "dict.txt"))
        reuse = cfg.spm_model is not None
        splits, counts = binarize_datasets(tmp, datasets, stats, d, lut, cfg, count_tokens=True, ranges=ranges)
        if reuse:
            shutil.copyfile(os.path.join(vocab, "dict.txt"), os.path.join(tmp, "dict.txt"))
        dict_path = write_dictionary(tmp, d, None if reuse else counts, spec.languages)
        np.save(os.path.join(tmp, COUNTS), counts)
        manifest = dict(record["manifest"], splits=splits, dict_size=len(d), dict_sha256=sha256_file(dict_path),
                        dtype=record["dtype"], shard={"index": index, "num_shards": n})
        write_manifest(tmp, manifest)
    logger.info("wrote shard %d of %d: %s", index, n, out)


def finalize_stage(spec_languages, root: str, record: Dict, if_complete: bool = False) -> Optional[Dict]:
    """Checks every shard and writes the top ``manifest.json`` (last) with
    ``dict.txt`` counted over the whole corpus. ``if_complete``: shards
    still missing are not an error (another array task finalizes)."""
    from fairseq.data import Dictionary

    n = record["num_shards"]
    missing = [i for i in range(n) if not _shard_done(shard_dir(root, i), i, record)]
    if missing:
        if if_complete:
            logger.info("%d of %d shards complete; the last one to finish writes %s/%s",
                        n - len(missing), n, root, MANIFEST)
            return None
        raise PrepareError(f"{root}: shard(s) {', '.join(map(str, missing))} of {n} missing or incomplete "
                           f"(no {MANIFEST}); expected every --stage shard --shard I to have finished")
    vocab = os.path.join(root, VOCAB_DIR)
    d = Dictionary.load(os.path.join(vocab, "dict.txt"))
    counts = np.zeros(len(d), dtype=np.int64)
    splits: Dict[str, Dict] = {}
    for i in range(n):
        path = shard_dir(root, i)
        if Dictionary.load(os.path.join(path, "dict.txt")).symbols != d.symbols:
            raise PrepareError(f"{path}/dict.txt: other symbols than {vocab}/dict.txt; expected every shard "
                               f"to be made from the same vocab stage (re-run --stage shard --shard {i})")
        counts += np.load(os.path.join(path, COUNTS))
        for split, entries in read_manifest(path)["splits"].items():
            for name, e in entries.items():
                _add_entry(splits.setdefault(split, {}), name, e)
    for key, entries in record["corpus"].items():
        split, name = key.split(".", 1)
        splits[split][name]["empty_skipped"] = sum(e["empty"] for e in entries)
        splits[split][name].pop("sentences", None)
    for name in ("spm.model", "spm.vocab"):
        copy_replacing(os.path.join(vocab, name), os.path.join(root, name))
    reuse = record["settings"]["spm_model"] is not None
    if reuse:
        copy_replacing(os.path.join(vocab, "dict.txt"), os.path.join(root, "dict.txt"))
    dict_path = write_dictionary(root, d, None if reuse else counts, spec_languages)
    manifest = dict(record["manifest"], splits=splits, dict_size=len(d), dict_sha256=sha256_file(dict_path),
                    dtype=record["dtype"], shards=[os.path.basename(shard_dir(root, i)) for i in range(n)])
    write_manifest(root, manifest)
    logger.info("wrote %s/%s: %d shards", root, MANIFEST, n)
    return {"format_version": 1, **manifest}


def _add_entry(into: Dict, name: str, e: Dict) -> None:
    if name not in into:
        into[name] = json.loads(json.dumps(e))
        return
    have = into[name]
    for field in ("lines", "tokens", "unk"):
        if isinstance(e[field], dict):
            have[field] = {k: have[field][k] + v for k, v in e[field].items()}
        else:
            have[field] += e[field]


def _check_staged_root(root: str, cfg: PrepareConfig) -> None:
    """A staged ``--out`` is new, empty, or one of ours not yet finalized
    (it holds ``vocab/`` or a failed vocab stage's marker)."""
    ours = any(os.path.exists(os.path.join(root, n)) for n in (VOCAB_DIR, FAILED_MARKER))
    if ours and not os.path.exists(os.path.join(root, MANIFEST)):
        return
    check_output_dir(root, cfg.overwrite)


def prepare_stage(spec: CorpusSpec, cfg: PrepareConfig, stage: str, num_shards: int = 1,
                  shard: Optional[int] = None, if_complete: bool = False, wait_seconds: float = 0) -> Optional[Dict]:
    """One stage (or ``all``) of a sharded preparation of ``cfg.out``."""
    _check_config(cfg)
    root = os.path.abspath(cfg.out)
    if stage == "all":  # one machine: every stage inside one atomic directory
        with atomic_output_dir(root, cfg.overwrite) as tmp:
            record = vocab_stage(spec, cfg, tmp, num_shards)
            for i in range(num_shards):
                shard_stage(spec, cfg, tmp, i, record)
            return finalize_stage(spec.languages, tmp, record)
    if stage == "vocab":
        _check_staged_root(root, cfg)
        os.makedirs(root, exist_ok=True)
        try:
            vocab_stage(spec, cfg, root, num_shards)
        except PrepareError as e:
            record_vocab_failure(root, e)
            raise
        return None
    record = wait_for_vocab(root, wait_seconds)
    if stage == "shard":
        if shard is None:
            raise PrepareError("--stage shard needs --shard I (0-based shard index)")
        shard_stage(spec, cfg, root, shard, record)
        return None
    return finalize_stage(spec.languages, root, record, if_complete)

