"""The compiled CPU kernels (tdgs.pooling.native) against the pure-PyTorch reference code: same
noise -> same outputs and gradients, for every pooler, option, window geometry and float dtype;
and the kernels' random stream itself."""

import os

import pytest
import torch
from scipy.stats import kstest, pearsonr
from torch.autograd import gradcheck
from torch.utils import cpp_extension

from tdgs.pooling import gated_pool2d, mixed_pool2d, native, s3_pool2d, stochastic_pool2d, tdgs_pool2d
from tdgs.pooling.stochastic import kernel_uniforms
from tdgs.pooling.tdgs import NORMALIZATIONS, _TDGSFunction, kernel_gumbels

pytestmark = pytest.mark.skipif(
    os.environ.get("TDGS_NATIVE", "1") == "0", reason="compiled kernels disabled by TDGS_NATIVE=0"
)

# (kernel_size, stride, H, W): the deck's 2x2/2, odd sizes, overlapping 3x3/2, 3x3/3
GEOMETRIES = [(2, 2, 8, 8), (2, 2, 7, 9), (3, 2, 9, 8), (3, 3, 9, 9)]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5}


def test_kernels_build_and_load_here():
    """A silent fallback would hide a broken build: on this platform the kernels must load."""
    assert native.available()


def _out_size(h, w, k, s):
    return (h - k) // s + 1, (w - k) // s + 1


