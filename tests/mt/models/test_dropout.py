"""mt.models.dropout: the CPU dropout mask drawn with numpy's SFC64 from a torch-drawn seed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mt.models.dropout import dropout, dropout_add, keep_mask
from mt.models.rng import draw_seed


def test_keep_mask_rate_scale_and_seed():
    p, n = 0.1, 1_000_000
    m = keep_mask(123, (1000, 1000), p).clone()
    kept = m.ne(0)
    # kept share within 5 standard deviations of 1 - p (binomial, n = 1e6: sd 3e-4)
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.all(m[kept] == torch.tensor(1 / (1 - p), dtype=torch.float32))
    assert torch.equal(keep_mask(123, (1000, 1000), p), m)  # same seed, same mask
    assert not torch.equal(keep_mask(124, (1000, 1000), p), m)
    assert torch.equal(keep_mask(123, (1000, 1000), p, scaled=False), kept.float())
    # neighbouring elements are not correlated (16-bit lanes of one 64-bit word)
    a, b = kept[:, 0::2].float(), kept[:, 1::2].float()
    assert abs(((a - a.mean()) * (b - b.mean())).mean().item()) < 5 * p * (1 - p) / math.sqrt(n / 2)


def test_dropout_add_matches_its_mask_forward_and_backward():
    torch.manual_seed(7)
    x, h = torch.randn(64, 33, requires_grad=True), torch.randn(64, 33, requires_grad=True)
    g = torch.randn(64, 33)
    state = torch.get_rng_state()
    y = dropout_add(x, h, 0.3, True)
    y.backward(g)
    torch.set_rng_state(state)
    m = keep_mask(draw_seed(), (64, 33), 0.3)
    torch.testing.assert_close(y, x.detach() + h.detach() * m)
    torch.testing.assert_close(h.grad, g * m)
    torch.testing.assert_close(x.grad, g)
    assert 0 < int(m.eq(0).sum()) < m.numel()


def test_dropout_follows_torch_seed_and_rng_state():
    h = torch.randn(200, 50)
    torch.manual_seed(1)
    a = dropout(h, 0.2, True)
    torch.manual_seed(1)
    b = dropout(h, 0.2, True)
    c = dropout(h, 0.2, True)  # the next draw: another mask
    assert torch.equal(a, b) and not torch.equal(b, c)
    # unbiased: E[dropout(1)] = 1
    torch.manual_seed(2)
    assert abs(dropout(torch.ones(1000, 1000), 0.2, True).mean().item() - 1) < 5e-3


def test_dropout_identity_off_training_and_zeros_at_p1():
    h = torch.randn(10, 4)
    assert dropout(h, 0.5, False) is h
    assert dropout(h, 0.0, True) is h
    torch.testing.assert_close(dropout_add(h, h, 0.5, False), 2 * h)
    assert torch.count_nonzero(dropout(h, 1.0, True)) == 0


def test_dropout_dtypes_under_bf16():
    h = torch.randn(16, 8).bfloat16().requires_grad_()
    r = torch.randn(16, 8, requires_grad=True)
    out = dropout(h, 0.1, True)
    assert out.dtype == torch.bfloat16
    y = dropout_add(r, h, 0.1, True)
    assert y.dtype == torch.float32  # as residual + F.dropout(h) promotes
    y.sum().backward()
    assert h.grad.dtype == torch.bfloat16 and r.grad.dtype == torch.float32
    assert dropout_add(h.detach(), h.detach(), 0.1, True).dtype == torch.bfloat16  # as bf16 + bf16


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_gradient_is_what_forward_did(p):
    """d(sum(dropout(h) * w))/dh is w where the forward kept h (scaled), 0 where it dropped it."""
    torch.manual_seed(3)
    h = torch.rand(300, 7) + 0.5  # nonzero: kept positions are visible in the output
    h.requires_grad_()
    w = torch.randn(300, 7)
    y = dropout(h, p, True)
    (y * w).sum().backward()
    kept = y.detach().ne(0)
    torch.testing.assert_close(h.grad, torch.where(kept, w / (1 - p), torch.zeros_like(w)))
    # the same statistics as F.dropout's mask
    torch.manual_seed(3)
    ref = F.dropout(torch.ones(300, 7), p, True).ne(0).float().mean()
    assert abs(kept.float().mean() - ref) < 0.05
