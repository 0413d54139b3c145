"""The training recipe (``trainer.optimizer``, ``weight_decay``, ``schedule``, ``warmup_epochs``,
``label_smoothing``, ``augment``; ``trainer=modern``): the step equals a hand-written loop with
torch's optimizers, weight decay spares biases and pooler parameters, the schedule's values, every
precision and compile mode of the CPU trains with the modern recipe; on a CUDA GPU (tests marked
``cuda``) the learning rate and the augmentation change between CUDA graph replays."""

import copy
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_RUN, compose_config
from test_train_step import PRECISIONS, _data, cuda

from tdgs.data.augment import random_crop_flip
from tdgs.data.inputs import Inputs
from tdgs.model import PoolingCNN
from tdgs.networks import build_model
from tdgs.optim import LearningRates, make_optimizer, parameter_groups
from tdgs.step import TrainStep
from tdgs.train import identity, train

CPU = torch.device("cpu")
MODERN = [*SMALL_RUN, "device=cpu", "trainer=modern", "trainer.epochs=2", "dataset.normalize=true"]


def test_modern_is_a_recipe_beside_the_decks():
    deck, modern = compose_config().trainer, compose_config("trainer=modern").trainer
    assert (deck.optimizer, deck.weight_decay, deck.schedule, deck.augment, deck.epochs) == (
        "adam",
        0,
        "constant",
        "none",
        10,
    )
    assert (modern.optimizer, modern.schedule, modern.augment, modern.epochs) == ("adamw", "cosine", "crop", 30)
    assert modern.weight_decay > 0 and 0 < modern.label_smoothing < 1 and 0 < modern.warmup_epochs < modern.epochs
    assert compose_config("experiment=deck_table", "dataset=digits").dataset.val_size == 0  # the deck's protocol
    assert compose_config().dataset.val_size == 0.1


def test_weight_decay_spares_biases_and_pooler_parameters():
    for pooler in ("tdgs", "gated", "mixed"):
        model = build_model("deck_cnn", pooler, (1, 28, 28), 10)
        decayed, kept, theta = (*parameter_groups(model, 1e-3, 10.0, 0.05), None)[:3]
        assert decayed["weight_decay"] == 0.05 and "weight_decay" not in kept
        names = {id(p): n for n, p in model.named_parameters()}
        assert sorted(names[id(p)] for p in decayed["params"]) == sorted(
            n for n, p in model.named_parameters() if n.endswith("weight") and not n.startswith("pools")
        )
        assert all(names[id(p)].startswith("pools") or names[id(p)].endswith("bias") for p in kept["params"])
        if pooler == "tdgs":  # the temperatures: their own rate, never decayed
            assert theta["lr"] == pytest.approx(1e-2) and "weight_decay" not in theta
            assert all(names[id(p)].endswith("theta") for p in theta["params"])
    model = build_model("deck_cnn", "tdgs", (1, 28, 28), 10)
    assert len(parameter_groups(model, 1e-3)) == 1  # no decay, no scale: one group, as older checkpoints have


def test_the_optimizers_are_torchs_with_the_recipes_settings():
    model = PoolingCNN("max", (1, 28, 28), 10)
    groups = parameter_groups(model, 0.1, weight_decay=0.01)
    sgd = make_optimizer(groups, "sgd", lr=0.1, device=CPU, mode="none")
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"]
    adamw = make_optimizer(groups, "adamw", lr=0.1, device=CPU, mode="none")
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.01, 0.0]  # not AdamW's own default of 0.01
    with pytest.raises(ValueError, match="optimizer must be one of 'adam', 'adamw', 'sgd', but got 'lion'"):
        make_optimizer(groups, "lion", lr=0.1, device=CPU, mode="none")


