"""Experiment 4 (sharing, Conneau et al. 2020 "Emerging cross-lingual
structure"): MLM-only pretraining on en/de/fr with one shared vocabulary vs
separate per-language vocabularies, and with all / the top k / no
transformer blocks shared; cross-lingual transfer measured as XNLI zero-shot
accuracy (fine-tuned on English, evaluated on German and French) and
FLORES-200 / Tatoeba retrieval P@1.

    python benchmarks/repro/exp4_sharing.py            # default preset
    python benchmarks/repro/exp4_sharing.py --smoke    # 1-3 min, proves only that it runs

Data: common.multilingual_data (monolingual thirds of Multi30k + WMT news;
no parallel data is used: objectives ``mlm:de,en,fr``). Separate vocabularies:
``python -m xlm_ds.methods.separate_vocab`` on the same prepared directory;
top-k sharing: ``--shared-top-layers k``. XNLI: the labelled XNLI dev set,
first ``xnli_train`` English rows (1,998: whole premise groups) to fine-tune, the remaining rows to
evaluate in en/de/fr. The XNLI proxy these small encoders can learn
(``setups.eval_domain``): the same protocol on sentences (first 8 words)
labelled with their source (caption / news / wiki), beside the floor a
classifier of surface cues reaches without any encoder
(``setups.surface_baseline``). Each seed repeats pretraining and fine-tuning.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

# XNLI dev rows come in groups of 3 hypotheses per premise: split on a group boundary
EVAL = dict(xnli_train=1998, xnli_eval=492, xnli_epochs=3, xnli_lr=1e-4,
            # the domain proxy of XNLI (setups.eval_domain): 3 x 600 English rows to fine-tune
            # (about XNLI's 1,998), 3 x 300 items to evaluate in en/de/fr
            domain_train=600, domain_eval=300, domain_epochs=3)
PRESETS = {
    "smoke": dict(arch="xlm_tiny", vocab_size=1000, mono_limit=400, para_limit=400, valid_limit=100,
                  tokens_per_sample=64, batch_size=8, pretrain_updates=30, shared_top=[1, 0],
                  retrieval_layers=[2], retrieval_max=100, seeds="1",
                  **dict(EVAL, xnli_train=198, xnli_eval=102, xnli_epochs=1, domain_train=40, domain_eval=20,
                         domain_epochs=1)),
    "default": dict(arch="xlm_mini", vocab_size=8000, mono_limit=0, para_limit=0, valid_limit=1000,
                    tokens_per_sample=128, batch_size=16, pretrain_updates=600, lr=1e-3, shared_top=[2, 0],
                    retrieval_layers=[4], retrieval_max=0, seeds="1,2,3", **EVAL),
}
MLM = "mlm:" + ",".join(C.XL_LANGS)


def main(argv=None):
    args = C.parse_args(__doc__, PRESETS, argv)
    cfg, out, t0 = args.cfg, C.out_dir(args, "exp4_sharing"), time.time()
    steps = C.Steps()
    data = C.multilingual_data(steps, out, cfg)
    sep = os.path.join(out, "data_separate_vocab")
    steps.run(sep + ".json", C.module("xlm_ds.methods.separate_vocab") + [data, sep], parse=C.last_json_line)
    conditions = {"shared vocab, all blocks shared": (data, [])}
    conditions["separate vocab, all blocks shared"] = (sep, [])
    for k in cfg["shared_top"]:
        conditions[f"shared vocab, top {k} blocks shared"] = (data, ["--shared-top-layers", str(k)])
    rows = {name: {} for name in conditions}
    for seed in args.seed_list:
        for i, (name, (d, extra)) in enumerate(conditions.items()):
            run = os.path.join(out, "runs", f"c{i}", f"seed{seed}")
            ckpt = C.pretrain(steps, d, run, seed, cfg["pretrain_updates"], MLM, cfg, extra=extra)
            C.eval_xnli(steps, ckpt, run, cfg, seed, rows[name], out)
            C.eval_domain(steps, ckpt, run, cfg, seed, rows[name], out)
            C.eval_retrieval(steps, ckpt, run, cfg, rows[name], out)
    rows[C.SURFACE_ROW] = C.surface_baseline(steps, cfg, out)  # the domain task's no-encoder floor
    C.report("exp4_sharing", "exp4_sharing.py", args, out,
             "Sharing: XNLI accuracy (%) and FLORES / Tatoeba retrieval P@1 (%)", "accuracy / P@1 (%)",
             {**C.XNLI_GROUP, **C.DOMAIN_GROUP, **C.retrieval_groups(cfg)}, rows, t0=t0, steps=steps,
             extra={"run_dirs": {name: f"runs/c{i}" for i, name in enumerate(conditions)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
