"""replace_pooling puts every pooler into torchvision's networks in place of their max pools: same
output shape, finite loss and gradients, every learnable pooler parameter trained, state_dict round
trip, the model's dtype kept; and refuses, in one line and before changing anything, the pools a
pooler cannot stand in for."""

import copy

import pytest
import torch
from conftest import ALL_POOLERS, run_seeded
from torch import nn
from torchvision import models

from tdgs.pooling import Pool2d, TDGSPool, replace_pooling

# name -> (constructor, input side): the smallest input each network takes
NETWORKS = {
    "resnet18": (models.resnet18, 32),  # stem: MaxPool2d(3, 2, padding=1)
    "vgg11_bn": (models.vgg11_bn, 32),  # five MaxPool2d(2, 2)
    "alexnet": (models.alexnet, 64),  # three MaxPool2d(3, 2)
    "densenet121": (models.densenet121, 32),  # stem MaxPool2d(3, 2, padding=1); AvgPool2d transitions stay
}
_built: dict = {}


def _network(name: str) -> nn.Module:
    """A fresh copy of the network, built once per session (VGG and AlexNet take a while)."""
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = NETWORKS[name][0](num_classes=10).eval()
    return copy.deepcopy(_built[name])


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("name", ALL_POOLERS)
def test_every_pooler_stands_in_for_the_max_pools(network, name):
    original = _network(network)
    x = torch.rand(2, 3, NETWORKS[network][1], NETWORKS[network][1])
    windows = [(m.kernel_size, m.stride, m.padding) for m in original.modules() if isinstance(m, nn.MaxPool2d)]
    with torch.no_grad():
        expected_shape = original(x).shape
    model = replace_pooling(_network(network), name).train()
    poolers = [m for m in model.modules() if isinstance(m, Pool2d)]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert [(p.kernel_size, p.stride, p.padding) for p in poolers] == windows
    out = model(x)
    assert out.shape == expected_shape
    loss = nn.functional.cross_entropy(out, torch.arange(2))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for pooler in poolers:  # every temperature (mix logit, gate) is trained: in the graph, not all 0
        for parameter in pooler.parameters():  # (a dead channel's are 0: a constant window ignores T)
            assert parameter.grad is not None and parameter.grad.any()

    fresh = replace_pooling(original, name)  # lazy poolers: sized by the state_dict
    fresh.load_state_dict(model.state_dict())
    for training in (False, True):
        model.train(training), fresh.train(training)
        torch.testing.assert_close(run_seeded(fresh, x), run_seeded(model, x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name,options",
    [
        ("tdgs", {"t0": 0.5, "granularity": "channel"}),
        ("tdgs", {"granularity": "layer"}),
        ("mixed", {"granularity": "layer"}),
        ("gated", {}),
    ],
)
def test_options_reach_every_pooler_and_the_dtype_is_kept(name, options):
    model = replace_pooling(_network("resnet18").double(), name, **options)
    model(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    (pool,) = [m for m in model.modules() if isinstance(m, Pool2d)]
    assert all(getattr(pool, key) == value for key, value in options.items())
    assert {p.dtype for p in pool.parameters()} == {torch.float64}


def test_only_the_given_types_are_replaced():
    model = replace_pooling(_network("densenet121"), "max", types=(nn.AvgPool2d,))
    assert sum(isinstance(m, Pool2d) for m in model.modules()) == 3  # the three transitions
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 1  # the stem's


@pytest.mark.parametrize(
    "pool,match",
    [
        (nn.MaxPool2d(2, dilation=2), "dilation=2"),
        (nn.MaxPool2d(3, 2, ceil_mode=True), "ceil_mode=True"),  # GoogLeNet's pools
        (nn.MaxPool2d(2, return_indices=True), "return_indices"),
        (nn.MaxPool2d((3, 2)), r"^2\.1 has kernel_size=\(3, 2\); the poolers take square windows only$"),
        (nn.MaxPool2d(2, stride=(2, 1)), r"^2\.1 has stride=\(2, 1\); the poolers take square windows only$"),
        (nn.MaxPool2d(2, padding=(1, 0)), r"^2\.1 has padding=\(1, 0\); the poolers take square windows only$"),
        (nn.MaxPool2d(2, dilation=(1, 2)), r"^2\.1 has dilation=\(1, 2\); the poolers take square windows only$"),
    ],
)
def test_a_pool_no_pooler_can_stand_in_for_is_refused_in_one_line(pool, match):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Sequential(nn.Conv2d(4, 4, 3), pool))
    with pytest.raises(ValueError, match=match) as info:
        replace_pooling(model, "tdgs")
    assert "2.1" in str(info.value) and "\n" not in str(info.value)  # names the layer
    assert isinstance(model[1], nn.MaxPool2d)  # nothing replaced


def test_a_shared_pool_becomes_one_pooler_everywhere_it_sits():
    shared = nn.MaxPool2d(2)
    inner = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), shared)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), shared, inner)
    model.again = shared  # a second name in the same parent (Sequential runs it too)
    replace_pooling(model, "tdgs", granularity="channel")  # one channel count, three map sizes
    assert model[1] is model[2][1] is model.again and isinstance(model.again, Pool2d)
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    assert model[1].theta.grad is not None


