"""Experiment 3 (XLM's Nepali finding in miniature): causal-LM perplexity
of a small-data language (Romanian) trained alone, with a related helper
language (French, Romance) and with a less related one (German), same
vocabulary, model and number of updates.

    python benchmarks/repro/exp3_low_resource.py            # default preset
    python benchmarks/repro/exp3_low_resource.py --smoke    # 1-3 min, proves only that it runs

Data: ro = the first ``ro_limit`` Romanian sentences of RO-STS train
(valid: RO-STS dev, test: RO-STS test, both ro only, so checkpoint_best is
chosen on Romanian alone); helpers = Multi30k train + WMT news 2008-2013
(fr / de side), ``helper_limit`` sentences each. One sentencepiece
vocabulary learned on all three (alpha 0.5), so perplexities of the
conditions are per the same pieces. Metric: fairseq-validate's clm_ro
perplexity on the test split (per sentencepiece token) of checkpoint_best.
Each seed repeats the whole pipeline. With a helper, Romanian gets the
share q ∝ p^lang_alpha of the samples (≈ 20% for 5k vs 40k sentences at
0.7, the task's default), so at equal updates it sees fewer Romanian
tokens than alone; ``--set lang_alpha=0.3`` raises its share.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

PRESETS = {
    "smoke": dict(arch="xlm_tiny", vocab_size=1000, ro_limit=300, helper_limit=600, eval_limit=100,
                  tokens_per_sample=64, batch_size=8, pretrain_updates=40, related="fr", unrelated="de", seeds="1",
                  lang_alpha=0.7),
    "default": dict(arch="xlm_mini", vocab_size=8000, ro_limit=5000, helper_limit=40000, eval_limit=1000,
                    tokens_per_sample=128, batch_size=16, pretrain_updates=500, lr=1e-3, related="fr", unrelated="de",
                    seeds="1,2,3", lang_alpha=0.7),
}


def build_data(steps, out, cfg):
    corpus = C.Corpus(os.path.join(out, "text"))
    n = cfg["eval_limit"]
    mono = {"train": {"ro": corpus.mono("ro.train", [C.ro_sts("train", "ro")], cfg["ro_limit"])},
            "valid": {"ro": corpus.mono("ro.valid", [C.ro_sts("dev", "ro")], n)},
            "test": {"ro": corpus.mono("ro.test", [C.ro_sts("test", "ro")], n)}}
    for lang in (cfg["related"], cfg["unrelated"]):
        x = "de" if lang == "en" else lang
        srcs = [C.multi30k("train", lang)] + [C.wmt(f"{x}-en", t, lang) for t in C.WMT_4WAY]
        mono["train"][lang] = corpus.mono(f"{lang}.train", srcs, cfg["helper_limit"])
    return C.prepare(steps, os.path.join(out, "data"), mono, {}, cfg["vocab_size"])


def main(argv=None):
    args = C.parse_args(__doc__, PRESETS, argv)
    cfg, out, t0 = args.cfg, C.out_dir(args, "exp3_low_resource"), time.time()
    steps = C.Steps()
    data = build_data(steps, out, cfg)
    rel, unrel = cfg["related"], cfg["unrelated"]
    conditions = {"ro alone": "clm:ro", f"ro + {rel} (related)": f"clm:ro,{rel}",
                  f"ro + {unrel} (unrelated)": f"clm:ro,{unrel}", f"ro + {rel} + {unrel}": f"clm:ro,{rel},{unrel}"}
    rows = {name: {"test ppl (ro)": [], "valid ppl (ro)": []} for name in conditions}
    for seed in args.seed_list:
        for name, objectives in conditions.items():
            run = os.path.join(out, "runs", name.split(" (")[0].replace(" + ", "+").replace(" ", "_"), f"seed{seed}")
            ckpt = C.pretrain(steps, data, run, seed, cfg["pretrain_updates"], objectives, cfg, validate=True,
                              extra=["--lang-sampling-alpha", str(cfg["lang_alpha"])])
            for subset in ("test", "valid"):
                r = C.validate_ppl(steps, data, ckpt, subset, os.path.join(run, f"ppl.{subset}.json"))
                rows[name][f"{subset} ppl (ro)"].append(float(r[f"{subset}_clm_ro_ppl"]))
    C.report("exp3_low_resource", "exp3_low_resource.py", args, out,
             "Romanian causal-LM perplexity (lower is better)", "perplexity",
             {"RO-STS test": ["test ppl (ro)"], "RO-STS dev (checkpoint selection)": ["valid ppl (ro)"]},
             rows, t0=t0, steps=steps,
             extra={"ro_train_sentences": cfg["ro_limit"], "helper_train_sentences": cfg["helper_limit"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
