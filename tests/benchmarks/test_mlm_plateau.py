"""Helpers of benchmarks/mlm_plateau.py that decide what its table shows
(no training: the script's runs are the benchmark itself)."""
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    spec = importlib.util.spec_from_file_location(
        "mlm_plateau", os.path.join(REPO, "benchmarks", "mlm_plateau.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = _script()


def test_the_curve_is_the_last_attempts_and_in_bits_as_logged(tmp_path):
    log = tmp_path / "train.log"
    inner = ("2026-12-07 22:00:00 | INFO | train_inner | epoch 001:     50 / 900 loss={loss}, ppl=1, "
             "wps=1, ups=1, wpb=2048, bsz=16, num_updates={n}, lr=0.001\n")
    log.write_text(
        "=== step attempt 1 started at 1.0 (x); earlier attempts 0.0 s; command abc ===\n"
        + inner.format(loss="9.9", n=50) + inner.format(loss="9.1", n=100)
        + "=== step attempt 2 started at 2.0 (x); earlier attempts 5.0 s; command abc ===\n"
        + inner.format(loss="4.25", n=100) + inner.format(loss="3.5", n=150)
        + "2026-12-07 22:00:09 | INFO | train | epoch 001 | loss 3.9 | num_updates 150\n")
    # a resumed run's log holds both attempts; the table shows the run that finished
    assert P.loss_curve(str(log)) == {100: 4.25, 150: 3.5}


def test_every_masked_piece_of_the_corpus_is_given_by_its_neighbours(tmp_path):
    path = P.write_corpus(str(tmp_path / "train.en"), 50, seed=3)
    lines = open(path, encoding="utf-8").read().splitlines()
    assert len(lines) == 50
    n = len(P.WORDS)
    for line in lines:
        idx = [P.WORDS.index(w) for w in line.split()]
        assert 8 <= len(idx) <= 25
        assert all((b - a) % n == 1 for a, b in zip(idx, idx[1:]))
    # the same seed writes the same corpus (a rerun compares like with like)
    again = P.write_corpus(str(tmp_path / "again.en"), 50, seed=3)
    assert open(again, encoding="utf-8").read() == "\n".join(lines) + "\n"
