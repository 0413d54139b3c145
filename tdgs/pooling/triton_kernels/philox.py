"""Random numbers inside the Triton kernels: the same counter-based Philox4x32-10 stream as the C++
kernels (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), so that both
backends draw identical uniforms for the same key, and a backward pass regenerates its forward
pass's noise from the key instead of storing it."""

import triton
import triton.language as tl


@triton.jit
def uniform(word):
    """A float32 in the open interval (0, 1) from 32 random bits: (top 23 bits + 1/2) / 2^23, one
    bit short of float32's precision so that the largest value stays below 1 (as the C++ kernels)."""
    return ((word >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)


@triton.jit
def window_uniforms(seed, window, KK_PAD: tl.constexpr):
    """The uniforms u[w, j] of windows ``window`` (int64, shape (BLOCK,)), shape (BLOCK, KK_PAD):
    word j % 4 of Philox(counter = (w, j // 4, 0), key = seed)."""
    lo = (window & 0xFFFFFFFF).to(tl.uint32)
    hi = (window >> 32).to(tl.uint32)
    if KK_PAD == 4:  # 2x2 windows: one Philox call per window gives its four words
        zero = tl.zeros_like(lo)
        r0, r1, r2, r3 = tl.philox(seed, lo, hi, zero, zero)
        words = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (lo.shape[0], 4))  # (BLOCK, 4): r0..r3
    else:
        j = tl.arange(0, KK_PAD)[None, :]
        group = tl.zeros_like(lo)[:, None] + (j // 4).to(tl.uint32)  # (BLOCK, KK_PAD)
        r0, r1, r2, r3 = tl.philox(seed, lo[:, None] + group * 0, hi[:, None] + group * 0, group, group * 0)
        lane = j % 4
        words = tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3)))
    return uniform(words)


@triton.jit
def window_uniforms_kernel(seed_ptr, out_ptr, windows, WINDOW: tl.constexpr, KK_PAD: tl.constexpr, BLOCK: tl.constexpr):
    """Writes the (windows, WINDOW) uniforms of the stream (tests rebuild the kernels' noise with it)."""
    window = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    u = window_uniforms(tl.load(seed_ptr), window, KK_PAD)
    j = tl.arange(0, KK_PAD)[None, :]
    tl.store(out_ptr + window[:, None] * WINDOW + j, u, mask=(window[:, None] < windows) & (j < WINDOW))


@triton.jit
def s3_line(seed, index, axis, size, count, GRID: tl.constexpr, PER_BLOCK: tl.constexpr, G_PAD: tl.constexpr):
    """The map line (row for ``axis`` 0, column for 1) that S3Pool keeps as its output line ``index``
    of ``count``, from a map of ``size`` lines (all of shape (BLOCK,)): output lines come
    ``PER_BLOCK`` per block of ``GRID`` map lines; block b keeps the ``take`` lines m whose keys u_m
    (word m % 4 of Philox(b, m // 4, 2 + axis)) rank lowest, in ascending order; lines past the map
    never count. The C++ ``s3_lines`` draws the same."""
    block = index // PER_BLOCK
    rank_wanted = index % PER_BLOCK
    m = tl.arange(0, G_PAD)[None, :]
    lo = (block & 0xFFFFFFFF).to(tl.uint32)[:, None] + tl.zeros((1, G_PAD), tl.uint32)  # (BLOCK, G_PAD)
    hi = (block >> 32).to(tl.uint32)[:, None] + tl.zeros((1, G_PAD), tl.uint32)
    group = (m // 4).to(tl.uint32) + tl.zeros_like(lo)
    stream = (2 + axis).to(tl.uint32)[:, None] + tl.zeros_like(lo)
    r0, r1, r2, r3 = tl.philox(seed, lo, hi, group, stream)
    lane = m % 4
    start = block[:, None] * GRID
    key = uniform(tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3))))
    key = tl.where((start + m < size[:, None]) & (m < GRID), key, 2.0)  # (BLOCK, G_PAD)
    # rank of each key among its block's keys, ties broken by position
    other = tl.reshape(key, (key.shape[0], 1, G_PAD))
    mine = tl.reshape(key, (key.shape[0], G_PAD, 1))
    q = tl.arange(0, G_PAD)[None, None, :]
    earlier = (other < mine) | ((other == mine) & (q < tl.arange(0, G_PAD)[None, :, None]))
    rank = tl.sum(earlier.to(tl.int32), axis=2)  # (BLOCK, G_PAD)
    take = tl.minimum(tl.minimum(count - block * PER_BLOCK, PER_BLOCK), size - block * GRID)
    chosen = (rank < take[:, None]) & (m < GRID)
    # the wanted chosen line: the one with exactly rank_wanted chosen lines before it
    before = tl.cumsum(chosen.to(tl.int32), axis=1) - chosen.to(tl.int32)
    hit = chosen & (before == rank_wanted[:, None])
    return block * GRID + tl.sum(tl.where(hit, m, 0), axis=1)


@triton.jit
def s3_lines_kernel(
    seed_ptr,
    out_ptr,
    H,
    W,
    Ho,
    Wo,
    GRID: tl.constexpr,
    PER_BLOCK: tl.constexpr,
    G_PAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Writes the Ho rows, then the Wo columns, that S3Pool keeps: (Ho + Wo,) int64. A draw is
    shared by the whole batch and all channels, so it is made once per call, not per window."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    axis = (i >= Ho).to(tl.int64)
    index = tl.where(axis == 1, i - Ho, i)
    size = tl.where(axis == 1, W, H).to(tl.int64)
    count = tl.where(axis == 1, Wo, Ho).to(tl.int64)
    line = s3_line(tl.load(seed_ptr), index, axis, size, count, GRID, PER_BLOCK, G_PAD)
    tl.store(out_ptr + i, line, mask=i < Ho + Wo)
