"""Unsupervised MT (``xlm_umt``): which language each side is told during
auto-encoding and back-translation, the λ schedules, the back-translated
batch, start-up errors, and an end-to-end run whose losses fall and whose
checkpoint translates with fairseq-generate in both directions."""
import json
import os
import subprocess
import sys

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_umt(data, pretrained, *extra):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data, "--user-dir", "xlm_ds", "--task", "xlm_umt", "-s", "en", "-t", "fr",
        "--arch", "xlm_transformer", "--init-encoder", pretrained, "--init-decoder", pretrained,
        "--criterion", "cross_entropy", "--optimizer", "adam", "--lr", "1e-4", "--cpu",
        "--max-tokens", "400", *extra,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    return task, model, criterion


def first_batch(task):
    itr = task.get_batch_iterator(
        task.dataset("train"), max_tokens=400, max_positions=task.max_positions(), seed=1,
    ).next_epoch_itr(shuffle=False)
    return next(iter(itr))


class _Optimizer:
    def backward(self, loss):
        loss.backward()


def trace_languages(model):
    """Records (side, language, training?) at every embedding call."""
    calls = []
    languages = model.args.xlm_languages.split(",")
    for side in ("encoder", "decoder"):
        emb = getattr(model, side).embed_tokens
        forward = emb.forward

        def spy(tokens, _side=side, _emb=emb, _forward=forward):
            calls.append((_side, languages[_emb.lang_id], model.training))
            return _forward(tokens)

        emb.forward = spy
    return calls


def collapse(calls):
    """Consecutive identical calls once (generation embeds at every step)."""
    out = []
    for c in calls:
        if not out or out[-1] != c:
            out.append(c)
    return out


def test_languages_per_sub_batch(prepared_sample, pretrained_tiny):
    task, model, criterion = build_umt(prepared_sample, pretrained_tiny)
    sample = first_batch(task)
    assert list(sample) == ["ae:en", "bt:en", "ae:fr", "bt:fr"]
    calls = trace_languages(model)
    task.train_step(sample, model, criterion, _Optimizer(), update_num=0)
    assert collapse(calls) == [
        # auto-encoding en: en -> en
        ("encoder", "en", True), ("decoder", "en", True),
        # back-translation of en: generate en -> fr without training, then learn fr -> en
        ("encoder", "en", False), ("decoder", "fr", False),
        ("encoder", "fr", True), ("decoder", "en", True),
        ("encoder", "fr", True), ("decoder", "fr", True),
        ("encoder", "fr", False), ("decoder", "en", False),
        ("encoder", "en", True), ("decoder", "fr", True),
    ]
    # gradients flowed (the step did backprop)
    assert model.encoder.layers[0].fc1.weight.grad.abs().sum() > 0


def test_lambda_schedule_switches_back_translation(prepared_sample, pretrained_tiny, monkeypatch):
    task, model, criterion = build_umt(prepared_sample, pretrained_tiny, "--lambda-bt", "0:0,10:0,20:1")
    sample = first_batch(task)
    generated = []
    monkeypatch.setattr(task, "back_translate", lambda s, *a: generated.append(a) or s)
    _, _, log = task.train_step(sample, model, criterion, _Optimizer(), update_num=5)
    assert generated == [] and log["lambda_bt"] == 0 and "bt_en_loss" not in log
    _, _, log = task.train_step(sample, model, criterion, _Optimizer(), update_num=15)
    assert len(generated) == 2 and log["lambda_bt"] == pytest.approx(0.5)
    assert log["bt_en_loss"] > 0 and log["lambda_ae"] == 1


def test_back_translated_batch(prepared_sample, pretrained_tiny):
    task, model, _ = build_umt(prepared_sample, pretrained_tiny)
    sub = first_batch(task)["bt:en"]
    model.train()
    out = task.back_translate(sub, model, "en", "fr")
    src, lengths = out["net_input"]["src_tokens"], out["net_input"]["src_lengths"]
    pad, eos = task.src_dict.pad(), task.src_dict.eos()
    assert src.size(0) == sub["target"].size(0)
    assert torch.equal(out["target"], sub["target"])  # the original sentences stay the target
    assert torch.equal(lengths, src.ne(pad).sum(1))
    # every generated sentence ends with </s> and respects the (per-batch) length limit
    limit = 1.3 * int(sub["net_input"]["src_lengths"].max()) + 5 + 1
    for row, n in zip(src, lengths):
        kept = row[row.ne(pad)]
        assert kept[-1] == eos and n <= limit
    assert not torch.equal(src, sub["net_input"]["src_tokens"]) or src.shape != sub["net_input"]["src_tokens"].shape
    assert model.training  # restored after generation


