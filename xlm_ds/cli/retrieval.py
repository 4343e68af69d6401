"""``xlm-ds-retrieval``: cross-lingual sentence retrieval (XTREME's Tatoeba
task): P@1 of nearest-neighbour search by cosine similarity between
mean-pooled layer-L representations of two files of parallel sentences
(line i of one is the translation of line i of the other), in both
directions. Raw text in; the checkpoint's own sentencepiece model is applied.
The last line printed is JSON.

``--center`` subtracts each language's mean vector first (Libovický et al.
2020, methods/centering.py): by default the mean over the file's own
sentences (no pairing is used), or over other text of that language with
``--center-on LANG=FILE``. The JSON always has ``lang_mean_cosine``, the
cosine between the two languages' mean vectors."""
import argparse
import json
import sys

import torch
import torch.nn.functional as F

from ..data.text_reader import iter_batches


def p_at_1(src: torch.Tensor, tgt: torch.Tensor):
    """(src->tgt, tgt->src) P@1 of cosine nearest neighbours; row i of each
    is the gold pair."""
    sim = F.normalize(src, dim=-1) @ F.normalize(tgt, dim=-1).t()
    gold = torch.arange(sim.size(0))
    return (float((sim.argmax(1) == gold).float().mean()),
            float((sim.argmax(0) == gold).float().mean()))


def _lang_file(value):
    lang, sep, path = value.partition("=")
    if not sep or not lang or not path:
        raise argparse.ArgumentTypeError(f"expected LANG=FILE, got {value!r}")
    return lang, path


def read_lines(path):
    """Every line (empty ones too: the files are line-parallel)."""
    return [s for _, batch in iter_batches(path, 10000) for s in batch]


def main(argv=None):
    p = argparse.ArgumentParser(prog="xlm-ds-retrieval", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--src", type=_lang_file, required=True, help="LANG=FILE (text, .gz allowed)")
    p.add_argument("--tgt", type=_lang_file, required=True, help="LANG=FILE, parallel to --src")
    p.add_argument("--layer", type=int, default=-1, help="0 = embeddings, 1..L blocks, -1 = last (default)")
    p.add_argument("--spm-model", help="sentencepiece model (default: DATA/spm.model of the checkpoint's data directory)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tgt-checkpoint", help="embed --tgt with this (second, e.g. monolingual) model instead")
    p.add_argument("--tgt-spm-model", help="sentencepiece model of --tgt-checkpoint")
    p.add_argument("--procrustes", type=int, default=0, metavar="N",
                   help="map src representations onto tgt ones by orthogonal Procrustes fitted on the "
                   "first N pairs (Conneau et al. 2020), and score the remaining pairs only")
    p.add_argument("--max-sentences", type=int, default=0, help="use the first N pairs only (0 = all)")
    p.add_argument("--center", action="store_true",
                   help="subtract each language's mean representation before the cosine search (language "
                   "centring, Libovický et al. 2020); the mean is over the file's own sentences unless --center-on")
    p.add_argument("--center-on", type=_lang_file, action="append", default=[], metavar="LANG=FILE",
                   help="with --center: take LANG's mean over FILE (other text of that language) instead; "
                   "give it for both languages")
    p.add_argument("--center-lines", type=int, default=2000, metavar="N",
                   help="lines of each --center-on FILE used, spread evenly over the file (default 2000; 0 = all)")
    args = p.parse_args(argv)
    if args.center_on and not args.center:
        p.error("--center-on needs --center")
    from ..methods.centering import mean_cosine, spaced_sample
    from ..methods.encode import EncodeError, SentenceEncoder

    try:
        enc = SentenceEncoder.load(args.checkpoint, args.spm_model)
        (sl, sf), (tl, tf) = args.src, args.tgt
        src, tgt = read_lines(sf), read_lines(tf)
        if len(src) != len(tgt):
            raise EncodeError(f"{sf} has {len(src)} lines but {tf} has {len(tgt)}: not parallel")
        if args.max_sentences:
            src, tgt = src[: args.max_sentences], tgt[: args.max_sentences]
        n_layers = len(enc.model.encoder.layers)
        if not -n_layers - 1 <= args.layer <= n_layers:
            raise EncodeError(f"--layer {args.layer}: the model has layers 0..{n_layers}")
        tgt_enc = SentenceEncoder.load(args.tgt_checkpoint, args.tgt_spm_model) if args.tgt_checkpoint else enc
        a = enc.embed(src, sl, args.layer, args.batch_size)
        b = tgt_enc.embed(tgt, tl, args.layer, args.batch_size)
        mean_a, mean_b = a.mean(0), b.mean(0)
        center_on = dict(args.center_on)
        if center_on:
            if set(center_on) != {sl, tl}:
                raise EncodeError(f"--center-on: give LANG=FILE for exactly the two languages {sl} and {tl}, "
                                  f"got {', '.join(sorted(center_on))}")

            def text_mean(model, lang):
                sample = spaced_sample(read_lines(center_on[lang]), args.center_lines)
                if not sample:
                    raise EncodeError(f"--center-on {lang}={center_on[lang]}: no non-empty line")
                return model.embed(sample, lang, args.layer, args.batch_size).mean(0)

            mean_a, mean_b = text_mean(enc, sl), text_mean(tgt_enc, tl)
        lang_cos = mean_cosine(mean_a, mean_b)
        if args.center:
            a, b = a - mean_a, b - mean_b
        if args.procrustes:
            if not 0 < args.procrustes < len(src):
                raise EncodeError(f"--procrustes {args.procrustes}: need fewer than the {len(src)} pairs")
            from ..methods.procrustes import procrustes

            n = args.procrustes
            w = procrustes(a[:n], b[:n])
            a, b = a[n:] @ w, b[n:]
            src = src[n:]
    except (EncodeError, OSError) as e:
        print(f"xlm-ds-retrieval: error: {e}", file=sys.stderr)
        return 2
    s2t, t2s = p_at_1(a, b)
    centred = ("centred on " + ("other text" if center_on else "the files' own means") + ", ") if args.center else ""
    print(f"{sl}->{tl} P@1 {100 * s2t:.2f}   {tl}->{sl} P@1 {100 * t2s:.2f}   ({len(src)} pairs, layer {args.layer}, "
          f"{centred}cosine of the language means {lang_cos:.3f})")
    print(json.dumps({"src": sl, "tgt": tl, "layer": args.layer, "n": len(src), "procrustes_pairs": args.procrustes,
                      "center": (f"{sl}={center_on[sl]},{tl}={center_on[tl]}" if center_on else "self")
                      if args.center else None,
                      "lang_mean_cosine": lang_cos, "p_at_1_src2tgt": s2t, "p_at_1_tgt2src": t2s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