@pytest.mark.parametrize(
    "pool,match",
    [
        (nn.AdaptiveAvgPool2d(1), "AdaptiveAvgPool2d. has no fixed window"),
        (nn.AvgPool2d(3, 2, padding=1), "count_include_pad=True"),
        (nn.AvgPool2d(2, divisor_override=3), "divisor_override=3"),
        (nn.AvgPool2d(3, 1, padding=(1, 0)), r"^1 has padding=\(1, 0\); the poolers take square windows only$"),
    ],
)
def test_average_pools_are_taken_only_where_a_pooler_means_the_same(pool, match):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), pool)
    with pytest.raises(ValueError, match=match):
        replace_pooling(model, "avg", types=(nn.AvgPool2d, nn.AdaptiveAvgPool2d))
    assert model[1] is pool
    model = replace_pooling(
        nn.Sequential(nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)), "avg", types=(nn.AvgPool2d,)
    )
    x = torch.rand(2, 3, 9, 9)
    torch.testing.assert_close(model(x), nn.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=False))


def test_square_tuple_windows_are_taken():
    """``nn.MaxPool2d((3, 3), (2, 2), (1, 1))`` is ``nn.MaxPool2d(3, 2, 1)``."""
    model = replace_pooling(nn.Sequential(nn.MaxPool2d((3, 3), stride=(2, 2), padding=(1, 1))), "tdgs")
    assert (model[0].kernel_size, model[0].stride, model[0].padding) == (3, 2, 1)


def test_a_pool_without_stride_or_padding_attributes_takes_the_defaults():
    """``nn.LPPool2d(2, 3)`` keeps ``stride=None`` (the window's size) and has no ``padding``."""
    model = replace_pooling(nn.Sequential(nn.LPPool2d(2, 3)), "avg", types=(nn.LPPool2d,))
    assert (model[0].kernel_size, model[0].stride, model[0].padding) == (3, 3, 0)


def test_this_packages_poolers_can_be_replaced_too():
    """A TDGS network made a max-pooling one again: the poolers have no ``dilation`` or ``ceil_mode``."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), TDGSPool(kernel_size=3, stride=2, padding=1))
    replace_pooling(model, "max", types=(Pool2d,))
    pool = model[1]
    assert type(pool).__name__ == "MaxPool" and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)


def test_bad_pooler_name_or_option_is_refused_before_anything_changes():
    model = _network("resnet18")
    for name, options, match in [
        ("tdgss", {}, "tdgss"),
        ("tdgs", {"t0": -1}, "t0"),
        ("max", {"grid_size": 4}, "grid_size"),
    ]:
        with pytest.raises(ValueError, match=match):
            replace_pooling(model, name, **options)
    assert isinstance(model.maxpool, nn.MaxPool2d)
