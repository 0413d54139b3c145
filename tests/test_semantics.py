"""What each non-TDGS pooler computes (docs/design.md), beyond the shared battery."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import KERNEL_BACKENDS, TRITON_DEVICE
from scipy.stats import chisquare

from tdgs.pooling import backend, create_pooler, s3_pool2d
from tdgs.pooling.gated import gate_map
from tdgs.pooling.s3 import kernel_lines, sampled_lines

P_MIN = 0.01  # a seeded statistical test fails below this p-value


def _avg_and_max(x):
    return F.avg_pool2d(x, 2, 2), F.max_pool2d(x, 2, 2)


@pytest.mark.parametrize("name", ["mixed", "gated"])
@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_mixed_and_gated_lie_between_avg_and_max(name, granularity):
    pool = create_pooler(name, 4, granularity=granularity)
    for p in pool.parameters():
        torch.nn.init.normal_(p, std=3.0)
    x = torch.randn(8, 4, 12, 12)
    out = pool(x)
    low, high = _avg_and_max(x)
    assert (out >= low - 1e-6).all() and (out <= high + 1e-6).all()
    assert not torch.allclose(out, low) and not torch.allclose(out, high)


def test_mixed_gate_extremes_give_max_and_avg():
    x = torch.randn(2, 4, 8, 8)
    pool = create_pooler("mixed", 4)
    low, high = _avg_and_max(x)
    torch.testing.assert_close(pool(x), (low + high) / 2)  # initial gate 0.5
    with torch.no_grad():
        pool.mix_logit.fill_(50.0)
    torch.testing.assert_close(pool(x), high)
    with torch.no_grad():
        pool.mix_logit.fill_(-50.0)
    torch.testing.assert_close(pool(x), low)


def test_gated_gate_follows_the_mask():
    pool = create_pooler("gated", 2)
    x = torch.rand(1, 2, 2, 2)
    with torch.no_grad():
        pool.mask[0] = torch.tensor([1.0, -2.0, 0.5, 3.0])
        pool.bias[0] = -0.25
    gate = torch.sigmoid((pool.mask[0] * x[0, 0].flatten()).sum() + pool.bias[0])
    low, high = _avg_and_max(x)
    expected = gate * high[0, 0] + (1 - gate) * low[0, 0]
    torch.testing.assert_close(pool(x)[0, 0], expected)
    torch.testing.assert_close(pool(x)[0, 1], (low + high)[0, 1] / 2)  # channel 1 still at 0.5


def test_gated_gate_is_the_sigmoid_of_each_windows_response():
    """``GatedPool.gate``: ``sigmoid(w . R_j + b)`` for every window of the pooler's own geometry;
    :func:`gate_map`'s defaults are the 2x2, stride-2 window."""
    pool = create_pooler("gated", 2, kernel_size=3, stride=1, padding=1)
    torch.nn.init.normal_(pool.mask), torch.nn.init.normal_(pool.bias)
    x = torch.randn(2, 2, 5, 5)
    windows = F.pad(x, (1, 1, 1, 1)).unfold(2, 3, 1).unfold(3, 3, 1).flatten(-2)  # (B, C, 5, 5, 9)
    expected = torch.sigmoid((windows * pool.mask[:, None, None, :]).sum(-1) + pool.bias[:, None, None])
    torch.testing.assert_close(pool.gate(x), expected.detach())
    mask, bias = torch.randn(2, 4), torch.randn(2)
    torch.testing.assert_close(gate_map(x, mask, bias), gate_map(x, mask, bias, kernel_size=2, stride=2, padding=0))


def test_gated_layer_shares_one_mask():
    pool = create_pooler("gated", 3, granularity="layer")
    assert pool.mask.shape == (1, 4) and pool.bias.shape == (1,)
    torch.nn.init.normal_(pool.mask)
    x = torch.rand(1, 1, 4, 4).expand(1, 3, 4, 4)
    out = pool(x)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


# ----- stochastic (Zeiler & Fergus 2013) -----


