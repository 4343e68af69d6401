"""Shared machinery of the miniature reproductions (benchmarks/repro/exp*.py).

Every experiment is a list of *steps*; each step is one subprocess running a
project CLI or fairseq (xlm-ds-prepare, fairseq-train/-generate/-validate,
xlm-ds-score/-retrieval/-classify) and leaves a small result JSON. A step
whose result JSON exists is skipped, so an interrupted script resumes where
it stopped (fairseq-train itself resumes from ``checkpoint_last.pt``). Every
file is written to a temporary name and renamed, so a step is either
complete or absent.

Nothing here trains or evaluates by itself: the numbers come from the CLIs.
Pure helpers (``mean_std``, ``Steps``, ``write_json``) import no torch and
no matplotlib, so tests/benchmarks/test_repro_common.py runs in a second.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shlex
import subprocess
import sys
import time
from typing import AbstractSet, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER_DIR = os.path.join(REPO, "xlm_ds")
OUT_ROOT = os.path.join(REPO, "benchmarks", "out", "repro")
# the shared corpora (docs/results.md, /work/shared/data/README.md); never used by tests
SHARED = os.environ.get("XLM_DS_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
if not os.path.isdir(SHARED) and os.path.isdir("/work/shared/data"):
    SHARED = "/work/shared/data"

# two-letter codes used in the prepared data <- the corpora's own codes
ISO3 = {"en": "eng", "de": "deu", "fr": "fra", "cs": "ces", "ro": "ron"}


# --------------------------------------------------------------------------
# statistics and files


def mean_std(values: Sequence[float]) -> Tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and count."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan"), 0
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0, 1
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var), len(vals)


def fmt(values: Sequence[float], digits: int = 2) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "-"
    if n == 1:  # one seed has no spread: say so rather than print ± 0
        return f"{m:.{digits}f} (n=1)"
    return f"{m:.{digits}f} ± {s:.{digits}f} (n={n})"


def atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def last_json_line(text: str) -> dict:
    """The CLIs print their result as the last JSON line of stdout."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in the output")


# --------------------------------------------------------------------------
# the resumable step runner


class StepFailed(RuntimeError):
    pass


def _same_command(a: List[str], b: List[str]) -> bool:
    """Equal, allowing another path to the Python interpreter (another venv
    or symlink running the same command)."""
    py = lambda c: os.path.basename(c).startswith("python")  # noqa: E731
    return a == b or (len(a) == len(b) and a[1:] == b[1:] and py(a[0]) and py(b[0]))


class Steps:
    """Runs commands once. ``run(result_path, cmd, parse)``: if result_path
    exists its JSON is returned (an error if it was made by another
    command: results of a changed configuration are never mixed); otherwise cmd runs with its output in
    ``result_path[:-5] + '.log'``, ``parse(output_text)`` turns the output
    into a dict, and that dict (plus the command and wall time) is written
    atomically to result_path. A failed command raises StepFailed with the
    end of its log and writes nothing."""

    def __init__(self, verbose: bool = True, runner: Optional[Callable] = None):
        self.verbose = verbose
        self.runner = runner or self._subprocess
        self.ran = 0
        self.skipped = 0

    @staticmethod
    def _subprocess(cmd: List[str], log_path: str) -> Tuple[int, str]:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        with open(log_path, encoding="utf-8", errors="replace") as log:
            return proc.returncode, log.read()

    def run(self, result_path: str, cmd: List[str], parse: Optional[Callable[[str], dict]] = None) -> dict:
        if os.path.exists(result_path):
            done = read_json(result_path)
            if not _same_command(done.get("command", cmd), cmd):
                raise StepFailed(f"{result_path} was made by a different command (changed preset or --set?); "
                                 f"use another --out or delete it.\n  was: {' '.join(done['command'])}\n  now: "
                                 f"{' '.join(cmd)}")
            self.skipped += 1
            return done
        os.makedirs(os.path.dirname(os.path.abspath(result_path)), exist_ok=True)
        log_path = result_path[:-5] + ".log" if result_path.endswith(".json") else result_path + ".log"
        if self.verbose:
            print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        t0 = time.time()
        rc, text = self.runner(cmd, log_path)
        wall = time.time() - t0
        if rc:
            raise StepFailed(f"exit {rc} after {wall:.0f}s; end of {log_path}:\n{text[-3000:]}")
        result = dict(parse(text)) if parse else {}
        result["wall_s"] = round(wall, 1)
        result["command"] = cmd
        write_json(result_path, result)
        self.ran += 1
        if self.verbose:
            print(f"  ({wall:.0f}s)", flush=True)
        return result


# --------------------------------------------------------------------------
# corpora from the shared data directory


def shared(*parts: str) -> str:
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        sys.exit(f"missing corpus file {path} (set XLM_DS_SHARED_DATA to the shared data directory)")
    return path


def read_lines(path: str) -> List[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f]


def multi30k(split: str, lang: str) -> str:
    return shared("multi30k", f"{split}.{lang}.gz")


