"""From training to deployment: every pooler in evaluation mode exports (``torch.export``,
``torch.onnx.export``) and traces (``torch.jit.trace``) to standard operators only, which ONNX
Runtime runs with PyTorch's outputs (the kernels'); a pooler that samples is refused in one line."""

import collections
import warnings

import onnx
import onnxruntime
import pytest
import torch
from conftest import ALL_POOLERS, RANDOM_POOLERS
from torchvision import models

from tdgs.model import PoolingCNN
from tdgs.pooling import create_pooler, replace_pooling, s3_pool2d, stochastic_pool2d, tdgs_pool2d
from tdgs.pooling.tdgs import gumbel_noise

DECK_IMAGE = (1, 28, 28)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def _deck(name, **options):
    return PoolingCNN(name, DECK_IMAGE, 10, **options).eval()


def _resnet(name):
    """torchvision's ResNet-18 with the pooler in its stem's MaxPool2d(3, 2, padding=1): padding."""
    model = replace_pooling(models.resnet18(num_classes=10), name)
    model(torch.rand(2, 3, 32, 32))  # sizes the lazy poolers
    return model.eval()


def onnx_run(model, x, other, path):
    """Export ``model`` to ONNX with a dynamic batch (traced on ``x``), run ``other`` (another
    batch size) in ONNX Runtime: (ONNX Runtime's output, the ONNX graph)."""
    torch.onnx.export(model, (x,), path, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    graph = onnx.load(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: other.numpy()})[0]), graph


def assert_standard(graph):
    """Every node of the ONNX graph a standard operator: the default domain, no local functions."""
    used = collections.Counter((node.domain or "ai.onnx", node.op_type) for node in graph.graph.node)
    assert {domain for domain, _ in used} == {"ai.onnx"} and not graph.functions, used


NETWORKS = {
    "deck_cnn": (_deck, (4, *DECK_IMAGE), (7, *DECK_IMAGE)),
    "resnet18": (_resnet, (2, 3, 32, 32), (5, 3, 32, 32)),
}


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("name", ALL_POOLERS)
def test_onnx_runtime_matches_pytorch_eval(network, name, tmp_path):
    build, shape, other_shape = NETWORKS[network]
    model = build(name)
    x, other = torch.randn(shape), torch.randn(other_shape)
    got, graph = onnx_run(model, x, other, tmp_path / "model.onnx")
    with torch.no_grad():
        torch.testing.assert_close(got, model(other), **TOLERANCE)
    assert_standard(graph)


@pytest.mark.parametrize("normalize", ["l2", "none", "l1", "max"])
@pytest.mark.parametrize("eval_mode", ["expectation", "argmax"])
def test_every_tdgs_evaluation_runs_in_onnx_runtime_with_padding(normalize, eval_mode, tmp_path):
    pool = create_pooler("tdgs", 3, kernel_size=3, stride=2, padding=1, normalize=normalize, eval_mode=eval_mode)
    x, other = torch.randn(2, 3, 9, 9), torch.randn(3, 3, 9, 9) * 10
    pool(x)
    pool.eval()
    got, graph = onnx_run(pool, x, other, tmp_path / "pool.onnx")
    with torch.no_grad():
        torch.testing.assert_close(got, pool(other), **TOLERANCE)
    assert_standard(graph)


@pytest.mark.parametrize("granularity", ["position", "channel", "layer"])
def test_deck_cnn_argmax_and_granularities_in_onnx_runtime(granularity, tmp_path):
    model = _deck("tdgs", eval_mode="argmax", granularity=granularity)
    x, other = torch.rand(3, *DECK_IMAGE), torch.rand(6, *DECK_IMAGE)
    got, graph = onnx_run(model, x, other, tmp_path / "model.onnx")
    with torch.no_grad():
        torch.testing.assert_close(got, model(other), **TOLERANCE)
    assert_standard(graph)


@pytest.mark.parametrize("padding", [0, 1], ids=["unpadded", "padded"])
@pytest.mark.parametrize("name", ALL_POOLERS)
def test_torch_export_keeps_no_custom_operator(name, padding):
    """The exported program of every pooler in evaluation mode holds ATen operators only (none of
    ``torch.ops.tdgs``): no runtime needs this package."""
    pool = create_pooler(name, 4, kernel_size=3, stride=2, padding=padding)
    x = torch.randn(2, 4, 11, 11)
    pool(x)
    pool.eval()
    program = torch.export.export(pool, (x,))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets and all(target.startswith("aten.") or target.startswith("<built-in") for target in targets), targets
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), pool(x), **TOLERANCE)


