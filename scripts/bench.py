"""Speed benchmark: poolers, CNN training steps, torchvision networks, epoch throughput and peak memory.

1. poolers: forward+backward of every pooler (training, and each evaluation mode that differs)
   against ``F.max_pool2d`` at the deck's CIFAR CNN's pooling shapes; also the pure-PyTorch
   reference TDGS and the original (seed) TDGS code. On CUDA in float32 and bfloat16, each
   eagerly and captured in a CUDA graph (the launch overhead gone).
2. train steps: one training step of the deck's CNN (MNIST and CIFAR geometry) as ``tdgs-train``
   runs it (:class:`tdgs.step.TrainStep`: batch gather, forward, loss, backward, Adam) per pooler,
   against the max-pooling CNN in the same mode, and the CNN with the original TDGS code run
   eagerly as the baseline. On CUDA eagerly and as one CUDA graph (``trainer.compile=graph``).
3. networks: a training step of torchvision's ResNet-18 and VGG-11 (``model=resnet18``,
   ``vgg11_bn``) with each pooler in place of their max pools, against max pooling.
4. epoch: images/s of the training loop over in-memory data (``tdgs.data.inputs.Inputs``) and the share
   of the time spent fetching batches, against the original per-sample DataLoader + ToTensor.
5. memory: peak memory of a training step (CPU: resident-memory high-water mark of a fresh process
   with malloc returning large blocks to the system; CUDA: the allocator's peak).
6. recipe: the train step of max pooling and TDGS under each recipe of ``conf/trainer/``
   (``trainer=modern``: AdamW and its weight-decay groups, the cosine schedule, label smoothing,
   random crops; and with flips and normalised inputs) against the deck's recipe, and the
   evaluation of 1000 images (what validation adds to an epoch).
7. export: the deck's CNN (MNIST geometry) in evaluation mode exported to ONNX per pooler: one ONNX
   Runtime inference (CPU) against max pooling's and against PyTorch's eval forward, the largest
   difference of their outputs, and the ONNX operators of the TDGS graph (needs ``.[export]``).

Times are medians over interleaved rounds (each candidate once per round, so slow drifts of the
machine hit all alike); ratios are measured in one process. Prints Markdown tables and writes one
CSV per table under ``outputs/bench/``.

    python scripts/bench.py [--reps 15] [--batch 64] [--device cpu|cuda] [--precision 32] [--threads N] [--quick]
                            [--only poolers steps networks epoch memory recipe export]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tdgs.data.inputs import Inputs
from tdgs.model import PoolingCNN
from tdgs.networks import TORCHVISION, build_model
from tdgs.optim import LearningRates, make_optimizer, parameter_groups
from tdgs.pooling import POOLERS, backend, create_pooler
from tdgs.pooling.windows import pooled_size
from tdgs.report.collect import known_recipes
from tdgs.report.tables import markdown
from tdgs.step import TrainStep
from tdgs.train import evaluate

POOL_SHAPES = [(16, 32, 32), (32, 16, 16), (64, 8, 8)]  # (C, H, W) at the deck's CIFAR CNN's pools
GEOMETRIES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
SEED_CODE = "tdgs (original code)"


class SeedTDGSPool(nn.Module):
    """The original TDGS pooler, faithfully: a contiguous unfold copy divided by
    per-position temperatures ``relu(theta) + 0.1`` (no normalisation), ``F.gumbel_softmax(hard=True)``
    in training and evaluation alike, summed against the window."""

    def __init__(self, channels: int, out_h: int, out_w: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(1 + torch.empty(channels, out_h, out_w).uniform_(-0.5, 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        patches = x.unfold(2, 2, 2).unfold(3, 2, 2).contiguous().view(b, c, h // 2, w // 2, 4)
        logits = patches / (F.relu(self.theta) + 0.1).unsqueeze(-1)
        return (patches * F.gumbel_softmax(logits, tau=1, hard=True)).sum(-1)


def seed_code_cnn(image_shape, num_classes: int) -> PoolingCNN:
    """The deck's CNN with the original TDGS pooler in every pool."""
    model = PoolingCNN("max", image_shape, num_classes)
    height, width = image_shape[1:]
    for i, conv in enumerate(model.convs):
        height, width = pooled_size(height, width, 2, 2)
        model.pools[i] = SeedTDGSPool(conv.out_channels, height, width)
    return model


