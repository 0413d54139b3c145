"""TDGS semantics (docs/design.md): the reference Gumbel-softmax, sampling law, limits,
evaluation modes, normalisations, temperatures and their lazy sizing."""

import re

import pytest
import torch
import torch.nn.functional as F
from conftest import drawn_gumbels
from scipy.stats import chisquare

from tdgs.pooling import create_pooler, tdgs_pool2d
from tdgs.pooling.tdgs import NORMALIZATIONS, gumbel_noise

P_MIN = 0.01


def _windows(x):
    b, c, h, w = x.shape
    return x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(b, c, h // 2, w // 2, 4)  # contiguous copy


def _normalized(a, normalize):
    """The normalisations of docs/design.md, written out independently of the package."""
    if normalize == "none":
        return a
    if normalize == "l1":
        return a / a.abs().sum(-1, keepdim=True)
    if normalize == "l2":
        return a / a.norm(dim=-1, keepdim=True)
    return a / a.abs().amax(-1, keepdim=True)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("granularity", ["position", "channel", "layer"])
def test_hard_sample_matches_torch_gumbel_softmax(normalize, granularity):
    """Same noise -> same output and same gradients as F.gumbel_softmax(z, 1, hard=True) . a."""
    sized = {"input_size": (8, 8)} if granularity == "position" else {}
    pool = create_pooler("tdgs", 3, normalize=normalize, granularity=granularity, **sized)
    x = (torch.rand(4, 3, 8, 8) + 0.05).requires_grad_()

    a = _windows(x)
    z = _normalized(a, normalize) / pool.temperature.unsqueeze(-1)
    torch.manual_seed(7)  # record the noise F.gumbel_softmax will draw
    gumbels = -torch.empty_like(z).exponential_().log()
    torch.manual_seed(7)
    reference = (a * F.gumbel_softmax(z, tau=1, hard=True)).sum(-1)
    ref_grads = torch.autograd.grad(reference.sin().sum(), (x, pool.theta))

    out = tdgs_pool2d(x, pool.temperature, normalize=normalize, gumbels=gumbels)
    grads = torch.autograd.grad(out.sin().sum(), (x, pool.theta))
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert want.abs().sum() > 0


def test_hard_sample_outputs_a_window_value_exactly():
    x = torch.rand(2, 3, 8, 8)
    out = create_pooler("tdgs", 3)(x)
    a = _windows(x)
    assert ((a == out.unsqueeze(-1)).sum(-1) >= 1).all()


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_tiny_temperature_is_max_pooling(normalize, kernels):
    x = torch.randn(8, 3, 12, 12, device=kernels)
    pool = create_pooler("tdgs", 3, normalize=normalize, eps=1e-6, input_size=(12, 12)).to(kernels)
    with torch.no_grad():
        pool.theta.fill_(-1.0)  # relu -> 0, T = eps
    for training in (True, False):
        pool.train(training)
        torch.testing.assert_close(pool(x), F.max_pool2d(x, 2, 2))


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_huge_temperature_is_average_in_evaluation(normalize, kernels):
    """(and a uniform pick in training: tests/test_random_laws.py)"""
    pool = create_pooler("tdgs", 1, normalize=normalize, granularity="channel").to(kernels)
    with torch.no_grad():
        pool.theta.fill_(1e6)
    x = torch.randn(4, 1, 8, 8, device=kernels)
    torch.testing.assert_close(pool.eval()(x), F.avg_pool2d(x, 2, 2))


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_eval_modes(normalize):
    x = torch.rand(4, 3, 8, 8) + 0.05
    pool = create_pooler("tdgs", 3, normalize=normalize, input_size=(8, 8)).eval()
    a = _windows(x)
    z = _normalized(a, normalize) / pool.temperature.unsqueeze(-1)
    expectation = (a * torch.softmax(z, -1)).sum(-1)
    torch.testing.assert_close(pool(x), expectation)

    pool.eval_mode = "argmax"
    torch.testing.assert_close(pool(x), a.gather(-1, z.argmax(-1, keepdim=True)).squeeze(-1))
    torch.testing.assert_close(pool(x), F.max_pool2d(x, 2, 2))  # T > 0 keeps the order

    pool.eval_mode = "sample"  # the seed code's evaluation: the training forward
    evaluated = (torch.manual_seed(3), pool(x))[1]
    trained = (torch.manual_seed(3), pool.train()(x))[1]
    assert torch.equal(evaluated, trained)


def test_soft_sample_is_softmax_weighted_sum():
    x = torch.rand(2, 3, 8, 8)
    pool = create_pooler("tdgs", 3, hard=False, input_size=(8, 8))
    a = _windows(x)
    z = _normalized(a, "l2") / pool.temperature.unsqueeze(-1)
    gumbels = drawn_gumbels(4, z.shape, z.dtype)
    expected = (a * torch.softmax(z + gumbels, -1)).sum(-1)
    torch.testing.assert_close((torch.manual_seed(4), pool(x))[1], expected)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_normalize_options_change_the_logits_as_specified(normalize):
    # scaling a window by 10 changes nothing after normalisation, everything without it
    x = torch.rand(2, 3, 8, 8) + 0.05
    pool = create_pooler("tdgs", 3, normalize=normalize, input_size=(8, 8)).eval()
    scale_free = torch.allclose(pool(10 * x), 10 * pool(x))
    assert scale_free == (normalize != "none")


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_zero_window_gives_zero_and_finite_gradients(normalize, kernels):
    x = torch.zeros(2, 3, 4, 4, requires_grad=True, device=kernels)
    pool = create_pooler("tdgs", 3, normalize=normalize, input_size=(4, 4)).to(kernels)
    for training in (True, False):
        out = pool.train(training)(x)
        assert torch.equal(out, torch.zeros_like(out))
        out.sum().backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(pool.theta.grad).all()


def test_gumbel_noise_is_finite_even_for_extreme_uniforms(monkeypatch):
    for extreme in (0.0, 1.0 - 2**-24):
        monkeypatch.setattr(torch, "rand", lambda *a, v=extreme, **k: torch.full(a[0], v, dtype=k["dtype"]))
        assert torch.isfinite(gumbel_noise((3,), dtype=torch.float32)).all()


@pytest.mark.parametrize("rectifier", ["relu", "softplus"])
@pytest.mark.parametrize("theta", [-1e30, -3.0, 0.0, 2.0, 1e30])
@pytest.mark.parametrize("training", [True, False])
def test_finite_for_any_theta(rectifier, theta, training, kernels):
    pool = create_pooler("tdgs", 2, rectifier=rectifier, granularity="layer").train(training).to(kernels)
    with torch.no_grad():
        pool.theta.fill_(theta)
    x = (torch.randn(2, 2, 6, 6, device=kernels) * 1e30).requires_grad_()
    out = pool(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(pool.theta.grad).all()


def test_rectifiers_and_eps():
    pool = create_pooler("tdgs", 2, granularity="channel", eps=0.25)
    with torch.no_grad():
        pool.theta.copy_(torch.tensor([-2.0, 3.0]))
    torch.testing.assert_close(pool.temperature.flatten(), torch.tensor([0.25, 3.25]))
    pool.rectifier = "softplus"
    torch.testing.assert_close(pool.temperature.flatten(), F.softplus(pool.theta.detach()) + 0.25)


@pytest.mark.parametrize(
    "granularity,theta_shape,t_shape",
    [("position", (4, 7, 7), (4, 7, 7)), ("channel", (4,), (4, 1, 1)), ("layer", (1,), (1, 1, 1))],
)
@pytest.mark.parametrize("t0", [0.1, 1.0, 10.0])
def test_temperature_shapes_and_initial_range(granularity, theta_shape, t_shape, t0):
    pool = create_pooler("tdgs", 4, granularity=granularity, t0=t0)
    pool(torch.rand(1, 4, 14, 14))
    assert pool.theta.shape == theta_shape and pool.temperature.shape == t_shape
    assert (pool.theta >= 0.5 * t0).all() and (pool.theta <= 1.5 * t0).all()


def test_initial_theta_is_uniform_in_half_to_three_halves():
    pool = create_pooler("tdgs", 100, input_size=(32, 32))  # 100 * 16 * 16 draws
    bins = torch.histc(pool.theta.detach(), bins=10, min=0.5, max=1.5)
    assert bins.sum() == pool.theta.numel()
    assert chisquare(bins.numpy()).pvalue > P_MIN


def test_position_temperatures_are_sized_at_first_forward():
    pool = create_pooler("tdgs", 3)
    assert pool.has_uninitialized_params()
    optimizer = torch.optim.Adam(pool.parameters(), lr=0.1)  # before sizing, as in a model
    x = torch.rand(2, 3, 10, 10)
    out = pool(x)
    assert pool.theta.shape == (3, 5, 5)
    before = pool.theta.detach().clone()
    out.sum().backward()
    optimizer.step()
    assert not torch.equal(before, pool.theta.detach())


def test_position_input_size_sizes_at_construction():
    pool = create_pooler("tdgs", 3, input_size=(28, 28))
    assert not pool.has_uninitialized_params() and pool.theta.shape == (3, 14, 14)


def test_position_refuses_another_spatial_size():
    pool = create_pooler("tdgs", 3)
    pool(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"size \(8, 8\) pools to \(4, 4\), .* have size \(8, 8\)$"):
        pool(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize(
    ("option", "value"), [("t0", -1.0), ("granularity", "pixel"), ("eps", 0.0), ("rectifier", "exp")]
)
def test_a_bad_option_is_refused_in_one_line_naming_it(option, value):
    with pytest.raises(ValueError, match=rf"^{option} must be .*, but got {re.escape(repr(value))}$"):
        create_pooler("tdgs", **{option: value})


def test_input_size_needs_the_channels_and_two_positive_sides():
    with pytest.raises(ValueError, match=r"^input_size sizes the position temperatures .* it needs channels too$"):
        create_pooler("tdgs", input_size=(28, 28))
    with pytest.raises(ValueError, match=r"^input_size must be \(H, W\), but got \(28,\)$"):
        create_pooler("tdgs", 3, input_size=(28,))
    with pytest.raises(ValueError, match=r"^input_size must be .*, but got 0$"):
        create_pooler("tdgs", 3, input_size=(0, 28))


def test_input_size_counts_the_padding():
    pool = create_pooler("tdgs", 3, kernel_size=3, stride=2, padding=1, input_size=(27, 27))
    assert pool.theta.shape == (3, 14, 14) and pool(torch.rand(1, 3, 27, 27)).shape == (1, 3, 14, 14)


@pytest.mark.parametrize("granularity", ["position", "channel", "layer"])
def test_state_dict_into_fresh_module(granularity):
    """A lazy TDGS pooler sized by a state_dict: one temperature per layer does not fix the channels."""
    pool = create_pooler("tdgs", 3, granularity=granularity)
    pool(torch.rand(1, 3, 16, 16))
    fresh = create_pooler("tdgs", granularity=granularity)
    fresh.load_state_dict(pool.state_dict())
    assert fresh.channels == (None if granularity == "layer" else 3)
    assert torch.equal(fresh.theta, pool.theta)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(fresh.eval()(x), pool.eval()(x))


def test_position_follows_module_dtype():
    pool = create_pooler("tdgs", 3).double()
    out = pool(torch.rand(1, 3, 8, 8, dtype=torch.float64))
    assert pool.theta.dtype == torch.float64 and out.dtype == torch.float64


@pytest.mark.parametrize("rectifier", ["relu", "softplus"])
def test_the_function_rectifies_the_raw_temperature_with_its_eps(rectifier, backends):
    x, theta = torch.rand(2, 3, 8, 8), torch.randn(3, 4, 4)
    rectified = (F.relu(theta) if rectifier == "relu" else F.softplus(theta)) + 0.5
    mine = tdgs_pool2d(x, theta, training=False, rectifier=rectifier, eps=0.5)
    torch.testing.assert_close(mine, tdgs_pool2d(x, rectified, training=False))
