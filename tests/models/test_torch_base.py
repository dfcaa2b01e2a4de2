"""The shared torch training helpers."""

from __future__ import annotations

import torch
from torch import nn

from funnelrec.models.torch_base import clip_gradients


def _grads(sparse: bool) -> list[nn.Parameter]:
    torch.manual_seed(0)
    table = nn.Embedding(50, 4, sparse=sparse)
    linear = nn.Linear(4, 3)
    linear(table(torch.tensor([1, 7, 7, 30]))).pow(2).sum().mul(100).backward()
    return [table.weight, linear.weight, linear.bias]


def test_clip_gradients_matches_torch_and_handles_sparse_tables():
    dense, reference, sparse = _grads(False), _grads(False), _grads(True)
    expected = float(nn.utils.clip_grad_norm_(reference, 1.0))
    assert expected > 10  # the limit is really exceeded
    assert abs(clip_gradients(dense, 1.0) / expected - 1) < 1e-5
    assert abs(clip_gradients(sparse, 1.0) / expected - 1) < 1e-5
    for a, b, c in zip(dense, reference, sparse, strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)
        assert torch.allclose(c.grad.to_dense(), b.grad, atol=1e-6)
    joint = torch.stack([p.grad.to_dense().pow(2).sum() for p in sparse]).sum().sqrt()
    assert abs(float(joint) - 1.0) < 1e-4  # clipped to the limit
