"""Streaming reader for one-sentence-per-line corpora (plain or gzip).

Why a custom reader instead of ``open(path, encoding="utf-8")``: a text-mode
file raises ``UnicodeDecodeError`` without saying *which line* is bad, which
is useless on a 10 GB corpus, and reading line by line in Python is slow.
Here files are read in binary blocks of ~1 MiB, each block is decoded in one
C call (fast path) and only on failure is the exact line/column located.

Conventions (documented in docs/prepare.md):

* gzip is detected by its magic bytes (``1f 8b``), not by the file name;
* lines are split on ``\\n`` only (``\\r\\n`` works: the ``\\r`` is stripped),
  line numbers are 1-based physical lines, as ``wc -l``/editors count them;
* every line is stripped of leading/trailing whitespace (``str.strip``), a
  UTF-8 byte-order mark at the start of a file is dropped;
* empty (after stripping) lines are *skipped and counted* in monolingual
  files: they carry no sentence, and blank separators between documents are
  common in raw corpora.  In parallel files a pair whose two sides are both
  empty is skipped and counted; a pair with exactly one empty side is an
  error naming both files and the line, because silently dropping it would
  hide a misalignment;
* a file with no non-empty line at all is an error (an empty corpus is
  almost always a wrong path or a failed download);
* what a clean corpus should not hold is normalised and reported once per
  file by the first pass of ``xlm-ds-prepare`` (``scan``), with the first
  line and the number of lines (``--strict-text`` refuses it instead):
  carriage returns (CRLF line ends: the ``\r`` is stripped; a CR inside a
  line becomes a space), NUL bytes (removed), and lines longer than
  ``--max-line-chars`` characters (kept: usually a document without line
  breaks, which sentencepiece leaves out of its training sample).
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple

from .errors import PrepareError

#: bytes read per block; large enough to amortise Python overhead per line
BLOCK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"
#: default of ``--max-line-chars``: longer lines are reported
MAX_LINE_CHARS = 20_000


@dataclass
class Finding:
    """Lines of one file that hold something a clean corpus should not."""

    path: str
    kind: str  #: "cr", "nul" or "long"
    lines: int = 0
    first_line: int = 0
    longest: int = 0  #: characters of the longest line ("long")

    def message(self, max_line_chars: int) -> str:
        what = {
            "cr": "carriage return (CRLF line ends, or a CR inside a line)",
            "nul": "NUL byte",
            "long": f"line of over {max_line_chars:,} characters (longest {self.longest:,}; "
                    "a document without line breaks?)",
        }[self.kind]
        return f"{self.path}:{self.first_line}: {what} on {self.lines:,} line(s), the first here"

    def handling(self) -> str:
        return {"cr": "CRs stripped at line ends, replaced by a space inside a line",
                "nul": "NUL bytes removed", "long": "lines kept"}[self.kind]

    def as_dict(self) -> Dict:
        out = {"file": self.path, "kind": self.kind, "lines": self.lines, "first_line": self.first_line}
        if self.kind == "long":
            out["longest_chars"] = self.longest
        return out


@dataclass
class FileStats:
    """Line counts of one file (or one aligned pair of files)."""

    lines: int = 0  #: non-empty lines (pairs), i.e. sentences kept
    empty: int = 0  #: empty lines (pairs) skipped
    physical: int = 0  #: all lines, as ``wc -l`` counts (+1 if no final newline)
    #: (path, kind) -> what was found; filled only when asked (``scan``)
    findings: Optional[Dict[Tuple[str, str], Finding]] = field(default=None)
    max_line_chars: int = MAX_LINE_CHARS

    def note(self, path: str, kind: str, line_numbers: List[int], longest: int = 0) -> None:
        if self.findings is None or not line_numbers:
            return
        f = self.findings.setdefault((path, kind), Finding(path, kind, first_line=line_numbers[0]))
        f.lines += len(line_numbers)
        f.longest = max(f.longest, longest)


def open_binary(path: str) -> BinaryIO:
    """Open ``path`` for binary reading, transparently gunzipping it."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise PrepareError(f"{path}: file not found; expected a text file (plain or .gz)") from None
    except OSError as e:
        raise PrepareError(f"{path}: cannot open: {e.strerror}") from None
    if f.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # closes nothing itself; see _iter_blocks
    return f


def _decode(body: bytes, path: str, first_lineno: int) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_lineno + body.count(b"\n", 0, e.start)
        line_start = body.rfind(b"\n", 0, e.start) + 1
        col = e.start - line_start + 1
        raise PrepareError(
            f"{path}:{line}: invalid UTF-8 (byte 0x{body[e.start]:02x} at byte {col} of the line); "
            f"expected UTF-8 text, one sentence per line"
        ) from None


def _clean(text: str, path: str, lineno: int, stats: Optional[FileStats]) -> List[str]:
    """The lines of ``text`` (first line number ``lineno``) with CRs and
    NULs out, noted in ``stats`` with over-long lines. Each check is one
    C-level scan of the block; lines are looked at one by one only where it
    finds something."""
    lines = text.split("\n")
    if stats is not None and stats.findings is not None:
        longest = max(map(len, lines))
        if longest > stats.max_line_chars:
            long = [lineno + i for i, s in enumerate(lines) if len(s) > stats.max_line_chars]
            stats.note(path, "long", long, longest)
    for char, kind, by in (("\r", "cr", " "), ("\x00", "nul", "")):
        if char in text:
            hits = [i for i, s in enumerate(lines) if char in s]
            if stats is not None:
                stats.note(path, kind, [lineno + i for i in hits])
            for i in hits:
                lines[i] = lines[i].replace(char, by)
    return lines


