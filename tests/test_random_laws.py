"""The random law of every random pooler on every backend this machine has, the pure-PyTorch
reference included (the ``backends`` fixture: a new backend joins the list and inherits every
check): TDGS picks with probability softmax(z) for each window normalisation, in training and with
eval_mode=sample, its soft sample is Gumbel-softmax's, a huge temperature picks uniformly;
stochastic pooling picks in proportion to the values; S3 draws its lines uniformly. And each kernel
backend's law against the reference's, sample against sample (homogeneity), per pooler.
Seeded, with P_MIN as the rejection level."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import KERNEL_BACKENDS, TRITON_DEVICE
from scipy.stats import chi2_contingency, chisquare, ks_2samp

from tdgs.pooling import backend, create_pooler, s3_pool2d
from tdgs.pooling.s3 import kernel_lines, sampled_lines
from tdgs.pooling.tdgs import NORMALIZATIONS

P_MIN = 0.01  # a seeded statistical test fails below this p-value
N = 20000  # windows per law
VALUES = (0.2, 0.5, 0.9, 1.4)  # one 2x2 window, all positive


def normalized(a: torch.Tensor, normalize: str) -> torch.Tensor:
    """The window normalisations of docs/design.md, written out independently of the package."""
    scale = {"none": 1.0, "l1": a.abs().sum(), "l2": a.norm(), "max": a.abs().amax()}[normalize]
    return a / scale


def windows(device, values=VALUES, n=N) -> torch.Tensor:
    """``n`` copies of one 2x2 window: (n, 1, 2, 2)."""
    return torch.tensor(values, device=device).view(1, 1, 2, 2).repeat(n, 1, 1, 1)


def picks(out: torch.Tensor, values=VALUES) -> list[int]:
    """How often each window value was output."""
    out = out.flatten()
    counts = [int((out == v).sum()) for v in torch.tensor(values, device=out.device)]
    assert sum(counts) == out.numel()  # nothing else was output
    return counts


def tdgs_with_temperature(device, temperature: float, **options):
    """A TDGS pooler with one temperature (theta = T - eps)."""
    pool = create_pooler("tdgs", 1, granularity="layer", **options).to(device)
    with torch.no_grad():
        pool.theta.fill_(temperature - pool.eps)
    return pool


def tdgs_picks(device, normalize="l2", eval_mode=None) -> list[int]:
    pool = tdgs_with_temperature(device, 0.3, normalize=normalize, **({"eval_mode": eval_mode} if eval_mode else {}))
    with torch.no_grad():
        return picks(pool.train(eval_mode is None)(windows(device)))


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_tdgs_picks_follow_softmax_of_z(normalize, backends):
    probs = torch.softmax(normalized(torch.tensor(VALUES, dtype=torch.float64), normalize) / 0.3, -1)
    assert chisquare(tdgs_picks(backends, normalize), f_exp=(probs * N).numpy()).pvalue > P_MIN


def test_tdgs_eval_mode_sample_draws_as_training_does(backends):
    probs = torch.softmax(normalized(torch.tensor(VALUES, dtype=torch.float64), "l2") / 0.3, -1)
    assert chisquare(tdgs_picks(backends, eval_mode="sample"), f_exp=(probs * N).numpy()).pvalue > P_MIN


@pytest.mark.parametrize("normalize", ["l2", "none"])
def test_tdgs_soft_sample_is_gumbel_softmaxs(normalize, backends):
    """hard=False outputs sum(a_i y_i), y = softmax(z + g): with a = (0, 0, 0, 1) that is y_4, whose
    law is compared with torch's own F.gumbel_softmax (two-sample Kolmogorov-Smirnov)."""
    values = (0.0, 0.0, 0.0, 1.0)
    pool = tdgs_with_temperature(backends, 0.7, normalize=normalize, hard=False)
    with torch.no_grad():
        y4 = pool(windows(backends, values, 5000)).flatten().cpu().double()
    z = normalized(torch.tensor(values, dtype=torch.float64), normalize) / 0.7
    generator_state = torch.get_rng_state()
    torch.manual_seed(1234)  # independent draws for the reference law
    expected = F.gumbel_softmax(z.expand(5000, 4), tau=1.0, hard=False)[:, 3]
    torch.set_rng_state(generator_state)
    assert ks_2samp(y4.numpy(), expected.numpy()).pvalue > P_MIN


