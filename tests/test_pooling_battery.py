"""The battery every pooler passes (kornia-style): shapes, layouts, exceptions, module == function,
finite values on extreme inputs, state_dict round trip, reproducibility."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import ALL_POOLERS, RANDOM_POOLERS, run_seeded

from tdgs.pooling import (
    POOLERS,
    create_pooler,
    gated_pool2d,
    mixed_pool2d,
    pooler_signature,
    s3_pool2d,
    stochastic_pool2d,
    tdgs_pool2d,
)
from tdgs.pooling.windows import normalized_windows, windows

MODES = pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
EACH = pytest.mark.parametrize("name", ALL_POOLERS)


def test_registry_names():
    assert list(POOLERS) == ["max", "avg", "mixed", "gated", "stochastic", "s3", "tdgs"]


@EACH
@MODES
@pytest.mark.parametrize("sizes", [(28, 14, 7, 3), (32, 16, 8, 4)], ids=["mnist", "cifar"])
def test_shape_chain(name, training, sizes):
    x = torch.rand(2, 3, sizes[0], sizes[0])
    for size in sizes[1:]:
        x = create_pooler(name, 3).train(training)(x)
        assert x.shape == (2, 3, size, size)


@EACH
@MODES
def test_noncontiguous_and_channels_last(name, training):
    pool = create_pooler(name, 4).train(training)
    x = torch.rand(3, 4, 12, 10)
    pool(x)  # materialises lazy parameters
    expected = run_seeded(pool, x)
    transposed = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert not transposed.is_contiguous()
    torch.testing.assert_close(run_seeded(pool, transposed), expected)
    torch.testing.assert_close(run_seeded(pool, x.to(memory_format=torch.channels_last)), expected)
    torch.testing.assert_close(run_seeded(pool, x[:, :, ::1, :]), expected)


@EACH
@MODES
def test_outputs_keep_max_poolings_memory_format(name, training, kernels):
    """Channels-last in, channels-last out (as ``F.max_pool2d``); any other layout: contiguous out;
    on every kernel backend (the reference code's layout is whatever its operators give)."""
    pool = create_pooler(name, 4).train(training).to(kernels)
    x = torch.rand(3, 4, 12, 10, device=kernels)
    pool(x)
    assert pool(x.to(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)
    transposed = pool(x.transpose(2, 3).contiguous().transpose(2, 3))
    assert transposed.is_contiguous() and pool(x).is_contiguous()


def test_windows_are_unfolds_for_every_geometry():
    """:func:`windows` (strided slices) against ``unfold``, the definition, for every window, stride
    and padding up to the window's half, on sides the windows fit exactly or not."""
    x = torch.randn(2, 3, 11, 9)
    for k, s in itertools.product(range(1, 6), range(1, 7)):
        for p in range(k // 2 + 1):
            padded = F.pad(x, (p,) * 4)
            expected = padded.unfold(2, k, s).unfold(3, k, s).flatten(-2)  # (B, C, Ho, Wo, k*k)
            assert torch.equal(windows(x, k, s, p), expected), (k, s, p)


BAD_OPTIONS = [
    ("max", {"kernel_size": 0}, "kernel_size"),
    ("avg", {"stride": 1.5}, "stride"),
    ("mixed", {"granularity": "position"}, "granularity"),
    ("gated", {"granularity": "pixel"}, "granularity"),
    ("s3", {"grid_size": 3}, "grid_size"),
    ("s3", {"grid_size": 0}, "grid_size"),
    ("s3", {"kernel_size": 2, "stride": 3, "grid_size": 3}, "stride"),
    ("tdgs", {"t0": 0}, "t0"),
    ("tdgs", {"t0": float("nan")}, "t0"),
    ("tdgs", {"t0": True}, "t0"),  # a bool is not a number here
    ("tdgs", {"eps": "0.1"}, "eps"),
    ("tdgs", {"eps": -0.1}, "eps"),
    ("tdgs", {"granularity": "pixel"}, "granularity"),
    ("tdgs", {"rectifier": "elu"}, "rectifier"),
    ("tdgs", {"rectifier": None}, "rectifier"),  # the function's None (T given) is not the module's
    ("tdgs", {"normalize": "l3"}, "normalize"),
    ("tdgs", {"hard": "yes"}, "hard"),
    ("tdgs", {"eval_mode": "mean"}, "eval_mode"),
    ("tdgs", {"input_size": (28,)}, "input_size"),
    ("tdgs", {"input_size": (28, 28), "granularity": "layer"}, "input_size"),
    ("tdgs", {"grid_size": 4}, "grid_size"),
    ("max", {"t0": 1.0}, "t0"),
    ("max", {"padding": 2}, "padding"),
    ("tdgs", {"kernel_size": 3, "padding": -1}, "padding"),
    ("avg", {"dilation": 2}, "dilation"),
    ("gated", {"ceil_mode": True}, "ceil_mode"),
]


@pytest.mark.parametrize("name,options,key", BAD_OPTIONS)
def test_bad_options_name_the_option(name, options, key):
    with pytest.raises(ValueError, match=rf"\b{key}\b") as info:  # the option's own name, as a word
        create_pooler(name, 4, **options)
    assert "\n" not in str(info.value)


def test_a_bad_choice_lists_what_is_allowed():
    message = r"^granularity must be one of 'position', 'channel', 'layer', but got 'pixel'$"
    with pytest.raises(ValueError, match=message):
        create_pooler("tdgs", 4, granularity="pixel")


def test_unknown_pooler_lists_the_allowed_names():
    allowed = "'max', 'avg', 'mixed', 'gated', 'stochastic', 's3', 'tdgs'"
    with pytest.raises(ValueError, match=rf"^pooler must be one of {allowed}, but got 'maxx'$"):
        create_pooler("maxx", 4)


def test_unknown_options_are_listed_beside_the_allowed_ones():
    allowed = "kernel_size, stride, padding, dilation, ceil_mode, grid_size"
    with pytest.raises(ValueError, match=rf"^pooler 's3' takes the options {allowed}, but got t0, temperature$"):
        create_pooler("s3", 4, temperature=1.0, t0=1.0)


def test_pooler_signature_gives_each_option_its_type_and_default():
    window = {"kernel_size": (int, 2), "stride": (int, 2), "padding": (int, 0), "dilation": (int, 1)}
    assert pooler_signature("s3") == window | {"ceil_mode": (bool, False), "grid_size": (int, 4)}
    assert pooler_signature("tdgs")["t0"] == (float, 1.0)
    assert pooler_signature("tdgs")["eval_mode"] == (str, "expectation")


@pytest.mark.parametrize("channels", [0, -1, 2.0, True])
def test_bad_channels(channels):
    with pytest.raises(ValueError, match=rf"^channels must be a positive integer, but got {channels!r}$"):
        create_pooler("max", channels)


@EACH
@pytest.mark.parametrize(
    "shape,match",
    [
        ((4, 8, 8), r"\(B, C, H, W\)"),
        ((1, 3, 8, 8), "channels"),
        ((1, 4, 1, 8), r"^input spatial size \(1, 8\) is smaller than kernel_size=2$"),
    ],
)
def test_bad_input(name, shape, match):
    with pytest.raises(ValueError, match=match):
        create_pooler(name, 4)(torch.rand(shape))


@EACH
@pytest.mark.parametrize("shape", [(1, 8), (8, 1)], ids=["rows", "cols"])
def test_padding_counts_once_on_each_side_of_a_too_small_input(name, shape):
    pool = create_pooler(name, 2, kernel_size=4, padding=1)
    assert pool(torch.rand(1, 2, 2, 2)).shape == (1, 2, 1, 1)  # 2 + 2 * 1 = 4 lines: one window
    message = rf"^input spatial size \({shape[0]}, {shape[1]}\) is smaller than kernel_size=4 with padding=1$"
    with pytest.raises(ValueError, match=message):
        pool(torch.rand(1, 2, *shape))


def _functional(name, pool, x, training):
    """What the module should compute, through the pure function."""
    if name == "max":
        return torch.nn.functional.max_pool2d(x, 2, 2)
    if name == "avg":
        return torch.nn.functional.avg_pool2d(x, 2, 2)
    if name == "mixed":
        return mixed_pool2d(x, pool.mix_logit)
    if name == "gated":
        return gated_pool2d(x, pool.mask, pool.bias)
    if name == "stochastic":
        return stochastic_pool2d(x, training=training)
    if name == "s3":
        return s3_pool2d(x, training=training)
    return tdgs_pool2d(x, pool.temperature, training=training)


@EACH
@MODES
def test_module_equals_functional(name, training):
    pool = create_pooler(name, 4).train(training)
    x = torch.rand(2, 4, 9, 9)
    pool(x)  # materialises lazy parameters
    for p in pool.parameters():
        torch.nn.init.normal_(p)  # away from the symmetric initial values
    torch.manual_seed(1)
    expected = _functional(name, pool, x, training)
    torch.testing.assert_close(run_seeded(pool, x, seed=1), expected, rtol=0, atol=0)


EXTREMES = {
    "zeros": lambda: torch.zeros(2, 4, 6, 6),
    "negative": lambda: -torch.rand(2, 4, 6, 6),
    "huge": lambda: 1e30 * torch.rand(2, 4, 6, 6),
    "mixed_sign_huge": lambda: 1e30 * torch.randn(2, 4, 6, 6),
    "tiny": lambda: 1e-40 * torch.rand(2, 4, 6, 6),
}


@EACH
@MODES
@pytest.mark.parametrize("kind", list(EXTREMES))
def test_finite_on_extreme_inputs(name, training, kind):
    pool = create_pooler(name, 4).train(training)
    x = EXTREMES[kind]().requires_grad_()
    out = pool(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()
    if name == "gated" and "huge" in kind:
        # The exact mask gradient, sum((max - avg) * g * (1 - g) * R_j), is about 1e60 here: beyond
        # float32, so its finiteness is checked in float64, where it fits.
        pool.zero_grad()
        pool.double()(x.detach().double()).sum().backward()
    for p in pool.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@EACH
def test_state_dict_round_trip(name):
    pool = create_pooler(name, 4)
    x = torch.rand(2, 4, 10, 10)
    pool(x)
    for p in pool.parameters():
        torch.nn.init.normal_(p)
    fresh = create_pooler(name, 4)
    fresh.load_state_dict(pool.state_dict())
    for training in (True, False):
        pool.train(training), fresh.train(training)
        torch.testing.assert_close(run_seeded(fresh, x), run_seeded(pool, x), rtol=0, atol=0)


@EACH
@MODES
def test_reproducible_under_manual_seed(name, training):
    x = torch.rand(2, 4, 16, 16)
    torch.manual_seed(5)
    first = create_pooler(name, 4).train(training)(x)
    torch.manual_seed(5)
    second = create_pooler(name, 4).train(training)(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("name", RANDOM_POOLERS)
def test_training_draws_change_with_the_seed(name):
    pool = create_pooler(name, 4)
    x = torch.rand(2, 4, 16, 16)
    pool(x)
    assert not torch.equal(run_seeded(pool, x, seed=1), run_seeded(pool, x, seed=2))


@EACH
def test_extra_repr_shows_the_options(name):
    text = repr(create_pooler(name, 4))
    assert "kernel_size=2" in text and "stride=2" in text


# nn.MaxPool2d windows the poolers stand in for: ResNet's stem, a padded 2x2, AlexNet's 3x3/2
WINDOWS = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2, stride=2, padding=1),
    dict(kernel_size=3, stride=2),
]


@EACH
@MODES
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: "k{kernel_size}s{stride}p{}".format(w.get("padding", 0), **w))
def test_padded_positions_are_never_picked_and_weigh_nothing(name, training, window):
    """Same output shape as nn.MaxPool2d; on inputs all in [1, 2] (or all in [-2, -1]) every
    output stays in that range: a padded position picked or weighed would pull it towards 0
    (or make it -inf). Stochastic pooling counts negatives as 0, so it is checked on [1, 2] only."""
    pool = create_pooler(name, 3, **window).train(training)
    for low in (1.0, -2.0) if name != "stochastic" else (1.0,):
        x = (low + torch.rand(2, 3, 11, 10)).requires_grad_()
        out = pool(x)
        assert out.shape == torch.nn.MaxPool2d(**window)(x).shape
        assert ((out >= low - 1e-6) & (out <= low + 1 + 1e-6)).all(), (out.min(), out.max())
        out.sum().backward()
        assert torch.isfinite(x.grad).all()


@EACH
def test_pooler_built_without_channels_takes_them_from_its_first_input(name):
    """Lazy parameters (as nn.LazyConv2d) where a pooler has some, sized and then fixed by the
    first input; a pooler without parameters takes any channel count, as nn.MaxPool2d."""
    pool = create_pooler(name, kernel_size=3, stride=2, padding=1)
    x = torch.rand(2, 5, 12, 12)
    assert pool(x).shape == (2, 5, 6, 6)
    assert not any(isinstance(p, torch.nn.UninitializedParameter) for p in pool.parameters())
    if any(True for _ in pool.parameters()):
        assert pool.channels == 5
        with pytest.raises(ValueError, match=r"^input has 4 channels, but this pooler was built for channels=5$"):
            pool(torch.rand(2, 4, 12, 12))
    else:
        assert pool.channels is None and pool(torch.rand(2, 4, 12, 12)).shape == (2, 4, 6, 6)
    for p in pool.parameters():
        torch.nn.init.normal_(p)
    for fresh in (
        create_pooler(name, kernel_size=3, stride=2, padding=1),
        create_pooler(name, 5, kernel_size=3, stride=2, padding=1),
    ):
        fresh.load_state_dict(pool.state_dict())  # into a lazy pooler too, as nn.LazyConv2d allows
        assert fresh.channels == pool.channels or pool.channels is None  # the loaded parameters say how many
        for training in (True, False):
            pool.train(training), fresh.train(training)
            torch.testing.assert_close(run_seeded(fresh, x), run_seeded(pool, x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["mixed", "gated", "tdgs"])
def test_layer_granularity_shares_one_set_of_parameters_for_any_channel_count(name):
    """One set of parameters per layer, built without or with ``channels``, state_dict loaded or not:
    never tied to a channel count."""
    for channels in (None, 4):
        pool = create_pooler(name, channels, granularity="layer")
        pool(torch.rand(2, channels or 3, 8, 8))
        assert all(p.shape[0] == 1 for p in pool.parameters())
        fresh = create_pooler(name, granularity="layer")
        fresh.load_state_dict(pool.state_dict())
        assert fresh.channels is None and fresh(torch.rand(2, 7, 8, 8)).shape == (2, 7, 4, 4)
        built = create_pooler(name, 5, granularity="layer")  # its channels stay what it was built for
        built.load_state_dict(pool.state_dict())
        with pytest.raises(ValueError, match="channels=5"):
            built(torch.rand(2, 7, 8, 8))


@pytest.mark.parametrize("name", ["mixed", "gated", "tdgs"])
def test_lazy_parameters_keep_the_module_dtype_whatever_the_input(name):
    """As nn.LazyConv2d: a bfloat16 input (autocast) does not make bfloat16 parameters; .double() does."""
    pool = create_pooler(name)
    pool(torch.rand(2, 3, 8, 8, dtype=torch.bfloat16))
    assert {p.dtype for p in pool.parameters()} == {torch.float32}
    pool = create_pooler(name).double()
    pool(torch.rand(2, 3, 8, 8, dtype=torch.float64))
    assert {p.dtype for p in pool.parameters()} == {torch.float64}


FUNCTION_CASES = [
    (lambda x: tdgs_pool2d(x, torch.ones(1, 1, 1), normalize="l3"), "normalize must be one of .* but got 'l3'"),
    (lambda x: normalized_windows(x, "l3"), "^normalize must be one of 'l2', 'none', 'l1', 'max', but got 'l3'$"),
    (lambda x: tdgs_pool2d(x, torch.ones(1, 1, 1), eval_mode="mean", training=False), "eval_mode .* 'mean'"),
    (lambda x: tdgs_pool2d(x, torch.ones(1, 1, 1), rectifier="elu"), "rectifier .* 'elu'"),
    (lambda x: tdgs_pool2d(x, torch.ones(1, 1, 1), hard="yes"), "hard must be True or False"),
    (lambda x: tdgs_pool2d(x, torch.ones(1, 1, 1), eps=0.5), "^eps .* give a rectifier or eps=0, but got eps=0.5$"),
    (lambda x: stochastic_pool2d(x, kernel_size=0), "kernel_size must be a positive integer, but got 0"),
    (lambda x: mixed_pool2d(x, torch.zeros(4), padding=2), "^padding must be .* kernel_size // 2 = 1, but got 2$"),
    (lambda x: tdgs_pool2d(x, torch.ones(1, 1, 1), padding=True), "padding must be an integer .* but got True$"),
    (lambda x: stochastic_pool2d(x, padding=1.0), "padding must be an integer .* but got 1.0$"),
    (lambda x: gated_pool2d(x[0], torch.zeros(4, 4), torch.zeros(4)), r"\(B, C, H, W\), but got shape \(4, 6, 6\)"),
    (lambda x: s3_pool2d(x, kernel_size=2, stride=2, grid_size=3), "grid_size must be a multiple of stride=2"),
    (lambda x: s3_pool2d(x, kernel_size=8), "smaller than kernel_size=8"),
]


@pytest.mark.parametrize("call,match", FUNCTION_CASES)
def test_the_pure_functions_check_their_arguments_in_one_line(call, match):
    """As torchvision's ops do: the function itself refuses, not only the module (on every backend)."""
    with pytest.raises(ValueError, match=match) as info:
        call(torch.rand(2, 4, 6, 6))
    assert "\n" not in str(info.value)


def test_gated_gate_checks_its_input():
    pool = create_pooler("gated", 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        pool.gate(torch.rand(4, 8, 8))
