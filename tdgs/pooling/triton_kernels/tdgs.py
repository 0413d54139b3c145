"""TDGS pooling in Triton: one program per block of BLOCK windows, each window a row of a
(BLOCK, KK_PAD) tile (KK_PAD = k*k rounded up to a power of two; 4 for the deck's 2x2 windows, whose
noise then takes one Philox call per window). Maths in float32 whatever the input's dtype. The same
arithmetic as the C++ kernel: the Gumbel-max pick is the argmax of exp(z - max z) / E, E = -log u,
and softmax(z + g) is that weight over its sum."""

import triton
import triton.language as tl

from .philox import window_uniforms

# fmt: off
# (the kernels' long parameter lists stay a few lines each, not one line per parameter)

# globals a kernel reads must be constexprs (the interpreter does not check it; compiling does)
NONE, L1, L2, MAX = (tl.constexpr(code) for code in range(4))  # normalize
HARD, SOFT, EXPECTATION, ARGMAX = (tl.constexpr(code) for code in range(4))  # mode
IDENTITY, RELU, SOFTPLUS = (tl.constexpr(code) for code in range(3))  # rectifier: T = rectifier(theta) + eps
TINY = tl.constexpr(1.1754943508222875e-38)  # float32's smallest normal number, as the reference's clamp


@triton.jit
def _no_nan(v):
    """``v`` with NaN as -inf, for argmax (the outputs of windows holding a NaN are set to NaN)."""
    return tl.where(v == v, v, float("-inf"))


@triton.jit
def _temperature(theta, eps, RECTIFIER: tl.constexpr):
    """(T, dT/dtheta): ``T = rectifier(theta) + eps``; softplus as torch's (linear above 20)."""
    if RECTIFIER == RELU:
        return tl.maximum(theta, 0.0) + eps, tl.where(theta > 0, 1.0, 0.0)
    if RECTIFIER == SOFTPLUS:
        soft = tl.where(theta > 20.0, theta, tl.maximum(theta, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(theta))))
        return soft + eps, tl.where(theta > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-theta)))
    return theta + eps, theta * 0.0 + 1.0


@triton.jit
def _window_state(x_ptr, t_ptr, seed_ptr, window, live, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw, stc, sth, stw, eps,
                  K: tl.constexpr, S: tl.constexpr, KK_PAD: tl.constexpr, NORMALIZE: tl.constexpr, MODE: tl.constexpr,
                  RECTIFIER: tl.constexpr):
    """Everything the forward and backward passes need about windows ``window`` (shape (BLOCK,));
    ``t_ptr`` holds theta, ``T = rectifier(theta) + eps``."""
    ow = window % Wo
    rest = window // Wo
    oh = rest % Ho
    rest = rest // Ho
    c = rest % C
    b = rest // C
    j = tl.arange(0, KK_PAD)[None, :]
    row = oh[:, None] * S - P + j // K  # (BLOCK, KK_PAD)
    col = ow[:, None] * S - P + j % K
    inside = live[:, None] & (j < K * K) & (row >= 0) & (row < H) & (col >= 0) & (col < W)  # padding: outside
    a = tl.load(x_ptr + b[:, None] * sxb + c[:, None] * sxc + row * sxh + col * sxw, mask=inside, other=0.0)
    a = a.to(tl.float32)
    theta = tl.load(t_ptr + c * stc + oh * sth + ow * stw, mask=live, other=1.0).to(tl.float32)  # (BLOCK,)
    temperature, slope = _temperature(theta, eps, RECTIFIER)
    inv_t = 1.0 / temperature
    # n = a * inv_peak * inv_scaled: divided by max|a| first, so that the norms cannot overflow
    if NORMALIZE == NONE:
        inv_peak = tl.full(inv_t.shape, 1.0, tl.float32)
        inv_scaled = inv_peak
        peak_j = tl.zeros(inv_t.shape, tl.int32)
        n = a
    else:
        magnitude = tl.abs(a)
        peak = tl.max(magnitude, axis=1)
        peak_j = tl.argmax(_no_nan(magnitude), axis=1, tie_break_left=True)
        inv_peak = tl.where(peak > 0, 1.0 / tl.maximum(peak, TINY), 0.0)
        if NORMALIZE == MAX:
            inv_scaled = tl.where(peak > 0, 1.0, 0.0)
        else:
            v = a * inv_peak[:, None]
            if NORMALIZE == L1:
                scaled = tl.sum(tl.abs(v), axis=1)
            else:
                scaled = tl.sqrt(tl.sum(v * v, axis=1))
            inv_scaled = tl.where(peak > 0, 1.0 / scaled, 0.0)
        n = a * inv_peak[:, None] * inv_scaled[:, None]
    z = tl.where(inside, n * inv_t[:, None], float("-inf"))
    if MODE == ARGMAX:
        pick = tl.argmax(_no_nan(z), axis=1, tie_break_left=True)
        y = z * 0.0
        soft = inv_t * 0.0
    else:
        top = tl.max(z, axis=1)
        weight = tl.exp(z - tl.where(live, top, 0.0)[:, None])  # 0 past the window
        if MODE == HARD or MODE == SOFT:
            weight = weight / -tl.log(window_uniforms(tl.load(seed_ptr), window, KK_PAD))  # exp(z + g - max z)
        pick = tl.argmax(_no_nan(weight), axis=1, tie_break_left=True)
        y = weight / tl.sum(weight, axis=1)[:, None]
        soft = tl.sum(a * y, axis=1)
    picked = tl.sum(tl.where(j == pick[:, None], a, 0.0), axis=1)
    out = picked if MODE == HARD or MODE == ARGMAX else soft
    invalid = inv_t + tl.sum(a - a, axis=1)  # NaN if the window holds a NaN or an infinity, or T is NaN
    out = tl.where(invalid != invalid, float("nan"), out)
    return a, n, y, soft, pick, peak_j, inv_t, inv_peak, inv_scaled, out, b, c, row, col, inside, slope