def _close(got, want, dtype):
    torch.testing.assert_close(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def _compare(fn, inputs, dtype):
    """fn(*inputs) through the kernels and through the reference: outputs and gradients agree."""
    grads_of = lambda out: torch.autograd.grad(out.sin().sum(), inputs, allow_unused=True)  # noqa: E731
    fast = fn(*inputs)
    fast_grads = grads_of(fast)
    with native.disabled():
        slow = fn(*inputs)
        slow_grads = grads_of(slow)
    _close(fast, slow, dtype)
    for got, want in zip(fast_grads, slow_grads):
        if want is None:  # not in the reference's graph (argmax): the kernel gives zeros or None
            assert got is None or not got.any()
        else:
            _close(got, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{}s{}-{}x{}".format(*g))
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("mode", ["hard", "soft", "expectation", "sample", "argmax"])
@pytest.mark.parametrize("granularity", ["position", "channel", "layer"])
def test_tdgs_kernel_matches_reference(dtype, geometry, normalize, mode, granularity):
    k, s, h, w = geometry
    ho, wo = _out_size(h, w, k, s)
    t_shape = {"position": (3, ho, wo), "channel": (3, 1, 1), "layer": (1, 1, 1)}[granularity]
    x = (torch.randn(2, 3, h, w, dtype=dtype) + 0.3).requires_grad_()
    t = (torch.rand(t_shape, dtype=dtype) + 0.2).requires_grad_()
    training = mode in ("hard", "soft")
    options = dict(kernel_size=k, stride=s, normalize=normalize, hard=mode != "soft", training=training,
                   eval_mode=mode if not training else "expectation")
    sampling = mode in ("hard", "soft", "sample")

    torch.manual_seed(11)
    seed = native.draw_seed()
    gumbels = kernel_gumbels(seed, (2, 3, ho, wo, k * k), dtype) if sampling else None

    def fast_then_reference(x, t):
        torch.manual_seed(11)  # the kernel draws `seed` again
        return tdgs_pool2d(x, t, **options)

    fast = fast_then_reference(x, t)
    fast_grads = torch.autograd.grad(fast.sin().sum(), (x, t), allow_unused=True)
    slow = tdgs_pool2d(x, t, **options, gumbels=gumbels) if sampling else None
    if slow is None:
        with native.disabled():
            slow = tdgs_pool2d(x, t, **options)
    slow_grads = torch.autograd.grad(slow.sin().sum(), (x, t), allow_unused=True)
    _close(fast, slow, dtype)
    _close(fast_grads[0], slow_grads[0], dtype)
    if mode == "argmax":  # T is not in the reference's graph
        assert slow_grads[1] is None and (fast_grads[1] is None or not fast_grads[1].any())
    else:
        _close(fast_grads[1], slow_grads[1], dtype)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_tdgs_kernel_soft_sample_gradcheck(normalize):
    """With its key fixed the soft sample is a smooth function: finite differences agree."""
    x = (torch.rand(2, 3, 6, 6, dtype=torch.float64) + 0.1).requires_grad_()
    t = (torch.rand(3, 3, 3, dtype=torch.float64) + 0.5).requires_grad_()
    assert gradcheck(lambda x, t: _TDGSFunction.apply(x, t, 1234, 2, 2, normalize, "soft"), (x, t))


def test_tdgs_kernel_handles_channels_last_and_non_contiguous_input():
    x = torch.rand(4, 6, 8, 8)
    t = torch.rand(3, 4, 4) + 0.2
    for variant in (x.to(memory_format=torch.channels_last)[:, ::2], x.transpose(2, 3)[:, 1::2]):
        _compare(lambda v: tdgs_pool2d(v, t, training=False), (variant.clone().requires_grad_(),), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{}s{}-{}x{}".format(*g))
@pytest.mark.parametrize("rows", [3, 1], ids=["channel", "layer"])
def test_mixed_and_gated_kernels_match_reference(dtype, geometry, rows):
    k, s, h, w = geometry
    x = torch.randn(2, 3, h, w, dtype=dtype).requires_grad_()
    logit = torch.randn(rows, dtype=dtype).requires_grad_()
    mask = torch.randn(rows, k * k, dtype=dtype).requires_grad_()
    _compare(lambda x, l: mixed_pool2d(x, l, kernel_size=k, stride=s), (x, logit), dtype)
    _compare(lambda x, m, b: gated_pool2d(x, m, b, kernel_size=k, stride=s), (x, mask, logit), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{}s{}-{}x{}".format(*g))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_stochastic_kernel_matches_reference(dtype, geometry, training):
    k, s, h, w = geometry
    x = torch.randn(2, 3, h, w, dtype=dtype).requires_grad_()  # negatives too: they count as 0
    with torch.no_grad():
        x[0, 0] = 0  # windows that sum to 0
    options = dict(kernel_size=k, stride=s, training=training)
    if not training:
        _compare(lambda x: stochastic_pool2d(x, **options), (x,), dtype)
        return
    torch.manual_seed(5)
    uniforms = kernel_uniforms(native.draw_seed(), (2, 3, *_out_size(h, w, k, s)), dtype)
    fast = (torch.manual_seed(5), stochastic_pool2d(x, **options))[1]
    slow = stochastic_pool2d(x, **options, uniforms=uniforms)
    _close(fast, slow, dtype)
    _close(*(torch.autograd.grad(out.sin().sum(), x)[0] for out in (fast, slow)), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(8, 8), (9, 7), (16, 12)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_s3_kernel_matches_reference(dtype, shape, training, kernel_size):
    x = torch.randn(2, 3, *shape, dtype=dtype).requires_grad_()
    # the draw of rows and columns uses torch's generator in both paths
    _compare(lambda x: (torch.manual_seed(2), s3_pool2d(x, kernel_size=kernel_size, training=training))[1], (x,), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_kernel_uniforms_are_uniform_open_and_independent(dtype):
    u = native.ops().window_uniforms(native.draw_seed(), 50_000, 4, dtype)  # (windows, k*k)
    assert 0 < u.min() and u.max() < 1
    flat = u.flatten().double()
    assert kstest(flat.numpy(), "uniform").pvalue > 0.01
    # neighbours within a window and across windows are uncorrelated
    assert abs(pearsonr(u[:, 0].double().numpy(), u[:, 1].double().numpy())[0]) < 0.02
    assert abs(pearsonr(flat[:-4].numpy(), flat[4:].numpy())[0]) < 0.02
    # another key gives other numbers
    other = native.ops().window_uniforms(native.draw_seed(), 50_000, 4, dtype)
    assert abs(pearsonr(flat.numpy(), other.flatten().double().numpy())[0]) < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_kernel_uniforms_never_round_to_zero_or_one(dtype):
    """64M draws: with 24 random bits (b + 1/2) / 2^24 rounded to 1 about once per 2^24 draws."""
    u = native.ops().window_uniforms(native.draw_seed(), 1 << 24, 4, dtype)
    assert 0 < u.min() and u.max() < 1


def test_kernel_draws_follow_torch_manual_seed():
    x = torch.rand(4, 3, 8, 8)
    t = torch.rand(3, 4, 4) + 0.2
    first = (torch.manual_seed(1), tdgs_pool2d(x, t))[1]
    again = (torch.manual_seed(1), tdgs_pool2d(x, t))[1]
    other = (torch.manual_seed(2), tdgs_pool2d(x, t))[1]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_other_devices_and_dtypes_run_the_reference_code():
    """CUDA (here: the shape-only meta device) and half precision take the pure-PyTorch path."""
    for device, dtype in (("meta", torch.float32), ("cpu", torch.bfloat16)):
        x = torch.rand(2, 3, 8, 8, device=device, dtype=dtype)
        t = torch.ones(3, 4, 4, device=device, dtype=dtype)
        assert not native.usable(x, t)
        for out in (
            tdgs_pool2d(x, t),
            mixed_pool2d(x, torch.zeros(3, device=device, dtype=dtype)),
            gated_pool2d(x, torch.zeros(3, 4, device=device, dtype=dtype), torch.zeros(3, device=device, dtype=dtype)),
            stochastic_pool2d(x),
        ):
            assert out.shape == (2, 3, 4, 4) and out.device.type == device and out.dtype == dtype


def test_a_failed_build_warns_once_and_falls_back_to_the_reference(monkeypatch):
    def broken_build(**kwargs):
        raise RuntimeError("Error building extension 'tdgs_pooling': c++: command not found\nmore")

    monkeypatch.setattr(cpp_extension, "load", broken_build)
    native._load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"could not build the CPU pooling kernels \(Error building"):
            assert not native.available()
        x = torch.rand(2, 3, 8, 8, requires_grad=True)
        tdgs_pool2d(x, torch.ones(3, 4, 4)).sum().backward()  # the reference code still trains
        assert x.grad is not None
    finally:
        native._load.cache_clear()  # later tests load the real build again


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_kernels_break_ties_as_the_reference(training):
    """Windows full of equal values: the gradient goes to the same (first) maximum in both paths."""
    x = torch.randint(0, 3, (2, 3, 9, 8)).double().requires_grad_()
    _compare(lambda x: (torch.manual_seed(2), s3_pool2d(x, training=training))[1], (x,), torch.float64)
    _compare(lambda x: mixed_pool2d(x, torch.zeros(3, dtype=torch.float64)), (x,), torch.float64)
    t = torch.full((3, 4, 4), 0.5, dtype=torch.float64)
    _compare(lambda x: tdgs_pool2d(x, t, training=False, eval_mode="argmax"), (x,), torch.float64)


@pytest.mark.parametrize("dtype,kernel_size", [(torch.float64, 2), (torch.float32, 2), (torch.float32, 3)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_nan_window_gives_nan_as_the_reference(dtype, kernel_size, training):
    x = torch.rand(2, 3, 9, 9, dtype=dtype)
    x[0, 1, :3, :3] = float("nan")
    t = torch.ones(3, 1, 1, dtype=dtype)
    out = tdgs_pool2d(x, t, kernel_size=kernel_size, stride=2, training=training)
    with native.disabled():
        reference = tdgs_pool2d(x, t, kernel_size=kernel_size, stride=2, training=training)
    assert torch.equal(out.isnan(), reference.isnan()) and out.isnan().any()


def test_kernel_paths_accept_what_the_reference_accepts():
    """Broadcast gate parameters, a 0-dim mixing logit, a batch of 0, a float64 temperature."""
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    _compare(lambda x: gated_pool2d(x, torch.zeros(1, 4), torch.zeros(3)), (x,), torch.float32)
    _compare(lambda x: mixed_pool2d(x, torch.tensor(0.3)), (x,), torch.float32)
    empty = torch.rand(0, 3, 8, 8, requires_grad=True)
    mask, bias = torch.zeros(3, 4, requires_grad=True), torch.zeros(3, requires_grad=True)
    gated_pool2d(empty, mask, bias).sum().backward()
    assert mask.grad.shape == (3, 4) and not mask.grad.any()
    assert tdgs_pool2d(x, torch.ones((), dtype=torch.float64)).dtype == torch.float32
    with pytest.raises(ValueError, match="s3 needs stride <= kernel_size=2, but got stride=3"):
        s3_pool2d(x, kernel_size=2, stride=3, grid_size=6, training=False)