def wmt(pair: str, test_set: str, lang: str) -> str:
    return shared("wmt_news", pair, f"{test_set}.{lang}.gz")


WMT_4WAY = ["news-test2008", "newssyscomb2009", "newstest2009", "newstest2010",
            "newstest2011", "newstest2012", "newstest2013"]


def flores(lang: str) -> str:
    return shared("flores200_devtest", f"{ISO3[lang]}_Latn.devtest")


def ro_sts(split: str, lang: str) -> str:
    return shared("ro_sts_parallel", f"RO-STS.{split}.{lang}")


def tatoeba(lang: str, other: str = "en") -> Tuple[str, str]:
    """tatoeba_challenge_test files (lang side, other side); the pair folder
    is named in alphabetical ISO-639-3 order."""
    x, y = ISO3[lang], ISO3[other]
    folder = "-".join(sorted([x, y]))
    f = f"tatoeba-test-v2021-08-07.filtered"
    return shared("tatoeba_challenge_test", folder, f"{f}.{x}"), shared("tatoeba_challenge_test", folder, f"{f}.{y}")


def normalise(sentence: str) -> str:
    """The form in which training and test sentences are compared for
    overlap: case and runs of white space do not count."""
    return " ".join(sentence.lower().split())


def xnli_dev(lang: str) -> str:
    return shared("xnli", f"dev-{lang}.tsv.gz")


def para_sources(pair: str, splits: Iterable[str] = ("train",), news: Iterable[str] = WMT_4WAY) -> List[Tuple[str, str]]:
    """(file of lang a, file of lang b) lists for a pair 'a-b' from Multi30k
    and the 4-way WMT news sets (stored under xx-en)."""
    a, b = pair.split("-")
    out = [(multi30k(s, a), multi30k(s, b)) for s in splits]
    x = a if b == "en" else b
    for t in news:
        fa, fb = wmt(f"{x}-en", t, a), wmt(f"{x}-en", t, b)
        out.append((fa, fb))
    return out