@triton.jit
def tdgs_forward_kernel(x_ptr, t_ptr, seed_ptr, out_ptr, windows, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw, stc, sth, stw,
                        sob, soc, soh, sow, eps, K: tl.constexpr, S: tl.constexpr, KK_PAD: tl.constexpr,
                        NORMALIZE: tl.constexpr, MODE: tl.constexpr, RECTIFIER: tl.constexpr, BLOCK: tl.constexpr):
    window = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = window < windows
    state = _window_state(x_ptr, t_ptr, seed_ptr, window, live, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw, stc, sth,
                          stw, eps, K, S, KK_PAD, NORMALIZE, MODE, RECTIFIER)
    out = state[9]
    ow = window % Wo
    oh = (window // Wo) % Ho
    c = (window // (Wo * Ho)) % C
    b = window // (Wo * Ho * C)
    tl.store(out_ptr + b * sob + c * soc + oh * soh + ow * sow, out.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def tdgs_backward_kernel(grad_ptr, x_ptr, t_ptr, seed_ptr, gx_ptr, gt_ptr, windows, C, H, W, P, Ho, Wo,
                         sxb, sxc, sxh, sxw, stc, sth, stw, sgb, sgc, sgh, sgw, sxgb, sxgc, sxgh, sxgw, eps,
                         K: tl.constexpr, S: tl.constexpr, KK_PAD: tl.constexpr, NORMALIZE: tl.constexpr,
                         MODE: tl.constexpr, RECTIFIER: tl.constexpr, OVERLAP: tl.constexpr, BLOCK: tl.constexpr):
    """d/dx into ``gx_ptr`` (stored, or added atomically where windows overlap) and d/dtheta of every
    window into ``gt_ptr`` (float32, (B, C, Ho, Wo) contiguous). Straight-through: the gradient of
    sum(a * y), y = softmax(z + g), through a (also directly through the pick) and T = rectifier(theta) + eps."""
    window = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = window < windows
    a, n, y, soft, pick, peak_j, inv_t, inv_peak, inv_scaled, out, b, c, row, col, inside, slope = _window_state(
        x_ptr, t_ptr, seed_ptr, window, live, C, H, W, P, Ho, Wo, sxb, sxc, sxh, sxw, stc, sth, stw, eps,
        K, S, KK_PAD, NORMALIZE, MODE, RECTIFIER,
    )
    ow = window % Wo
    oh = (window // Wo) % Ho
    g = tl.load(grad_ptr + b * sgb + c * sgc + oh * sgh + ow * sgw, mask=live, other=0.0).to(tl.float32)
    j = tl.arange(0, KK_PAD)[None, :]
    if MODE == HARD or MODE == ARGMAX:
        ga = tl.where(j == pick[:, None], g[:, None], 0.0)
    else:
        ga = g[:, None] * y
    grad_t = g * 0.0
    if MODE != ARGMAX:
        gz = g[:, None] * y * (a - soft[:, None])  # d/dz of sum(a * softmax(z + g)); z = n / T
        gz_n = tl.sum(gz * n, axis=1)
        gn = gz * inv_t[:, None]
        gn_n = tl.sum(gn * n, axis=1)
        grad_t = -gz_n * inv_t * inv_t
        sign = tl.where(a > 0, 1.0, tl.where(a < 0, -1.0, 0.0))
        if NORMALIZE == L2:
            gn = gn - n * gn_n[:, None]
        if NORMALIZE == L1:
            gn = gn - sign * gn_n[:, None]
        if NORMALIZE == MAX:
            gn = gn - tl.where(j == peak_j[:, None], sign * gn_n[:, None], 0.0)
        if NORMALIZE != NONE:
            gn = gn * inv_scaled[:, None] * inv_peak[:, None]
        ga = ga + gn
    target = gx_ptr + b[:, None] * sxgb + c[:, None] * sxgc + row * sxgh + col * sxgw
    if OVERLAP:  # an input element in several windows: float32 buffer, atomic adds
        tl.atomic_add(target, ga, mask=inside)
    else:
        tl.store(target, ga.to(gx_ptr.dtype.element_ty), mask=inside)
    tl.store(gt_ptr + window, grad_t * slope, mask=live)
