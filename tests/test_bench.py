"""scripts/bench.py runs end to end (a smoke run: --quick times too little to mean anything)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_writes_every_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for title in (
        "## Poolers",
        "## CNN train step",
        "## torchvision networks",
        "## Epoch throughput",
        "## Peak memory",
        "## Recipes",
    ):
        assert title in done.stdout
    poolers = pd.read_csv(tmp_path / "poolers_cpu.csv")
    assert {"F.max_pool2d", "tdgs", "tdgs eval=argmax", "tdgs (original code)"} <= set(poolers["pooler"])
    assert (poolers["ms"] > 0).all() and len(poolers["shape"].unique()) == 3
    steps = pd.read_csv(tmp_path / "train_steps_cpu.csv")
    assert set(steps["dataset"]) == {"mnist", "cifar10"} and (steps["ms"] > 0).all()
    networks = pd.read_csv(tmp_path / "networks_cpu.csv")
    assert set(networks["model"]) == {"resnet18", "vgg11_bn"} and (networks["ms"] > 0).all()
    epoch = pd.read_csv(tmp_path / "epoch_cpu.csv")
    assert (epoch["fetch_s_per_60k"] > 0).all()
    memory = pd.read_csv(tmp_path / "memory_cpu.csv")
    assert (memory["peak_mb"] > 0).all()
    recipe = pd.read_csv(tmp_path / "recipe_cpu.csv")
    assert {"default", "modern", "evaluate 1000 images"} <= set(recipe["recipe"]) and (recipe["ms"] > 0).all()