def test_noise_applies_to_auto_encoding_sources_only(prepared_sample, pretrained_tiny):
    task, _, _ = build_umt(prepared_sample, pretrained_tiny)
    ds = task.dataset("train").datasets["ae:en"]
    changed = sum(not torch.equal(ds[i]["source"], ds[i]["target"]) for i in range(50))
    assert changed > 25
    for i in range(50):  # noise reorders/drops/blanks tokens but never invents new ones
        src, tgt = ds[i]["source"], ds[i]["target"]
        unk = task.src_dict.unk()
        assert set(src.tolist()) - {unk} <= set(tgt.tolist())
    bt = task.dataset("train").datasets["bt:en"]
    assert torch.equal(bt[0]["source"], bt[0]["target"])


def test_bad_schedule_and_missing_mono_data(prepared_sample, pretrained_tiny, tmp_path):
    with pytest.raises(ValueError, match=r"--lambda-bt '0:1,x': expected a number or 'update:value"):
        build_umt(prepared_sample, pretrained_tiny, "--lambda-bt", "0:1,x")
    corpus = os.path.join(REPO, "xlm_ds", "sample_corpus")
    para_only = tmp_path / "para_only"
    subprocess.run(
        [sys.executable, "-m", "xlm_ds.cli.prepare", "--out", str(para_only), "--vocab-size", "1000",
         "--para", f"train:en-fr={corpus}/valid.en-fr.en.gz,{corpus}/valid.en-fr.fr.gz"],
        check=True, capture_output=True,
    )
    with pytest.raises(ValueError, match=r"no monolingual training data for en, fr"):
        build_umt(str(para_only), pretrained_tiny)


def json_logs(text, tag):
    out = []
    for line in text.splitlines():
        if f"| {tag} |" in line and "{" in line:
            out.append(json.loads(line[line.index("{"):]))
    return out


@pytest.mark.slow
def test_umt_trains_and_translates_both_directions(prepared_sample, pretrained_tiny, tmp_path, run_fairseq):
    save = tmp_path / "umt"
    log = run_fairseq(
        "train", prepared_sample, "--user-dir", "xlm_ds", "--task", "xlm_umt", "-s", "en", "-t", "fr",
        "--arch", "xlm_transformer_tiny", "--init-encoder", pretrained_tiny,
        "--init-decoder", pretrained_tiny, "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--lambda-bt", "0:0,20:1", "--max-tokens", "1000",
        "--optimizer", "adam", "--lr", "5e-4", "--max-update", "60", "--save-dir", save,
        "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "10", "--cpu",
        cwd=REPO,
    )
    inner = json_logs(log, "train_inner")
    assert len(inner) == 6
    for key in ("ae_en_loss", "ae_fr_loss", "bt_en_loss", "bt_fr_loss"):
        assert float(inner[-1][key]) < float(inner[0][key]) - 0.5, (key, inner[0], inner[-1])
    assert float(inner[0]["lambda_bt"]) < 1 and float(inner[-1]["lambda_bt"]) == 1
    for src, tgt in (("en", "fr"), ("fr", "en")):
        gen = run_fairseq(
            "generate", prepared_sample, "--user-dir", "xlm_ds", "--task", "xlm_translation",
            "-s", src, "-t", tgt, "--gen-subset", "test", "--path", save / "checkpoint_last.pt",
            "--beam", "1", "--batch-size", "64", "--post-process", "sentencepiece",
            "--scoring", "sacrebleu", "--cpu", cwd=REPO,
        )
        hyps = [l for l in gen.splitlines() if l.startswith("H-")]
        assert len(hyps) == 300 and "BLEU = " in gen
        out = tmp_path / f"gen.{src}-{tgt}.txt"
        out.write_text(gen)
        ref = os.path.join(REPO, "xlm_ds", "sample_corpus", f"test.en-fr.{tgt}.gz")
        scored = subprocess.run([sys.executable, "-m", "xlm_ds.cli.score_mt", str(out), "--ref", ref],
                                capture_output=True, text=True, check=True).stdout
        assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in scored