def test_tdgs_huge_temperature_picks_uniformly(backends):
    pool = tdgs_with_temperature(backends, 1e6)
    with torch.no_grad():
        assert chisquare(picks(pool(windows(backends)))).pvalue > P_MIN


def test_stochastic_picks_in_proportion_to_the_values(backends):
    with torch.no_grad():
        counts = picks(create_pooler("stochastic", 1)(windows(backends)))
    values = torch.tensor(VALUES, dtype=torch.float64)
    assert chisquare(counts, f_exp=(values / values.sum() * N).numpy()).pvalue > P_MIN


def s3_lines(path: str, device, size=8, blocks=2000) -> list[tuple[int, ...]]:
    """The rows S3 keeps in ``blocks`` draws of a size-8 map (2 of each block of 4), as the pooler draws them."""
    n = (size - 2) // 2 + 1
    kept = []
    for _ in range(blocks // 2):
        if path == "reference":
            rows = sampled_lines(size, n, 4, 2)
        else:
            rows, _ = kernel_lines(backend.draw_seed(device), size, size)
        rows = rows.cpu().view(-1, 2) % 4  # (blocks of this draw, 2)
        kept += [tuple(r) for r in rows.tolist()]
    return kept


def test_s3_keeps_every_pair_of_rows_of_a_block_alike(backends):
    """A map whose rows fall (row r holds 10 (H - r) + column / 10): its stride-1 max map keeps each
    row's tens, so an output's values say which rows were kept; each pair of a block's 4 rows is kept
    as often as any other (600 blocks a draw, 5 draws)."""
    height = 4 * 600
    rows, cols = torch.meshgrid(torch.arange(float(height)), torch.arange(8.0), indexing="ij")
    x = (10 * (height - rows) + cols / 10).view(1, 1, height, 8).to(backends)
    counts = dict.fromkeys(itertools.combinations(range(4), 2), 0)
    with torch.no_grad():
        for _ in range(5):
            kept = height - torch.div(s3_pool2d(x, training=True)[0, 0, :, 0], 10, rounding_mode="floor")
            for pair in (kept.long().cpu().view(-1, 2) % 4).tolist():  # 2 rows of each block of 4
                counts[tuple(pair)] += 1
    assert sum(counts.values()) == 3000 and chisquare(list(counts.values())).pvalue > P_MIN


@pytest.mark.parametrize("name", KERNEL_BACKENDS)
@pytest.mark.parametrize("pooler", ["tdgs", "stochastic"])
def test_a_kernel_backends_picks_match_the_references(pooler, name):
    """The kernels' draws and the reference's follow one law (not the same numbers): their pick
    counts are homogeneous (chi-square test of the 2 x 4 contingency table)."""
    counts = []
    for path in ("reference", name):
        device = TRITON_DEVICE if path == "triton" else "cpu"
        with backend.use(path), torch.no_grad():
            pool = tdgs_with_temperature(device, 0.3) if pooler == "tdgs" else create_pooler("stochastic", 1)
            counts.append(picks(pool.to(device)(windows(device))))
    assert chi2_contingency(counts).pvalue > P_MIN


@pytest.mark.parametrize("name", KERNEL_BACKENDS)
def test_a_kernel_backends_s3_lines_match_the_references(name):
    device = TRITON_DEVICE if name == "triton" else "cpu"
    subsets = list(itertools.combinations(range(4), 2))
    counts = [[draws.count(s) for s in subsets] for draws in (s3_lines("reference", "cpu"), s3_lines(name, device))]
    assert chi2_contingency(counts).pvalue > P_MIN


@pytest.mark.parametrize(
    "name, options",
    [("stochastic", {}), ("s3", {}), ("tdgs", {"eval_mode": "expectation"}), ("tdgs", {"eval_mode": "argmax"})],
    ids=["stochastic", "s3", "tdgs-expectation", "tdgs-argmax"],
)
def test_evaluation_that_does_not_sample_leaves_torchs_generator_alone(name, options, backends):
    """So evaluating between training steps does not change what training draws next."""
    pool = create_pooler(name, 3, **options)
    x = torch.rand(2, 3, 8, 8, device=backends)
    pool(x)  # sizes TDGS's temperatures
    pool.eval()
    before = torch.get_rng_state(), torch.cuda.get_rng_state() if backends == "cuda" else None
    pool(x)
    after = torch.get_rng_state(), torch.cuda.get_rng_state() if backends == "cuda" else None
    assert torch.equal(before[0], after[0]) and (before[1] is None or torch.equal(before[1], after[1]))
