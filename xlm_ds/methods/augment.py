"""Input augmentations of Pan et al. (2021):

* random input shuffling: with probability ``rate`` a source sentence's
  tokens (between <s> and </s>) are put in a random order, so the contrastive
  objective cannot rely on word order alone;
* code-switching for fine-tuning: sentence-level, each sentence is replaced by
  its translation (the English side of a parallel pair) with probability
  ``rate``.

Both are pure functions of a numpy Generator (rates are measured in tests).
"""
from typing import List, Sequence, Tuple

import numpy as np


def shuffle_tokens(tokens: np.ndarray, rate: float, rng: np.random.Generator,
                   keep_first: int = 1, keep_last: int = 1) -> Tuple[np.ndarray, bool]:
    """Returns (tokens, shuffled?). The first ``keep_first`` and last
    ``keep_last`` tokens (<s>, </s>) stay in place."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"shuffle rate must be in [0, 1], got {rate}")
    if rate == 0.0 or rng.random() >= rate:
        return tokens, False
    out = np.array(tokens, copy=True)
    end = len(out) - keep_last
    if end - keep_first > 1:
        out[keep_first:end] = rng.permutation(out[keep_first:end])
    return out, True


def code_switch(sentences: Sequence, english: Sequence, rate: float,
                rng: np.random.Generator) -> Tuple[List, np.ndarray]:
    """Sentence-level code-switching: item i becomes ``english[i]`` with
    probability ``rate``. Returns (new list, bool array of replaced items)."""
    if len(sentences) != len(english):
        raise ValueError(f"{len(sentences)} sentences but {len(english)} translations")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"code-switch rate must be in [0, 1], got {rate}")
    switched = rng.random(len(sentences)) < rate
    return [e if s else x for x, e, s in zip(sentences, english, switched)], switched
