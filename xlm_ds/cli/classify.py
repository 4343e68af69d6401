"""``xlm-ds-classify``: sentence-pair (XNLI-style) or single-sentence
classification — fine-tune a pretrained checkpoint on labelled rows in one
language and evaluate zero-shot in others. Files are tab-separated, raw
text, either ``premise<TAB>hypothesis<TAB>label`` (pairs) or
``text<TAB>label`` (single sentences), the same column count on every line
(a first line whose label column is ``label`` or ``gold_label`` is a header
and skipped); the checkpoint's sentencepiece model is applied.

Input to the model: ``<s> premise </s> hypothesis </s>`` (pairs) or
``<s> text </s>``, each part tagged with its language; a linear classifier
on the final ``<s>`` state.
Optional code-switching (Pan et al. 2021): ``--code-switch LANG=TSV`` holds
the translation of every training row; each premise and each hypothesis is
replaced by its translation with probability ``--code-switch-rate``
(redrawn every epoch). The last line printed is JSON."""
import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.text_reader import iter_batches


def read_tsv(path):
    """Rows ``(premise, hypothesis, label)``; ``hypothesis`` is None in a
    ``text<TAB>label`` file. Every line must have the first line's columns."""
    rows, width = [], None
    for start, batch in iter_batches(path, 10000):
        for lineno, line in enumerate(batch, start):
            if not line:
                continue
            parts = line.split("\t")
            if width is None:
                width = len(parts)
                if width not in (2, 3):
                    raise ValueError(f"{path}:{lineno}: expected premise<TAB>hypothesis<TAB>label or "
                                     f"text<TAB>label, got {len(parts)} column(s): {line[:80]!r}")
            elif len(parts) != width:
                raise ValueError(f"{path}:{lineno}: expected {width} tab-separated columns like the first "
                                 f"line, got {len(parts)}: {line[:80]!r}")
            rows.append((parts[0], parts[1] if width == 3 else None, parts[-1].strip()))
    if rows and rows[0][2] in ("label", "gold_label"):
        rows = rows[1:]
    return rows


def _lang_file(value):
    lang, sep, path = value.partition("=")
    if not sep or not lang or not path:
        raise argparse.ArgumentTypeError(f"expected LANG=FILE, got {value!r}")
    return lang, path


class PairClassifier(nn.Module):
    def __init__(self, xlm, n_classes, dropout=0.1):
        super().__init__()
        self.xlm = xlm
        dim = xlm.encoder.embed_tokens.embedding_dim
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, tokens, langs):
        x, _ = self.xlm.encoder.extract_features(tokens, langs)
        return self.head(self.dropout(x[:, 0]))


def build_batch(enc, premises, hypotheses, langs_p, langs_h):
    """Tokens and per-token language ids of ``<s> p </s> h </s>``, or of
    ``<s> p </s>`` where the hypothesis is None (padded)."""
    pad = enc.dictionary.pad()
    max_len = enc.model.max_positions()
    names = {i: l for i, l in enumerate(enc.languages)}
    single = all(h is None for h in hypotheses)
    half = max_len if single else max_len // 2
    a = [enc.token_ids([t], half, names.get(int(l)))[0] for t, l in zip(premises, langs_p)]
    if single:
        seqs = a
        lang_seqs = [np.full(len(x), lp) for x, lp in zip(a, langs_p)]
    else:
        b = [enc.token_ids([t], half, names.get(int(l)))[0] for t, l in zip(hypotheses, langs_h)]
        seqs, lang_seqs = [], []
        for x, y, lp, lh in zip(a, b, langs_p, langs_h):
            seqs.append(np.concatenate([x, y[1:]]))
            lang_seqs.append(np.concatenate([np.full(len(x), lp), np.full(len(y) - 1, lh)]))
    n = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), n), pad, dtype=torch.long)
    langs = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, lang_seqs)):
        tokens[i, : len(s)] = torch.as_tensor(s)
        langs[i, : len(l)] = torch.as_tensor(l)
    return tokens, langs


@torch.no_grad()
def evaluate(clf, enc, rows, lang, label_ids, batch_size):
    clf.eval()
    lid = enc.lang_id(lang) if enc.languages else 0
    correct = 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        tokens, langs = build_batch(enc, [r[0] for r in chunk], [r[1] for r in chunk],
                                    [lid] * len(chunk), [lid] * len(chunk))
        pred = clf(tokens, langs).argmax(-1)
        gold = torch.tensor([label_ids.get(r[2], -1) for r in chunk])
        correct += int((pred == gold).sum())
    return correct / max(len(rows), 1)


