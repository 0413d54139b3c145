"""The networks of ``model=``: each with every pooler in place of all its max pools, in both
geometries; the torchvision ones keep their pools' windows and refuse others."""

import pytest
import torch
from conftest import ALL_POOLERS
from torch import nn

from tdgs.networks import MODELS, build_model
from tdgs.pooling import Pool2d
from tdgs.summaries import pooler_summary, temperature_table

POOLS = {"deck_cnn": 3, "resnet18": 1, "vgg11_bn": 5}  # pool layers of each network


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["mnist", "cifar"])
@pytest.mark.parametrize("name", ["max", "tdgs", "gated"])
def test_every_network_trains_with_the_pooler_in_every_pool(model, shape, name):
    net = build_model(model, name, shape, 10)
    pools = [m for m in net.modules() if isinstance(m, Pool2d)]
    assert len(pools) == POOLS[model] and not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert not any(isinstance(p, nn.UninitializedParameter) for p in net.parameters())  # sized: the optimizer sees them
    logits = net(torch.rand(4, *shape))
    assert logits.shape == (4, 10)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    summary = pooler_summary(net, torch.rand(8, *shape))
    if name == "tdgs":
        assert len(temperature_table(net).layer.unique()) == POOLS[model]
    assert {key.split("_")[0] for key in summary} == (
        {f"pool{i}" for i in range(1, POOLS[model] + 1)} if name != "max" else set()
    )


@pytest.mark.parametrize("name", ALL_POOLERS)
def test_resnet18_takes_every_pooler(name):
    assert build_model("resnet18", name, (3, 32, 32), 10)(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_torchvision_networks_keep_their_windows_and_refuse_others():
    (pool,) = [m for m in build_model("resnet18", "tdgs", (1, 28, 28), 10).modules() if isinstance(m, Pool2d)]
    assert (pool.kernel_size, pool.stride, pool.padding, tuple(pool.theta.shape)) == (3, 2, 1, (64, 14, 14))
    with pytest.raises(ValueError, match="pooler.stride=3 sets the deck CNN's pools only; model=vgg11_bn"):
        build_model("vgg11_bn", "max", (1, 28, 28), 10, stride=3)
    with pytest.raises(ValueError, match="model must be one of 'deck_cnn', 'resnet18', 'vgg11_bn', but got 'resnet50'"):
        build_model("resnet50", "max", (1, 28, 28), 10)


@pytest.mark.parametrize("name", ["max", "tdgs"])
def test_the_deck_cnn_takes_the_pooler_window(name):
    """pooler.kernel_size/stride/padding size the deck CNN's pools and its first linear layer."""
    net = build_model("deck_cnn", name, (1, 28, 28), 10, kernel_size=3, stride=2, padding=1)
    assert net.hidden.in_features == 64 * 4 * 4  # 28 -> 14 -> 7 -> 4
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
