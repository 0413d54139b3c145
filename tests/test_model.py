"""The deck's CNN with every pooler, in both geometries; pooler summaries."""

import pytest
import torch
from conftest import ALL_POOLERS

from tdgs.model import PoolingCNN
from tdgs.summaries import pooler_summary, temperature_table


@pytest.mark.parametrize("name", ALL_POOLERS)
@pytest.mark.parametrize("shape,side", [((1, 28, 28), 3), ((3, 32, 32), 4)], ids=["mnist", "cifar"])
def test_cnn_with_every_pooler(name, shape, side):
    model = PoolingCNN(name, shape, 10)
    assert model.hidden.in_features == 64 * side * side
    x = torch.rand(4, *shape)
    logits = model(x)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_tdgs_position_temperatures_are_sized_at_construction():
    model = PoolingCNN("tdgs", (1, 28, 28), 10)
    assert [tuple(p.theta.shape) for p in model.pools] == [(16, 14, 14), (32, 7, 7), (64, 3, 3)]
    table = temperature_table(model)
    assert len(table) == 16 * 14 * 14 + 32 * 7 * 7 + 64 * 3 * 3
    assert table.groupby("layer").size().tolist() == [16 * 14 * 14, 32 * 7 * 7, 64 * 3 * 3]
    t = model.pools[1].temperature
    assert table.query("layer == 2 and channel == 5 and row == 3 and col == 6")["temperature"].item() == pytest.approx(
        t[5, 3, 6].item()
    )


def test_pooler_options_reach_every_pool():
    model = PoolingCNN("tdgs", (3, 32, 32), 10, t0=5.0, granularity="channel", normalize="none")
    for pool in model.pools:
        assert pool.t0 == 5.0 and pool.granularity == "channel" and pool.normalize == "none"


@pytest.mark.parametrize(
    "name,columns",
    [
        ("tdgs", {"T_mean", "T_median", "T_q25", "T_q75", "T_min", "T_max", "T_below_1"}),
        ("mixed", {"gate_mean"}),
        ("gated", {"gate_mean"}),
        ("max", set()),
    ],
)
def test_pooler_summary_columns(name, columns):
    model = PoolingCNN(name, (1, 28, 28), 10)
    stats = pooler_summary(model, torch.rand(8, 1, 28, 28))
    assert set(stats) == {f"pool{i}_{c}" for i in (1, 2, 3) for c in columns}
    assert model.training  # the probe leaves the mode as it was
    if name in ("mixed", "gated"):
        assert all(v == pytest.approx(0.5) for v in stats.values())  # initial gates


def test_temperature_summary_values():
    model = PoolingCNN("tdgs", (1, 28, 28), 10, granularity="layer", eps=0.5)
    with torch.no_grad():
        for pool, theta in zip(model.pools, (0.1, 0.4, 2.0)):
            pool.theta.fill_(theta)
    stats = pooler_summary(model, torch.rand(2, 1, 28, 28))
    assert stats["pool1_T_mean"] == pytest.approx(0.6) and stats["pool1_T_below_1"] == 1.0
    assert stats["pool3_T_max"] == pytest.approx(2.5) and stats["pool3_T_below_1"] == 0.0
    model = PoolingCNN("tdgs", (1, 28, 28), 10, granularity="channel", eps=0.5)
    with torch.no_grad():
        model.pools[0].theta.copy_(torch.arange(16.0))  # T = 0.5, 1.5, ..., 15.5
    stats = pooler_summary(model, torch.rand(2, 1, 28, 28))
    assert (stats["pool1_T_q25"], stats["pool1_T_q75"]) == pytest.approx((4.25, 11.75))  # linear interpolation
