import torch

from xlm_ds.methods.procrustes import procrustes


def test_procrustes_recovers_a_known_rotation():
    g = torch.Generator().manual_seed(0)
    d = 16
    rot, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    x = torch.randn(200, d, generator=g)
    y = x @ rot + 0.01 * torch.randn(200, d, generator=g)
    w = procrustes(x, y)
    assert torch.allclose(w, rot, atol=1e-2)
    assert torch.allclose(w @ w.t(), torch.eye(d), atol=1e-5)  # orthogonal
    # nearest neighbours after mapping are the gold pairs
    sim = torch.nn.functional.normalize(x @ w, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).t()
    assert (sim.argmax(1) == torch.arange(200)).all()