def test_stochastic_never_picks_negative_or_zero_when_a_positive_exists(kernels):
    x = torch.tensor([-5.0, 0.0, 2.0, -1.0], device=kernels).view(1, 1, 2, 2).repeat(5000, 1, 1, 1)
    assert (create_pooler("stochastic", 1)(x) == 2.0).all()


@pytest.mark.parametrize("training", [True, False])
def test_stochastic_zero_sum_window_gives_zero(training, kernels):
    x = torch.tensor([[0.0, 0.0, -3.0, -1.0], [0.0] * 4], device=kernels).view(2, 1, 2, 2).requires_grad_()
    out = create_pooler("stochastic", 1).train(training)(x)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_stochastic_eval_is_probability_weighted_average():
    x = torch.rand(4, 3, 6, 6) - 0.2  # some negatives: they count as 0 in p
    out = create_pooler("stochastic", 3).eval()(x)
    a = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(4, 3, 3, 3, 4)
    pos = a.clamp_min(0)
    expected = (pos * pos).sum(-1) / pos.sum(-1)
    expected = torch.where(pos.sum(-1) > 0, expected, 0)
    torch.testing.assert_close(out, expected)


def test_stochastic_gradient_reaches_only_the_sampled_element():
    x = (torch.rand(6, 2, 4, 4) + 0.1).requires_grad_()
    out = create_pooler("stochastic", 2)(x)
    out.sum().backward()
    grad = x.grad.unfold(2, 2, 2).unfold(3, 2, 2).reshape(6, 2, 2, 2, 4)
    values = x.detach().unfold(2, 2, 2).unfold(3, 2, 2).reshape(6, 2, 2, 2, 4)
    assert torch.equal(grad.sum(-1), torch.ones_like(out))  # one 1 per window
    assert torch.equal((grad * values).sum(-1), out.detach())  # at the element output


# ----- S3Pool (Zhai et al. 2017) -----


def _stride1_max_map(x, k=2):
    """Max over the k x k window starting at each (i, j), clipped at the bottom/right edge."""
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    for i, j in itertools.product(range(h), range(w)):
        out[..., i, j] = x[..., i : i + k, j : j + k].amax(dim=(-2, -1))
    return out


