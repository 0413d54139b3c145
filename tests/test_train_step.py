"""The training step (tdgs.step) and its options trainer.precision and trainer.compile: every
precision trains end to end on the CPU, mixed precision learns as float32 does, 16-mixed skips
and counts overflowing steps without touching the weights, the eager step equals a hand-written
loop, inductor trains, bad values get one line; on a CUDA GPU (tests marked ``cuda``): CUDA
graph mode trains as eager mode does, with fused Adam and the partial last batch."""

import copy
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_RUN, compose_config
from test_reliability import assert_refused_in_one_line, run_train

import tdgs.step
from tdgs.model import PoolingCNN
from tdgs.networks import build_model
from tdgs.optim import load_optimizer_state, make_optimizer, parameter_groups
from tdgs.step import COMPILE_CHOICES, PRECISIONS, TrainStep, resolve_mode
from tdgs.train import TrainingDiverged, identity, train
from tdgs.validate import ConfigError, validate

# the CPU tests run on the CPU also where a GPU is (device=cpu): their expectations are the CPU's
SMALL = [*SMALL_RUN, "device=cpu"]
EASY = [
    "dataset=synthetic",
    "dataset.train_size=512",
    "dataset.test_size=256",
    "dataset.val_size=0",
    "trainer.epochs=4",
    "trainer.lr=0.01",
    "pooler=max",
    "device=cpu",
]
CPU = torch.device("cpu")


def cuda(test):
    """Mark ``test`` as needing a CUDA GPU; skipped without one."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


def _data(count=200, seed=0):
    """(count, 1, 28, 28) uint8 images and (count,) labels, random."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 10, (count,), generator=generator)


def _step(model, images, labels, *, precision="32", mode="none", device=CPU, batch_size=64):
    optimizer = make_optimizer(model.parameters(), lr=1e-3, device=device, mode=mode)
    return TrainStep(
        model, optimizer, images, labels, batch_size=batch_size, precision=precision, mode=mode, device=device
    )


def test_the_defaults_are_float32_and_auto():
    trainer = compose_config().trainer
    assert (trainer.precision, trainer.compile) == ("32", "auto")
    assert trainer.precision in PRECISIONS and trainer.compile in COMPILE_CHOICES
    assert (resolve_mode("auto", torch.device("cpu")), resolve_mode("auto", torch.device("cuda"))) == ("none", "graph")