def _iter_blocks(path: str, stats: Optional[FileStats] = None) -> Iterator[Tuple[int, List[str]]]:
    """Yield ``(lineno of first line, stripped lines)`` per block read."""
    raw = open_binary(path)
    fileobj = raw.fileobj if isinstance(raw, gzip.GzipFile) else None
    try:
        carry = b""
        lineno = 1
        first = True
        while True:
            try:
                block = raw.read(BLOCK_BYTES)
            except (OSError, EOFError, zlib.error) as e:
                raise PrepareError(
                    f"{path}:{lineno}: cannot read the file past this line ({e}); "
                    f"expected a complete plain-text or gzip file (truncated download?)"
                ) from None
            if not block:
                break
            buf = carry + block if carry else block
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            body, carry = buf[:cut], buf[cut + 1 :]
            text = _decode(body, path, lineno)
            if first and text.startswith(_BOM):
                text = text[1:]
            first = False
            lines = _clean(text, path, lineno, stats)
            yield lineno, [s.strip() for s in lines]
            lineno += len(lines)
        if carry:  # last line without a final newline
            text = _decode(carry, path, lineno)
            if first and text.startswith(_BOM):
                text = text[1:]
            yield lineno, [s.strip() for s in _clean(text, path, lineno, stats)]
    finally:
        raw.close()
        if fileobj is not None:
            fileobj.close()


def iter_batches(path: str, batch_lines: int, stats: Optional[FileStats] = None) -> Iterator[Tuple[int, List[str]]]:
    """Yield ``(lineno of first line, lines)`` with exactly ``batch_lines``
    stripped lines per batch (the last may be shorter).  Empty lines are
    kept (as ``""``) so that line numbers stay exact."""
    buf: List[str] = []
    start = 1
    for _, lines in _iter_blocks(path, stats):
        buf.extend(lines)
        while len(buf) >= batch_lines:
            yield start, buf[:batch_lines]
            del buf[:batch_lines]
            start += batch_lines
    if buf:
        yield start, buf


def iter_sentences(path: str, stats: FileStats | None = None, batch_lines: int = 10000) -> Iterator[List[str]]:
    """Yield batches of the non-empty lines of a monolingual file.

    ``stats`` (if given) is filled in as the file is read.  Raises
    :class:`PrepareError` at the end if the file held no sentence."""
    st = stats if stats is not None else FileStats()
    for _, lines in iter_batches(path, batch_lines, st):
        kept = [s for s in lines if s]
        st.physical += len(lines)
        st.empty += len(lines) - len(kept)
        st.lines += len(kept)
        if kept:
            yield kept
    if st.lines == 0:
        raise PrepareError(f"{path}: empty corpus (no non-empty line); expected one sentence per line")


def _count_rest(it: Iterator[Tuple[int, List[str]]]) -> int:
    return sum(len(lines) for _, lines in it)


def iter_pairs(
    src: str, tgt: str, stats: FileStats | None = None, batch_lines: int = 10000
) -> Iterator[Tuple[List[str], List[str]]]:
    """Yield aligned batches ``(src_sentences, tgt_sentences)`` of a parallel
    corpus, skipping pairs that are empty on both sides (see module doc).

    Raises :class:`PrepareError` for different line counts (naming both files
    and both counts), a one-sided empty line, or an empty corpus."""
    st = stats if stats is not None else FileStats()
    it_s, it_t = iter_batches(src, batch_lines, st), iter_batches(tgt, batch_lines, st)
    while True:
        bs, bt = next(it_s, None), next(it_t, None)
        if bs is None and bt is None:
            break
        if bs is None or bt is None or len(bs[1]) != len(bt[1]):
            n_src = st.physical + (len(bs[1]) + _count_rest(it_s) if bs else 0)
            n_tgt = st.physical + (len(bt[1]) + _count_rest(it_t) if bt else 0)
            raise PrepareError(
                f"parallel files have different line counts: {src} has {n_src} lines, "
                f"{tgt} has {n_tgt} lines; expected line i of one to be the translation of line i of the other"
            )
        start, ls = bs
        _, lt = bt
        keep_s, keep_t = [], []
        for i, (a, b) in enumerate(zip(ls, lt)):
            if a and b:
                keep_s.append(a)
                keep_t.append(b)
            elif a or b:
                empty, full = (src, tgt) if not a else (tgt, src)
                raise PrepareError(
                    f"{empty}:{start + i}: empty line, but line {start + i} of {full} is not; "
                    f"expected both sides of a parallel pair to be non-empty (or both empty to skip the pair)"
                )
        st.physical += len(ls)
        st.lines += len(keep_s)
        st.empty += len(ls) - len(keep_s)
        if keep_s:
            yield keep_s, keep_t
    if st.lines == 0:
        raise PrepareError(
            f"{src} / {tgt}: empty parallel corpus (no non-empty line pair); expected one sentence per line"
        )


def scan(paths: Tuple[str, ...], max_line_chars: int = MAX_LINE_CHARS, strict: bool = False) -> FileStats:
    """Read a monolingual file (1 path) or parallel pair (2 paths) once to
    validate it and count its lines (the first, cheap pass of prepare);
    ``stats.findings`` lists CRs, NULs and over-long lines. ``strict``: any
    of them is a :class:`PrepareError` naming the file and first line."""
    st = FileStats(findings={}, max_line_chars=max_line_chars)
    if len(paths) == 1:
        for _ in iter_sentences(paths[0], st):
            pass
    else:
        for _ in iter_pairs(paths[0], paths[1], st):
            pass
    if strict and st.findings:
        f = min(st.findings.values(), key=lambda f: (f.path, f.first_line))
        raise PrepareError(f"{f.message(max_line_chars)}; expected clean text (--strict-text; without it: "
                           f"{f.handling()})")
    return st
