"""Every pooler runs under torch.compile (dynamo + inductor on this machine's CPU): evaluation
equals eager, training gives finite outputs and gradients (its random draws come from inductor's
own generator, so they are not compared)."""

import pytest
import torch
from conftest import ALL_POOLERS

from tdgs.pooling import create_pooler


@pytest.mark.parametrize("name", ALL_POOLERS)
def test_compiled_pooler(name):
    pool = create_pooler(name, 4)
    x = torch.rand(2, 4, 8, 8)
    pool(x)  # materialises lazy parameters outside the compiled graph
    compiled = torch.compile(pool)
    torch.testing.assert_close(compiled.eval()(x), pool.eval()(x))
    x.requires_grad_()
    out = compiled.train()(x)
    out.sum().backward()
    assert out.shape == (2, 4, 4, 4) and torch.isfinite(out).all() and torch.isfinite(x.grad).all()
