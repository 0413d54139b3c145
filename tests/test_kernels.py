"""The C++ and the Triton kernels against the pure-PyTorch reference code: same noise -> same
outputs and gradients, for every pooler, option, window geometry and dtype; their random streams;
their registration as torch.library operators; the backend switch. The Triton kernels run on a GPU
where there is one, else in Triton's interpreter (see conftest.py)."""

import hashlib
import platform
from pathlib import Path

import pytest
import torch
from conftest import KERNEL_BACKENDS, TRITON_DEVICE
from scipy.stats import kstest, pearsonr
from torch.autograd import gradcheck
from torch.utils import cpp_extension

from tdgs.pooling import (
    backend,
    cpp_kernels,
    gated_pool2d,
    mixed_pool2d,
    ops,
    s3_pool2d,
    stochastic_pool2d,
    tdgs_pool2d,
)
from tdgs.pooling.s3 import kernel_lines
from tdgs.pooling.stochastic import kernel_uniforms
from tdgs.pooling.tdgs import NORMALIZATIONS, kernel_gumbels
from tdgs.pooling.windows import pooled_size

# (kernel_size, stride, H, W): the deck's 2x2/2, odd sizes, overlapping 3x3/2, 3x3/3
GEOMETRIES = [(2, 2, 8, 8), (2, 2, 7, 9), (3, 2, 9, 8), (3, 3, 9, 9)]
# float32: the reference itself is up to ~2e-5 off the float64 value where T's gradient sums
# windows that overlap (k3s2), so two float32 computations may differ by twice that
TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-5}
DTYPES = {"cpp": [torch.float64, torch.float32], "triton": [torch.float32]}  # the Triton kernels compute in float32
CASES = [(name, dtype) for name in KERNEL_BACKENDS for dtype in DTYPES[name]]
each_kernel_and_dtype = pytest.mark.parametrize(
    "kernels,dtype", CASES, ids=lambda v: str(v).replace("torch.", ""), indirect=["kernels"]
)


def test_every_kernel_backend_loads_here():
    """A silent fallback would hide a broken build: on this machine both backends must load."""
    assert KERNEL_BACKENDS == ["cpp", "triton"]


def _out_size(h, w, k, s):
    return (h - k) // s + 1, (w - k) // s + 1


