"""One wrapper per command a reproduction runs (the project's CLIs and
fairseq's), each a resumable step."""
from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from report import precision_flags
from steps import USER_DIR, Steps, last_json_line


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
    if preset.get("output_layer"):
        args += ["--output-layer", preset["output_layer"]]
    if preset.get("no_lang_embeddings"):
        args += ["--no-lang-embeddings"]
    if init:
        args += ["--init-encoder", init, "--init-decoder", init]
    train(steps, data, save_dir, seed, preset["finetune_updates"], args, lr=preset.get("lr", 5e-4), validate=True)
    return os.path.join(save_dir, "checkpoint_best.pt")


# xlm_transformer's architecture choices (xlm_ds/models/xlm_transformer.py,
# xlm_transformer_base) as stock fairseq transformer flags: a peer with them
# differs from a random xlm_transformer only by the language embeddings, which
# a random one starts at zero (tests/benchmarks/test_peer_arch_flags.py checks
# the flags stay in step; tests/models/test_xlm_transformer_is_fairseqs.py the logits)
XLM_ARCH_FLAGS = ["--encoder-learned-pos", "--decoder-learned-pos", "--layernorm-embedding",
                  "--no-scale-embedding", "--activation-fn", "gelu", "--attention-dropout", "0.1"]


def stock_transformer_mt(steps: Steps, data: str, save_dir: str, seed: int, src: str, tgt: str,
                         preset: dict, extra: Sequence[str] = ()) -> str:
    """The peer: fairseq's own ``--task translation --arch transformer``
    from scratch on the same data directory, with the sizes of ``arch``
    (shared embeddings, as ours), the same optimisation, batch and stopping
    rule; fp32 (fairseq's transformer gains nothing from bf16 autocast here).
    ``extra``: more fairseq-train flags (e.g. XLM_ARCH_FLAGS)."""
    args = ["--task", "translation", "-s", src, "-t", tgt, "--arch", "transformer",
            "--share-all-embeddings", *arch_sizes(preset["arch"]), *extra,
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
# fairseq-fixed's batch_by_size drops a last batch smaller than
# --required-batch-size-multiple (default 8): stock fairseq-generate leaves
# those sentences untranslated (4 of the demo's 500 test sentences) and
# fairseq-validate unscored. The plugin's tasks keep that batch
# (xlm_ds/fairseq_compat/batching.py); for stock fairseq this flag does.
EVERY_SENTENCE = ["--required-batch-size-multiple", "1"]


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
        "--data-buffer-size", "0", "--skip-invalid-size-inputs-valid-test", *([] if plugin else EVERY_SENTENCE)]
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


def _validate(steps: Steps, data: str, ckpt: str, subset: str, result: str, task: str, flags: Sequence[str],
              env: Sequence[str] = ()) -> dict:
    """fairseq-validate of a checkpoint on a split, with the checkpoint's own
    task configuration and criterion; returns the JSON line fairseq logs for
    that subset (losses in bits; keys prefixed by the subset name)."""
    plugin = ["--user-dir", USER_DIR] if task.startswith("xlm") else []
    cmd = [*env] + module("fairseq_cli.validate") + [
        data, "--task", task, *plugin, "--path", ckpt, "--valid-subset", subset, *flags,
        "--cpu", "--log-format", "json", "--data-buffer-size", "0", "--num-workers", "0"]

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


def validate_ppl(steps: Steps, data: str, ckpt: str, subset: str, result: str, batch_size: int = 16) -> dict:
    """fairseq-validate on a split of the data directory with the
    checkpoint's own task configuration (objectives as trained; keys absent
    from the split are skipped)."""
    return _validate(steps, data, ckpt, subset, result, "xlm", ["--batch-size", str(batch_size)])


def validate_mt(steps: Steps, data: str, ckpt: str, src: str, tgt: str, result: str, max_tokens: int,
                task: str = "xlm_translation") -> float:
    """A translation checkpoint's label-smoothed validation loss (bits) on
    every sentence of the valid split: the figure that compares our rows with
    the stock peer. fairseq-train's own validation of the peer leaves out a
    last batch (EVERY_SENTENCE above): on Multi30k val its 6 longest
    sentences of 1,014, which lowered the peer's logged loss by 0.04 bits
    (docs/results.md). fairseq-validate reads the checkpoint before it sets up the
    task, so the plugin's torch.load fix (applied at task set-up) comes too
    late for a fine-tuned model's checkpoint: every row runs with the
    variable the peer needs (STOCK_ENV)."""
    out = _validate(steps, data, ckpt, "valid", result, task,
                    ["-s", src, "-t", tgt, "--max-tokens", str(max_tokens), *EVERY_SENTENCE,
                     "--skip-invalid-size-inputs-valid-test"], env=STOCK_ENV)
    return float(out["valid_loss"])  # fairseq logs the values as strings
