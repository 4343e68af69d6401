"""benchmarks/repro/surface_cues.py: the no-encoder floor of the domain
proxy, run as the reproductions run it (a subprocess printing JSON)."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "repro", "surface_cues.py")


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def _tsv(path, rows):
    path.write_text("".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return str(path)


def test_a_length_label_transfers_to_another_language_and_a_content_label_does_not(tmp_path):
    # "long" vs "short" is told by length in any language; "animal" vs
    # "food" by words only, which surface cues cannot see
    en_len = [("a b c d e f g h i j k l", "long"), ("a b", "short")] * 20
    de_len = [("u v w x y z u v w x y z", "long"), ("u v", "short")] * 5
    r = _run("--train", _tsv(tmp_path / "len.en", en_len), f"de={_tsv(tmp_path / 'len.de', de_len)}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["accuracy"] == {"de": 1.0}
    en_topic = [("the dog runs", "animal"), ("the cat runs", "animal"), ("the bread bakes", "food"),
                ("the soup boils", "food")] * 10
    de_topic = [("der Hund rennt", "animal"), ("die Suppe kocht", "food")] * 5
    r = _run("--train", _tsv(tmp_path / "topic.en", en_topic), f"de={_tsv(tmp_path / 'topic.de', de_topic)}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["accuracy"]["de"] == 0.5


def test_a_row_without_a_label_is_an_error_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a b\tlong\nno label here\n", encoding="utf-8")
    r = _run("--train", str(bad), f"en={bad}")
    assert r.returncode != 0
    assert f"{bad}:2: expected 2 tab-separated columns like the first line, got 1" in r.stderr