def _close(got, want, dtype):
    torch.testing.assert_close(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def _compare(fn, inputs, dtype):
    """fn(*inputs) through the kernels and through the reference: outputs and gradients agree."""
    grads_of = lambda out: torch.autograd.grad(out.sin().sum(), inputs, allow_unused=True)  # noqa: E731
    fast = fn(*inputs)
    fast_grads = grads_of(fast)
    with backend.use("reference"):
        slow = fn(*inputs)
        slow_grads = grads_of(slow)
    _close(fast, slow, dtype)
    for got, want in zip(fast_grads, slow_grads):
        if want is None:  # not in the reference's graph (argmax): the kernel gives zeros or None
            assert got is None or not got.any()
        else:
            _close(got, want, dtype)


@each_kernel_and_dtype
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{}s{}-{}x{}".format(*g))
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("mode", ["hard", "soft", "expectation", "sample", "argmax"])
@pytest.mark.parametrize("granularity", ["position", "channel", "layer"])
def test_tdgs_kernel_matches_reference(kernels, dtype, geometry, normalize, mode, granularity):
    k, s, h, w = geometry
    ho, wo = _out_size(h, w, k, s)
    t_shape = {"position": (3, ho, wo), "channel": (3, 1, 1), "layer": (1, 1, 1)}[granularity]
    x = (torch.randn(2, 3, h, w, dtype=dtype, device=kernels) + 0.3).requires_grad_()
    t = (torch.rand(t_shape, dtype=dtype, device=kernels) + 0.2).requires_grad_()
    training = mode in ("hard", "soft")
    options = dict(
        kernel_size=k,
        stride=s,
        normalize=normalize,
        hard=mode != "soft",
        training=training,
        eval_mode=mode if not training else "expectation",
    )
    sampling = mode in ("hard", "soft", "sample")

    torch.manual_seed(11)
    seed = backend.draw_seed(kernels)
    gumbels = kernel_gumbels(seed, (2, 3, ho, wo, k * k), dtype) if sampling else None

    torch.manual_seed(11)  # the kernel draws `seed` again
    fast = tdgs_pool2d(x, t, **options)
    fast_grads = torch.autograd.grad(fast.sin().sum(), (x, t), allow_unused=True)
    with backend.use("reference"):
        slow = tdgs_pool2d(x, t, **options, gumbels=gumbels)
    slow_grads = torch.autograd.grad(slow.sin().sum(), (x, t), allow_unused=True)
    _close(fast, slow, dtype)
    _close(fast_grads[0], slow_grads[0], dtype)
    if mode == "argmax":  # T is not in the reference's graph
        assert slow_grads[1] is None and (fast_grads[1] is None or not fast_grads[1].any())
    else:
        _close(fast_grads[1], slow_grads[1], dtype)


@each_kernel_and_dtype
@pytest.mark.parametrize("rectifier", ["relu", "softplus"])
@pytest.mark.parametrize("mode", ["hard", "soft", "expectation"])
@pytest.mark.parametrize("granularity", ["position", "channel"])
def test_tdgs_kernel_rectifies_theta_as_the_reference(kernels, dtype, rectifier, mode, granularity):
    """TDGSPool hands the kernels theta: T = rectifier(theta) + eps and theta's gradient, computed
    inside them, equal the reference's, for negative theta (relu's floor), 0 (its kink: no gradient,
    as ``F.relu``'s) and large theta too."""
    shape = (3, 4, 4) if granularity == "position" else (3, 1, 1)
    theta = (torch.randn(shape, dtype=dtype, device=kernels) * 2).requires_grad_()
    with torch.no_grad():
        theta.view(-1)[:3] = torch.tensor([-3.0, 25.0, 0.0])  # below relu's floor, above softplus's threshold
    x = (torch.randn(2, 3, 8, 8, dtype=dtype, device=kernels) + 0.3).requires_grad_()
    training = mode != "expectation"
    options = dict(hard=mode != "soft", training=training, rectifier=rectifier, eps=0.1)
    torch.manual_seed(4)
    gumbels = kernel_gumbels(backend.draw_seed(kernels), (2, 3, 4, 4, 4), dtype) if training else None
    fast = (torch.manual_seed(4), tdgs_pool2d(x, theta, **options))[1]
    with backend.use("reference"):
        slow = tdgs_pool2d(x, theta, **options, gumbels=gumbels)
    _close(fast, slow, dtype)
    for got, want in zip(*(torch.autograd.grad(out.sin().sum(), (x, theta)) for out in (fast, slow))):
        _close(got, want, dtype)


@pytest.mark.parametrize("kernels", KERNEL_BACKENDS, indirect=True)
def test_the_kernels_identity_rectifier_adds_eps_to_theta(kernels):
    """The kernel interface's ``T = rectifier(theta) + eps`` with no rectifier is ``theta + eps``."""
    module = backend.module(backend.kernels_for(torch.empty(1, 1, 2, 2, device=kernels)))
    x, theta = torch.randn(2, 3, 8, 8, device=kernels), torch.rand(3, 4, 4, device=kernels)
    seed = torch.zeros((), dtype=torch.int64, device=kernels)
    run = lambda t, eps: module.tdgs_forward(x, t, seed, 2, 2, 0, "l2", "expectation", "none", eps)  # noqa: E731
    torch.testing.assert_close(run(theta, 0.25), run(theta + 0.25, 0.0))
    assert not torch.allclose(run(theta, 0.25), run(theta, 0.0))
    grad = torch.randn(2, 3, 4, 4, device=kernels)
    backward = lambda t, eps: module.tdgs_backward(grad, x, t, seed, 2, 2, 0, "l2", "soft", "none", eps)  # noqa: E731
    for got, want in zip(backward(theta, 0.25), backward(theta + 0.25, 0.0)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_cpp_tdgs_kernel_soft_sample_gradcheck(normalize):
    """With its key fixed the soft sample is a smooth function: finite differences agree (float64,
    which only the C++ kernels compute in)."""
    x = (torch.rand(2, 3, 6, 6, dtype=torch.float64) + 0.1).requires_grad_()
    t = (torch.rand(3, 3, 3, dtype=torch.float64) + 0.5).requires_grad_()
    seed = torch.tensor(1234)
    assert gradcheck(
        lambda x, t: ops.apply(ops.TDGS, "cpp", x, t, seed, 2, 2, 0, normalize, "soft", "none", 0.0), (x, t)
    )


@pytest.mark.parametrize("kernels", KERNEL_BACKENDS, indirect=True)
def test_kernels_take_channels_last_and_strided_input_and_keep_the_layout(kernels):
    x = torch.rand(4, 6, 8, 8, device=kernels)
    t = torch.rand(3, 4, 4, device=kernels) + 0.2
    for variant in (x.to(memory_format=torch.channels_last)[:, ::2], x.transpose(2, 3)[:, 1::2]):
        variant = variant.clone().requires_grad_()
        _compare(lambda v: tdgs_pool2d(v, t, training=False), (variant,), torch.float32)
    cl = x[:, :3].contiguous(memory_format=torch.channels_last)
    for out in (
        tdgs_pool2d(cl, t),
        stochastic_pool2d(cl),
        mixed_pool2d(cl, torch.zeros(3, device=kernels)),
        s3_pool2d(cl),
    ):
        assert out.is_contiguous(memory_format=torch.channels_last)  # as F.max_pool2d keeps it


@each_kernel_and_dtype
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{}s{}-{}x{}".format(*g))
@pytest.mark.parametrize("rows", [3, 1], ids=["channel", "layer"])
def test_mixed_and_gated_kernels_match_reference(kernels, dtype, geometry, rows):
    k, s, h, w = geometry
    x = torch.randn(2, 3, h, w, dtype=dtype, device=kernels).requires_grad_()
    logit = torch.randn(rows, dtype=dtype, device=kernels).requires_grad_()
    mask = torch.randn(rows, k * k, dtype=dtype, device=kernels).requires_grad_()
    _compare(lambda x, w: mixed_pool2d(x, w, kernel_size=k, stride=s), (x, logit), dtype)
    _compare(lambda x, m, b: gated_pool2d(x, m, b, kernel_size=k, stride=s), (x, mask, logit), dtype)


@pytest.mark.skipif("cpp" not in KERNEL_BACKENDS, reason="needs the C++ kernels")
def test_float32_parameters_pool_a_float64_input_as_the_reference_does():
    """The parameters are cast to the input's dtype, as the reference code does (float32 tolerance)."""
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    t, mask, bias = (v.requires_grad_() for v in (torch.rand(3, 4, 3) + 0.5, torch.randn(3, 9), torch.randn(3)))
    _compare(lambda x, t: tdgs_pool2d(x, t, kernel_size=3, stride=2, training=False), (x, t), torch.float32)
    _compare(lambda x, m, b: gated_pool2d(x, m, b, kernel_size=3, stride=2), (x, mask, bias), torch.float32)
    _compare(lambda x, b: mixed_pool2d(x, b, kernel_size=3, stride=2), (x, bias), torch.float32)


@each_kernel_and_dtype
@pytest.mark.parametrize("mask_rows,bias_rows", [(3, 1), (1, 3)], ids=["shared-bias", "shared-mask"])
def test_gated_kernels_take_a_mask_and_a_bias_of_different_rows(kernels, dtype, mask_rows, bias_rows):
    """The functional form takes a per-channel mask beside a shared bias, and the other way round."""
    x = torch.randn(2, 3, 9, 8, dtype=dtype, device=kernels).requires_grad_()
    mask = torch.randn(mask_rows, 9, dtype=dtype, device=kernels).requires_grad_()
    bias = torch.randn(bias_rows, dtype=dtype, device=kernels).requires_grad_()
    _compare(lambda x, m, b: gated_pool2d(x, m, b, kernel_size=3, stride=2), (x, mask, bias), dtype)


@each_kernel_and_dtype
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{}s{}-{}x{}".format(*g))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_stochastic_kernel_matches_reference(kernels, dtype, geometry, training):
    k, s, h, w = geometry
    x = torch.randn(2, 3, h, w, dtype=dtype, device=kernels).requires_grad_()  # negatives too: they count as 0
    with torch.no_grad():
        x[0, 0] = 0  # windows that sum to 0
    options = dict(kernel_size=k, stride=s, training=training)
    if not training:
        _compare(lambda x: stochastic_pool2d(x, **options), (x,), dtype)
        return
    torch.manual_seed(5)
    uniforms = kernel_uniforms(backend.draw_seed(kernels), (2, 3, *_out_size(h, w, k, s)), dtype)
    fast = (torch.manual_seed(5), stochastic_pool2d(x, **options))[1]
    slow = stochastic_pool2d(x, **options, uniforms=uniforms)
    _close(fast, slow, dtype)
    _close(*(torch.autograd.grad(out.sin().sum(), x)[0] for out in (fast, slow)), dtype)


@each_kernel_and_dtype
@pytest.mark.parametrize("shape", [(8, 8), (9, 7), (16, 12)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_s3_kernel_matches_reference(kernels, dtype, shape, training, kernel_size):
    x = torch.randn(2, 3, *shape, dtype=dtype, device=kernels).requires_grad_()
    options = dict(kernel_size=kernel_size, training=training)
    torch.manual_seed(2)
    lines = kernel_lines(backend.draw_seed(kernels), *shape, kernel_size=kernel_size) if training else None
    fast = (torch.manual_seed(2), s3_pool2d(x, **options))[1]
    with backend.use("reference"):
        slow = s3_pool2d(x, **options, lines=lines)
    _close(fast, slow, dtype)
    _close(*(torch.autograd.grad(out.sin().sum(), x)[0] for out in (fast, slow)), dtype)


@pytest.mark.skipif("cpp" not in KERNEL_BACKENDS, reason="needs the C++ kernels")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_cpp_kernels_give_the_same_on_one_thread_and_on_several(training):
    """The C++ kernels split planes among threads (at::parallel_for) and flush denormals in every
    task: the result must not depend on the split. Here 512 planes (16 tasks at 8x8 outputs), on 1
    thread and on 4, whatever the test run's own thread count (make test runs one per worker)."""
    x = torch.randn(8, 64, 16, 16, dtype=torch.float64)
    x[:, :8] *= 1e-300  # denormal products and sums
    x[0, 9, :4, :4] = float("nan")
    x.requires_grad_()
    t = torch.rand(64, 8, 8, dtype=torch.float64).add(0.1).requires_grad_()
    logit, mask = torch.randn(64, dtype=torch.float64), torch.randn(64, 4, dtype=torch.float64)
    poolers = {
        "tdgs": lambda: tdgs_pool2d(x, t, training=training),
        "tdgs soft": lambda: tdgs_pool2d(x, t, training=training, hard=False, eval_mode="sample"),
        "mixed": lambda: mixed_pool2d(x, logit),
        "gated": lambda: gated_pool2d(x, mask, logit),
        "stochastic": lambda: stochastic_pool2d(x, training=training),
        "s3": lambda: s3_pool2d(x, training=training),
    }

    def outputs_and_gradients(threads):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results = {}
            with backend.use("auto"):
                for name, pool in poolers.items():
                    out = (torch.manual_seed(3), pool())[1]
                    results[name] = (out, *torch.autograd.grad(out.nan_to_num().sin().sum(), (x, t), allow_unused=True))
            return results
        finally:
            torch.set_num_threads(previous)

    one, several = outputs_and_gradients(1), outputs_and_gradients(4)
    for name in poolers:
        for got, want in zip(several[name], one[name]):
            assert (got is None and want is None) or torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0)), name


# (kernel_size, stride, padding, H, W): ResNet's stem (3x3/2, padding 1), a padded 2x2/2 (S3's last
# evaluation blocks cut short at 8x8), 3x3/3, and a map smaller than the window
PADDED = [(3, 2, 1, 9, 8), (2, 2, 1, 7, 9), (2, 2, 1, 8, 8), (3, 3, 1, 7, 7), (3, 2, 1, 1, 2)]


@each_kernel_and_dtype
@pytest.mark.parametrize("geometry", PADDED, ids=lambda g: "k{}s{}p{}-{}x{}".format(*g))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_padded_windows_match_reference(kernels, dtype, geometry, training):
    """Padded positions are never picked and carry no weight, in the kernels as in the reference:
    every pooler with kernels, every TDGS mode and normalisation, outputs and gradients."""
    k, s, p, h, w = geometry
    window = dict(kernel_size=k, stride=s, padding=p)
    ho, wo = pooled_size(h, w, k, s, p)
    x = (torch.randn(2, 3, h, w, dtype=dtype, device=kernels) - 0.5).requires_grad_()  # mostly < 0: a 0 pad would win
    t = (torch.rand(3, ho, wo, dtype=dtype, device=kernels) + 0.2).requires_grad_()
    logit = torch.randn(3, dtype=dtype, device=kernels).requires_grad_()
    mask = torch.randn(3, k * k, dtype=dtype, device=kernels).requires_grad_()
    _compare(lambda x, w: mixed_pool2d(x, w, **window), (x, logit), dtype)
    _compare(lambda x, m, b: gated_pool2d(x, m, b, **window), (x, mask, logit), dtype)
    for mode in ["hard", "soft"] if training else ["expectation", "sample", "argmax"]:
        for normalize in NORMALIZATIONS:
            options = dict(
                window,
                normalize=normalize,
                hard=mode != "soft",
                training=training,
                eval_mode=mode if not training else "expectation",
            )
            torch.manual_seed(7)
            gumbels = (
                kernel_gumbels(backend.draw_seed(kernels), (2, 3, ho, wo, k * k), dtype)
                if mode != "expectation" and mode != "argmax"
                else None
            )
            fast = (torch.manual_seed(7), tdgs_pool2d(x, t, **options))[1]
            with backend.use("reference"):
                slow = tdgs_pool2d(x, t, **options, gumbels=gumbels)
            _close(fast, slow, dtype)
            inputs = (x, t) if mode != "argmax" else (x,)
            for got, want in zip(*(torch.autograd.grad(out.sin().sum(), inputs) for out in (fast, slow))):
                _close(got, want, dtype)
    positive = (x.detach().abs() + 0.1).requires_grad_()  # stochastic pooling weighs by value
    torch.manual_seed(8)
    uniforms = kernel_uniforms(backend.draw_seed(kernels), (2, 3, ho, wo), dtype) if training else None
    fast = (torch.manual_seed(8), stochastic_pool2d(positive, **window, training=training))[1]
    slow = stochastic_pool2d(positive, **window, training=training, uniforms=uniforms)
    torch.manual_seed(9)
    lines = kernel_lines(backend.draw_seed(kernels), h, w, **window, grid_size=2 * s) if training else None
    fast_s3 = (torch.manual_seed(9), s3_pool2d(x, **window, grid_size=2 * s, training=training))[1]
    with backend.use("reference"):
        slow_s3 = s3_pool2d(x, **window, grid_size=2 * s, training=training, lines=lines)
    for got, want, source in [(fast, slow, positive), (fast_s3, slow_s3, x)]:
        assert torch.isfinite(got).all()
        _close(got, want, dtype)
        _close(*(torch.autograd.grad(out.sin().sum(), source)[0] for out in (got, want)), dtype)


@pytest.mark.skipif(KERNEL_BACKENDS != ["cpp", "triton"], reason="needs both kernel backends")
@pytest.mark.parametrize("window", [1, 4, 9])
def test_triton_and_cpp_draw_the_same_random_numbers(window):
    """One Philox stream for both backends: the same key gives the same uniforms and S3 lines."""
    seed = backend.draw_seed()
    triton_kernels = backend.module("triton")
    on_device = seed.to(TRITON_DEVICE)
    assert torch.equal(
        triton_kernels.window_uniforms(on_device, 3000, window).cpu(), cpp_kernels.window_uniforms(seed, 3000, window)
    )
    for size, count, grid, per_block in [(32, 16, 4, 2), (9, 3, 6, 3), (7, 3, 4, 2)]:
        for axis in (0, 1):
            got = triton_kernels.s3_lines(on_device, size, count, grid, per_block, axis).cpu()
            assert torch.equal(got, cpp_kernels.s3_lines(seed, size, count, grid, per_block, axis))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_kernel_uniforms_are_uniform_open_and_independent(dtype):
    u = cpp_kernels.window_uniforms(backend.draw_seed(), 50_000, 4, dtype)  # (windows, k*k)
    assert 0 < u.min() and u.max() < 1
    flat = u.flatten().double()
    assert kstest(flat.numpy(), "uniform").pvalue > 0.01
    # neighbours within a window and across windows are uncorrelated
    assert abs(pearsonr(u[:, 0].double().numpy(), u[:, 1].double().numpy())[0]) < 0.02
    assert abs(pearsonr(flat[:-4].numpy(), flat[4:].numpy())[0]) < 0.02
    # another key gives other numbers
    other = cpp_kernels.window_uniforms(backend.draw_seed(), 50_000, 4, dtype)
    assert abs(pearsonr(flat.numpy(), other.flatten().double().numpy())[0]) < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_kernel_uniforms_never_round_to_zero_or_one(dtype):
    """64M draws: with 24 random bits (b + 1/2) / 2^24 rounded to 1 about once per 2^24 draws."""
    u = cpp_kernels.window_uniforms(backend.draw_seed(), 1 << 24, 4, dtype)
    assert 0 < u.min() and u.max() < 1


@pytest.mark.parametrize("kernels", KERNEL_BACKENDS, indirect=True)
def test_kernel_draws_follow_torch_manual_seed(kernels):
    x = torch.rand(4, 3, 8, 8, device=kernels)
    t = torch.rand(3, 4, 4, device=kernels) + 0.2
    for pool in (lambda x: tdgs_pool2d(x, t), stochastic_pool2d, s3_pool2d):
        first = (torch.manual_seed(1), pool(x))[1]
        again = (torch.manual_seed(1), pool(x))[1]
        other = (torch.manual_seed(2), pool(x))[1]
        assert torch.equal(first, again) and not torch.equal(first, other)


def test_other_devices_and_dtypes_run_the_reference_code():
    """The shape-only meta device, and half precision on the CPU, take the pure-PyTorch path."""
    for device, dtype in (("meta", torch.float32), ("cpu", torch.bfloat16)):
        x = torch.rand(2, 3, 8, 8, device=device, dtype=dtype)
        t = torch.ones(3, 4, 4, device=device, dtype=dtype)
        assert backend.kernels_for(x, t) is None
        for out in (
            tdgs_pool2d(x, t),
            mixed_pool2d(x, torch.zeros(3, device=device, dtype=dtype)),
            gated_pool2d(x, torch.zeros(3, 4, device=device, dtype=dtype), torch.zeros(3, device=device, dtype=dtype)),
            stochastic_pool2d(x),
        ):
            assert out.shape == (2, 3, 4, 4) and out.device.type == device and out.dtype == dtype


@pytest.mark.skipif("cpp" not in KERNEL_BACKENDS, reason="needs the C++ kernels")
def test_windows_wider_than_the_cpp_kernels_take_run_the_reference_code(monkeypatch):
    """The C++ kernels take windows up to 8x8: a 9x9 one runs the reference code, whatever the backend asks."""
    module, kernel_calls = backend.module("cpp"), []
    for name in ("tdgs_forward", "gated_forward", "stochastic_forward", "s3_forward"):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name: (kernel_calls.append(_n), _f(*a))[1])
    x = torch.randn(2, 3, 18, 18)
    t, logit, mask = torch.rand(3, 2, 2) + 0.5, torch.randn(3), torch.randn(3, 81)
    calls = {
        "tdgs": lambda: tdgs_pool2d(x, t, kernel_size=9, stride=9, training=False),
        "mixed": lambda: mixed_pool2d(x, logit, kernel_size=9, stride=9),
        "gated": lambda: gated_pool2d(x, mask, logit, kernel_size=9, stride=9),
        "stochastic": lambda: stochastic_pool2d(x, kernel_size=9, stride=9, training=False),
        "s3": lambda: s3_pool2d(x, kernel_size=9, stride=9, grid_size=9, training=False),
    }
    assert backend.kernels_for(x, kernel_size=9) is None
    for name, call in calls.items():
        with backend.use("reference"):
            expected = call()
        with backend.use("cpp"):
            torch.testing.assert_close(call(), expected, msg=name)
    assert not kernel_calls


def test_the_environment_variables_are_read_as_written_by_hand(monkeypatch):
    """``TDGS_BACKEND`` and ``TRITON_INTERPRET`` in any case, with spaces; an empty or unset one is the default."""
    for value, choice in (("", "auto"), (" ", "auto"), (" Reference ", "reference"), ("TRITON", "triton")):
        monkeypatch.setenv("TDGS_BACKEND", value)
        assert backend.selected() == choice
    for value, interpreted in (("1", True), ("True", True), (" on ", True), ("YES", True), ("0", False), ("", False)):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert backend.triton_interpreted() is interpreted
    monkeypatch.delenv("TRITON_INTERPRET")
    assert backend.triton_interpreted() is False


def test_the_backend_switch(monkeypatch):
    x = torch.rand(1, 1, 4, 4)
    assert backend.kernels_for(x) == "cpp"  # auto: C++ for CPU float32
    with backend.use("reference"):
        assert backend.kernels_for(x) is None
    with backend.use("cpp"):
        assert backend.kernels_for(x.half()) is None  # the C++ kernels take float32/64 only
    monkeypatch.setenv("TDGS_BACKEND", "cuda")
    with pytest.raises(
        ValueError, match=r"^TDGS_BACKEND must be one of 'auto', 'reference', 'cpp', 'triton', but got 'cuda'$"
    ):
        tdgs_pool2d(x, torch.ones(1))
    monkeypatch.setenv("TDGS_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    message = r"^TDGS_BACKEND=triton runs on CPU tensors only in Triton's interpreter \(TRITON_INTERPRET=1\)$"
    with pytest.raises(RuntimeError, match=message):
        tdgs_pool2d(x, torch.ones(1))


F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
DECISIONS = [  # (TDGS_BACKEND, device, dtype, kernel_size, TRITON_INTERPRET) -> the kernels that run
    (("auto", "cpu", F32, 8, False), "cpp"),  # the widest window the C++ kernels take
    (("auto", "cpu", F64, 9, False), None),
    (("cpp", "cpu", F64, 2, True), "cpp"),
    (("reference", "cpu", F32, 2, True), None),
    (("auto", "meta", F32, 2, False), None),
    (("auto", "cuda", F32, 9, False), "triton"),  # Triton takes any window
    (("auto", "cuda", BF16, 2, False), "triton"),
    (("auto", "cuda", F64, 2, False), None),
    (("cpp", "cuda", F32, 2, False), None),  # the C++ kernels run CPU tensors only
    (("triton", "cpu", F32, 2, True), "triton"),
    (("triton", "cpu", F64, 2, True), None),
]


@pytest.mark.skipif(set(KERNEL_BACKENDS) != {"cpp", "triton"}, reason="needs the C++ and the Triton kernels")
@pytest.mark.parametrize("case,kernels", DECISIONS)
def test_which_kernels_run_each_device_dtype_and_window(case, kernels):
    """The backend's decision itself, for devices this machine may not have (a CUDA tensor's included)."""
    assert backend._kernels_for(*case) == kernels


def test_without_triton_its_devices_run_the_reference_code(monkeypatch):
    monkeypatch.setattr(backend, "module", lambda name: None)  # neither kernel module loads
    assert backend._kernels_for("auto", "cuda", F32, 2, False) is None
    assert backend._kernels_for("triton", "cpu", F32, 2, True) is None


@pytest.mark.skipif("cpp" not in KERNEL_BACKENDS, reason="needs the C++ kernels")
def test_a_parameter_on_another_device_runs_the_reference_code():
    x, here = torch.rand(1, 2, 4, 4), torch.ones(2)
    assert backend.kernels_for(x, here, here) == "cpp"
    assert backend.kernels_for(x, torch.ones(2, device="meta"), here) is None
    assert backend.kernels_for(x, here, torch.ones(2, device="meta")) is None


def test_calling_kernels_that_did_not_build_is_refused_in_words(monkeypatch):
    monkeypatch.setattr(cpp_kernels, "_load", lambda: False)
    with pytest.raises(RuntimeError, match=r"^the compiled TDGS pooling kernels are not available on this machine$"):
        cpp_kernels.window_uniforms(torch.zeros((), dtype=torch.int64), 4, 4)


def test_the_build_is_named_by_the_cpu_even_without_proc_cpuinfo(monkeypatch):
    """One build per kind of CPU (-march=native); where /proc/cpuinfo cannot be read, per architecture."""
    here = cpp_kernels._machine_tag()
    assert len(here) == 10 and int(here, 16) >= 0

    def unreadable(path, *args, **kwargs):
        raise PermissionError(f"cannot read {path}")

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert cpp_kernels._machine_tag() == hashlib.sha1(platform.machine().encode()).hexdigest()[:10]


def test_a_failed_build_warns_once_and_falls_back_to_the_reference(monkeypatch):
    def broken_build(**kwargs):
        raise RuntimeError("Error building extension 'tdgs_pooling': c++: command not found\nmore")

    monkeypatch.setattr(cpp_extension, "load", broken_build)
    cpp_kernels._load.cache_clear()
    backend.module.cache_clear()
    try:
        with pytest.warns(
            RuntimeWarning, match=r"could not build the CPU pooling kernels \(RuntimeError: Error building"
        ):
            assert not cpp_kernels.available()
        x = torch.rand(2, 3, 8, 8, requires_grad=True)
        assert backend.kernels_for(x) is None
        tdgs_pool2d(x, torch.ones(3, 4, 4)).sum().backward()  # the reference code still trains
        assert x.grad is not None
    finally:
        cpp_kernels._load.cache_clear()  # later tests load the real build again
        backend.module.cache_clear()


@pytest.mark.parametrize("kernels", KERNEL_BACKENDS, indirect=True)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_kernels_break_ties_as_the_reference(kernels, training):
    """Windows full of equal values: the gradient goes to the same (first) maximum in both paths."""
    dtype = torch.float64 if backend.selected() == "cpp" else torch.float32
    x = torch.randint(0, 3, (2, 3, 9, 8), device=kernels).to(dtype).requires_grad_()
    torch.manual_seed(2)
    lines = kernel_lines(backend.draw_seed(kernels), 9, 8) if training else None
    fast = (torch.manual_seed(2), s3_pool2d(x, training=training))[1]
    with backend.use("reference"):
        slow = s3_pool2d(x, training=training, lines=lines)
    _close(fast, slow, dtype)
    _close(*(torch.autograd.grad(out.sum(), x)[0] for out in (fast, slow)), dtype)
    _compare(lambda x: mixed_pool2d(x, torch.zeros(3, dtype=dtype, device=kernels)), (x,), dtype)
    t = torch.full((3, 4, 4), 0.5, dtype=dtype, device=kernels)
    _compare(lambda x: tdgs_pool2d(x, t, training=False, eval_mode="argmax"), (x,), dtype)


@pytest.mark.parametrize("kernels", KERNEL_BACKENDS, indirect=True)
@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_nan_window_gives_nan_as_the_reference(kernels, kernel_size, training):
    x = torch.rand(2, 3, 9, 9, device=kernels)
    x[0, 1, :3, :3] = float("nan")
    t = torch.ones(3, 1, 1, device=kernels)
    out = tdgs_pool2d(x, t, kernel_size=kernel_size, stride=2, training=training)
    with backend.use("reference"):
        reference = tdgs_pool2d(x, t, kernel_size=kernel_size, stride=2, training=training)
    assert torch.equal(out.isnan(), reference.isnan()) and out.isnan().any()


@pytest.mark.parametrize("kernels", KERNEL_BACKENDS, indirect=True)
def test_kernel_paths_accept_what_the_reference_accepts(kernels):
    """Broadcast gate parameters, a 0-dim mixing logit, a batch of 0, a float64 temperature."""
    x = torch.rand(2, 3, 8, 8, device=kernels, requires_grad=True)
    zeros = lambda *shape: torch.zeros(shape, device=kernels)  # noqa: E731
    _compare(lambda x: gated_pool2d(x, zeros(1, 4), zeros(3)), (x,), torch.float32)
    _compare(lambda x: mixed_pool2d(x, torch.tensor(0.3, device=kernels)), (x,), torch.float32)
    empty = torch.rand(0, 3, 8, 8, device=kernels, requires_grad=True)
    mask, bias = zeros(3, 4).requires_grad_(), zeros(3).requires_grad_()
    gated_pool2d(empty, mask, bias).sum().backward()
    assert mask.grad.shape == (3, 4) and not mask.grad.any()
    assert tdgs_pool2d(x, torch.ones((), dtype=torch.float64, device=kernels)).dtype == torch.float32
    with pytest.raises(ValueError, match="s3 needs stride <= kernel_size=2, but got stride=3"):
        s3_pool2d(x, kernel_size=2, stride=3, grid_size=6, training=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", ["tdgs", "gated", "mixed", "stochastic", "s3"])
def test_triton_kernels_take_half_precision_with_float32_maths(dtype, name):
    """float16/bfloat16 in and out, float32 inside: the output equals the float32 kernel's on the
    same (rounded) input, rounded once to the input's dtype; gradients likewise."""
    x = torch.randn(2, 3, 8, 8, device=TRITON_DEVICE).to(dtype)
    params = {
        "tdgs": lambda: (torch.rand(3, 4, 4, device=TRITON_DEVICE) + 0.2,),
        "gated": lambda: (torch.randn(3, 4, device=TRITON_DEVICE), torch.randn(3, device=TRITON_DEVICE)),
        "mixed": lambda: (torch.randn(3, device=TRITON_DEVICE),),
        "stochastic": lambda: (),
        "s3": lambda: (),
    }[name]()
    pool = {
        "tdgs": tdgs_pool2d,
        "gated": gated_pool2d,
        "mixed": mixed_pool2d,
        "stochastic": stochastic_pool2d,
        "s3": s3_pool2d,
    }[name]
    upstream = torch.randn(2, 3, 4, 4, device=TRITON_DEVICE).to(dtype)  # a gradient both dtypes hold exactly
    results = []
    with backend.use("triton"):
        for inp in (x, x.float()):
            inp = inp.clone().requires_grad_()
            out = (torch.manual_seed(3), pool(inp, *params))[1]
            results.append((out, torch.autograd.grad(out, inp, upstream.to(out.dtype))[0]))
    (half, half_grad), (full, full_grad) = results
    assert half.dtype == dtype and half_grad.dtype == dtype
    # within one unit in the last place: Triton's interpreter may round to bfloat16 otherwise than torch
    ulp = {"rtol": torch.finfo(dtype).eps, "atol": 0.0}
    torch.testing.assert_close(half, full.to(dtype), **ulp)
    torch.testing.assert_close(half_grad, full_grad.to(dtype), **ulp)


# ---- the registered operators ----------------------------------------------------------------


def _op_cases(device):
    x = torch.rand(2, 3, 8, 6, device=device, requires_grad=True)  # not square
    seed = backend.draw_seed(device)
    t = (torch.rand(3, 4, 3, device=device) + 0.2).requires_grad_()
    mask, bias = torch.randn(3, 4, device=device, requires_grad=True), torch.randn(3, device=device, requires_grad=True)
    cases = [
        (torch.ops.tdgs.tdgs_pool, (x, t, seed, 2, 2, 0, normalize, mode, "none", 0.0))
        for normalize in ("l2", "none")
        for mode in ("hard", "soft", "expectation", "argmax")
    ]
    cases += [
        (torch.ops.tdgs.tdgs_pool, (x, t - 0.5, seed, 2, 2, 0, "l2", "hard", rectifier, 0.1))
        for rectifier in ("relu", "softplus")
    ]
    cases += [
        (torch.ops.tdgs.gated_pool, (x, mask, bias, 2, 2, 0)),
        (torch.ops.tdgs.gated_pool, (x, None, bias, 2, 2, 0)),
    ]
    cases += [(torch.ops.tdgs.stochastic_pool, (x, seed, 2, 2, 0, training)) for training in (True, False)]
    cases += [(torch.ops.tdgs.s3_pool, (x, seed, 2, 2, 0, 4, training)) for training in (True, False)]
    grad = torch.randn(2, 3, 4, 3, device=device)
    cases += [
        (torch.ops.tdgs.tdgs_pool_backward, (grad, x.detach(), t.detach(), seed, 2, 2, 0, "l2", "hard", "relu", 0.1)),
        (torch.ops.tdgs.gated_pool_backward, (grad, x.detach(), mask.detach(), bias.detach(), 2, 2, 0)),
        (torch.ops.tdgs.gated_pool_backward, (grad, x.detach(), None, bias.detach(), 2, 2, 0)),
        (torch.ops.tdgs.stochastic_pool_backward, (grad, x.detach(), seed, 2, 2, 0, True)),
        (torch.ops.tdgs.s3_pool_backward, (grad, x.detach(), seed, 2, 2, 0, 4, True)),
    ]
    # padded windows (a 3x3 window, stride 2, padding 1: ResNet's stem)
    t3 = (torch.rand(3, 4, 3, device=device) + 0.2).requires_grad_()
    mask3 = torch.randn(3, 9, device=device, requires_grad=True)
    cases += [
        (torch.ops.tdgs.tdgs_pool, (x, t3, seed, 3, 2, 1, "l2", "hard", "none", 0.0)),
        (torch.ops.tdgs.gated_pool, (x, mask3, bias, 3, 2, 1)),
        (torch.ops.tdgs.stochastic_pool, (x, seed, 3, 2, 1, True)),
        (torch.ops.tdgs.s3_pool, (x, seed, 3, 2, 1, 4, True)),
    ]
    channels_last = x.detach().contiguous(memory_format=torch.channels_last)  # gradients in its layout
    cases += [(torch.ops.tdgs.stochastic_pool_backward, (grad, channels_last, seed, 2, 2, 0, True))]
    if backend.kernels_for(x.half()) == "triton":  # half precision: the parameter gradients in float32
        half = (grad.half(), x.detach().half(), t.detach().half())
        cases += [(torch.ops.tdgs.tdgs_pool_backward, (*half, seed, 2, 2, 0, "l2", "hard", "none", 0.0))]
    if backend.kernels_for(x.double()) == "cpp":  # float64: the parameter gradients in the input's dtype
        x64, t64, mask64, bias64 = (v.detach().double() for v in (x, t, mask, bias))
        cases += [
            (torch.ops.tdgs.tdgs_pool_backward, (grad.double(), x64, t64, seed, 2, 2, 0, "l2", "hard", "none", 0.0)),
            (torch.ops.tdgs.gated_pool_backward, (grad.double(), x64, mask64, bias64, 2, 2, 0)),
        ]
    return cases


def test_an_operator_refuses_a_tensor_no_kernel_runs():
    x = torch.rand(1, 1, 4, 4, dtype=torch.float16)
    message = r"^no TDGS pooling kernel runs torch.float16 tensors on cpu with TDGS_BACKEND=reference$"
    with backend.use("reference"), pytest.raises(RuntimeError, match=message):
        torch.ops.tdgs.stochastic_pool(x, backend.draw_seed(), 2, 2, 0, True)


@pytest.mark.parametrize("kernels", KERNEL_BACKENDS, indirect=True)
def test_operators_pass_opcheck(kernels):
    """Schema, fake (meta) implementation, autograd registration, torch.compile (AOT dispatch)."""
    for op, args in _op_cases(kernels):
        # the atomic adds of overlapping windows aside, the kernels are deterministic
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("dynamo", ["as-is", "torch<2.14"])
@pytest.mark.parametrize("kernels", KERNEL_BACKENDS, indirect=True)
def test_torch_compile_keeps_the_kernels(kernels, dynamo, monkeypatch):
    """Inside torch.compile the poolers run the registered operators, i.e. the fast kernels, and
    sample: compiling is not exporting. Before torch 2.14 dynamo read ``torch.compiler.is_exporting()``
    as True while torch.compile traced (pytorch#176347); ``torch<2.14`` emulates that here."""
    if dynamo == "torch<2.14":
        # True in code dynamo traces (it folds is_dynamo_compiling()), the real flag where Python runs it
        flag = lambda: torch.compiler._is_exporting_flag or torch.compiler.is_dynamo_compiling()  # noqa: E731
        monkeypatch.setattr(torch.compiler, "is_exporting", flag)
    module = backend.module(backend.kernels_for(torch.empty(1, 1, 2, 2, device=kernels)))
    calls = []
    for name in ("tdgs_forward", "tdgs_backward", "gated_forward", "stochastic_forward"):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name: (calls.append(_n), _f(*a))[1])
    torch._dynamo.reset()
    x = torch.rand(2, 3, 8, 8, device=kernels, requires_grad=True)
    t = (torch.rand(3, 4, 4, device=kernels) + 0.2).requires_grad_()

    def net(x, t):
        evaluated = tdgs_pool2d(x, t, training=False)  # a pooler that draws nothing: no key drawn
        return tdgs_pool2d(x, t) + evaluated + mixed_pool2d(x, t[:, 0, 0]) + stochastic_pool2d(x)

    out = torch.compile(net, fullgraph=True)(x, t)
    out.sum().backward()
    assert {"tdgs_forward", "tdgs_backward", "gated_forward", "stochastic_forward"} <= set(calls)
    assert t.grad is not None and torch.isfinite(x.grad).all()


# ---- on a GPU ----------------------------------------------------------------------------------


def needs_cuda(test):
    """Marks ``test`` as a GPU test (``-m cuda``), skipped without a GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


CUDA_POOLS = {
    "tdgs": lambda x, t: tdgs_pool2d(x, t),
    "stochastic": lambda x, t: stochastic_pool2d(x),
    "s3": lambda x, t: s3_pool2d(x),
    "gated": lambda x, t: gated_pool2d(x, t[:, :4, 0].contiguous(), t[:, 0, 0]),
}


def _captured(fn):
    """``fn`` captured in a CUDA graph (after warm-up calls on a side stream): (graph, its outputs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs


@needs_cuda
@pytest.mark.parametrize("name", list(CUDA_POOLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_cuda_graph_captures_forward_and_backward_and_draws_fresh_noise(name, dtype):
    x = torch.rand(8, 4, 16, 16, device="cuda", dtype=dtype, requires_grad=True)
    t = (torch.rand(4, 8, 8, device="cuda") + 0.2).requires_grad_()
    pool = CUDA_POOLS[name]

    def step():  # no host round trip anywhere, or the capture fails
        out = pool(x, t)
        (grad_x,) = torch.autograd.grad(out.float().sum(), x)
        return out, grad_x

    torch.manual_seed(0)
    graph, (out, grad_x) = _captured(step)
    replays = []
    for _ in range(3):
        graph.replay()
        replays.append(out.clone())
    torch.cuda.synchronize()
    assert torch.isfinite(grad_x).all()
    if name != "gated":  # the random poolers: every replay draws again
        assert not torch.equal(replays[0], replays[1]) and not torch.equal(replays[1], replays[2])
    torch.manual_seed(0)
    again, (out_again, _) = _captured(step)
    again.replay()
    torch.cuda.synchronize()
    assert torch.equal(out_again, replays[0])  # torch.manual_seed reproduces the replays


@needs_cuda
@pytest.mark.parametrize("name", list(CUDA_POOLS))
def test_cuda_pooler_launches_one_kernel_per_direction(name):
    """Forward: the key's draw and one pooling kernel (S3: and the draw of its lines); backward: one
    kernel and at most one reduction (parameter gradients) and one fill (input gradient where
    windows do not tile; S3: and the lines again)."""
    x = torch.rand(64, 16, 32, 32, device="cuda", requires_grad=True)
    params = {  # leaf parameters, as a model's
        "tdgs": [torch.rand(16, 16, 16, device="cuda") + 0.2],
        "stochastic": [],
        "s3": [],
        "gated": [torch.randn(16, 4, device="cuda"), torch.randn(16, device="cuda")],
    }[name]
    params = [p.requires_grad_() for p in params]
    function = {"tdgs": tdgs_pool2d, "stochastic": stochastic_pool2d, "s3": s3_pool2d, "gated": gated_pool2d}[name]
    function(x, *params).sum().backward()  # compiles the kernels
    torch.cuda.synchronize()
    grad = torch.ones(64, 16, 16, 16, device="cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = function(x, *params)
        torch.cuda.synchronize()
    forward = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        torch.autograd.grad(out, [p for p in (x, *params) if p.requires_grad], grad)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(forward) <= (3 if name == "s3" else 2) and any(name in n for n in forward), forward
    assert len([n for n in names if f"{name}_backward_kernel" in n]) == 1 and len(names) <= 4, names