def test_every_precision_trains_end_to_end_on_the_cpu(tmp_path):
    sweep = tmp_path / "sweep"  # one process (a sweep) for the three runs: start-up is most of a run's time
    done = run_train(
        "-m", *SMALL, f"trainer.precision={','.join(PRECISIONS)}", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = sorted(sweep.glob("*_synthetic_tdgs_seed0"))
    assert len(runs) == len(PRECISIONS)
    for run, precision in zip(runs, PRECISIONS):  # `trainer.precision=32` arrives as the string "32"
        summary = pd.read_csv(run / "summary.csv", dtype={"precision": str}).iloc[0]
        assert (summary.status, summary.device, summary.precision, summary["compile"]) == (
            "completed",
            "cpu",
            precision,
            "none",
        )
        columns = list(summary.index)
        assert columns[columns.index("device") + 1 : columns.index("device") + 3] == ["precision", "compile"]
        metrics = pd.read_csv(run / "metrics.csv")
        assert metrics.skipped_steps.tolist() == [0] and math.isfinite(metrics.train_loss[0])


def test_mixed_precision_learns_as_float32_does(tmp_path):
    accuracy = {}
    for precision in PRECISIONS:
        summary = train(compose_config(*EASY, f"trainer.precision={precision}"), tmp_path / precision)
        accuracy[precision] = summary["test_acc"]
    assert accuracy["32"] >= 95, accuracy  # an easy task, learnt
    assert all(abs(acc - accuracy["32"]) <= 3 for acc in accuracy.values()), accuracy


def test_the_eager_step_equals_a_hand_written_loop():
    images, labels = _data(200)  # batches of 64, 64, 64 and 8
    torch.manual_seed(0)
    model = PoolingCNN("tdgs", (1, 28, 28), 10)
    reference = copy.deepcopy(model)
    order = torch.randperm(200)
    torch.manual_seed(1)
    step = _step(model, images, labels)
    for index in order.split(64):
        step(index)
    totals = step.take_totals()

    torch.manual_seed(1)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    loss_sum, correct = 0.0, 0
    for index in order.split(64):
        x, y = images[index].float() / 255, labels[index]
        logits = reference(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        assert torch.equal(mine, theirs)
    assert (totals.correct, totals.images, totals.skipped_steps) == (correct, 200, 0)
    assert totals.loss_sum == pytest.approx(loss_sum, rel=1e-12)
    assert step.take_totals() == (0.0, 0, 0, 0)  # taking them zeroes them


def test_a_16_mixed_overflow_is_skipped_and_counted_leaving_the_weights():
    images, labels = _data(128)
    torch.manual_seed(0)
    model = PoolingCNN("max", (1, 28, 28), 10)
    step = _step(model, images, labels, precision="16-mixed")
    step(torch.arange(0, 64))
    before = copy.deepcopy(model.state_dict()), copy.deepcopy(step.optimizer.state_dict()["state"])
    scale = step.scaler.get_scale()
    hook = model.head.register_forward_hook(lambda module, args, out: out * math.inf)  # overflow
    step(torch.arange(64, 128))
    hook.remove()
    assert all(torch.equal(value, before[0][key]) for key, value in model.state_dict().items())
    adam = step.optimizer.state_dict()["state"]
    assert all(torch.equal(adam[p][k], before[1][p][k]) for p in adam for k in adam[p])
    assert step.scaler.get_scale() == scale / 2
    totals = step.take_totals()
    assert (totals.images, totals.skipped_steps) == (64, 1) and math.isfinite(totals.loss_sum)
    step(torch.arange(64, 128))  # without the overflow the same batch trains
    assert not torch.equal(model.head.weight, before[0]["head.weight"])
    assert step.take_totals().skipped_steps == 0


def test_a_16_mixed_run_with_an_overflowing_step_completes(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = F.cross_entropy

    def overflowing(logits, target, **kwargs):  # the 3rd training loss is infinite
        loss = real(logits, target, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:
                return loss * math.inf
        return loss

    monkeypatch.setattr(tdgs.step.F, "cross_entropy", overflowing)
    summary = train(compose_config(*SMALL, "pooler=max", "trainer.epochs=2", "trainer.precision=16-mixed"), tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert summary["status"] == "completed" and metrics.skipped_steps.tolist() == [1, 0]
    assert metrics.train_loss.map(math.isfinite).all()


def test_every_16_mixed_step_skipped_is_divergence(tmp_path, monkeypatch):
    monkeypatch.setattr(tdgs.step.F, "cross_entropy", lambda logits, target, **kwargs: logits.sum() * math.inf)
    cfg = compose_config(*SMALL, "pooler=max", "trainer.precision=16-mixed")
    with pytest.raises(TrainingDiverged, match=r"became nan in epoch 1 \(4 of 4 steps skipped\)"):
        train(cfg, tmp_path)


def test_the_scaler_state_is_checkpointed_and_precision_is_part_of_the_identity(tmp_path):
    args = [*SMALL, "pooler=max", "trainer.precision=16-mixed"]
    train(compose_config(*args), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0**16
    state["scaler"]["scale"] = 1024.0  # a scale the resumed run can only have from the checkpoint
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ConfigError, match="was written by another configuration"):
        train(compose_config(*SMALL, "pooler=max", "trainer.epochs=2", "resume=true"), tmp_path)  # precision 32
    train(compose_config(*args, "trainer.epochs=2", "resume=true"), tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["scaler"]["scale"] == 1024.0


def test_theta_lr_scale_speeds_up_the_temperatures_only_and_is_part_of_the_identity(tmp_path):
    model = build_model("deck_cnn", "tdgs", (1, 28, 28), 10)
    rest, theta = parameter_groups(model, 1e-3, theta_lr_scale=10.0)
    assert theta["lr"] == pytest.approx(1e-2) and rest["lr"] == 1e-3
    assert [p.shape for p in theta["params"]] == [(16, 14, 14), (32, 7, 7), (64, 3, 3)]
    assert len(rest["params"]) + 3 == len(list(model.parameters()))
    assert len(parameter_groups(model, 1e-3)) == 1  # scale 1: one group, as before the option existed
    # a checkpoint keeps matching the identity it had before theta_lr_scale existed
    assert identity(compose_config(*SMALL))["trainer"] == str({"batch_size": 64, "lr": 0.001, "deterministic": False})
    both = identity(compose_config(*SMALL, "trainer.precision=bf16-mixed", "trainer.theta_lr_scale=10"))["trainer"]
    assert both == str({"batch_size": 64, "lr": 0.001, "deterministic": False, "precision": "bf16-mixed"} | {
        "theta_lr_scale": 10.0
    })  # fmt: skip
    scaled = [*SMALL, "pooler=tdgs", "trainer.theta_lr_scale=10"]
    train(compose_config(*scaled, "trainer.epochs=1"), tmp_path)
    with pytest.raises(ConfigError, match="was written by another configuration"):
        train(compose_config(*SMALL, "pooler=tdgs", "trainer.epochs=2", "resume=true"), tmp_path)  # scale 1
    summary = train(compose_config(*scaled, "trainer.epochs=2", "resume=true"), tmp_path)  # two groups' Adam state
    assert (summary["status"], summary["epochs_done"], summary["theta_lr_scale"]) == ("completed", 2, 10.0)


def test_inductor_trains_on_the_cpu(tmp_path):
    cfg = compose_config(*SMALL, "pooler=max", "trainer.compile=inductor", "dataset.train_size=200")
    summary = train(cfg, tmp_path)
    assert (summary["status"], summary["compile"]) == ("completed", "inductor")
    assert math.isfinite(summary["train_loss"])


BAD_INPUTS = [
    (["trainer.precision=fp8"], "trainer.precision must be one of '32', 'bf16-mixed', '16-mixed', but got 'fp8'"),
    (["trainer.compile=fast"], "trainer.compile must be one of 'auto', 'none', 'inductor', 'graph', but got 'fast'"),
    (
        ["device=cpu", "trainer.compile=graph"],
        "trainer.compile=graph (CUDA graphs) needs a CUDA device, but this run uses cpu; "
        "use trainer.compile=none or inductor (auto picks none on the CPU)",
    ),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_step_options_are_one_line_without_traceback(tmp_path, monkeypatch, capfd, overrides, message):
    assert_refused_in_one_line(overrides, message, tmp_path=tmp_path, monkeypatch=monkeypatch, capfd=capfd)


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    supported = {"bf16": False}
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: supported["bf16"] and not including_emulation
    )
    cfg = compose_config("dataset=synthetic", f"device={device}", "trainer.precision=bf16-mixed")
    message = (
        "trainer.precision=bf16-mixed but Tesla V100-SXM2-16GB has no native bfloat16; "
        "use trainer.precision=16-mixed or 32"
    )
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value) == message
    validate(compose_config("dataset=synthetic", f"device={device}", "trainer.precision=16-mixed"))
    supported["bf16"] = True
    validate(cfg)


@cuda
def test_adam_is_fused_on_cuda_and_capturable_in_graph_mode():
    model = PoolingCNN("max", (1, 28, 28), 10).cuda()
    for mode in ("none", "inductor", "graph"):
        group = make_optimizer(model.parameters(), lr=1e-3, device=torch.device("cuda"), mode=mode).param_groups[0]
        assert group["fused"] and group["capturable"] == (mode == "graph")


@cuda
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_the_graph_step_trains_as_the_eager_step_does_with_a_partial_last_batch(monkeypatch, precision):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # the two runs differ by the graph alone
    device = torch.device("cuda")
    images, labels = (t.to(device) for t in _data(200))  # batches of 64, 64, 64 and 8
    torch.manual_seed(0)
    model = PoolingCNN("max", (1, 28, 28), 10).to(device)
    steps = {
        mode: _step(copy.deepcopy(model), images, labels, precision=precision, mode=mode, device=device)
        for mode in ("none", "graph")
    }
    generator = torch.Generator().manual_seed(0)
    for epoch in range(3):  # warm-up in epoch 1, the capture in epoch 2
        order = torch.randperm(200, generator=generator).to(device)
        totals = {}
        for mode, step in steps.items():
            for index in order.split(64):
                step(index)
            totals[mode] = step.take_totals()
        graph, eager = totals["graph"], totals["none"]
        assert graph.images == 200 or graph.skipped_steps, epoch  # every image, once
        assert (graph.images, graph.skipped_steps) == (eager.images, eager.skipped_steps), epoch
        assert abs(graph.correct - eager.correct) <= 2 and graph.loss_sum == pytest.approx(eager.loss_sum, rel=1e-3), (
            epoch
        )
    graph, eager = steps["graph"], steps["none"]
    assert graph.graph is not None and graph.mode == "graph"
    mine = torch.cat([p.flatten() for p in graph.model.parameters()])
    theirs = torch.cat([p.flatten() for p in eager.model.parameters()])
    assert torch.linalg.vector_norm(mine - theirs) <= 1e-3 * torch.linalg.vector_norm(theirs)


@cuda
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_graph_mode_trains_three_epochs_as_eager_mode_does(tmp_path, monkeypatch, precision):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # train() sets it
    args = [
        "dataset=synthetic",
        "dataset.train_size=1000",
        "dataset.test_size=500",
        "trainer.epochs=3",
        "pooler=max",
        "device=cuda",
    ]
    results = {}
    for mode in ("none", "graph"):
        cfg = compose_config(*args, f"trainer.compile={mode}", f"trainer.precision={precision}")
        summary = train(cfg, tmp_path / mode)
        assert (summary["status"], summary["compile"]) == ("completed", mode)
        results[mode] = pd.read_csv(tmp_path / mode / "metrics.csv")
    assert (results["graph"].test_acc - results["none"].test_acc).abs().max() <= 1.0  # 5 of 500 images
    pd.testing.assert_series_equal(results["graph"].train_loss, results["none"].train_loss, rtol=1e-2)
    assert results["graph"].skipped_steps.tolist() == results["none"].skipped_steps.tolist()


def test_a_resumed_adam_keeps_this_devices_implementation_and_the_checkpoints_state():
    """A CPU checkpoint (capturable=False) resumed in graph mode on a GPU must stay capturable."""
    model = torch.nn.Linear(3, 2)
    cpu = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    cpu.step()
    graph = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    load_optimizer_state(graph, cpu.state_dict())
    assert graph.param_groups[0]["capturable"] is True and cpu.param_groups[0]["capturable"] is False
    for p in model.parameters():
        assert torch.equal(graph.state[p]["exp_avg"], cpu.state[p]["exp_avg"])
        assert float(graph.state[p]["step"]) == 1.0
