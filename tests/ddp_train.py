"""Run by tests/test_ddp.py under torchrun (two CPU processes, gloo): every pooler in torchvision's
ResNet-18 (``replace_pooling``) trained three Adam steps with DistributedDataParallel, each rank
from its own initialisation, data and noise. Rank 0 writes, per pooler, the largest difference
between the ranks' parameters and how far the poolers' own parameters moved, and the message DDP
gives a model whose lazy poolers have not seen a batch.

    torchrun --standalone --nproc-per-node 2 tests/ddp_train.py RESULT.json
"""

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torchvision import models

from tdgs.pooling import POOLERS, Pool2d, replace_pooling


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors] or [torch.zeros(0)])


def train(name: str, rank: int) -> dict:
    torch.manual_seed(rank)  # each rank its own initialisation, batches and noise: DDP must make them agree
    model = replace_pooling(models.resnet18(num_classes=10), name)
    model(torch.rand(2, 3, 32, 32))  # the lazy poolers' first batch, before wrapping
    ddp = DistributedDataParallel(model)  # broadcasts rank 0's parameters
    poolers = [p for m in model.modules() if isinstance(m, Pool2d) for p in m.parameters()]
    start = flat(poolers).clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
        optimizer.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()
    mine = flat(model.parameters())
    ranks = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(ranks, mine)
    return {
        "rank_difference": max((r - ranks[0]).abs().max().item() for r in ranks),
        "pooler_parameters": start.numel(),
        "pooler_moved": (flat(poolers) - start).abs().max().item() if start.numel() else 0.0,
    }


def main(result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {name: train(name, rank) for name in POOLERS}
    try:
        DistributedDataParallel(replace_pooling(models.resnet18(num_classes=10), "tdgs"))
        results["lazy_message"] = None
    except (RuntimeError, ValueError) as error:
        results["lazy_message"] = str(error)
    if rank == 0:
        with open(result_path, "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