def test_sgd_momentum_survives_a_skipped_first_step_of_a_fused_step():
    """Fused SGD (CUDA's) allocates its momentum uninitialised at its first step and leaves it so
    when a gradient scaler skips that step (16-mixed overflows often do): ours starts at zero."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(1000))
    reference = torch.nn.Parameter(weight.detach().clone())
    sgd = make_optimizer([weight], "sgd", lr=0.1, device=CPU, mode="none", fused=True)  # CUDA's kind, on the CPU
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(weight.sum()).backward()
    weight.grad.fill_(math.inf)  # overflow: skipped
    scaler.step(sgd)
    scaler.update()
    weight.grad, gradient = None, torch.randn(1000)
    scaler.scale((weight * gradient).sum()).backward()
    scaler.step(sgd)
    reference.grad = gradient
    torch.optim.SGD([reference], lr=0.1, momentum=0.9, nesterov=True).step()  # the first step only
    assert torch.allclose(weight, reference)


def test_the_schedule_warms_up_linearly_then_follows_a_cosine_to_zero():
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": params, "lr": 0.2}, {"params": [], "lr": 2.0}], lr=0.2)
    rates = LearningRates(optimizer, "cosine", warmup_steps=4, total_steps=104)
    expected = [0.05, 0.1, 0.15, 0.2] + [0.1 * (1 + math.cos(math.pi * t / 100)) for t in range(100)]
    got = []
    for step in range(104):
        rates.set(step)
        got.append(optimizer.param_groups[0]["lr"])
        assert optimizer.param_groups[1]["lr"] == pytest.approx(10 * got[-1])  # the temperatures' group: its own scale
    assert got == pytest.approx(expected) and got[-1] < 1e-4
    optimizer = torch.optim.SGD(params, lr=0.2)
    constant = LearningRates(optimizer, "constant", warmup_steps=2, total_steps=10)
    constant.set(0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert [constant.factor(s) for s in range(1, 10)] == [1.0] * 9
    assert not LearningRates(optimizer).varies  # the deck's: the optimizer's rate stands, nothing set per step
    tensor = torch.optim.Adam([{"params": params, "lr": torch.tensor(0.2)}], lr=0.2)
    lr = tensor.param_groups[0]["lr"]
    LearningRates(tensor, "cosine", 0, 10).set(5)
    assert tensor.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.1)  # written in place (graph mode)


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_the_step_equals_a_hand_written_loop_with_the_recipe(kind):
    """Weight decay groups, warm-up and cosine, label smoothing, crops and flips: the same
    parameters as a loop written with torch's optimizer and functions (and the same input
    normalisation, whose floats Adam's division by small second moments would amplify)."""
    images, labels = _data(200)  # batches of 64, 64, 64 and 8
    torch.manual_seed(0)
    model = PoolingCNN("tdgs", (1, 28, 28), 10)
    reference = copy.deepcopy(model)
    mean, std = torch.tensor([0.4]), torch.tensor([0.3])
    total, warmup = 8, 3

    torch.manual_seed(1)
    groups = parameter_groups(model, 1e-2, 10.0, 0.1)
    optimizer = make_optimizer(groups, kind, lr=1e-2, device=CPU, mode="none")
    step = TrainStep(
        model, optimizer, images, labels, batch_size=64, precision="32", mode="none", device=CPU,
        inputs=Inputs(mean=mean, std=std, augment="flip_crop"), label_smoothing=0.2,
        learning_rates=LearningRates(optimizer, "cosine", warmup, total),
    )  # fmt: skip
    orders = [torch.randperm(200, generator=torch.Generator().manual_seed(e)) for e in range(2)]
    for order in orders:
        for index in order.split(64):
            step(index)

    torch.manual_seed(1)
    groups = parameter_groups(reference, 1e-2, 10.0, 0.1)
    if kind == "sgd":
        reference_optimizer = torch.optim.SGD(groups, lr=1e-2, momentum=0.9, nesterov=True)
    else:
        reference_optimizer = (torch.optim.AdamW if kind == "adamw" else torch.optim.Adam)(
            groups, lr=1e-2, weight_decay=0
        )
    base = [g["lr"] for g in reference_optimizer.param_groups]
    t = 0
    for order in orders:
        for index in order.split(64):
            factor = (t + 1) / warmup if t < warmup else 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
            for group, lr in zip(reference_optimizer.param_groups, base):
                group["lr"] = lr * factor
            x = Inputs(mean=mean, std=std)(random_crop_flip(images[index], 2, flip=True), training=False)
            loss = F.cross_entropy(reference(x), labels[index], label_smoothing=0.2)
            reference_optimizer.zero_grad()
            loss.backward()
            reference_optimizer.step()
            t += 1
    for (name, mine), theirs in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6), name
    assert step.steps_done == t == total


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_the_modern_recipe_trains_in_every_precision_on_the_cpu(tmp_path, precision):
    summary = train(compose_config(*MODERN, f"trainer.precision={precision}", "trainer.augment=flip_crop"), tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert summary["status"] == "completed" and metrics.train_loss.map(math.isfinite).all()
    assert metrics.lr.tolist()[-1] < metrics.lr.tolist()[0] <= 1e-3  # the cosine's decline, read per epoch


def test_the_modern_recipe_compiles_with_inductor_on_the_cpu(tmp_path):
    cfg = compose_config(*MODERN, "pooler=max", "trainer.compile=inductor", "dataset.train_size=200")
    summary = train(cfg, tmp_path)
    assert (summary["status"], summary["compile"]) == ("completed", "inductor") and math.isfinite(summary["train_loss"])


def test_the_recipe_is_part_of_the_identity_and_older_identities_still_match():
    deck = identity(compose_config(*SMALL_RUN, "dataset.val_size=0"))
    assert deck["dataset"] == str(
        {"name": "synthetic", "geometry": "mnist", "train_size": 256, "test_size": 128, "seed": 0}
    )
    assert deck["trainer"] == str({"batch_size": 64, "lr": 0.001, "deterministic": False})  # as before the recipe
    modern = identity(compose_config(*MODERN))
    assert "'val_size': 0.1, 'split_seed': 0" in modern["dataset"] and "'normalize': True" in modern["dataset"]
    for part in (
        "'optimizer': 'adamw'",
        "'schedule': 'cosine'",
        "'augment': 'crop'",
        "'label_smoothing': 0.1",
        "'epochs': 2",
    ):
        assert part in modern["trainer"], part  # a cosine's length is its number of epochs
    assert identity(compose_config(*MODERN, "trainer.early_stopping_patience=3")) == modern  # may change on resume


@cuda
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_graph_replays_follow_the_schedule_as_eager_steps_do(monkeypatch, kind):
    """The learning rate changes between replays of one capture: graph and eager runs end alike."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    device = torch.device("cuda")
    images, labels = (t.to(device) for t in _data(256))
    torch.manual_seed(0)
    model = PoolingCNN("max", (1, 28, 28), 10).to(device)
    steps = {}
    for mode in ("none", "graph"):
        copy_ = copy.deepcopy(model)
        optimizer = make_optimizer(
            parameter_groups(copy_, 1e-2, weight_decay=0.05), kind, lr=1e-2, device=device, mode=mode
        )
        steps[mode] = TrainStep(
            copy_, optimizer, images, labels, batch_size=64, precision="32", mode=mode, device=device,
            learning_rates=LearningRates(optimizer, "cosine", 4, 24),
        )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        order = torch.randperm(256, generator=generator).to(device)
        for step in steps.values():
            for index in order.split(64):
                step(index)
    graph, eager = steps["graph"], steps["none"]
    lrs = [step.optimizer.param_groups[0]["lr"] for step in (graph, eager)]
    assert graph.graph is not None and lrs[0].item() == pytest.approx(lrs[1]) and lrs[1] < 1e-3
    mine = torch.cat([p.flatten() for p in graph.model.parameters()])
    theirs = torch.cat([p.flatten() for p in eager.model.parameters()])
    assert torch.linalg.vector_norm(mine - theirs) <= 1e-3 * torch.linalg.vector_norm(theirs)


@cuda
@pytest.mark.parametrize(("kind", "lr", "epochs"), [("adamw", 0.01, 3), ("sgd", 0.1, 10)])
def test_the_modern_recipe_trains_in_16_mixed_graph_mode(tmp_path, kind, lr, epochs):
    """Fused optimizers with a gradient scaler that skips the first steps (scale 65536 overflows).
    SGD learns nothing on these 1000 images in 3 epochs at lr 0.01 in any mode, eager float32 on the
    CPU included: it gets the learning rate and the epochs that make it learn there."""
    args = [
        "dataset=synthetic",
        "dataset.train_size=1000",
        "dataset.test_size=200",
        "trainer=modern",
        f"trainer.epochs={epochs}",
    ]
    args += [f"trainer.optimizer={kind}", f"trainer.lr={lr}", "trainer.weight_decay=5e-4", "trainer.precision=16-mixed"]
    summary = train(compose_config(*args, "device=cuda", "trainer.compile=graph", "trainer.progress=false"), tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert (summary["status"], summary["compile"]) == ("completed", "graph") and metrics.train_loss.map(
        math.isfinite
    ).all()
    assert metrics.val_acc.iloc[-1] > 50  # it learnt


@cuda
def test_graph_replays_draw_a_new_augmentation_each_time():
    device = torch.device("cuda")
    images, labels = (t.to(device) for t in _data(64))
    seen = torch.zeros(64, 1, 28, 28, device=device)

    class Record(torch.nn.Module):  # copies the network's input into `seen` (a captured op)
        def forward(self, x):
            seen.copy_(x)
            return x

    torch.manual_seed(0)
    model = torch.nn.Sequential(Record(), PoolingCNN("tdgs", (1, 28, 28), 10)).to(device)
    optimizer = make_optimizer(model.parameters(), lr=1e-3, device=device, mode="graph")
    step = TrainStep(
        model, optimizer, images, labels, batch_size=64, precision="32", mode="graph", device=device,
        inputs=Inputs(augment="flip_crop"),
    )  # fmt: skip
    index = torch.arange(64, device=device)
    drawn = []
    for _ in range(8):  # 3 warm-up steps, the capture, replays
        step(index)
        drawn.append(seen.clone())
    assert step.graph is not None
    replays = drawn[4:]
    assert all(not torch.equal(a, b) for a, b in zip(replays, replays[1:]))
    plain = images.float() / 255
    assert all(not torch.equal(r, plain) for r in replays)  # augmented, not the plain batch
