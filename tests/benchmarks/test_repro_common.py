"""Pure helpers of benchmarks/repro/common.py (no training, no shared data)."""
import importlib.util
import json
import math
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _common():
    spec = importlib.util.spec_from_file_location(
        "repro_common", os.path.join(REPO, "benchmarks", "repro", "common.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


C = _common()


def test_mean_std():
    assert C.mean_std([]) [2] == 0
    assert C.mean_std([3.0]) == (3.0, 0.0, 1)
    m, s, n = C.mean_std([1, 2, 3, 4])
    assert (m, n) == (2.5, 4)
    assert math.isclose(s, math.sqrt(5 / 3))  # sample std (ddof=1)
    assert C.fmt([1, 3]) == "2.00 ± 1.41 (n=2)"
    assert C.fmt([]) == "-"
    assert C.fmt([3.0]) == "3.00 (n=1)"


def test_last_json_line():
    assert C.last_json_line('noise\n{"a": 1}\n{"b": 2}\ntrailing\n') == {"b": 2}
    with pytest.raises(ValueError):
        C.last_json_line("no json here")


def test_step_runs_once_and_is_skipped_when_complete(tmp_path):
    calls = []

    def fake(cmd, log_path):
        calls.append(cmd)
        return 0, 'log\n{"score": 7}\n'

    steps = C.Steps(verbose=False, runner=fake)
    result = str(tmp_path / "step.json")
    assert steps.run(result, ["x", "1"], parse=C.last_json_line)["score"] == 7
    assert steps.run(result, ["x", "1"], parse=C.last_json_line)["score"] == 7
    assert len(calls) == 1 and (steps.ran, steps.skipped) == (1, 1)
    assert json.load(open(result))["command"] == ["x", "1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step.json", "step.log"]  # no temp files left
    with pytest.raises(C.StepFailed, match="different command"):
        steps.run(result, ["x", "2"])


def test_a_step_another_process_is_running_is_waited_for_not_run_twice(tmp_path):
    """Two runners (threads here; flock locks separate opens as it locks
    separate processes) ask for the same step at once: it runs once."""
    import threading
    import time

    calls = []

    def slow(cmd, log_path):
        calls.append(cmd)
        time.sleep(0.5)
        return 0, '{"score": 1}\n'

    result = str(tmp_path / "data" / "step.json")
    runners = [C.Steps(verbose=False, runner=slow) for _ in range(2)]
    threads = [threading.Thread(target=s.run, args=(result, ["x"], C.last_json_line)) for s in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted((s.ran, s.skipped) for s in runners) == [(0, 1), (1, 0)]


def test_a_rerun_step_keeps_the_earlier_attempts_log_and_counts_its_time(tmp_path):
    """A long step stopped mid-run is run again (fairseq resumes it from its
    checkpoint): the first attempt's output must survive in the log and its
    time must count in wall_s, or a resumed fine-tuning reports only its
    last stretch. Through the real subprocess runner."""
    import sys
    import time

    result, log, flag = tmp_path / "train.json", tmp_path / "train.log", tmp_path / "stopped-once"
    # the same command both times: stopped the first time, done the second
    cmd = [sys.executable, "-c", "import os, sys\n"
           f"if not os.path.exists({str(flag)!r}):\n"
           f"    open({str(flag)!r}, 'w').close(); print('2026-12-07 01:00:00 | INFO | first attempt'); sys.exit(1)\n"
           "print('2026-12-07 01:05:00 | INFO | second'); print('{\"ok\": 1}')"]
    steps = C.Steps(verbose=False)
    started = time.time()
    with pytest.raises(C.StepFailed):
        steps.run(str(result), cmd)
    os.utime(log, (started + 100, started + 100))  # the first attempt ran (about) 100 s
    done = steps.run(str(result), cmd, parse=C.last_json_line)
    text = log.read_text()
    assert done["ok"] == 1 and done.get("attempts") == 2 and 99 <= done["wall_s"] < 100 + 60
    assert text.index("first attempt") < text.index("step attempt 2") < text.index("second")

    # a log from before attempt headers: the attempt starts at its first timestamp
    legacy, legacy_log = tmp_path / "old.json", tmp_path / "old.log"
    legacy_log.write_text("2026-12-07 01:00:00 | INFO | resumed run\n")
    t = time.mktime(time.strptime("2026-12-07 01:00:00", "%Y-%m-%d %H:%M:%S"))
    os.utime(legacy_log, (t + 50, t + 50))
    done = steps.run(str(legacy), cmd, parse=C.last_json_line)
    assert done["attempts"] == 2 and 50 <= done["wall_s"] < 50 + 60
    assert "resumed run" in legacy_log.read_text()

    # the log of another command (its result deleted to run the step anew) is not counted
    os.remove(result)
    third = [sys.executable, "-c", "print('{\"ok\": 3}')"]
    done = steps.run(str(result), third, parse=C.last_json_line)
    assert "attempts" not in done and done["wall_s"] < 60 and "first attempt" not in log.read_text()


def test_failed_step_writes_nothing(tmp_path):
    steps = C.Steps(verbose=False, runner=lambda cmd, log: (3, "boom"))
    with pytest.raises(C.StepFailed, match="exit 3"):
        steps.run(str(tmp_path / "s.json"), ["x"])
    assert not (tmp_path / "s.json").exists()


def test_corpus_strips_drops_empty_pairs_and_slices(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(" one \n\ntwo\nthree\nfour\n", encoding="utf-8")
    b.write_text("eins\nzwei\n \ndrei\nvier\n", encoding="utf-8")
    corpus = C.Corpus(str(tmp_path / "cache"))
    pa, pb = corpus.para("p", "x-y", [(str(a), str(b))], limit=2)
    assert open(pa).read().split("\n")[:2] == ["one", "three"]
    assert open(pb).read().split("\n")[:2] == ["eins", "drei"]
    assert open(corpus.mono("m", [str(a)], part=(1, 2))).read() == "two\nthree\nfour\n"  # rows 2..4 of 5


def test_architectures_read_without_import():
    assert C.xlm_architectures()["xlm_mini"][:4] == (4, 128, 512, 4)
    assert C.arch_sizes("xlm_tiny")[:4] == ["--encoder-layers", "2", "--encoder-embed-dim", "64"]


def test_same_command_allows_another_interpreter_path():
    assert C._same_command(["/a/bin/python", "-m", "x"], ["/b/.venv/bin/python3", "-m", "x"])
    assert not C._same_command(["/a/bin/python", "-m", "x"], ["/a/bin/python", "-m", "y"])
    assert not C._same_command(["bash", "-c", "x"], ["sh", "-c", "x"])


def test_overridden_preset_is_labelled_with_its_overrides():
    presets = {"default": dict(lr=5e-4, seeds="1")}
    plain = C.parse_args("doc", presets, ["--precision", "fp32"])
    varied = C.parse_args("doc", presets, ["--set", "lr=1e-3", "--precision", "bf16"])
    assert C.setting(plain) == "default preset, fp32"
    assert C.setting(varied) == "default preset, bf16, lr=1e-3"
    assert varied.cfg["lr"] == 1e-3
    assert "--precision bf16" in C.command_line("x.py", varied)


def test_precision_auto_follows_the_cpu_flags():
    P = C.PRECISION
    assert P.resolve("auto", {"avx512f", "avx512_bf16"})[0] == "bf16"
    assert P.resolve("auto", {"amx_bf16"})[0] == "bf16"
    assert P.resolve("auto", {"avx2", "avx512f"}) == (
        "fp32", "--precision auto: the CPU has no native bf16 instructions (avx512_bf16, amx_bf16 or Arm bf16)")
    assert P.resolve("fp32", {"avx512_bf16"})[0] == "fp32"
    assert P.train_flags("bf16") == ["--autocast-bf16"] and P.train_flags("fp32") == []
    preset = {"arch": "xlm_tiny", "tokens_per_sample": 32, "batch_size": 2, "precision": "bf16"}
    cmd = C.train_cmd("d", "s", 1, 1, ["--task", "xlm", *C.precision_flags(preset)])
    assert cmd.count("--autocast-bf16") == 1


def test_corpus_exclude_drops_held_out_sentences_in_either_side(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Keep me.\nA  held-out   LINE\nalso kept\n", encoding="utf-8")
    b.write_text("Behalte mich.\nverboten\nTEST sentence\n", encoding="utf-8")
    held = frozenset(C.normalise(s) for s in ["a held-out line", "test  Sentence"])
    corpus = C.Corpus(str(tmp_path / "cache"))
    pa, pb = corpus.para("p", "x-y", [(str(a), str(b))], exclude=held)
    assert open(pa).read() == "Keep me.\n" and open(pb).read() == "Behalte mich.\n"
    assert open(corpus.mono("m", [str(a)], exclude=held)).read() == "Keep me.\nalso kept\n"
    assert corpus.mono("m", [str(a)]) != corpus.mono("m", [str(a)], exclude=held)  # cached apart


def test_compare_counts_means_and_non_overlapping_intervals():
    cell = lambda m, s: {"mean": m, "std": s}  # noqa: E731
    results = {"A": {"x": cell(5, 1), "y": cell(2, 1), "z": cell(1, 0.1)},
               "B": {"x": cell(2, 1), "y": cell(2.5, 1), "z": cell(3, 0.5)}}
    assert C.beyond_spread(cell(5, 1), cell(2, 1)) == 1  # 4 > 3
    assert C.beyond_spread(cell(4, 1), cell(2, 1)) == 0  # 3 = 3: touching is not apart
    [r] = C.compare(results, {"g": ["x", "y", "z"]}, "A", "B")
    assert r == {"group": "g", "cells": 3, "higher_mean": 1, "above_beyond_spread": 1, "below_beyond_spread": 1}


def test_eval_retrieval_keeps_plain_and_centred_results_apart(tmp_path, monkeypatch):
    calls = []

    def fake(cmd, log_path):
        calls.append(cmd)
        return 0, json.dumps({"p_at_1_src2tgt": 0.5, "p_at_1_tgt2src": 0.25,
                              "lang_mean_cosine": 0.9 if "--center" in cmd else 0.1})

    sets = {(name, lang): (f"{name}.{lang}", f"{name}.en") for name in C.RETRIEVAL_SETS for lang in ("de", "fr")}
    # eval_retrieval looks the test sets up in its own module (setups), not in
    # common's namespace: patching only C ran the real one, which read
    # ../shared and wrote out/text/ into the working directory
    import sys

    monkeypatch.setattr(sys.modules["setups"], "retrieval_test_sets", lambda cfg, out: sets)
    steps, cfg = C.Steps(verbose=False, runner=fake), {"retrieval_layers": [2], "retrieval_max": 0}
    plain, centred, cos = {}, {}, {}
    C.eval_retrieval(steps, "ck.pt", str(tmp_path), cfg, plain, "out")
    C.eval_retrieval(steps, "ck.pt", str(tmp_path), cfg, centred, "out", center="self", cosines=cos)
    text = {"de": "mono.de", "fr": "mono.fr", "en": "mono.en"}
    C.eval_retrieval(steps, "ck.pt", str(tmp_path), cfg, centred, "out", center=text, only=("FLORES",))
    assert len(calls) == 6 + 6 + 2 and not any("--center" in c for c in calls[:6])
    assert all(c[-1] == "--center" for c in calls[6:12])
    assert calls[12][-5:] == ["--center", "--center-on", "de=mono.de", "--center-on", "en=mono.en"]
    assert sorted(p.name for p in tmp_path.glob("*.json"))[:3] == [
        "retrieval.FLORES.de-en.L2.centred-text.json", "retrieval.FLORES.de-en.L2.centred.json",
        "retrieval.FLORES.de-en.L2.json"]
    assert plain["FLORES L2 de→en"] == [50.0] and plain["Multi30k L2 en→fr"] == [25.0]
    assert centred["FLORES L2 en→fr" + C.TEXT_MEANS] == [25.0] and "Tatoeba L2 de→en" + C.TEXT_MEANS not in centred
    assert cos["Tatoeba L2 fr-en"] == [0.9]
    assert sorted(c for g in C.language_offset_groups(cfg).values() for c in g) == sorted(cos)
    # rerun: everything is read back, nothing runs again
    C.eval_retrieval(steps, "ck.pt", str(tmp_path), cfg, {}, "out", center="self")
    assert len(calls) == 14


def test_train_summary_reads_both_simple_log_lines():
    """fairseq-train --log-format simple: train_inner holds key=value, the
    epoch's train line | key value |; the last of each wins."""
    log = "\n".join([
        "2026-12-06 07:42:59 | INFO | train_inner | epoch 003:    248 / 876 loss=7.828, mlm_loss=8.5, "
        "wps=8000.5, ups=3.9, num_updates=1900, lr=0.0005",
        "2026-12-06 07:43:07 | INFO | train | epoch 003 | loss 7.818 | mlm_loss 8.556 | wps 8871.8 | "
        "num_updates 2000 | wall 629",
        "2026-12-06 07:43:08 | INFO | fairseq_cli.train | done training in 629.0 seconds",
    ])
    assert C._train_summary(log) == {"last_loss": 7.818, "last_wps": 8871.8, "last_num_updates": 2000.0}


def test_domain_items_align_cut_to_the_first_words_and_write_labelled_rows(tmp_path, monkeypatch):
    import gzip
    import sys

    def put(rel, lines):
        path = tmp_path / "shared" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "\n".join(lines) + "\n"
        if rel.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(data)
        else:
            path.write_text(data, encoding="utf-8")

    # two caption sets, read in CAPTION_SETS order; the cat has no French and
    # the horse only one German word: both dropped in every language
    captions = {"a": {"en": ["a dog runs", "a cat"], "de": ["ein Hund rennt", "eine Katze"], "fr": ["un chien", ""]},
                "b": {"en": ["a cow", "a horse"], "de": ["eine Kuh", "Pferd"], "fr": ["une vache", "un cheval"]}}
    for name, langs in captions.items():
        for lang, lines in langs.items():
            put(f"multi30k/{name}.{lang}.gz", lines)
    put("wmt_news/de-en/newstest2014.en.gz", ["Rain falls.", "Sun shines.", "Snow falls."])
    put("wmt_news/de-en/newstest2014.de.gz", ["Regen fällt.", "Sonne scheint.", "Schnee fällt."])
    put("wmt_news/fr-en/newstest2014.en.gz", ["Snow falls.", "Wind blows.", "Rain falls."])  # Wind: no German
    put("wmt_news/fr-en/newstest2014.fr.gz", ["La neige tombe.", "Le vent souffle.", "La pluie tombe."])
    for iso, lines in (("eng", ["Paris is\tbig.", "Rome is old."]), ("deu", ["Paris ist groß.", "Rom ist alt."]),
                       ("fra", ["Paris est grand.", "Rome est vieille."])):
        put(f"flores200_devtest/{iso}_Latn.devtest", lines)
    corpora = sys.modules["corpora"]
    monkeypatch.setattr(corpora, "SHARED", str(tmp_path / "shared"))
    monkeypatch.setattr(corpora, "CAPTION_SETS", ("a", "b"))
    monkeypatch.setattr(corpora, "DOMAIN_WORDS", 2)
    corpora.domain_items.cache_clear()
    try:
        items = C.domain_items(("de", "en", "fr"), 2)
        assert items["caption"] == {"de": ["ein Hund", "eine Kuh"], "en": ["a dog", "a cow"],
                                    "fr": ["un chien", "une vache"]}
        assert items["news"] == {"en": ["Snow falls.", "Rain falls."], "de": ["Schnee fällt.", "Regen fällt."],
                                 "fr": ["La neige", "La pluie"]}
        assert items["wiki"]["en"] == ["Paris is", "Rome is"]
        whole = C.domain_items(("de", "en", "fr"), 0)
        assert whole["wiki"]["en"] == ["Paris is big.", "Rome is old."]  # a tab inside a sentence: a space
        assert whole["caption"]["en"] == ["a dog runs", "a cow", "a horse"]
        corpus = C.Corpus(str(tmp_path / "text"))
        de = corpus.domain_tsv("de", ("de", "en", "fr"), 1, 2)
        assert open(de, encoding="utf-8").read().splitlines() == [
            "eine Kuh\tcaption", "Regen fällt.\tnews", "Rom ist\twiki"]
        with pytest.raises(SystemExit, match="fewer than 3 aligned items"):
            corpus.domain_tsv("en", ("de", "en", "fr"), 0, 3)
    finally:
        corpora.domain_items.cache_clear()


def test_regenerate_command_quotes_a_set_value_with_spaces():
    args = C.parse_args("doc", {"default": dict(only="", seeds="1")}, ["--set", "only=stock fairseq transformer"])
    assert "--set 'only=stock fairseq transformer'" in C.command_line("x.py", args)
