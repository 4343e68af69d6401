"""Which text files make up the corpus: ``--mono``/``--para`` flags or YAML.

Why a separate module: the corpus description is the user's main input and
the place where typos happen (``dev`` instead of ``valid``, ``english``
instead of ``en``, a wrong path).  Everything is validated here, before any
expensive work, and every error names the flag value or ``FILE:LINE`` of the
YAML file and says what was expected.

Flag syntax (repeatable; several files for the same split and language or
pair are concatenated in the order given)::

    --mono SPLIT:LANG=PATH
    --para SPLIT:SRC-TGT=SRC_PATH,TGT_PATH

YAML syntax (``--corpus FILE``; relative paths are relative to the YAML
file's directory)::

    mono:
      train:
        en: train.en.gz              # a path, or a list of paths
        de: [a.de.gz, b.de.gz]
      valid:
        en: valid.en.gz
    para:
      train:
        de-en: {de: train.de-en.de.gz, en: train.de-en.en.gz}   # or a list of such
      valid:
        de-en: {de: valid.de-en.de.gz, en: valid.de-en.en.gz}

SPLIT is one of ``train``, ``valid``, ``test``; a language code matches
``^[a-z]{2,3}(_[A-Za-z]+)?$`` (ISO 639-1/3 with an optional script or
variant, e.g. ``en``, ``ast``, ``zh_Hans``); a pair is ``SRC-TGT`` with two
different codes.  The output files use these names (fairseq naming).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .errors import PrepareError

SPLITS = ("train", "valid", "test")
LANG_RE = re.compile(r"^[a-z]{2,3}(_[A-Za-z]+)?$")
_LANG_EXPECT = "expected 2-3 lowercase letters with an optional _Variant suffix, e.g. en, de, zh_Hans"


@dataclass(frozen=True)
class MonoCorpus:
    """One monolingual text file for ``split`` in language ``lang``."""

    split: str
    lang: str
    path: str
    origin: str  #: where it was declared, for error messages

    @property
    def name(self) -> str:
        """Dataset name in the output directory (``{split}.{name}.bin``)."""
        return self.lang

    @property
    def paths(self) -> Tuple[str, ...]:
        return (self.path,)


@dataclass(frozen=True)
class ParaCorpus:
    """One aligned pair of text files for ``split`` in pair ``src-tgt``."""

    split: str
    src: str
    tgt: str
    src_path: str
    tgt_path: str
    origin: str

    @property
    def name(self) -> str:
        return f"{self.src}-{self.tgt}"

    @property
    def paths(self) -> Tuple[str, ...]:
        return (self.src_path, self.tgt_path)


@dataclass
class CorpusSpec:
    """All corpora, in declaration order."""

    mono: List[MonoCorpus] = field(default_factory=list)
    para: List[ParaCorpus] = field(default_factory=list)

    @property
    def languages(self) -> List[str]:
        langs = {c.lang for c in self.mono} | {c.src for c in self.para} | {c.tgt for c in self.para}
        return sorted(langs)

    @property
    def pairs(self) -> List[str]:
        return sorted({c.name for c in self.para})

    def datasets(self) -> Dict[Tuple[str, str], list]:
        """``{(split, name): [corpus, ...]}`` with name = lang or ``src-tgt``;
        each entry becomes one output dataset (files concatenated)."""
        out: Dict[Tuple[str, str], list] = {}
        for c in [*self.mono, *self.para]:
            out.setdefault((c.split, c.name), []).append(c)
        return dict(sorted(out.items(), key=lambda kv: (SPLITS.index(kv[0][0]), kv[0][1])))

    def extend(self, other: "CorpusSpec") -> None:
        self.mono.extend(other.mono)
        self.para.extend(other.para)


def _check_split(split: str, where: str) -> None:
    if split not in SPLITS:
        raise PrepareError(f"{where}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _check_lang(lang: str, where: str) -> None:
    if not LANG_RE.match(lang):
        raise PrepareError(f"{where}: invalid language code {lang!r}; {_LANG_EXPECT}")


def _split_pair(pair: str, where: str) -> Tuple[str, str]:
    parts = pair.split("-")
    if len(parts) != 2:
        raise PrepareError(f"{where}: invalid language pair {pair!r}; expected SRC-TGT, e.g. de-en")
    src, tgt = parts
    _check_lang(src, where)
    _check_lang(tgt, where)
    if src == tgt:
        raise PrepareError(f"{where}: language pair {pair!r} has the same language twice; expected SRC-TGT with SRC != TGT")
    return src, tgt


def _check_file(path: str, where: str, shown: Optional[str] = None) -> str:
    if not os.path.exists(path):
        raise PrepareError(f"{where}: {shown or path}: file not found; expected a text file (plain or .gz)")
    if not os.path.isfile(path):
        raise PrepareError(f"{where}: {shown or path}: not a regular file; expected a text file (plain or .gz)")
    return path


def parse_mono_flag(value: str) -> MonoCorpus:
    """Parse ``SPLIT:LANG=PATH`` (the ``--mono`` flag)."""
    where = f"--mono {value!r}"
    head, eq, path = value.partition("=")
    split, colon, lang = head.partition(":")
    if not eq or not colon or not path:
        raise PrepareError(f"{where}: expected SPLIT:LANG=PATH, e.g. train:en=data/train.en.gz")
    _check_split(split, where)
    _check_lang(lang, where)
    return MonoCorpus(split, lang, _check_file(path, where), where)


def parse_para_flag(value: str) -> ParaCorpus:
    """Parse ``SPLIT:SRC-TGT=SRC_PATH,TGT_PATH`` (the ``--para`` flag)."""
    where = f"--para {value!r}"
    head, eq, paths = value.partition("=")
    split, colon, pair = head.partition(":")
    parts = paths.split(",")
    if not eq or not colon or len(parts) != 2 or not all(parts):
        raise PrepareError(
            f"{where}: expected SPLIT:SRC-TGT=SRC_PATH,TGT_PATH, e.g. train:de-en=train.de.gz,train.en.gz"
            " (paths may not contain commas; use --corpus YAML for those)"
        )
    _check_split(split, where)
    src, tgt = _split_pair(pair, where)
    return ParaCorpus(split, src, tgt, _check_file(parts[0], where), _check_file(parts[1], where), where)


# --------------------------------------------------------------------- YAML
def load_corpus_yaml(path: str) -> CorpusSpec:
    """Parse a ``--corpus`` YAML file (format in the module docstring).

    Works on the composed node tree rather than plain Python objects so that
    every error can name the line it is about."""
    import yaml  # local: only needed for --corpus

    try:
        with open(path, "r", encoding="utf-8") as f:
            root = yaml.compose(f, Loader=yaml.SafeLoader)
    except FileNotFoundError:
        raise PrepareError(f"--corpus {path}: file not found; expected a YAML corpus description") from None
    except UnicodeDecodeError as e:
        raise PrepareError(f"--corpus {path}: not UTF-8 ({e.reason}); expected a YAML corpus description") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"{path}:{mark.line + 1}" if mark is not None else path
        raise PrepareError(f"{loc}: invalid YAML ({getattr(e, 'problem', None) or e}); expected a mapping with keys mono/para") from None
    base = os.path.dirname(os.path.abspath(path))
    spec = CorpusSpec()

    def where(node) -> str:
        return f"{path}:{node.start_mark.line + 1}"

    def mapping(node, what: str) -> List[Tuple["yaml.Node", "yaml.Node"]]:
        if not isinstance(node, yaml.MappingNode):
            raise PrepareError(f"{where(node)}: expected a mapping for {what}")
        seen = set()
        for k, _ in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise PrepareError(f"{where(k)}: expected a plain key in {what}")
            if k.value in seen:
                raise PrepareError(f"{where(k)}: duplicate key {k.value!r} in {what}; list several files under one key instead")
            seen.add(k.value)
        return node.value

    def scalar_path(node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or not node.value:
            raise PrepareError(f"{where(node)}: expected a file path for {what}")
        p = os.path.join(base, os.path.expanduser(node.value))
        return _check_file(os.path.normpath(p), where(node), shown=node.value)

    def items(node) -> Iterable:
        return node.value if isinstance(node, yaml.SequenceNode) else [node]

    if root is None:
        raise PrepareError(f"{path}: empty YAML file; expected a mapping with keys mono/para")
    for key, section in mapping(root, "the corpus file (keys: mono, para)"):
        if key.value not in ("mono", "para"):
            raise PrepareError(f"{where(key)}: unknown key {key.value!r}; expected mono or para")
        for split_node, langs in mapping(section, key.value):
            _check_split(split_node.value, where(split_node))
            for name_node, value in mapping(langs, f"{key.value}.{split_node.value}"):
                name, w = name_node.value, where(name_node)
                if key.value == "mono":
                    _check_lang(name, w)
                    for item in items(value):
                        spec.mono.append(MonoCorpus(split_node.value, name, scalar_path(item, f"{name}"), where(item)))
                else:
                    src, tgt = _split_pair(name, w)
                    for item in items(value):
                        sides = dict((k.value, v) for k, v in mapping(item, f"pair {name} (keys {src} and {tgt})"))
                        if set(sides) != {src, tgt}:
                            raise PrepareError(
                                f"{where(item)}: pair {name} has keys {sorted(sides)}; expected exactly {src} and {tgt}"
                            )
                        spec.para.append(
                            ParaCorpus(
                                split_node.value, src, tgt,
                                scalar_path(sides[src], f"{name} side {src}"),
                                scalar_path(sides[tgt], f"{name} side {tgt}"),
                                where(item),
                            )
                        )
    return spec


def build_spec(mono: Iterable[str] = (), para: Iterable[str] = (), corpus_files: Iterable[str] = ()) -> CorpusSpec:
    """Combine ``--corpus`` files and ``--mono``/``--para`` flags into one spec."""
    spec = CorpusSpec()
    for f in corpus_files:
        spec.extend(load_corpus_yaml(f))
    spec.mono.extend(parse_mono_flag(v) for v in mono)
    spec.para.extend(parse_para_flag(v) for v in para)
    if not spec.mono and not spec.para:
        raise PrepareError("no corpus given; expected --corpus FILE, --mono SPLIT:LANG=PATH or --para SPLIT:SRC-TGT=SRC,TGT")
    return spec
