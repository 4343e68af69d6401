"""Experiment 5 (Chi et al. 2021, cross-lingual LM meta-pretraining):
a first phase of English-only MLM followed by multilingual MLM+TLM, against
multilingual MLM+TLM from the start, at equal total updates (``--task
xlm_phased --phases "0=mlm:en; N=mlm:... tlm:..."`` vs ``--task xlm``).
Transfer measured as XNLI zero-shot accuracy (fine-tuned on English) and
FLORES-200 / Tatoeba retrieval P@1.

    python benchmarks/repro/exp5_meta_pretraining.py            # default preset
    python benchmarks/repro/exp5_meta_pretraining.py --smoke    # 1-3 min, proves only that it runs

Data: common.multilingual_data; evaluation as in exp4. ``meta_fraction``
is the share of the updates spent in the English-only phase. Each seed
repeats pretraining and fine-tuning.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from exp4_sharing import EVAL  # noqa: E402  (the same XNLI protocol)

PRESETS = {
    "smoke": dict(arch="xlm_tiny", vocab_size=1000, mono_limit=400, para_limit=400, valid_limit=100,
                  tokens_per_sample=64, batch_size=8, pretrain_updates=40, meta_fraction=0.5,
                  retrieval_layers=[2], retrieval_max=100, seeds="1",
                  **dict(EVAL, xnli_train=198, xnli_eval=102, xnli_epochs=1, domain_train=40, domain_eval=20,
                         domain_epochs=1)),
    "default": dict(arch="xlm_mini", vocab_size=8000, mono_limit=0, para_limit=0, valid_limit=1000,
                    tokens_per_sample=128, batch_size=16, pretrain_updates=1200, lr=1e-3, meta_fraction=0.5,
                    retrieval_layers=[4], retrieval_max=0, seeds="1,2,3", **EVAL),
}
MULTI = "mlm:" + ",".join(C.XL_LANGS) + " tlm:" + ",".join(C.XL_PAIRS)


def main(argv=None):
    args = C.parse_args(__doc__, PRESETS, argv)
    cfg, out, t0 = args.cfg, C.out_dir(args, "exp5_meta_pretraining"), time.time()
    steps = C.Steps()
    data = C.multilingual_data(steps, out, cfg)
    n = cfg["pretrain_updates"]
    switch = int(round(n * cfg["meta_fraction"]))
    conditions = {"multilingual only": ("xlm", MULTI),
                  f"meta: en MLM for {switch}, then multilingual": ("xlm_phased", f"0=mlm:en; {switch}={MULTI}")}
    rows = {name: {} for name in conditions}
    for seed in args.seed_list:
        for i, (name, (task, objectives)) in enumerate(conditions.items()):
            run = os.path.join(out, "runs", ("multi", "meta")[i], f"seed{seed}")
            ckpt = C.pretrain(steps, data, run, seed, n, objectives, cfg, task=task)
            C.eval_xnli(steps, ckpt, run, cfg, seed, rows[name], out)
            C.eval_domain(steps, ckpt, run, cfg, seed, rows[name], out)
            C.eval_retrieval(steps, ckpt, run, cfg, rows[name], out)
    rows[C.SURFACE_ROW] = C.surface_baseline(steps, cfg, out)  # the domain task's no-encoder floor
    C.report("exp5_meta_pretraining", "exp5_meta_pretraining.py", args, out,
             f"Meta-pretraining vs multilingual only, {n} updates each", "accuracy / P@1 (%)",
             {**C.XNLI_GROUP, **C.DOMAIN_GROUP, **C.retrieval_groups(cfg)}, rows, t0=t0, steps=steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
