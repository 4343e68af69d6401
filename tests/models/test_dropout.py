"""The cheap CPU dropout (xlm_ds/models/dropout.py) is dropout: the share
kept is 1 - p (p rounded to 2^-16), kept elements are scaled so the mean is
unchanged, masks are independent of each other and follow torch's seed."""
import pytest
import torch

from xlm_ds.models.dropout import dropout


@pytest.mark.parametrize("p", [0.1, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keeps_one_minus_p_and_preserves_the_mean(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(200, 1001, dtype=dtype)  # odd size: the last 64-bit draw is cut
    y = dropout(x, p, True)
    kept = (y != 0).float().mean().item()
    n = x.numel()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(kept - (1 - p)) < 5 * sd, kept
    assert abs(y.float().mean().item() - 1) < 5 * sd / (1 - p) + 1e-2 * (dtype == torch.bfloat16)
    assert torch.allclose(y[y != 0].float(), torch.tensor(1 / (1 - p)), rtol=1e-2)


def test_masks_are_fresh_and_follow_the_seed():
    x = torch.ones(64, 512)
    torch.manual_seed(3)
    a, b = dropout(x, 0.1, True), dropout(x, 0.1, True)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1, True), a)
    assert not torch.equal(a, b)
    # neighbouring elements (one 64-bit draw holds four) are independent
    ka, kb = (a[:, 0::4] != 0).float(), (a[:, 1::4] != 0).float()
    both = (ka * kb).mean().item()
    assert abs(both - 0.81) < 0.02, both


def test_eval_and_p0_are_identity_and_gradients_flow():
    x = torch.randn(8, 16, requires_grad=True)
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    torch.manual_seed(0)
    y = dropout(x, 0.5, True)
    y.sum().backward()
    assert torch.equal(x.grad, (y.detach() != 0).float() * 2)