@pytest.mark.parametrize("size", [28, 14, 7, 3, 32, 16, 8, 4, 30, 9])
def test_s3_lines_per_block(size):
    out = (size - 2) // 2 + 1
    lines = sampled_lines(size, out, 4, 2)
    assert lines.shape == (out,) and len(set(lines.tolist())) == out
    assert torch.equal(lines, lines.sort().values) and lines.max() < size
    per_block = torch.bincount(lines // 4, minlength=-(-size // 4))
    full = out // 2
    assert (per_block[:full] == 2).all()  # every full block before the end gives g/s lines
    assert per_block.sum() == out


def test_s3_draw_is_uniform_over_subsets():
    draws = [tuple(sampled_lines(4, 2, 4, 2).tolist()) for _ in range(6000)]
    subsets = list(itertools.combinations(range(4), 2))
    counts = [draws.count(s) for s in subsets]
    assert sum(counts) == 6000
    assert chisquare(counts).pvalue > P_MIN


def test_s3_partial_block_draw_is_uniform():
    # 7 lines -> 3 outputs: 2 from the block 0-3, 1 from the partial block 4-6, uniformly
    last = [sampled_lines(7, 3, 4, 2)[-1].item() for _ in range(3000)]
    counts = [last.count(i) for i in (4, 5, 6)]
    assert sum(counts) == 3000 and chisquare(counts).pvalue > P_MIN


@pytest.mark.parametrize("size", [28, 7, 9])
@pytest.mark.parametrize("path", ["reference", *KERNEL_BACKENDS])
def test_s3_training_outputs_entries_of_the_stride1_max_map(size, path):
    device = TRITON_DEVICE if path == "triton" else "cpu"
    x = torch.randn(3, 2, size, size, device=device)
    with backend.use(path):
        out = (torch.manual_seed(11), s3_pool2d(x, training=True))[1]
        torch.manual_seed(11)  # the same draw again, where each path takes it from
        n = (size - 2) // 2 + 1
        if path == "reference":
            rows, cols = sampled_lines(size, n, 4, 2), sampled_lines(size, n, 4, 2)
        else:
            rows, cols = kernel_lines(backend.draw_seed(device), size, size)
    expected = _stride1_max_map(x.cpu())[:, :, rows.cpu()][:, :, :, cols.cpu()]
    assert torch.equal(out.cpu(), expected)


@pytest.mark.parametrize("path", ["reference", *KERNEL_BACKENDS])
def test_s3_keeps_the_lines_it_is_given(path):
    """Given ``lines``, every backend keeps exactly those (the draw fixed), not lines of its own."""
    device = TRITON_DEVICE if path == "triton" else "cpu"
    x = torch.randn(2, 3, 8, 8, device=device)
    rows, cols = torch.tensor([1, 2, 4, 7], device=device), torch.tensor([0, 3, 5, 6], device=device)
    with backend.use(path):
        out = s3_pool2d(x, training=True, lines=(rows, cols))
    assert torch.equal(out.cpu(), _stride1_max_map(x.cpu())[:, :, rows.cpu()][:, :, :, cols.cpu()])


@pytest.mark.parametrize("name", KERNEL_BACKENDS)
def test_s3_kernel_draw_is_uniform_over_subsets(name):
    """The kernels' draw (Philox keys ranked per block): 6000 blocks of 4 lines, 2 kept from each."""
    device = TRITON_DEVICE if name == "triton" else "cpu"
    lines = backend.module(name).s3_lines(backend.draw_seed(device), 4 * 6000, 2 * 6000, 4, 2, 0).cpu()
    kept = (lines.view(6000, 2) % 4).tolist()
    subsets = list(itertools.combinations(range(4), 2))
    counts = [kept.count(list(s)) for s in subsets]
    assert sum(counts) == 6000 and chisquare(counts).pvalue > P_MIN


@pytest.mark.skipif("cpp" not in KERNEL_BACKENDS, reason="needs the C++ kernels")
def test_s3_kernel_partial_block_draw_is_uniform():
    # 7 lines -> 3 outputs: 2 from the block 0-3, 1 from the partial block 4-6, uniformly
    draw = backend.module("cpp").s3_lines
    last = [draw(backend.draw_seed(), 7, 3, 4, 2, 0)[-1].item() for _ in range(3000)]
    counts = [last.count(i) for i in (4, 5, 6)]
    assert sum(counts) == 3000 and chisquare(counts).pvalue > P_MIN


def test_s3_draw_is_shared_by_batch_and_channels(kernels):
    x = torch.randn(1, 1, 16, 16, device=kernels).expand(5, 3, 16, 16).contiguous()
    out = create_pooler("s3", 3)(x)
    assert torch.equal(out, out[:1, :1].expand_as(out))


@pytest.mark.parametrize("size", [28, 14, 7, 32, 9])
def test_s3_eval_is_average_of_the_stride1_max_map(size, kernels):
    x = torch.randn(2, 3, size, size, device=kernels)
    out = create_pooler("s3", 3).eval()(x).cpu()
    x = x.cpu()
    n = (size - 2) // 2 + 1
    expected = F.avg_pool2d(_stride1_max_map(x), 2, 2)[..., :n, :n]
    torch.testing.assert_close(out, expected)


def test_s3_module_pools_with_its_own_grid_size():
    x = torch.rand(2, 3, 8, 8)
    torch.manual_seed(0)
    mine = create_pooler("s3", grid_size=2).train()(x)
    torch.manual_seed(0)
    assert torch.equal(mine, s3_pool2d(x, grid_size=2, training=True))


def test_s3_grid_size_is_refused_in_one_line_naming_it():
    with pytest.raises(ValueError, match=r"^grid_size must be .*, but got 0$"):
        create_pooler("s3", grid_size=0)
