"""The streaming reader: gzip, stripping, empty lines, and errors that name
the file and the line."""
import gzip

import pytest

from xlm_ds.data import text_reader
from xlm_ds.data.errors import PrepareError
from xlm_ds.data.text_reader import FileStats, iter_batches, iter_pairs, iter_sentences, scan


def _all(it):
    return [s for batch in it for s in batch]


def test_plain_and_gzip_read_the_same(tmp_path):
    raw = "\ufeff  Hello world \r\n\nZweite Zeile\n\n\t\nÉté  \nlast line without newline  "
    p = tmp_path / "a.txt"
    p.write_bytes(raw.encode("utf-8"))
    g = tmp_path / "a.weird-name"  # gzip is detected by magic bytes
    g.write_bytes(gzip.compress(raw.encode("utf-8")))
    for path in (p, g):
        st = FileStats()
        assert _all(iter_sentences(str(path), st, batch_lines=2)) == [
            "Hello world", "Zweite Zeile", "Été", "last line without newline",
        ]
        assert (st.lines, st.empty, st.physical) == (4, 3, 7)


def test_small_blocks_keep_line_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(text_reader, "BLOCK_BYTES", 7)  # lines straddle blocks
    p = tmp_path / "a.txt"
    p.write_text("".join(f"line number {i}\n" for i in range(1, 101)))
    got = [(start, lines) for start, lines in iter_batches(str(p), 30)]
    assert [s for s, _ in got] == [1, 31, 61, 91]
    assert got[1][1][0] == "line number 31" and got[-1][1][-1] == "line number 100"


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_file_and_line(tmp_path, monkeypatch, gz):
    monkeypatch.setattr(text_reader, "BLOCK_BYTES", 16)
    data = b"ok line\nanother ok line\nthird\nbad \xff here\nafter\n"
    p = tmp_path / ("bad.txt.gz" if gz else "bad.txt")
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(PrepareError) as e:
        scan((str(p),))
    msg = str(e.value)
    assert f"{p}:4:" in msg and "invalid UTF-8" in msg and "0xff" in msg and "expected UTF-8" in msg


def test_truncated_gzip(tmp_path):
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(b"a\n" * 100000)[:-20])
    with pytest.raises(PrepareError, match=r"t\.gz:\d+: cannot read"):
        scan((str(p),))


def test_empty_corpus(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("\n   \n\t\n")
    with pytest.raises(PrepareError, match=r"e\.txt: empty corpus \(no non-empty line\)"):
        scan((str(p),))


def test_missing_file(tmp_path):
    with pytest.raises(PrepareError, match="nope.txt: file not found"):
        scan((str(tmp_path / "nope.txt"),))


def test_parallel_pairs_and_both_empty_skipped(tmp_path):
    s, t = tmp_path / "s", tmp_path / "t"
    s.write_text("a\n\nb\nc\n")
    t.write_text("A\n  \nB\nC")
    st = FileStats()
    batches = list(iter_pairs(str(s), str(t), st, batch_lines=2))
    assert [x for b in batches for x in b[0]] == ["a", "b", "c"]
    assert [x for b in batches for x in b[1]] == ["A", "B", "C"]
    assert (st.lines, st.empty, st.physical) == (3, 1, 4)


def test_parallel_line_count_mismatch_names_both(tmp_path):
    s, t = tmp_path / "s.de", tmp_path / "t.en"
    s.write_text("".join(f"{i}\n" for i in range(25)))
    t.write_text("".join(f"{i}\n" for i in range(23)))
    with pytest.raises(PrepareError) as e:
        scan((str(s), str(t)))
    msg = str(e.value)
    assert f"{s} has 25 lines" in msg and f"{t} has 23 lines" in msg and "different line counts" in msg


def test_parallel_one_sided_empty_line(tmp_path):
    s, t = tmp_path / "s.de", tmp_path / "t.en"
    s.write_text("a\nb\nc\n")
    t.write_text("A\n\nC\n")
    with pytest.raises(PrepareError) as e:
        scan((str(s), str(t)))
    assert f"{t}:2: empty line, but line 2 of {s} is not" in str(e.value)
