"""UniMax language sampling (Chung et al. 2023, "UniMax: Fairer and More
Effective Language Sampling for Large-Scale Multilingual Pretraining").

Temperature (α) sampling either starves the head languages or repeats the
tail ones many times over. UniMax spends the training budget uniformly over
languages, but never more than ``max_epochs`` passes over a language's data;
what a small language cannot take is shared among the larger ones:

    languages in increasing order of size c_l; B = the whole budget
    for each l: b_l = min(B_left / languages_left, max_epochs * c_l);  B_left -= b_l
    q_l = b_l / sum(b)

Pure functions, unit-agnostic (sizes and budget in the same unit).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping


def unimax_budgets(sizes: Mapping[str, float], budget: float, max_epochs: float) -> Dict[str, float]:
    """``{lang: b_l}``, in the order of ``sizes``. When every language is
    capped the budgets add up to less than ``budget``."""
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"UniMax budget must be a positive number, got {budget!r}")
    if not (math.isfinite(max_epochs) and max_epochs > 0):
        raise ValueError(f"UniMax max epochs must be a positive number, got {max_epochs!r}")
    if any(not (c >= 0) for c in sizes.values()) or not any(c > 0 for c in sizes.values()):
        raise ValueError(f"sizes must be >= 0 with at least one positive, got {dict(sizes)!r}")
    left, out = float(budget), {}
    ranked = sorted((c, i, k) for i, (k, c) in enumerate(sizes.items()))
    for n_left, (c, _, k) in zip(range(len(ranked), 0, -1), ranked):
        out[k] = min(left / n_left, max_epochs * float(c))
        left -= out[k]
    return {k: out[k] for k in sizes}


def unimax_probs(sizes: Mapping[str, float], budget: float, max_epochs: float) -> Dict[str, float]:
    """``{lang: q_l}``: each language's share of the samples; sums to 1.

    >>> unimax_probs({"en": 1000, "de": 100, "sw": 10}, 300, 2)
    {'en': 0.4666666666666667, 'de': 0.4666666666666667, 'sw': 0.06666666666666667}
    """
    b = unimax_budgets(sizes, budget, max_epochs)
    z = sum(b.values())
    return {k: v / z for k, v in b.items()}