class Corpus:
    """Text files assembled into ``cache`` (stripped, empty lines and pairs
    with an empty side dropped, capped, written atomically, reused if
    present). File names carry the selection (limit, slice, rows), so a
    changed preset makes new files (and so a different prepare command,
    which the step runner refuses to mix with old results)."""

    def __init__(self, cache: str):
        self.cache = cache
        os.makedirs(cache, exist_ok=True)

    def _path(self, name: str) -> str:
        return os.path.join(self.cache, name)

    def mono(self, name: str, sources: Sequence[str], limit: int = 0, part: Tuple[int, int] = (0, 1),
             exclude: Optional[AbstractSet[str]] = None) -> str:
        """Lines of ``sources`` concatenated; ``part=(i, k)`` keeps the i-th
        of k contiguous slices (disjoint monolingual data for each language
        of a multi-way parallel corpus), then the first ``limit``. Lines
        whose ``normalise``d form is in ``exclude`` (held-out test
        sentences) are dropped."""
        path = self._path(f"{name}.{limit or 'all'}.{part[0]}of{part[1]}{'.heldout-free' if exclude else ''}")
        if not os.path.exists(path):
            lines = []
            for src in sources:
                rows = read_lines(src)
                i, k = part
                n = len(rows)
                lines += [s for s in rows[i * n // k:(i + 1) * n // k] if s and not (exclude and normalise(s) in exclude)]
            if limit:
                lines = lines[:limit]
            atomic_write(path, "\n".join(lines) + "\n")
        return path

    def para(self, name: str, pair: str, sources: Sequence[Tuple[str, str]], limit: int = 0,
             unique: bool = False, exclude: Optional[AbstractSet[str]] = None) -> Tuple[str, str]:
        """``unique``: keep only pairs whose two sides each occur once (a
        retrieval test set must have one gold answer per query).
        ``exclude``: drop pairs with either side's ``normalise``d form in it."""
        a, b = pair.split("-")
        tag = f"{limit or 'all'}{'.uniq' if unique else ''}{'.heldout-free' if exclude else ''}"
        pa, pb = self._path(f"{name}.{tag}.{a}"), self._path(f"{name}.{tag}.{b}")
        if not (os.path.exists(pa) and os.path.exists(pb)):
            rows = []
            for fa, fb in sources:
                la, lb = read_lines(fa), read_lines(fb)
                if len(la) != len(lb):
                    sys.exit(f"{fa} and {fb} are not parallel ({len(la)} vs {len(lb)} lines)")
                rows += [(x, y) for x, y in zip(la, lb)
                         if x and y and not (exclude and (normalise(x) in exclude or normalise(y) in exclude))]
            if unique:
                from collections import Counter

                ca, cb = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
                rows = [r for r in rows if ca[r[0]] == 1 and cb[r[1]] == 1]
            if limit:
                rows = rows[:limit]
            atomic_write(pa, "\n".join(r[0] for r in rows) + "\n")
            atomic_write(pb, "\n".join(r[1] for r in rows) + "\n")
        return pa, pb

    def tsv(self, name: str, source: str, start: int, stop: int) -> str:
        """Rows [start, stop) of an XNLI tsv."""
        path = self._path(f"{name}.{start}-{stop}.tsv")
        if not os.path.exists(path):
            rows = [r for r in read_lines(source) if r][start:stop]
            atomic_write(path, "\n".join(rows) + "\n")
        return path


# --------------------------------------------------------------------------
# commands (all are the project's CLIs or fairseq's)

PY = sys.executable


def module(name: str) -> List[str]:
    return [PY, "-m", name]


def prepare_cmd(out: str, mono: Dict[str, Dict[str, str]], para: Dict[str, Dict[str, Tuple[str, str]]],
                vocab_size: int, seed: int = 1) -> List[str]:
    """mono: split -> lang -> file; para: split -> 'a-b' -> (file a, file b)."""
    cmd = module("xlm_ds.cli.prepare") + ["--out", out, "--vocab-size", str(vocab_size), "--seed", str(seed),
                                           "--quiet", "--workers", "1"]
    for split, langs in mono.items():
        for lang, path in langs.items():
            cmd += ["--mono", f"{split}:{lang}={path}"]
    for split, pairs in para.items():
        for pair, (fa, fb) in pairs.items():
            cmd += ["--para", f"{split}:{pair}={fa},{fb}"]
    return cmd


def prepare(steps: Steps, out: str, mono, para, vocab_size: int, seed: int = 1) -> str:
    steps.run(out + ".prepare.json", prepare_cmd(out, mono, para, vocab_size, seed))
    return out


# optimisation shared by every training run (as the demo)
OPTIM = ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr-scheduler", "inverse_sqrt",
         "--clip-norm", "1.0"]


def train_cmd(data: str, save_dir: str, seed: int, updates: int, args: List[str], lr: float = 5e-4,
              warmup: int = 200, validate: bool = False) -> List[str]:
    """fairseq-train with the common flags; no prefetch thread (docs/stack.md),
    checkpoint_last.pt saved every 200 updates so a killed run resumes."""
    cmd = module("fairseq_cli.train") + [data, "--user-dir", USER_DIR, "--seed", str(seed), "--cpu",
                                         "--data-buffer-size", "0", "--num-workers", "0",
                                         "--log-format", "simple", "--log-interval", "50",
                                         "--save-dir", save_dir, "--max-update", str(updates),
                                         "--lr", str(lr), "--warmup-updates", str(min(warmup, max(1, updates // 4))),
                                         "--no-epoch-checkpoints", "--save-interval", "1000000",
                                         "--save-interval-updates", "200", "--keep-interval-updates", "1"]
    cmd += ["--validate-interval", "1000000", "--validate-interval-updates", "200"] if validate \
        else ["--disable-validation"]
    return cmd + OPTIM + args


def train(steps: Steps, data: str, save_dir: str, seed: int, updates: int, args: List[str], **kw) -> str:
    """Runs fairseq-train once (resumable); returns the save dir."""
    steps.run(os.path.join(save_dir, "train.json"), train_cmd(data, save_dir, seed, updates, args, **kw),
              parse=_train_summary)
    return save_dir


def _train_summary(text: str) -> dict:
    """Last logged training loss, words/s and update count of a
    fairseq-train log (``--log-format simple``: ``train_inner`` lines hold
    ``key=value, ...``, epoch ``train`` lines ``| key value |``)."""
    out = {}
    for line in text.splitlines():
        if "| train_inner |" in line:
            fields = [f.strip().partition("=")[::2] for f in line.split("|")[-1].split(",")]
        elif "| train |" in line:
            fields = [f.strip().partition(" ")[::2] for f in line.split("|")[4:]]
        else:
            continue
        for k, v in fields:
            if k in ("loss", "wps", "num_updates"):
                try:
                    out[f"last_{k}"] = float(v)
                except ValueError:
                    pass
    return out


def pretrain(steps: Steps, data: str, save_dir: str, seed: int, updates: int, objectives: str, preset: dict,
             task: str = "xlm", extra: Sequence[str] = (), validate: bool = False) -> str:
    """An xlm_lm pretraining run; returns its checkpoint_last.pt (or _best
    when validated)."""
    obj = ["--phases", objectives] if task == "xlm_phased" else ["--objectives", objectives]
    args = ["--task", task, "--arch", preset["arch"], "--criterion", "xlm_lm", *obj,
            "--tokens-per-sample", str(preset["tokens_per_sample"]), "--batch-size", str(preset["batch_size"]),
            *precision_flags(preset), *extra]
    train(steps, data, save_dir, seed, updates, args, lr=preset.get("lr", 5e-4), validate=validate)
    return os.path.join(save_dir, "checkpoint_best.pt" if validate else "checkpoint_last.pt")


def random_checkpoint(steps: Steps, data: str, save_dir: str, seed: int, objectives: str, preset: dict) -> str:
    """An untrained model saved as a checkpoint: one update at lr 1e-12
    (fairseq cannot save before its first update)."""
    args = ["--task", "xlm", "--arch", preset["arch"], "--criterion", "xlm_lm", "--objectives", objectives,
            "--tokens-per-sample", str(preset["tokens_per_sample"]), "--batch-size", "2"]
    train(steps, data, save_dir, seed, 1, args, lr=1e-12, warmup=1)
    return os.path.join(save_dir, "checkpoint_last.pt")


def xlm_architectures() -> dict:
    """``ARCHITECTURES`` of xlm_ds/models/architectures.py, read without
    importing it (importing fairseq takes seconds and sets the root logger
    to DEBUG)."""
    import ast

    with open(os.path.join(USER_DIR, "models", "architectures.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ARCHITECTURES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("ARCHITECTURES not found in xlm_ds/models/architectures.py")


def arch_sizes(arch: str) -> List[str]:
    """xlm_transformer size flags equal to an xlm_lm architecture (so a
    randomly initialised MT model has exactly the pretrained ones' shape)."""
    layers, dim, ffn, heads, _pre_ln, _lang = xlm_architectures()[arch]
    out = []
    for side in ("encoder", "decoder"):
        out += [f"--{side}-layers", str(layers), f"--{side}-embed-dim", str(dim),
                f"--{side}-ffn-embed-dim", str(ffn), f"--{side}-attention-heads", str(heads)]
    return out


def early_stopping(preset: dict) -> List[str]:
    """``patience`` > 0: stop when the validation loss (every 200 updates)
    has not improved for that many validations; ``finetune_updates`` is then
    only a cap. The same rule for every system of a comparison."""
    return ["--patience", str(preset["patience"])] if preset.get("patience", 0) > 0 else []


def finetune_mt(steps: Steps, data: str, save_dir: str, seed: int, src: str, tgt: str, init: Optional[str],
                preset: dict) -> str:
    """xlm_translation fine-tuning; init None = random initialisation."""
    args = ["--task", "xlm_translation", "-s", src, "-t", tgt, "--arch", "xlm_transformer",
            *arch_sizes(preset["arch"]),
            "--max-source-positions", str(preset["tokens_per_sample"]),
            "--max-target-positions", str(preset["tokens_per_sample"]),
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--max-tokens", str(preset["max_tokens"]), "--skip-invalid-size-inputs-valid-test",
            *precision_flags(preset), *early_stopping(preset)]
    if init:
        args += ["--init-encoder", init, "--init-decoder", init]
    train(steps, data, save_dir, seed, preset["finetune_updates"], args, lr=preset.get("lr", 5e-4), validate=True)
    return os.path.join(save_dir, "checkpoint_best.pt")


def stock_transformer_mt(steps: Steps, data: str, save_dir: str, seed: int, src: str, tgt: str,
                         preset: dict) -> str:
    """The peer: fairseq's own ``--task translation --arch transformer``
    from scratch on the same data directory, with the sizes of ``arch``
    (shared embeddings, as ours), the same optimisation, batch and stopping
    rule; fp32 (fairseq's transformer gains nothing from bf16 autocast here)."""
    args = ["--task", "translation", "-s", src, "-t", tgt, "--arch", "transformer",
            "--share-all-embeddings", *arch_sizes(preset["arch"]),
            "--max-source-positions", str(preset["tokens_per_sample"]),
            "--max-target-positions", str(preset["tokens_per_sample"]),
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--max-tokens", str(preset["max_tokens"]), "--skip-invalid-size-inputs-valid-test",
            *early_stopping(preset)]
    cmd = train_cmd(data, save_dir, seed, preset["finetune_updates"], args, lr=preset.get("lr", 5e-4), validate=True)
    cmd.remove("--user-dir")
    cmd.remove(USER_DIR)
    steps.run(os.path.join(save_dir, "train.json"), STOCK_ENV + cmd, parse=_train_summary)
    return os.path.join(save_dir, "checkpoint_best.pt")


# stock fairseq under torch >= 2.6 cannot read its own checkpoints (resume,
# generate) without this; xlm_ds's tasks set it (docs/stack.md), a user of
# the peer sets it too
STOCK_ENV = ["env", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"]


def translate_and_score(steps: Steps, data: str, ckpt: str, src: str, tgt: str, ref: str, out_dir: str,
                        beam: int = 4, task: str = "xlm_translation") -> dict:
    """fairseq-generate on the test split, then xlm-ds-score against the raw
    reference (a shell pipeline so the generate output lands atomically)."""
    gen = os.path.join(out_dir, "generate-test.txt")
    plugin = ["--user-dir", USER_DIR] if task.startswith("xlm") else []
    gen_cmd = ([] if plugin else STOCK_ENV) + module("fairseq_cli.generate") + [
        data, *plugin, "--task", task, "-s", src, "-t", tgt, "--gen-subset", "test",
        "--path", ckpt, "--beam", str(beam), "--batch-size", "64", "--post-process", "sentencepiece", "--cpu",
        # hypotheses at most 1.5 x source + 10 pieces: bounds the time a barely trained model babbles
        "--max-len-a", "1.5", "--max-len-b", "10",
        "--data-buffer-size", "0", "--skip-invalid-size-inputs-valid-test"]
    steps.run(os.path.join(out_dir, "generate.json"),
              ["bash", "-c", f"{' '.join(shlex.quote(c) for c in gen_cmd)} > {shlex.quote(gen)}.tmp "
                             f"&& mv {shlex.quote(gen)}.tmp {shlex.quote(gen)}"])
    return steps.run(os.path.join(out_dir, "score.json"), module("xlm_ds.cli.score_mt") + [gen, "--ref", ref],
                     parse=last_json_line)


def retrieval(steps: Steps, ckpt: str, src: Tuple[str, str], tgt: Tuple[str, str], result: str,
              layer: int = -1, max_sentences: int = 0, flags: Sequence[str] = ()) -> dict:
    cmd = module("xlm_ds.cli.retrieval") + [ckpt, "--src", f"{src[0]}={src[1]}", "--tgt", f"{tgt[0]}={tgt[1]}",
                                            "--layer", str(layer)]
    if max_sentences:
        cmd += ["--max-sentences", str(max_sentences)]
    return steps.run(result, cmd + list(flags), parse=last_json_line)


def classify(steps: Steps, ckpt: str, train_set: Tuple[str, str], evals: Sequence[Tuple[str, str]], result: str,
             seed: int, epochs: int, lr: float = 1e-4, batch_size: int = 32) -> dict:
    cmd = module("xlm_ds.cli.classify") + [ckpt, "--train", f"{train_set[0]}={train_set[1]}",
                                           "--epochs", str(epochs), "--lr", str(lr), "--batch-size",
                                           str(batch_size), "--seed", str(seed)]
    for lang, path in evals:
        cmd += ["--eval", f"{lang}={path}"]
    return steps.run(result, cmd, parse=last_json_line)


def validate_ppl(steps: Steps, data: str, ckpt: str, subset: str, result: str, batch_size: int = 16) -> dict:
    """fairseq-validate on a split of the data directory with the
    checkpoint's own task configuration (objectives as trained; keys absent
    from the split are skipped). Returns the JSON line fairseq logs for that
    subset (losses in bits; keys prefixed by the subset name)."""
    cmd = module("fairseq_cli.validate") + [data, "--task", "xlm", "--user-dir", USER_DIR, "--path", ckpt,
                                            "--valid-subset", subset,
                                            "--batch-size", str(batch_size), "--cpu", "--log-format", "json",
                                            "--data-buffer-size", "0", "--num-workers", "0"]

    def parse(text):
        for line in reversed(text.splitlines()):
            brace = line.find("{")
            if brace >= 0 and '"valid_on"' not in line and "_loss" in line:
                try:
                    return json.loads(line[brace:])
                except json.JSONDecodeError:
                    continue
        raise ValueError("no validation JSON line")
    return steps.run(result, cmd, parse=parse)


# --------------------------------------------------------------------------
# command line, presets, seeds, reporting


def _precision_module():
    """xlm_ds/cli/precision.py, loaded without importing the xlm_ds package
    (which imports fairseq)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_xlm_ds_precision", os.path.join(USER_DIR, "cli", "precision.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PRECISION = _precision_module()


def precision_flags(preset: dict) -> List[str]:
    return PRECISION.train_flags(preset.get("precision", "fp32"))


def parse_args(doc: str, presets: Dict[str, dict], argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(presets), default="default",
                   help="sizes: 'default' (<= ~60 min on 2 cores) or 'smoke' (1-3 min, proves only that it runs)")
    p.add_argument("--smoke", action="store_const", const="smoke", dest="preset", help="= --preset smoke")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--out", default=None, help="output directory (default: benchmarks/out/repro/EXP[-smoke])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one preset value (repeatable), e.g. --set pretrain_updates=2000")
    PRECISION.add_argument(p)
    args = p.parse_args(argv)
    cfg = dict(presets[args.preset])
    for kv in args.set:
        k, _, v = kv.partition("=")
        if k not in cfg:
            p.error(f"--set {k}: not a preset key ({', '.join(sorted(cfg))})")
        cfg[k] = type(cfg[k])(v) if not isinstance(cfg[k], (list, tuple)) else [type(cfg[k][0])(x) for x in v.split(",")]
    cfg["precision"], why = PRECISION.resolve(args.precision)
    print(f"precision: {cfg['precision']} ({why})", flush=True)
    args.cfg = cfg
    args.seed_list = [int(s) for s in str(args.seeds or cfg["seeds"]).split(",") if s]
    return args


def out_dir(args: argparse.Namespace, name: str) -> str:
    d = args.out or os.path.join(OUT_ROOT, name + ("-smoke" if args.preset == "smoke" else ""))
    os.makedirs(d, exist_ok=True)
    return os.path.abspath(d)


def setting(args: argparse.Namespace) -> str:
    """The preset and its --set overrides, for table and plot titles (a
    variant must not be labelled as the plain preset)."""
    return f"{args.preset} preset, {args.cfg['precision']}" + "".join(f", {kv}" for kv in args.set)


def command_line(script: str, args: argparse.Namespace) -> str:
    parts = [f"python benchmarks/repro/{script}"]
    if args.preset != "default":
        parts.append("--smoke" if args.preset == "smoke" else f"--preset {args.preset}")
    if args.seeds:
        parts.append(f"--seeds {args.seeds}")
    parts += [f"--set {s}" for s in args.set]
    if args.precision != "auto":
        parts.append(f"--precision {args.precision}")
    if args.out:
        parts.append(f"--out {args.out}")
    return " ".join(parts)


def table(title: str, columns: Sequence[str], rows: Dict[str, Dict[str, Sequence[float]]], digits: int = 2) -> str:
    """Markdown table: one row per condition, mean ± std (n) per column."""
    lines = [f"### {title}", "", "| condition | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for cond, cols in rows.items():
        lines.append(f"| {cond} | " + " | ".join(fmt(cols.get(c, []), digits) for c in columns) + " |")
    return "\n".join(lines)


def beyond_spread(a: dict, b: dict) -> int:
    """+1 / -1 when a's mean ± std interval lies wholly above / below b's
    (the one meaning of "beyond the spread" in docs/results.md), else 0.
    a and b are ``summarise`` cells."""
    if a["mean"] - a["std"] > b["mean"] + b["std"]:
        return 1
    if a["mean"] + a["std"] < b["mean"] - b["std"]:
        return -1
    return 0


def compare(results: Dict[str, Dict[str, dict]], groups: Dict[str, Sequence[str]], a: str, b: str) -> List[dict]:
    """Condition a against b in each column group of a report's JSON: the
    cells where a has the higher mean, and where it is above / below b
    beyond the spread (the counts the results page quotes)."""
    out = []
    for group, cols in groups.items():
        cells = [(results[a][c], results[b][c]) for c in cols if c in results[a] and c in results[b]]
        out.append({"group": group, "cells": len(cells),
                    "higher_mean": sum(x["mean"] > y["mean"] for x, y in cells),
                    "above_beyond_spread": sum(beyond_spread(x, y) == 1 for x, y in cells),
                    "below_beyond_spread": sum(beyond_spread(x, y) == -1 for x, y in cells)})
    return out


def summarise(rows: Dict[str, Dict[str, Sequence[float]]]) -> Dict[str, Dict[str, dict]]:
    out = {}
    for cond, cols in rows.items():
        out[cond] = {}
        for col, vals in cols.items():
            m, s, n = mean_std(vals)
            out[cond][col] = {"mean": m, "std": s, "n": n, "values": list(vals)}
    return out


def plot(path: str, title: str, ylabel: str, groups: Dict[str, Sequence[str]],
         rows: Dict[str, Dict[str, Sequence[float]]]) -> Optional[str]:
    """One panel per group: bars = mean ± std over seeds per condition and
    column, every seed a dot. Needs matplotlib (the ``repro`` extra);
    skipped with a message if absent."""
    try:
        import logging

        logging.getLogger("matplotlib").setLevel(logging.WARNING)  # the root logger may be at DEBUG
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[repro]'): no plot", file=sys.stderr)
        return None
    conds = list(rows)
    ncols = 1 if len(groups) == 1 else 2
    nrows = (len(groups) + ncols - 1) // ncols
    width_in = max(5.0, 0.9 * len(conds) * max(len(c) for c in groups.values()) ** 0.5 + 2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width_in * ncols, 3.6 * nrows), squeeze=False)
    for ax, (gname, columns) in zip(axes.flat, groups.items()):
        width = 0.8 / max(1, len(columns))
        for j, col in enumerate(columns):
            xs, means, stds = [], [], []
            for i, cond in enumerate(conds):
                vals = rows[cond].get(col, [])
                m, sd, n = mean_std(vals)
                x = i + (j - (len(columns) - 1) / 2) * width
                xs.append(x)
                means.append(m if n else 0.0)
                stds.append(sd if n else 0.0)
                ax.scatter([x] * len(vals), vals, s=8, color="black", zorder=3)
            ax.bar(xs, means, width * 0.9, yerr=stds, capsize=3, label=col)
        ax.set_xticks(range(len(conds)))
        ax.set_xticklabels(conds, rotation=15, ha="right", fontsize=7)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(gname, fontsize=9)
        if len(columns) > 1:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path + f".tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def report(name: str, script: str, args, out: str, title: str, ylabel: str, groups: Dict[str, Sequence[str]],
           rows: Dict[str, Dict[str, Sequence[float]]], extra: Optional[dict] = None, digits: int = 2,
           t0: Optional[float] = None, steps: Optional[Steps] = None) -> dict:
    """Prints one table per group (title -> columns), writes OUT/NAME.json
    (config, seeds, per-seed values, mean/std/n, the tables, the command) and
    OUT/NAME.png (one panel per group)."""
    cmd = command_line(script, args)
    text = "\n\n".join(table(f"{title}: {g} ({setting(args)})", cols, rows, digits) for g, cols in groups.items())
    print("\n" + text + f"\n\nregenerate: {cmd}")
    result = {"experiment": name, "preset": args.preset, "config": args.cfg, "seeds": args.seed_list,
              "command": cmd, "groups": {g: list(c) for g, c in groups.items()}, "results": summarise(rows),
              "table_markdown": text}
    if extra:
        result.update(extra)
    if t0 is not None:
        result["wall_s_this_invocation"] = round(time.time() - t0, 1)
    if steps is not None:
        result["steps_run"], result["steps_skipped"] = steps.ran, steps.skipped
    json_path = os.path.join(out, f"{name}.json")
    write_json(json_path, result)
    png = plot(os.path.join(out, f"{name}.png"), f"{title} ({setting(args)}, seeds {args.seed_list})", ylabel,
               groups, rows)
    print(f"wrote {json_path}" + (f" and {png}" if png else ""))
    return result


# --------------------------------------------------------------------------
# set-ups shared by several experiments (2, 4, 5)

XL_LANGS = ("de", "en", "fr")
XL_PAIRS = ("de-en", "en-fr")


# --set data=varied adds, for de-en and en-fr, the WMT news sets outside
# the 4-way 2008-2013 ones (newstest2014 stays unseen, the usual WMT test)
# and Tatoeba-Challenge pairs, to the monolingual and the parallel data.
WMT_EXTRA = {"de-en": ["newstest2015", "newstest2016", "newstest2017", "newstest2018", "newstest2019"],
             "en-fr": ["newsdiscusstest2015"]}
DATA_CHOICES = ("base", "varied")


def multilingual_data(steps: Steps, out: str, cfg: dict) -> str:
    """``multilingual_text`` prepared (shared vocabulary, binarized)."""
    mono, para = multilingual_text(out, cfg)
    return prepare(steps, os.path.join(out, "data"), mono, para, cfg["vocab_size"])


def multilingual_text(out: str, cfg: dict) -> Tuple[dict, dict]:
    """(mono, para) text files, {split: {lang or pair: file(s)}}.
    en/de/fr: monolingual = disjoint thirds of Multi30k train + WMT news
    2008-2013 (each language from other rows, so MLM never sees a sentence
    and its translation), parallel de-en and en-fr = all rows; valid =
    Multi30k val. FLORES and XNLI (the evaluation sets) are not used.

    ``cfg['data'] == 'varied'`` (default 'base') adds WMT_EXTRA and the
    Tatoeba-Challenge deu-eng/eng-fra pairs, after dropping every pair and
    line that shares a sentence with a retrieval test set (the Tatoeba test
    pairs come from the same files): parallel data less dominated by image
    captions (64% of de-en pairs in 'base', 39% in 'varied')."""
    data = cfg.get("data", "base")
    if data not in DATA_CHOICES:
        sys.exit(f"--set data={data}: expected one of {', '.join(DATA_CHOICES)}")
    corpus = Corpus(os.path.join(out, "text"))
    held = held_out_sentences(cfg, out) if data == "varied" else None
    extra = {}
    if held:
        for pair in XL_PAIRS:
            srcs = para_sources(pair, (), WMT_EXTRA[pair]) + [tatoeba(*pair.split("-"))]
            extra[pair] = corpus.para(f"extra.{pair}", pair, srcs, exclude=held)
    mono = {"train": {}, "valid": {}}
    for i, lang in enumerate(XL_LANGS):
        x = "de" if lang == "en" else lang
        srcs = [multi30k("train", lang)] + [wmt(f"{x}-en", t, lang) for t in WMT_4WAY]
        if held:  # en from the de-en extra rows (the 4-way sets' rule), each language its own third
            pair = next(p for p in XL_PAIRS if x in p.split("-"))
            srcs.append(extra[pair][pair.split("-").index(lang)])
        mono["train"][lang] = corpus.mono(f"mono.train.{lang}", srcs, cfg["mono_limit"], (i, len(XL_LANGS)),
                                          exclude=held)
        mono["valid"][lang] = corpus.mono(f"mono.valid.{lang}", [multi30k("val", lang)], cfg["valid_limit"])
    para = {"train": {}, "valid": {}}
    for pair in XL_PAIRS:
        srcs = para_sources(pair) + ([extra[pair]] if held else [])
        para["train"][pair] = corpus.para(f"para.train.{pair}", pair, srcs, cfg["para_limit"], exclude=held)
        para["valid"][pair] = corpus.para(f"para.valid.{pair}", pair, para_sources(pair, ("val",), ()),
                                          cfg["valid_limit"])
    return mono, para


def held_out_sentences(cfg: dict, out: str) -> frozenset:
    """Every sentence (``normalise``d, all languages) of the retrieval test
    sets, which no training file may contain."""
    return frozenset(normalise(s) for files in retrieval_test_sets(cfg, out).values() for f in files
                     for s in read_lines(f) if s)


RETRIEVAL_SETS = ("FLORES", "Tatoeba", "Multi30k")


def retrieval_groups(cfg: dict) -> Dict[str, List[str]]:
    """Table/plot groups of the retrieval columns: one per test set and layer."""
    return {f"{name} layer {layer}": [f"{name} L{layer} {x}" for p in ("de", "fr") for x in (f"{p}→en", f"en→{p}")]
            for name in RETRIEVAL_SETS for layer in cfg["retrieval_layers"]}


def retrieval_test_sets(cfg: dict, out: str) -> Dict[Tuple[str, str], Tuple[str, str]]:
    """(set, lang) -> (lang file, en file): FLORES-200 devtest (1,012
    multi-way pairs, Wikipedia), Tatoeba-Challenge test (short everyday
    sentences) and Multi30k test_2016_flickr (image captions: the training
    domain, held out); of the last two only pairs whose sides are unique,
    first ``retrieval_max`` or 1,000. None is in any training set of these
    scripts."""
    corpus = Corpus(os.path.join(out, "text"))
    n = cfg["retrieval_max"] or 1000
    sets = {}
    for lang in ("de", "fr"):
        sets[("FLORES", lang)] = (flores(lang), flores("en"))
        sets[("Tatoeba", lang)] = corpus.para(f"tatoeba.{lang}-en", f"{lang}-en", [tatoeba(lang)], n, unique=True)
        sets[("Multi30k", lang)] = corpus.para(f"multi30k-test.{lang}-en", f"{lang}-en",
                                               para_sources(f"{lang}-en", ("test_2016_flickr",), ()), n, unique=True)
    return sets


TEXT_MEANS = " (text means)"


def eval_retrieval(steps: Steps, ckpt: str, run: str, cfg: dict, row: Dict[str, list], out: str, center=None,
                   only: Sequence[str] = RETRIEVAL_SETS, cosines: Optional[Dict[str, list]] = None) -> None:
    """xlm-ds-retrieval P@1 (%) both ways, de-en and fr-en, on each test set
    in ``only`` at each layer of cfg['retrieval_layers']; appended to row.
    ``center``: None = plain cosine; "self" = language-centred on each test
    file's own mean; {lang: text file} = centred on each language's mean over
    that text (columns end in TEXT_MEANS). ``cosines`` collects the cosine
    between the two languages' mean vectors (column "SET Lk xx-en")."""
    on_text = center not in (None, "self")
    tag = ".centred-text" if on_text else ".centred" if center else ""
    suffix = TEXT_MEANS if on_text else ""
    for (name, lang), (fx, fen) in retrieval_test_sets(cfg, out).items():
        if name not in only:
            continue
        flags = ["--center"] if center else []
        if on_text:
            flags += ["--center-on", f"{lang}={center[lang]}", "--center-on", f"en={center['en']}"]
        for layer in cfg["retrieval_layers"]:
            r = retrieval(steps, ckpt, (lang, fx), ("en", fen),
                          os.path.join(run, f"retrieval.{name}.{lang}-en.L{layer}{tag}.json"), layer,
                          cfg["retrieval_max"], flags)
            row.setdefault(f"{name} L{layer} {lang}→en{suffix}", []).append(100 * r["p_at_1_src2tgt"])
            row.setdefault(f"{name} L{layer} en→{lang}{suffix}", []).append(100 * r["p_at_1_tgt2src"])
            if cosines is not None:
                cosines.setdefault(f"{name} L{layer} {lang}-en", []).append(r["lang_mean_cosine"])


def language_offset_groups(cfg: dict) -> Dict[str, List[str]]:
    """Groups of ``eval_retrieval``'s ``cosines`` columns: one per layer."""
    return {f"layer {layer}": [f"{name} L{layer} {p}-en" for name in RETRIEVAL_SETS for p in ("de", "fr")]
            for layer in cfg["retrieval_layers"]}


XNLI_COLUMNS = ["XNLI en", "XNLI de (0-shot)", "XNLI fr (0-shot)"]
XNLI_GROUP = {"XNLI accuracy (fine-tuned on en)": XNLI_COLUMNS}


def eval_xnli(steps: Steps, ckpt: str, run: str, cfg: dict, seed: int, row: Dict[str, list], out: str) -> None:
    """xlm-ds-classify: fine-tuned on the first cfg['xnli_train'] rows of
    XNLI dev en, accuracy (%) on the remaining rows in en, de, fr (the
    labelled XNLI dev is the only labelled NLI data available)."""
    corpus = Corpus(os.path.join(out, "text"))
    n, m = cfg["xnli_train"], cfg["xnli_train"] + cfg["xnli_eval"]
    train_set = corpus.tsv("xnli.en", xnli_dev("en"), 0, n)
    evals = [(lang, corpus.tsv(f"xnli.{lang}", xnli_dev(lang), n, m)) for lang in XL_LANGS]
    r = classify(steps, ckpt, ("en", train_set), evals, os.path.join(run, "xnli.json"), seed, cfg["xnli_epochs"],
                 cfg["xnli_lr"])
    for col, lang in zip(XNLI_COLUMNS, ("en", "de", "fr")):
        row.setdefault(col, []).append(100 * r["accuracy"][lang])
