"""Exponentially smoothed language sampling (XLM, Lample & Conneau 2019, §3.1).

Languages are sampled with probability ``q_i = p_i**alpha / sum_j p_j**alpha``
where ``p_i = n_i / sum_k n_k`` is the share of sentences of language ``i``.
``alpha = 1`` keeps the natural distribution, ``alpha = 0`` is uniform, and
values in between (XLM: 0.5 for BPE learning and batch sampling, XLM-R 0.3)
boost low-resource languages so that the shared vocabulary and the model do
not ignore them.

Pure functions with no dependencies so that both data preparation (how many
sentences per language go into sentencepiece training) and the training task
(which language the next batch comes from) use the *same* formula.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping


def smoothed_probs(counts: Mapping[str, float], alpha: float) -> Dict[str, float]:
    """Return ``{lang: q_lang}`` with ``q ∝ (n / N) ** alpha``; sums to 1.

    Languages with a zero count get probability 0 (also for ``alpha == 0``,
    where ``0 ** 0`` would otherwise give them weight 1).  Keys keep the
    order of ``counts``.

    >>> smoothed_probs({"en": 100, "de": 1}, 1.0)["de"] == 1 / 101
    True
    >>> smoothed_probs({"en": 100, "de": 1}, 0.0)
    {'en': 0.5, 'de': 0.5}
    """
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if any(c < 0 for c in counts.values()):
        raise ValueError(f"counts must be >= 0, got {dict(counts)!r}")
    total = float(sum(counts.values()))
    if total <= 0:
        raise ValueError("at least one language needs a positive count")
    weights = {k: (c / total) ** alpha if c > 0 else 0.0 for k, c in counts.items()}
    z = sum(weights.values())
    return {k: w / z for k, w in weights.items()}


def allocate(probs: Mapping[str, float], total: int) -> Dict[str, int]:
    """Split ``total`` items into integer counts proportional to ``probs``.

    Largest-remainder rounding: every count is ``floor(q * total)`` or one
    more, and the counts add up to exactly ``total`` (ties go to the language
    listed first).  Languages with probability 0 get 0.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    z = float(sum(probs.values()))
    exact = {k: (p / z) * total for k, p in probs.items()}
    out = {k: int(math.floor(v)) for k, v in exact.items()}
    rest = total - sum(out.values())
    ranked = sorted(
        (-(exact[k] - out[k]), i, k) for i, k in enumerate(probs) if probs[k] > 0
    )
    for _, _, k in ranked[:rest]:
        out[k] += 1
    return out