@pytest.mark.parametrize("name", ALL_POOLERS)
def test_jit_trace_of_an_evaluation_model(name):
    """``torch.jit.trace`` records the same standard operators (``torch.jit.script`` is not supported:
    the poolers' Python checks and options are outside TorchScript)."""
    model = _deck(name)
    x, other = torch.rand(4, *DECK_IMAGE), torch.rand(9, *DECK_IMAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; shape checks become constants (TracerWarning)
        traced = torch.jit.trace(model, x)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    # only ATen operators and graph plumbing: no prim::PythonOp calling back into this package's kernels
    assert "prim::PythonOp" not in kinds and all(kind.startswith(("aten::", "prim::")) for kind in kinds), kinds
    with torch.no_grad():
        torch.testing.assert_close(traced(other), model(other), **TOLERANCE)


@pytest.mark.parametrize("name", RANDOM_POOLERS)
def test_a_pooler_that_samples_is_refused_in_one_line(name):
    """Training-mode export of a random pooler (and TDGS's eval_mode="sample") would bake one draw, or
    torch's generator, into the graph: refused, naming what samples and what to do."""
    pool = create_pooler(name, 2)
    x = torch.rand(1, 2, 8, 8)
    pool(x)
    with pytest.raises(
        ValueError,
        match=r"^\w+_pool2d cannot be exported or traced while it samples at random "
        r"\(training=True: call model.eval\(\) first\)$",
    ):
        torch.export.export(pool, (x,))
    with pytest.raises(ValueError, match="cannot be exported or traced"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(pool, x)
    pool.eval()
    torch.export.export(pool, (x,))  # evaluation: fine


def test_onnx_export_of_a_training_model_is_refused_with_that_line(tmp_path):
    model = PoolingCNN("tdgs", DECK_IMAGE, 10)  # in training mode
    with pytest.warns(UserWarning, match="training mode"), pytest.raises(Exception) as caught:  # torch warns too
        torch.onnx.export(model, (torch.rand(2, *DECK_IMAGE),), tmp_path / "m.onnx", dynamo=True, verbose=False)
    assert isinstance(caught.value.__cause__, ValueError)
    assert str(caught.value.__cause__).startswith("tdgs_pool2d cannot be exported or traced while it samples")


def test_the_torchscript_based_onnx_exporter_exports_the_evaluation_formula(tmp_path):
    """``dynamo=False`` (TorchScript tracing) puts the model in evaluation mode while it exports."""
    model = PoolingCNN("tdgs", DECK_IMAGE, 10)
    x = torch.rand(3, *DECK_IMAGE)
    path = tmp_path / "legacy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, dynamo=False)
    assert model.training  # given back as it was
    assert_standard(onnx.load(path))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model.eval()(x), **TOLERANCE)


@pytest.mark.parametrize("name", RANDOM_POOLERS)
def test_a_pooler_given_its_noise_exports_in_training_mode(name):
    """Given noise (``gumbels``, ``uniforms``, ``lines``) fixes the draw: nothing random to refuse."""
    temperature, gumbels = torch.rand(3, 4, 4) + 0.5, gumbel_noise((2, 3, 4, 4, 4), dtype=torch.float32)
    uniforms, lines = torch.rand(2, 3, 4, 4), (torch.tensor([0, 3, 4, 6]), torch.tensor([1, 2, 5, 7]))
    pool = {
        "tdgs": lambda x: tdgs_pool2d(x, temperature, gumbels=gumbels),
        "stochastic": lambda x: stochastic_pool2d(x, uniforms=uniforms),
        "s3": lambda x: s3_pool2d(x, lines=lines),
    }[name]

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return pool(x)

    program = torch.export.export(Fixed(), (torch.rand(2, 3, 8, 8),))
    assert not [n for n in program.graph.nodes if n.op == "call_function" and "tdgs" in str(n.target)]
    other = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(program.module()(other), pool(other))


def test_tdgs_sample_evaluation_is_refused_in_one_line():
    pool = create_pooler("tdgs", 2, eval_mode="sample")
    x = torch.rand(1, 2, 8, 8)
    pool(x)
    why = r"\(eval_mode='sample': set it to 'expectation' or 'argmax'\)"
    message = rf"^tdgs_pool2d cannot be exported or traced while it samples at random {why}$"
    with pytest.raises(ValueError, match=message):
        torch.export.export(pool.eval(), (x,))


@pytest.mark.parametrize("name", ["max", "avg", "mixed", "gated"])
def test_deterministic_poolers_export_in_training_mode_too(name):
    """Their training formula is their evaluation formula: a training-mode export is the same graph."""
    pool = create_pooler(name, 2)
    x = torch.rand(1, 2, 8, 8)
    pool(x)
    torch.testing.assert_close(torch.export.export(pool, (x,)).module()(x), pool(x))
