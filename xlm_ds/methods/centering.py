"""Language centring for cross-lingual retrieval (Libovický et al. 2020,
"On the language neutrality of pre-trained multilingual representations"):
a multilingual encoder's sentence vectors are a language-neutral part plus a
language-specific offset shared by every sentence of that language. Cosine
search compares whole vectors, so a large offset can hide a good neutral
part; subtracting each language's mean removes it without any parallel data.

``mean_cosine`` measures the offset: the cosine between two languages' mean
vectors (1 = the same mean; lower = the languages sit further apart), so a
change in raw P@1 can be told apart from a change in the neutral part."""
from typing import List, Sequence

import torch
import torch.nn.functional as F


def spaced_sample(lines: Sequence[str], n: int) -> List[str]:
    """n non-empty lines spread evenly over the whole of ``lines`` (files
    are often concatenations of sources: their head is one source only)."""
    lines = [s for s in lines if s.strip()]
    if n <= 0 or n >= len(lines):
        return list(lines)
    return [lines[i * len(lines) // n] for i in range(n)]


def mean_cosine(a_mean: torch.Tensor, b_mean: torch.Tensor) -> float:
    return float(F.cosine_similarity(a_mean.double(), b_mean.double(), dim=0))
