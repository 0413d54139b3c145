"""Gated (and mixed), stochastic and S3 pooling in Triton; same layout and arithmetic as the C++
kernels (``csrc/classic_kernels.cpp``): a program takes BLOCK windows as a (BLOCK, KK_PAD) tile,
maths in float32, backward passes recompute what they need (the random draws from their key)."""

import triton
import triton.language as tl

from .philox import uniform

# fmt: off
# (the kernels' long parameter lists stay a few lines each, not one line per parameter)

TINY = tl.constexpr(1.1754943508222875e-38)  # float32's smallest normal number (a kernel reads only constexpr globals)


@triton.jit
def _split(window, C, Ho, Wo):
    """(b, c, oh, ow) of flat output indices ``window``."""
    ow = window % Wo
    rest = window // Wo
    oh = rest % Ho
    rest = rest // Ho
    return rest // C, rest % C, oh, ow


@triton.jit
def _tile(x_ptr, b, c, row, col, live, H, W, sxb, sxc, sxh, sxw, K: tl.constexpr, KK_PAD: tl.constexpr):
    """The k x k windows with top-left corners (row, col), clipped at the H x W input's edges
    (padding, and S3's windows, reach past them): values (float32, 0 outside) and where they are,
    shape (BLOCK, KK_PAD); element j is (row + j // k, col + j % k)."""
    j = tl.arange(0, KK_PAD)[None, :]
    rows = row[:, None] + j // K
    cols = col[:, None] + j % K
    inside = live[:, None] & (j < K * K) & (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    a = tl.load(x_ptr + b[:, None] * sxb + c[:, None] * sxc + rows * sxh + cols * sxw, mask=inside, other=0.0)
    return a.to(tl.float32), rows, cols, inside


@triton.jit
def _store_grad(gx_ptr, b, c, rows, cols, where, value, sgb, sgc, sgh, sgw, OVERLAP: tl.constexpr):
    """Write (or, where windows overlap, atomically add to a float32 buffer) d/dx of a tile."""
    target = gx_ptr + b[:, None] * sgb + c[:, None] * sgc + rows * sgh + cols * sgw
    if OVERLAP:
        tl.atomic_add(target, value, mask=where)
    else:
        tl.store(target, value.to(gx_ptr.dtype.element_ty), mask=where)


# ---- gated and mixed: out = mean + sigmoid(mask . a + bias) * (max - mean) --------------------------


@triton.jit
def _gated_window(a, inside, live, w, bias, HAS_MASK: tl.constexpr):
    """(max, its first index, mean, gate, element count) of each window of a tile, over its own
    elements (padded positions carry no weight)."""
    values = tl.where(inside, a, float("-inf"))
    top = tl.where(live, tl.max(values, axis=1), 0.0)
    arg = tl.argmax(tl.where(values == values, values, float("-inf")), axis=1, tie_break_left=True)
    count = tl.maximum(tl.sum(inside.to(tl.float32), axis=1), 1.0)  # the window's own elements
    mean = tl.sum(a, axis=1) / count
    logit = bias
    if HAS_MASK:
        logit = logit + tl.sum(w * a, axis=1)
    return top, arg, mean, 1.0 / (1.0 + tl.exp(-logit)), count


@triton.jit
def gated_forward_kernel(x_ptr, mask_ptr, bias_ptr, out_ptr, windows, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw, smr,
                         smj, sbr, sob, soc, soh, sow, K: tl.constexpr, S: tl.constexpr, KK_PAD: tl.constexpr,
                         HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
    window = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = window < windows
    b, c, oh, ow = _split(window, C, Ho, Wo)
    a, rows, cols, inside = _tile(x_ptr, b, c, oh * S - P, ow * S - P, live, H, W, sxb, sxc, sxh, sxw, K, KK_PAD)
    j = tl.arange(0, KK_PAD)[None, :]
    w = a * 0.0
    if HAS_MASK:
        w = tl.load(mask_ptr + c[:, None] * smr + j * smj, mask=inside, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c * sbr, mask=live, other=0.0).to(tl.float32)
    top, arg, mean, gate, _ = _gated_window(a, inside, live, w, bias, HAS_MASK)
    out = mean + gate * (top - mean)
    tl.store(out_ptr + b * sob + c * soc + oh * soh + ow * sow, out.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def gated_backward_kernel(grad_ptr, x_ptr, mask_ptr, bias_ptr, gx_ptr, gp_ptr, C, H, W, P, Ho, Wo, sxb, sxc, sxh,
                          sxw, smr, smj,
                          sbr, sgb, sgc, sgh, sgw, sxgb, sxgc, sxgh, sxgw, K: tl.constexpr, S: tl.constexpr,
                          KK_PAD: tl.constexpr, HAS_MASK: tl.constexpr, OVERLAP: tl.constexpr, BLOCK: tl.constexpr):
    """One program per plane (b, c): d/dx of its windows, and its sums of d/dmask and d/dbias into
    row ``plane`` of ``gp_ptr`` (float32, (B*C, k*k + 1), or (B*C, 1) without a mask)."""
    plane = tl.program_id(0).to(tl.int64)
    b = plane // C
    c = plane % C
    j = tl.arange(0, KK_PAD)[None, :]
    w = tl.zeros((1, KK_PAD), tl.float32)
    if HAS_MASK:
        w = tl.load(mask_ptr + c * smr + j * smj, mask=j < K * K, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c * sbr).to(tl.float32)
    grad_mask = tl.zeros((KK_PAD,), tl.float32)
    grad_bias = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, Ho * Wo, BLOCK):
        position = start + tl.arange(0, BLOCK)
        live = position < Ho * Wo
        oh = position // Wo
        ow = position % Wo
        bs = b + position * 0
        cs = c + position * 0
        a, rows, cols, inside = _tile(x_ptr, bs, cs, oh * S - P, ow * S - P, live, H, W, sxb, sxc, sxh, sxw, K, KK_PAD)
        top, arg, mean, gate, count = _gated_window(a, inside, live, w, bias, HAS_MASK)
        g = tl.load(grad_ptr + b * sgb + c * sgc + oh * sgh + ow * sgw, mask=live, other=0.0).to(tl.float32)
        g_logit = g * (top - mean) * gate * (1.0 - gate)
        g_mean = g * (1.0 - gate) / count
        ga = g_mean[:, None] + g_logit[:, None] * w + tl.where(j == arg[:, None], (g * gate)[:, None], 0.0)
        _store_grad(gx_ptr, bs, cs, rows, cols, inside, ga, sxgb, sxgc, sxgh, sxgw, OVERLAP)
        grad_mask += tl.sum(g_logit[:, None] * a, axis=0)
        grad_bias += g_logit
    if HAS_MASK:
        tl.store(gp_ptr + plane * (K * K + 1) + tl.arange(0, KK_PAD), grad_mask, mask=tl.arange(0, KK_PAD) < K * K)
        tl.store(gp_ptr + plane * (K * K + 1) + K * K, tl.sum(grad_bias, axis=0))
    else:
        tl.store(gp_ptr + plane, tl.sum(grad_bias, axis=0))


# ---- stochastic: a_l with l ~ p = max(a, 0) / sum (training), sum(p * a) (evaluation) ---------------


@triton.jit
def _stochastic_pick(a, inside, window, seed_ptr, KK: tl.constexpr, KK_PAD: tl.constexpr):
    """(pick, total) of training: the first i with cdf_i > u * total over the weights max(a, 0),
    u the window's uniform (word 0 of Philox(window, 0, 0), as the C++ kernel)."""
    weight = tl.where(inside, tl.maximum(a, 0.0), 0.0)
    lo = (window & 0xFFFFFFFF).to(tl.uint32)
    zero = tl.zeros_like(lo)
    r0, _, _, _ = tl.philox(tl.load(seed_ptr), lo, (window >> 32).to(tl.uint32), zero, zero)
    total = tl.sum(weight, axis=1)
    below = (tl.cumsum(weight, axis=1) <= (uniform(r0) * total)[:, None]) & (tl.arange(0, KK_PAD)[None, :] < KK)
    total = tl.where(tl.max(tl.where(inside & (a != a), 1, 0), axis=1) > 0, float("nan"), total)  # NaN: outputs 0
    return tl.minimum(tl.sum(below.to(tl.int32), axis=1), KK - 1), total


@triton.jit
def _stochastic_mean(a, inside):
    """(inv_peak, total, out) of evaluation: out = sum(p * a) / sum(p), p = max(a, 0) / max(a)
    (scaled so that the sums cannot overflow), 0 for a window that sums to 0."""
    weight = tl.where(inside, tl.maximum(a, 0.0), 0.0)
    peak = tl.max(weight, axis=1)
    inv_peak = tl.where(peak > 0, 1.0 / tl.maximum(peak, TINY), 0.0)
    p = weight * inv_peak[:, None]
    total = tl.sum(p, axis=1)
    out = tl.where(total > 0, tl.sum(p * a, axis=1) / total, 0.0)
    return inv_peak, total, tl.where(tl.max(tl.where(inside & (a != a), 1, 0), axis=1) > 0, float("nan"), out)


@triton.jit
def stochastic_forward_kernel(x_ptr, seed_ptr, out_ptr, windows, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw, sob, soc,
                              soh, sow, K: tl.constexpr, S: tl.constexpr, KK_PAD: tl.constexpr, TRAINING: tl.constexpr,
                              BLOCK: tl.constexpr):
    window = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = window < windows
    b, c, oh, ow = _split(window, C, Ho, Wo)
    a, rows, cols, inside = _tile(x_ptr, b, c, oh * S - P, ow * S - P, live, H, W, sxb, sxc, sxh, sxw, K, KK_PAD)
    if TRAINING:
        pick, total = _stochastic_pick(a, inside, window, seed_ptr, K * K, KK_PAD)
        picked = tl.sum(tl.where(tl.arange(0, KK_PAD)[None, :] == pick[:, None], a, 0.0), axis=1)
        out = tl.where(total > 0, picked, 0.0)
    else:
        _, _, out = _stochastic_mean(a, inside)
    tl.store(out_ptr + b * sob + c * soc + oh * soh + ow * sow, out.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def stochastic_backward_kernel(grad_ptr, x_ptr, seed_ptr, gx_ptr, windows, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw,
                               sgb, sgc, sgh, sgw, sxgb, sxgc, sxgh, sxgw, K: tl.constexpr, S: tl.constexpr,
                               KK_PAD: tl.constexpr, TRAINING: tl.constexpr, OVERLAP: tl.constexpr,
                               BLOCK: tl.constexpr):
    window = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = window < windows
    b, c, oh, ow = _split(window, C, Ho, Wo)
    a, rows, cols, inside = _tile(x_ptr, b, c, oh * S - P, ow * S - P, live, H, W, sxb, sxc, sxh, sxw, K, KK_PAD)
    g = tl.load(grad_ptr + b * sgb + c * sgc + oh * sgh + ow * sgw, mask=live, other=0.0).to(tl.float32)
    if TRAINING:  # the gradient flows only to the sampled element
        pick, total = _stochastic_pick(a, inside, window, seed_ptr, K * K, KK_PAD)
        ga = tl.where((tl.arange(0, KK_PAD)[None, :] == pick[:, None]) & (total > 0)[:, None], g[:, None], 0.0)
    else:  # out = sum(w a) / sum(w), w = max(a, 0): d/da_j = p_j + [a_j >= 0] (a_j - out) / sum(w)
        inv_peak, total, out = _stochastic_mean(a, inside)
        scale = tl.where(total > 0, inv_peak / total, 0.0)  # 1 / sum(w)
        ga = g[:, None] * (tl.maximum(a, 0.0) + tl.where(a >= 0, a - out[:, None], 0.0)) * scale[:, None]
    _store_grad(gx_ptr, b, c, rows, cols, inside, ga, sxgb, sxgc, sxgh, sxgw, OVERLAP)


# ---- S3: maxima of k x k windows (clipped at the edges) at sampled rows and columns -----------------


@triton.jit
def _s3_corner(lines_ptr, oh, ow, p, q, Ho, S: tl.constexpr, TRAINING: tl.constexpr):
    """The stride-1 max map position that output (oh, ow) reads: the drawn row and column in
    training (``lines_ptr``: the Ho rows then the Wo columns); (oh * s + p, ow * s + q) in
    evaluation, which averages over p, q < s."""
    if TRAINING:
        return tl.load(lines_ptr + oh), tl.load(lines_ptr + Ho + ow)
    return oh * S + p, ow * S + q


@triton.jit
def _s3_block_size(oh, ow, H, W, P, REPEAT: tl.constexpr):
    """The positions of the (H + p) x (W + p) max map that output (oh, ow) averages: REPEAT x
    REPEAT, fewer where a block reaches past the map's edge (with padding); 1 in training."""
    rows = tl.minimum(H + P - oh * REPEAT, REPEAT)
    cols = tl.minimum(W + P - ow * REPEAT, REPEAT)
    return (rows * cols).to(tl.float32)


@triton.jit
def s3_forward_kernel(x_ptr, lines_ptr, out_ptr, windows, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw, sob, soc, soh, sow,
                      K: tl.constexpr, S: tl.constexpr, KK_PAD: tl.constexpr, TRAINING: tl.constexpr,
                      BLOCK: tl.constexpr):
    window = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = window < windows
    b, c, oh, ow = _split(window, C, Ho, Wo)
    REPEAT: tl.constexpr = 1 if TRAINING else S
    total = tl.zeros((BLOCK,), tl.float32)
    for p in tl.static_range(REPEAT):
        for q in tl.static_range(REPEAT):
            row, col = _s3_corner(lines_ptr, oh, ow, p, q, Ho, S, TRAINING)
            a, rows, cols, inside = _tile(x_ptr, b, c, row - P, col - P, live, H, W, sxb, sxc, sxh, sxw, K, KK_PAD)
            nan = tl.max(tl.where(inside & (a != a), 1, 0), axis=1) > 0  # max pooling keeps a NaN
            peak = tl.where(nan, float("nan"), tl.max(tl.where(inside, a, float("-inf")), axis=1))
            total += tl.where((row < H + P) & (col < W + P), peak, 0.0)  # past the map: nothing
    out = total / _s3_block_size(oh, ow, H, W, P, REPEAT)
    tl.store(out_ptr + b * sob + c * soc + oh * soh + ow * sow, out.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def s3_backward_kernel(grad_ptr, x_ptr, lines_ptr, gx_ptr, windows, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw,
                       sgb, sgc, sgh, sgw, sxgb, sxgc, sxgh, sxgw, K: tl.constexpr, S: tl.constexpr,
                       KK_PAD: tl.constexpr, TRAINING: tl.constexpr, BLOCK: tl.constexpr):
    """Each window passes its share of the output's gradient to its first largest element
    (atomically: the stride-1 windows overlap)."""
    window = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = window < windows
    b, c, oh, ow = _split(window, C, Ho, Wo)
    REPEAT: tl.constexpr = 1 if TRAINING else S
    g = tl.load(grad_ptr + b * sgb + c * sgc + oh * sgh + ow * sgw, mask=live, other=0.0).to(tl.float32)
    share = g / _s3_block_size(oh, ow, H, W, P, REPEAT)
    j = tl.arange(0, KK_PAD)[None, :]
    for p in tl.static_range(REPEAT):
        for q in tl.static_range(REPEAT):
            row, col = _s3_corner(lines_ptr, oh, ow, p, q, Ho, S, TRAINING)
            a, rows, cols, inside = _tile(x_ptr, b, c, row - P, col - P, live, H, W, sxb, sxc, sxh, sxw, K, KK_PAD)
            values = tl.where(inside, a, float("-inf"))
            arg = tl.argmax(tl.where(values == values, values, float("-inf")), axis=1, tie_break_left=True)
            target = (j == arg[:, None]) & inside & ((row < H + P) & (col < W + P))[:, None]
            _store_grad(gx_ptr, b, c, rows, cols, target, share[:, None] + a * 0.0, sxgb, sxgc, sxgh, sxgw, True)
