"""Distributed and converted training: DistributedDataParallel keeps every pooler's ranks identical
(two CPU processes, gloo, under torchrun), refuses lazy poolers that have not seen a batch in one
line, an optimizer may be built before that first batch, and ``SyncBatchNorm`` conversion keeps the
poolers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ALL_POOLERS
from torchvision import models

from tdgs.pooling import Pool2d, replace_pooling

LEARNABLE = {"mixed", "gated", "tdgs"}


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """tests/ddp_train.py's results: two processes under torchrun, as a user launches DDP."""
    result = tmp_path_factory.mktemp("ddp") / "result.json"
    script = Path(__file__).with_name("ddp_train.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run([*command, str(script), str(result)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.mark.parametrize("name", ALL_POOLERS)
def test_ddp_ranks_stay_identical(ddp_results, name):
    result = ddp_results[name]
    assert result["rank_difference"] == 0.0  # from different initialisations, batches and noise
    if name in LEARNABLE:  # the poolers' own parameters are trained, through DDP's gradient averaging
        assert result["pooler_parameters"] > 0 and result["pooler_moved"] > 1e-3
    else:
        assert result["pooler_parameters"] == 0


def test_ddp_refuses_poolers_that_have_not_seen_a_batch(ddp_results):
    message = ddp_results["lazy_message"]
    assert message is not None and "uninitialized parameters" in message and "forward pass" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(LEARNABLE))
def test_an_optimizer_built_before_the_first_batch_trains_the_lazy_poolers(name):
    """A lazy parameter becomes a parameter in place (the same object), so the optimizer holds it."""
    torch.manual_seed(0)
    model = replace_pooling(models.resnet18(num_classes=10), name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    pooler = model.maxpool
    values = []
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.randint(0, 10, (4,))).backward()
        optimizer.step()
        values.append(torch.cat([p.detach().flatten() for p in pooler.parameters()]))
    for parameter in pooler.parameters():
        assert not isinstance(parameter, torch.nn.UninitializedParameter)
        assert optimizer.state[parameter]["exp_avg"].shape == parameter.shape
    assert (values[-1] - values[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ALL_POOLERS)
def test_sync_batchnorm_conversion_keeps_the_poolers(name):
    model = replace_pooling(models.resnet18(num_classes=10), name)
    model(torch.rand(2, 3, 32, 32))
    pooler, keys = model.maxpool, list(model.state_dict())
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted.maxpool is pooler and isinstance(pooler, Pool2d)
    assert isinstance(converted.bn1, torch.nn.SyncBatchNorm)
    assert list(converted.state_dict()) == keys