def build_cnn(name: str, image_shape, num_classes: int = 10) -> nn.Module:
    return seed_code_cnn(image_shape, num_classes) if name == SEED_CODE else PoolingCNN(name, image_shape, num_classes)


class Reference(nn.Module):
    """A pooler forced onto its pure-PyTorch reference code."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        with backend.use("reference"):
            return self.module(x)


def pooler_candidates(channels: int, height: int, width: int) -> dict:
    """name -> module (or function) to time."""
    out = {"F.max_pool2d": lambda x: F.max_pool2d(x, 2, 2)}
    for name in POOLERS:
        out[name] = create_pooler(name, channels).train()
        if name in ("stochastic", "s3"):
            out[f"{name} eval"] = create_pooler(name, channels).eval()
    for mode in ("expectation", "sample", "argmax"):
        out[f"tdgs eval={mode}"] = create_pooler("tdgs", channels, eval_mode=mode).eval()
    out["tdgs (pure PyTorch)"] = Reference(create_pooler("tdgs", channels))
    out[SEED_CODE] = SeedTDGSPool(channels, height // 2, width // 2)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: dict, reps: int, inner: int, device: torch.device) -> dict[str, float]:
    """Median seconds of one call per candidate (a no-argument function), over interleaved rounds."""
    times = {name: [] for name in fns}
    for round_ in range(reps + WARM_UP):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(device)
            if round_ >= WARM_UP:
                times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(t) for name, t in times.items()}


def graphed(fn, device: torch.device):
    """``fn`` captured in a CUDA graph, as the function that replays it (after warm-up calls on a
    side stream, as torch's recipe says)."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def modes_on(device: torch.device) -> list[str]:
    """How each candidate is run: eagerly, and on CUDA also replayed from a CUDA graph."""
    return ["eager", "graph"] if device.type == "cuda" else ["eager"]


def bench_poolers(args, device) -> pd.DataFrame:
    rows = []
    dtypes = [torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    for dtype, (channels, height, width) in itertools.product(dtypes, POOL_SHAPES):
        x = torch.rand(args.batch, channels, height, width, device=device, dtype=dtype, requires_grad=True)
        grad = torch.ones(args.batch, channels, height // 2, width // 2, device=device, dtype=dtype)
        fns = {}
        for name, module in pooler_candidates(channels, height, width).items():
            if isinstance(module, nn.Module):
                module.to(device)  # parameters stay float32, as under autocast
            # autograd.grad: the input's gradient is computed, not accumulated into x.grad
            fn = lambda m=module, x=x, grad=grad: torch.autograd.grad(m(x), x, grad)  # noqa: E731
            fns[name, "eager"] = fn
            if device.type == "cuda":
                fns[name, "graph"] = graphed(fn, device)
        medians = interleaved_medians(fns, args.reps, args.inner, device)
        shape = f"({args.batch},{channels},{height},{width})"
        for (name, mode), seconds in medians.items():
            baseline = medians["F.max_pool2d", mode]
            rows.append(
                {
                    "dtype": str(dtype).removeprefix("torch."),
                    "mode": mode,
                    "shape": shape,
                    "pooler": name,
                    "ms": 1e3 * seconds,
                    "ratio": seconds / baseline,
                }
            )
    return pd.DataFrame(rows)


SECTIONS = ["poolers", "steps", "networks", "epoch", "memory", "recipe", "export"]
WARM_UP = 2  # untimed rounds before the timed ones (none with --quick)
MODES = {"eager": "none", "graph": "graph"}  # bench mode -> trainer.compile


def train_step_fns(build, names, image_shape, args, device, recipe: dict | None = None) -> dict:
    """(name, mode) -> one training step of ``build(name)`` as tdgs-train runs it, cycling through
    a small training set held on the device; the deck's recipe, or ``recipe`` (trainer keys, and
    ``normalize``)."""
    count = 8 * args.batch
    images = torch.randint(0, 256, (count, *image_shape), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (count,), device=device)
    recipe = recipe or {}
    stats = (torch.full((image_shape[0],), 0.5, device=device),) * 2 if recipe.get("normalize") else (None, None)
    fns = {}
    for name, mode in itertools.product(names, modes_on(device)):
        model = build(name).to(device)
        # lr 0: the optimizer does all its work but the weights stay put, so that hundreds of steps
        # on a few batches cannot drift the model into another numerical regime during the timing
        groups = parameter_groups(model, 0.0, weight_decay=recipe.get("weight_decay", 0.0))
        optimizer = make_optimizer(groups, recipe.get("optimizer", "adam"), lr=0.0, device=device, mode=MODES[mode])
        rates = LearningRates(optimizer, recipe.get("schedule", "constant"), recipe.get("warmup_epochs", 0), 10**9)
        step = TrainStep(
            model,
            optimizer,
            images,
            labels,
            batch_size=args.batch,
            precision=args.precision,
            mode=MODES[mode],
            device=device,
            inputs=Inputs(mean=stats[0], std=stats[1], augment=recipe.get("augment", "none"), side=image_shape[1]),
            label_smoothing=recipe.get("label_smoothing", 0.0),
            learning_rates=rates,
        )
        order = itertools.cycle(torch.arange(count, device=device).split(args.batch))
        fns[name, mode] = lambda step=step, order=order: step(next(order))
    return fns


def bench_train_steps(args, device) -> pd.DataFrame:
    rows = []
    for dataset, image_shape in GEOMETRIES.items():
        fns = train_step_fns(
            lambda name, shape=image_shape: build_cnn(name, shape), [*POOLERS, SEED_CODE], image_shape, args, device
        )
        medians = interleaved_medians(fns, args.reps, args.step_inner, device)
        for (name, mode), seconds in medians.items():
            rows.append(
                {
                    "dataset": dataset,
                    "mode": mode,
                    "pooler": name,
                    "ms": 1e3 * seconds,
                    "ratio_to_max": seconds / medians["max", mode],
                    "speedup_over_original": medians[SEED_CODE, "eager"] / seconds,  # the original code's eager step
                }
            )
    return pd.DataFrame(rows)


def bench_recipes(args, device) -> pd.DataFrame:
    """The train step of max pooling and TDGS under each recipe of ``conf/trainer/`` (and the
    modern one with flips and normalised inputs), against the deck's recipe in the same mode; and
    the evaluation of 1000 images of a split, as an epoch evaluates validation and test."""
    recipes = known_recipes()
    recipes["modern, flip_crop, normalized"] = recipes["modern"] | {"augment": "flip_crop", "normalize": True}
    rows = []
    for dataset, image_shape in GEOMETRIES.items():
        fns = {}
        for recipe, values in recipes.items():
            build = lambda name, shape=image_shape: build_cnn(name, shape)  # noqa: E731
            steps = train_step_fns(build, ["max", "tdgs"], image_shape, args, device, values)
            fns |= {(name, mode, recipe): fn for (name, mode), fn in steps.items()}
        images = torch.randint(0, 256, (1000, *image_shape), dtype=torch.uint8, device=device)
        labels = torch.randint(0, 10, (1000,), device=device)
        for name in ("max", "tdgs"):
            model = build_cnn(name, image_shape).to(device)
            fns[name, "eager", "evaluate 1000 images"] = lambda m=model, x=images, y=labels: evaluate(m, x, y, 1000)
        medians = interleaved_medians(fns, args.reps, args.step_inner, device)
        for (name, mode, recipe), seconds in medians.items():
            deck = medians.get((name, mode, "default"), math.nan) if recipe in recipes else math.nan
            rows.append({"dataset": dataset, "mode": mode, "pooler": name, "recipe": recipe, "ms": 1e3 * seconds,
                         "ratio_to_default": seconds / deck})  # fmt: skip
    return pd.DataFrame(rows)


def bench_networks(args, device) -> pd.DataFrame:
    """A training step of the torchvision networks of ``model=`` (CIFAR geometry) with each pooler
    in place of their max pools, against the same network with max pooling."""
    rows = []
    names = ["max", "tdgs"] if args.quick else POOLERS
    for network in TORCHVISION:
        fns = train_step_fns(
            lambda name, network=network: build_model(network, name, (3, 32, 32), 10), names, (3, 32, 32), args, device
        )
        medians = interleaved_medians(fns, args.network_reps, 1, device)
        for (name, mode), seconds in medians.items():
            rows.append(
                {
                    "model": network,
                    "mode": mode,
                    "pooler": name,
                    "ms": 1e3 * seconds,
                    "ratio_to_max": seconds / medians["max", mode],
                }
            )
    return pd.DataFrame(rows)


def bench_export(args, out: Path) -> tuple[pd.DataFrame, str]:
    """One inference of the deck's CNN (MNIST geometry, batch ``args.batch``, CPU) per pooler,
    exported to ONNX and run by ONNX Runtime on torch's thread count, against max pooling, and
    PyTorch's eval forward of the same model; with the largest output difference, and the TDGS
    graph's ONNX operators (domain: count)."""
    import onnx
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    x = torch.rand(args.batch, *GEOMETRIES["mnist"])
    fns, diffs, tdgs_operators = {}, {}, ""
    for name in ["max", "tdgs"] if args.quick else POOLERS:
        model = PoolingCNN(name, GEOMETRIES["mnist"], 10).eval()
        path = out / f"deck_cnn_{name}.onnx"
        torch.onnx.export(model, (x,), path, dynamo=True, verbose=False)
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        with torch.no_grad():
            diffs[name] = float(abs(session.run(None, feed)[0] - model(x).numpy()).max())
        fns[name, "onnxruntime"] = lambda session=session, feed=feed: session.run(None, feed)
        fns[name, "pytorch"] = torch.no_grad()(lambda model=model: model(x))
        if name == "tdgs":
            used = collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onnx.load(path).graph.node)
            tdgs_operators = ", ".join(f"{op} {count}" for op, count in sorted(used.items()))
    medians = interleaved_medians(fns, args.reps, args.inner, torch.device("cpu"))
    rows = [
        {
            "pooler": name,
            "onnxruntime_ms": 1e3 * medians[name, "onnxruntime"],
            "ratio_to_max": medians[name, "onnxruntime"] / medians["max", "onnxruntime"],
            "pytorch_ms": 1e3 * medians[name, "pytorch"],
            "pytorch_ratio_to_max": medians[name, "pytorch"] / medians["max", "pytorch"],
            "max_abs_diff": diffs[name],
        }
        for name in diffs
    ]
    return pd.DataFrame(rows), tdgs_operators


def bench_epoch(args, device) -> pd.DataFrame:
    """Fetch and step times over `epoch_steps` batches of MNIST-sized images held in memory, and
    the original pipeline's fetch time for the same batches."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import ToTensor

    count = args.batch * args.epoch_steps
    images = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (count,), device=device)
    rows = []
    for name in ("max", "tdgs"):
        model = build_cnn(name, (1, 28, 28)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        fetch = compute = 0.0
        _sync(device)
        start = time.perf_counter()
        inputs = Inputs()  # the default recipe's: scaled to [0, 1]
        order = torch.randperm(count, device=device).split(args.batch)
        source = ((inputs(images[index], training=True), labels[index]) for index in order)
        while True:
            tick = time.perf_counter()
            try:
                xb, yb = next(source)
            except StopIteration:
                break
            _sync(device)
            tock = time.perf_counter()
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)
            fetch, compute = fetch + tock - tick, compute + time.perf_counter() - tock
        total = time.perf_counter() - start
        rows.append(
            {
                "pipeline": "in-memory tensors (tdgs-train)",
                "pooler": name,
                "images": count,
                "images_per_s": count / total,
                "fetch_s_per_60k": fetch * 60_000 / count,
                "fetch_share_pct": 100 * fetch / total,
            }
        )

    class PerSample(Dataset):  # what torchvision's MNIST does per item: PIL image, then ToTensor
        def __init__(self, data, targets):
            self.data, self.targets, self.to_tensor = data.cpu()[:, 0].numpy(), targets.cpu(), ToTensor()

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            return self.to_tensor(Image.fromarray(self.data[i], mode="L")), int(self.targets[i])

    start = time.perf_counter()
    for _ in DataLoader(PerSample(images, labels), batch_size=args.batch, shuffle=True):
        pass
    fetch = time.perf_counter() - start
    rows.append(
        {
            "pipeline": "original DataLoader + ToTensor",
            "pooler": "",
            "images": count,
            "images_per_s": float("nan"),
            "fetch_s_per_60k": fetch * 60_000 / count,
            "fetch_share_pct": float("nan"),
        }
    )
    return pd.DataFrame(rows)


def step_peak_memory(name: str, dataset: str, batch: int, device: torch.device) -> int:
    """Bytes by which one training step raises the memory high-water mark (after warm-up steps)."""
    image_shape = GEOMETRIES[dataset]
    torch.manual_seed(0)
    model = build_cnn(name, image_shape).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, *image_shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    peaks = []
    for _ in range(3):
        base = _proc_status("VmRSS:")
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark VmHWM
        step()
        peaks.append(_proc_status("VmHWM:") - base)
    return int(statistics.median(peaks))


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def bench_memory(args, device) -> pd.DataFrame:
    rows = []
    cases = [(name, dataset) for dataset in GEOMETRIES for name in ("max", "tdgs", SEED_CODE)]
    if device.type == "cuda":
        measured = [step_peak_memory(name, dataset, args.batch, device) for name, dataset in cases]
    else:
        # one fresh process whose malloc hands every block over 64 KiB back to the system, so that
        # resident memory follows the live tensors; each case resets the high-water mark
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        probe = [sys.executable, __file__, "--memory-probe", json.dumps([cases, args.batch])]
        measured = [
            int(v)
            for v in subprocess.run(probe, env=env, check=True, capture_output=True, text=True).stdout.split()[
                -len(cases) :
            ]
        ]
    for dataset in GEOMETRIES:
        peaks = {name: peak for (name, where), peak in zip(cases, measured) if where == dataset}
        for name, peak in peaks.items():
            rows.append(
                {"dataset": dataset, "pooler": name, "peak_mb": peak / 1e6, "ratio_to_max": peak / peaks["max"]}
            )
    return pd.DataFrame(rows)


def wide(table: pd.DataFrame, index: str, columns: str, cell) -> pd.DataFrame:
    """Pivot ``table`` keeping the order of first appearance, formatting each row with ``cell``."""
    table = table.assign(cell=table.apply(cell, axis=1))
    out = table.pivot(index=index, columns=columns, values="cell")
    return out.loc[list(dict.fromkeys(table[index])), list(dict.fromkeys(table[columns]))].reset_index()


def step_table(table: pd.DataFrame, setting: str, cell) -> str:
    """Train-step timings as Markdown: a row per pooler, a column per ``setting`` and mode."""
    return markdown(wide(table.assign(column=table[setting] + " " + table["mode"]), "pooler", "column", cell)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=25, help="timed rounds per candidate")
    parser.add_argument("--inner", type=int, default=4, help="pooler calls per timed round")
    parser.add_argument("--step-inner", type=int, default=2, help="train steps per timed round")
    parser.add_argument("--epoch-steps", type=int, default=150, help="batches in the epoch measurement")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", default="32", choices=["32", "bf16-mixed", "16-mixed"], help="train steps' precision"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--network-reps", type=int, default=7, help="timed rounds per candidate, torchvision networks")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="the sections to run (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run, not a measurement")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_probe:
        cases, batch = json.loads(args.memory_probe)
        print(*(step_peak_memory(name, dataset, batch, device) for name, dataset in cases))
        return
    if args.quick:
        global WARM_UP
        args.reps, args.inner, args.step_inner, args.epoch_steps, args.network_reps, WARM_UP = 2, 1, 1, 10, 1, 0
    torch.manual_seed(0)
    kernels = backend.kernels_for(torch.empty(1, 1, 2, 2, device=device))  # builds the C++ kernels before any timing
    started = time.perf_counter()
    print(
        f"# {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch}, "
        f"kernels: {kernels or 'none (reference code)'}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    tag = device.type

    if "poolers" in args.only:
        poolers = bench_poolers(args, device)
        poolers.to_csv(args.out / f"poolers_{tag}.csv", index=False)
        for (dtype, mode), table in poolers.groupby(["dtype", "mode"], sort=False):
            print(f"## Poolers: forward+backward, {dtype}, {mode}: median ms (ratio to F.max_pool2d)\n")
            print(markdown(wide(table, "pooler", "shape", lambda r: f"{r.ms:.3f} ({r.ratio:.2f}x)")) + "\n")

    if "steps" in args.only:
        steps = bench_train_steps(args, device)
        steps.to_csv(args.out / f"train_steps_{tag}.csv", index=False)
        print(
            f"## CNN train step (batch gather, forward, loss, backward, Adam; precision {args.precision}): median ms "
            "(ratio to max in the same mode; speed-up over the original TDGS code's eager step)\n"
        )
        cell = lambda r: f"{r.ms:.2f} ({r.ratio_to_max:.2f}x; {r.speedup_over_original:.1f}x)"  # noqa: E731
        print(step_table(steps, "dataset", cell))

    if "networks" in args.only:
        networks = bench_networks(args, device)
        networks.to_csv(args.out / f"networks_{tag}.csv", index=False)
        print(
            f"## torchvision networks (model=), train step, CIFAR geometry, precision {args.precision}: "
            "median ms (ratio to max)\n"
        )
        print(step_table(networks, "model", lambda r: f"{r.ms:.1f} ({r.ratio_to_max:.2f}x)"))

    if "epoch" in args.only:
        epoch = bench_epoch(args, device)
        epoch.to_csv(args.out / f"epoch_{tag}.csv", index=False)
        print(f"## Epoch throughput, MNIST geometry ({args.epoch_steps} batches)\n")
        print(markdown(epoch.round(3)) + "\n")

    if "recipe" in args.only:
        recipe = bench_recipes(args, device)
        recipe.to_csv(args.out / f"recipe_{tag}.csv", index=False)
        print(
            f"## Recipes: CNN train step per trainer recipe, precision {args.precision}: median ms (ratio to the "
            "deck's recipe, trainer=default); and the evaluation of 1000 images (eval batch 1000)\n"
        )
        table = recipe.assign(column=recipe.pooler + " " + recipe["mode"], row=recipe.dataset + ", " + recipe.recipe)
        ratio = lambda v: "" if math.isnan(v) else f" ({v:.2f}x)"  # noqa: E731
        print(markdown(wide(table, "row", "column", lambda r: f"{r.ms:.2f}{ratio(r.ratio_to_default)}")) + "\n")

    if "export" in args.only:
        export, tdgs_operators = bench_export(args, args.out)
        export.to_csv(args.out / "export_cpu.csv", index=False)
        print(
            f"## ONNX export: the deck's CNN (MNIST geometry, batch {args.batch}) in evaluation mode, one inference "
            "on the CPU: median ms (ratio to max), and the largest difference of ONNX Runtime's output from PyTorch's\n"
        )
        print(markdown(export.round(3).assign(max_abs_diff=export.max_abs_diff.map("{:.1e}".format))) + "\n")
        print(f"TDGS graph's ONNX operators: {tdgs_operators}\n")

    if "memory" in args.only and (device.type == "cuda" or Path("/proc/self/clear_refs").exists()):
        memory = bench_memory(args, device)
        memory.to_csv(args.out / f"memory_{tag}.csv", index=False)
        print("## Peak memory of a training step: MB (ratio to max)\n")
        print(markdown(wide(memory, "pooler", "dataset", lambda r: f"{r.peak_mb:.1f} ({r.ratio_to_max:.2f}x)")) + "\n")
    print(f"wrote {args.out}/*_{tag}.csv in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
