"""Post-hoc alignment of two models' representations by orthogonal
Procrustes (Conneau et al. 2020, "Emerging cross-lingual structure", §5):
W* = argmin_{W orthogonal} ||X W − Y||_F = U Vᵀ with U Σ Vᵀ = svd(Xᵀ Y),
X, Y the representations of the same parallel sentences in the two models."""
import torch


def procrustes(x: torch.Tensor, y: torch.Tensor, center: bool = False) -> torch.Tensor:
    """x, y: (N, C). Returns the orthogonal (C, C) W minimising ||xW − y||."""
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    x, y = x.double(), y.double()
    if center:
        x, y = x - x.mean(0), y - y.mean(0)
    u, _, vh = torch.linalg.svd(x.t() @ y)
    return (u @ vh).to(torch.float32)