def main(argv=None):
    p = argparse.ArgumentParser(prog="xlm-ds-classify", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--train", type=_lang_file, required=True, help="LANG=TSV training pairs")
    p.add_argument("--eval", type=_lang_file, action="append", default=[], help="LANG=TSV (repeatable): zero-shot test sets")
    p.add_argument("--spm-model")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-updates", type=int, default=0, help="stop after N updates (0 = run all epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--max-train", type=int, default=0, help="use the first N training rows (0 = all)")
    p.add_argument("--code-switch", type=_lang_file, help="LANG=TSV: row-by-row translation of --train")
    p.add_argument("--code-switch-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    from ..methods.augment import code_switch
    from ..methods.encode import EncodeError, SentenceEncoder

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    try:
        enc = SentenceEncoder.load(args.checkpoint, args.spm_model)
        train_lang, train_path = args.train
        train = read_tsv(train_path)
        if args.max_train:
            train = train[: args.max_train]
        labels = sorted({r[2] for r in train})
        label_ids = {l: i for i, l in enumerate(labels)}
        lid = enc.lang_id(train_lang) if enc.languages else 0
        cs_rows, cs_lid = None, None
        if args.code_switch:
            cs_lang, cs_path = args.code_switch
            cs_rows = read_tsv(cs_path)[: len(train)]
            if len(cs_rows) != len(train):
                raise EncodeError(f"{cs_path}: {len(cs_rows)} rows but {len(train)} training rows")
            cs_lid = enc.lang_id(cs_lang) if enc.languages else 0
        evals = [(lang, read_tsv(path)) for lang, path in args.eval]
        single = bool(train) and train[0][1] is None
        others = [(path, rows) for (_, path), (_, rows) in zip(args.eval, evals)]
        if cs_rows is not None:
            others.append((cs_path, cs_rows))
        for path, rows in others:
            if rows and (rows[0][1] is None) != single:
                kind = "single sentences (text<TAB>label)" if single else "pairs (premise<TAB>hypothesis<TAB>label)"
                raise ValueError(f"{path}: expected {kind} like the training file {train_path}")
        for lang, _ in evals:
            if enc.languages:
                enc.lang_id(lang)
    except (EncodeError, ValueError, OSError) as e:
        print(f"xlm-ds-classify: error: {e}", file=sys.stderr)
        return 2

    clf = PairClassifier(enc.model, len(labels), args.dropout)
    opt = torch.optim.Adam(clf.parameters(), lr=args.lr)
    updates, t0 = 0, time.time()
    for epoch in range(args.epochs):
        prem, hyp = [r[0] for r in train], [r[1] for r in train]
        lp = np.full(len(train), lid)
        lh = np.full(len(train), lid)
        if cs_rows is not None and args.code_switch_rate > 0:
            prem, sw_p = code_switch(prem, [r[0] for r in cs_rows], args.code_switch_rate, rng)
            lp[sw_p] = cs_lid
            if not single:
                hyp, sw_h = code_switch(hyp, [r[1] for r in cs_rows], args.code_switch_rate, rng)
                lh[sw_h] = cs_lid
        order = rng.permutation(len(train))
        clf.train()
        total, n = 0.0, 0
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            tokens, langs = build_batch(enc, [prem[j] for j in idx], [hyp[j] for j in idx], lp[idx], lh[idx])
            gold = torch.tensor([label_ids[train[j][2]] for j in idx])
            loss = F.cross_entropy(clf(tokens, langs), gold)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n, updates = total + float(loss) * len(idx), n + len(idx), updates + 1
            if args.max_updates and updates >= args.max_updates:
                break
        print(f"epoch {epoch + 1}: train loss {total / max(n, 1):.4f} ({updates} updates, {time.time() - t0:.0f}s)", flush=True)
        if args.max_updates and updates >= args.max_updates:
            break
    accuracy = {}
    for lang, rows in evals:
        accuracy[lang] = evaluate(clf, enc, rows, lang, label_ids, args.batch_size)
        print(f"{lang}: accuracy {100 * accuracy[lang]:.2f} ({len(rows)} {'sentences' if single else 'pairs'}{', zero-shot' if lang != train_lang else ''})")
    print(json.dumps({"train_lang": train_lang, "labels": labels, "updates": updates, "accuracy": accuracy}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
