"""BERT/XLM token masking: choose ``mask_prob`` of the maskable positions,
replace 80% of them with ``<mask>``, 10% with a random token, keep 10%.

fairseq's ``MaskTokensDataset`` does the 80/10/10 part but cannot weight
*which* tokens get masked; XLM's ``sample_alpha`` masks a token with
probability ∝ count^-alpha so that frequent tokens (punctuation, function
words) do not dominate the MLM signal. Both cases live here, as a pure
function of a numpy Generator, so they are tested and reproducible.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class MaskingConfig:
    mask_idx: int
    pad_idx: int
    vocab_size: int
    # ids that random replacement may produce: [first_normal, vocab_size) minus <mask>
    first_normal_idx: int
    mask_prob: float = 0.15
    leave_unmasked_prob: float = 0.1
    random_token_prob: float = 0.1

    def __post_init__(self):
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask probability must be in (0, 1), got {self.mask_prob}")
        if self.leave_unmasked_prob + self.random_token_prob > 1.0:
            raise ValueError("leave-unmasked + random-token probabilities exceed 1")


def mask_tokens(
    tokens: np.ndarray,
    maskable: np.ndarray,
    cfg: MaskingConfig,
    rng: np.random.Generator,
    token_weights: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Returns (source, target): target holds the original id at predicted
    positions and ``pad_idx`` elsewhere.

    ``maskable``: bool array, positions that may be chosen (not <s>/<pad>).
    ``token_weights``: optional per-vocabulary weights (XLM sample_alpha);
    positions are then drawn without replacement ∝ weight of their token.
    At least one position is predicted when any is maskable, so a short
    sentence still contributes a target.
    """
    candidates = np.flatnonzero(maskable)
    source = tokens.copy()
    target = np.full_like(tokens, cfg.pad_idx)
    if len(candidates) == 0:
        return source, target
    # probabilistic rounding keeps the expected rate exactly mask_prob
    n_mask = int(cfg.mask_prob * len(candidates) + rng.random())
    n_mask = min(max(n_mask, 1), len(candidates))
    if token_weights is None:
        chosen = rng.choice(candidates, n_mask, replace=False)
    else:
        w = token_weights[tokens[candidates]].astype(np.float64)
        if w.sum() <= 0:
            w = np.ones_like(w)
        n_mask = min(n_mask, int(np.count_nonzero(w)))
        chosen = rng.choice(candidates, n_mask, replace=False, p=w / w.sum())
    target[chosen] = tokens[chosen]
    u = rng.random(len(chosen))
    keep = u < cfg.leave_unmasked_prob
    rand = (u >= cfg.leave_unmasked_prob) & (
        u < cfg.leave_unmasked_prob + cfg.random_token_prob
    )
    to_mask = ~(keep | rand)
    source[chosen[to_mask]] = cfg.mask_idx
    if rand.any():
        # uniform over normal symbols, never <mask> itself
        n_choices = cfg.vocab_size - cfg.first_normal_idx - 1
        draws = rng.integers(0, n_choices, size=int(rand.sum())) + cfg.first_normal_idx
        draws = np.where(draws >= cfg.mask_idx, draws + 1, draws)
        source[chosen[rand]] = draws
    return source, target


def frequency_weights(counts: np.ndarray, alpha: float, special_ids) -> np.ndarray:
    """XLM's mask scores: max(count, 1)^-alpha, zero for special symbols."""
    w = np.maximum(counts.astype(np.float64), 1.0) ** (-alpha)
    w[list(special_ids)] = 0.0
    return w
