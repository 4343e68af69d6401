"""``manifest.json``: what a prepared data directory contains.

Written LAST by ``xlm-ds-prepare`` (its presence marks a directory as
complete), read by the training task to learn languages, pairs and split
sizes without scanning the binaries, and by humans to audit a run (which
sentencepiece model, which versions, how many ``<unk>``).

Schema (``format_version`` 1)::

    {
      "format_version": 1,
      "alpha": 0.5,
      "vocab_sampling": {"de": 0.33, ...},       # q_i used for spm training
      "vocab_sentences": {"de": 5000, ...},      # sentences drawn per language
      "languages": ["de", "en", "fr"],           # sorted, mono + para
      "pairs": ["de-en", "en-fr"],               # sorted
      "splits": {
        "train": {
          "en":    {"lines": n, "tokens": m, "unk": u, "empty_skipped": e, "files": [...]},
          "de-en": {"lines": n, "tokens": {"de": m1, "en": m2}, "unk": {"de": .., "en": ..},
                    "empty_skipped": e, "files": [[src, tgt], ...]}
        }, "valid": {...}, "test": {...}
      },
      "spm": {"model_type": "bpe", "vocab_size": 8000, "sha256": "...", "reused": false},
      "dict_size": 7997, "dict_sha256": "...",
      "dtype": "uint16",
      "versions": {"xlm_ds": ..., "fairseq": ..., "sentencepiece": ..., "torch": ..., "numpy": ...},
      "command": [...], "created": "2025-...Z"
    }

Tokens include one eos per sentence (exactly what the .bin holds).  In
vocabulary-reuse mode ``vocab_sampling``/``vocab_sentences`` are ``{}``.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict

from .errors import PrepareError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> Dict[str, str]:
    """Versions of the packages whose behaviour determines the output."""
    out = {}
    for name in ("xlm_ds", "fairseq", "sentencepiece", "torch", "numpy"):
        try:
            mod = __import__(name)
            out[name] = str(getattr(mod, "__version__", "unknown"))
        except Exception:  # pragma: no cover - reporting only
            out[name] = "unavailable"
    if out.get("xlm_ds") == "unknown":
        try:
            from importlib.metadata import version

            out["xlm_ds"] = version("xlm-ds")
        except Exception:
            pass
    return out


def write_manifest(out_dir: str, manifest: Dict) -> str:
    """Write ``out_dir/manifest.json`` (via a temp file + rename)."""
    path = os.path.join(out_dir, MANIFEST)
    write_json(path, {"format_version": FORMAT_VERSION, **manifest})
    return path


def write_json(path: str, obj: Dict) -> None:
    """``path`` replaced whole (temp file + rename; the temp name is per
    process, as two finalizing array tasks may race)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_manifest(data_dir: str) -> Dict:
    """Load and check ``data_dir/manifest.json``; :class:`PrepareError` if
    missing (an incomplete or foreign directory) or of another version."""
    path = os.path.join(data_dir, MANIFEST)
    try:
        with open(path, "r", encoding="utf-8") as f:
            m = json.load(f)
    except FileNotFoundError:
        raise PrepareError(
            f"{path}: not found; expected a directory prepared by xlm-ds-prepare (an interrupted run leaves none)"
        ) from None
    except json.JSONDecodeError as e:
        raise PrepareError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if m.get("format_version") != FORMAT_VERSION:
        raise PrepareError(
            f"{path}: format_version {m.get('format_version')!r}; expected {FORMAT_VERSION} (re-run xlm-ds-prepare)"
        )
    return m
