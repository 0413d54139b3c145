// CPU kernels for gated/mixed, stochastic and S3 pooling (docs/design.md): one pass over each
// window, no (B, C, Ho, Wo, k*k) copies; the backward passes recompute what they need (the
// stochastic draw from its counter-based stream) instead of storing it.
#include "common.h"

namespace tdgs {
namespace {

template <typename scalar_t>
TDGS_INLINE scalar_t sigmoid(scalar_t v) {
  return scalar_t(1) / (scalar_t(1) + vexp(-v));
}

// One window of gated pooling: its maximum (and where, the first on ties), mean and gate logit
// mask . a + bias, over the window's own elements (bit j of `absent`: element j is padding).
template <typename scalar_t>
struct GatedWindow {
  scalar_t top, mean, logit;
  int64_t arg, count;

  TDGS_INLINE GatedWindow(const scalar_t* corner, const int64_t* offsets, int64_t kk, const scalar_t* mask,
                          scalar_t bias, uint64_t absent)
      : top(0), mean(0), logit(bias), arg(-1), count(0) {
    for (int64_t j = 0; j < kk; ++j) {
      if ((absent >> j) & 1) continue;
      const scalar_t a = corner[offsets[j]];
      const bool larger = arg < 0 || a > top;
      arg = larger ? j : arg;
      top = larger ? a : top;
      mean += a;
      logit += mask[j] * a;
      ++count;
    }
    mean /= static_cast<scalar_t>(count);
  }
};

// Gated pooling: out = mean + gate * (max - mean), gate = sigmoid(mask . a + bias) per window; the
// mask is (C or 1, k*k), the bias (C or 1). Mixed pooling is the case mask = 0, bias = its logit.
// x: the input padded by `pad` lines on every side.
at::Tensor gated_forward(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& bias,
                         int64_t kernel_size, int64_t stride, int64_t pad) {
  const Geometry g(x, kernel_size, stride, pad);
  const int64_t kk = g.window();
  TORCH_CHECK(mask.dim() == 2 && mask.size(1) == kk && mask.is_contiguous() && bias.is_contiguous() &&
                  (mask.size(0) == g.channels || mask.size(0) == 1) && bias.numel() == mask.size(0),
              "gated kernels: mask must be (C or 1, k*k) and bias (C or 1)");
  at::Tensor out = at::empty(g.output_sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_forward", [&] {
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* ms = mask.const_data_ptr<scalar_t>();
    const scalar_t* bs = bias.const_data_ptr<scalar_t>();
    scalar_t* os = out.mutable_data_ptr<scalar_t>();
    int64_t offsets[kMaxWindow];
    window_offsets(g, offsets);
    const bool shared = mask.size(0) == 1;
    parallel_flushed(0, g.batch * g.channels, plane_grain(g), [&](int64_t begin, int64_t end) {
      for_each_block(g, begin, end, [&](int64_t first, int64_t count, const Lanes& lanes) {
        for (int64_t l = 0; l < count; ++l) {
          const int64_t c = shared ? 0 : lanes.channel[l];
          const scalar_t* w = ms + c * kk;
          const GatedWindow<scalar_t> win(xs + lanes.corner[l], offsets, kk, w, bs[c], g.absent(lanes.cell[l] % g.plane_outputs()));
          os[first + l] = win.mean + sigmoid(win.logit) * (win.top - win.mean);
        }
      });
    });
  });
  return out;
}

// Returns d/dx and, per plane (B*C, k*k + 1), the sums of d/dmask (first k*k) and d/dbias (last).
std::tuple<at::Tensor, at::Tensor> gated_backward(const at::Tensor& grad, const at::Tensor& x,
                                                  const at::Tensor& mask, const at::Tensor& bias,
                                                  int64_t kernel_size, int64_t stride, int64_t pad) {
  const Geometry g(x, kernel_size, stride, pad);
  const int64_t kk = g.window();
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == at::IntArrayRef(g.output_sizes()), "gated_backward: bad grad");
  at::Tensor grad_x = g.tiles() ? at::empty_like(x) : at::zeros_like(x);
  at::Tensor grad_params = at::empty({g.batch * g.channels, kk + 1}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_backward", [&] {
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* gs = grad.const_data_ptr<scalar_t>();
    const scalar_t* ms = mask.const_data_ptr<scalar_t>();
    const scalar_t* bs = bias.const_data_ptr<scalar_t>();
    scalar_t* gxs = grad_x.mutable_data_ptr<scalar_t>();
    scalar_t* gps = grad_params.mutable_data_ptr<scalar_t>();
    int64_t offsets[kMaxWindow];
    window_offsets(g, offsets);
    const bool shared = mask.size(0) == 1, tiles = g.tiles();
    parallel_flushed(0, g.batch * g.channels, plane_grain(g), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = shared ? 0 : plane % g.channels;
        const scalar_t* w = ms + c * kk;
        scalar_t* gp = gps + plane * (kk + 1);
        for (int64_t j = 0; j <= kk; ++j) gp[j] = 0;
        for_each_block(g, plane, plane + 1, [&](int64_t first, int64_t count, const Lanes& lanes) {
          for (int64_t l = 0; l < count; ++l) {
            const scalar_t* corner = xs + lanes.corner[l];
            const uint64_t absent = g.absent(lanes.cell[l] % g.plane_outputs());
            const GatedWindow<scalar_t> win(corner, offsets, kk, w, bs[c], absent);
            const scalar_t gate = sigmoid(win.logit), go = gs[first + l];
            const scalar_t g_logit = go * (win.top - win.mean) * gate * (scalar_t(1) - gate);
            const scalar_t g_mean = go * (scalar_t(1) - gate) / static_cast<scalar_t>(win.count);
            scalar_t* gx = gxs + lanes.corner[l];
            for (int64_t j = 0; j < kk; ++j) {
              const scalar_t d = (absent >> j) & 1 ? scalar_t(0)
                                                   : g_mean + g_logit * w[j] + (j == win.arg ? go * gate : scalar_t(0));
              if (tiles)
                gx[offsets[j]] = d;
              else
                gx[offsets[j]] += d;
              gp[j] += g_logit * corner[offsets[j]];
            }
            gp[kk] += g_logit;
          }
        });
      }
    });
  });
  return {grad_x, grad_params};
}

// Index of the element stochastic pooling picks in a window: the first i with cdf_i > u * total,
// cdf over max(a, 0) (inverse CDF); -1 when the window sums to 0.
template <typename scalar_t>
inline int64_t stochastic_pick(const scalar_t* corner, const int64_t* offsets, int64_t kk, scalar_t u) {
  scalar_t total = 0;
  for (int64_t j = 0; j < kk; ++j) total += std::max(corner[offsets[j]], scalar_t(0));
  if (!(total > 0)) return -1;
  const scalar_t target = u * total;
  scalar_t cdf = 0;
  int64_t index = 0;
  for (int64_t j = 0; j < kk; ++j) {
    cdf += std::max(corner[offsets[j]], scalar_t(0));
    index += cdf <= target;
  }
  return std::min(index, kk - 1);
}

// Stochastic pooling's evaluation sums over a window, scaled by 1 / max(a) so that they cannot
// overflow: total = sum(p), weighted = sum(p * a), p = max(a, 0) * inv_peak (all 0 for a zero window).
template <typename scalar_t>
struct WeightedWindow {
  scalar_t inv_peak, total, weighted;

  TDGS_INLINE WeightedWindow(const scalar_t* corner, const int64_t* offsets, int64_t kk)
      : inv_peak(0), total(0), weighted(0) {
    scalar_t peak = 0;
    for (int64_t j = 0; j < kk; ++j) peak = std::max(peak, corner[offsets[j]]);
    if (!(peak > 0)) return;
    inv_peak = scalar_t(1) / std::max(peak, std::numeric_limits<scalar_t>::min());  // as the reference's clamp
    for (int64_t j = 0; j < kk; ++j) {
      const scalar_t a = corner[offsets[j]], p = std::max(a, scalar_t(0)) * inv_peak;
      total += p;
      weighted += p * a;
    }
  }
};

// Stochastic pooling. training: a_i with probability max(a_i, 0) / sum(max(a, 0)) (one uniform per
// window: uniform 0 of the window's Philox stream `seed`); eval: sum(p * a), p = max(a, 0) / sum.
// The backward pass draws the same uniforms again.
at::Tensor stochastic_forward(const at::Tensor& x, int64_t seed, int64_t kernel_size, int64_t stride,
                              bool training) {
  const Geometry g(x, kernel_size, stride);
  const int64_t kk = g.window();
  at::Tensor out = at::empty(g.output_sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stochastic_forward", [&] {
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    scalar_t* os = out.mutable_data_ptr<scalar_t>();
    int64_t offsets[kMaxWindow];
    window_offsets(g, offsets);
    parallel_flushed(0, g.batch * g.channels, plane_grain(g), [&](int64_t begin, int64_t end) {
      scalar_t u[kMaxWindow][kLanes];
      for_each_block(g, begin, end, [&](int64_t first, int64_t count, const Lanes& lanes) {
        if (training) window_uniforms_lanes(static_cast<uint64_t>(seed), static_cast<uint64_t>(first), 1, u);
        for (int64_t l = 0; l < count; ++l) {
          const scalar_t* corner = xs + lanes.corner[l];
          if (training) {
            const int64_t pick = stochastic_pick(corner, offsets, kk, u[0][l]);
            os[first + l] = pick < 0 ? scalar_t(0) : corner[offsets[pick]];
            continue;
          }
          const WeightedWindow<scalar_t> win(corner, offsets, kk);
          os[first + l] = win.total > 0 ? win.weighted / win.total : scalar_t(0);
        }
      });
    });
  });
  return out;
}

at::Tensor stochastic_backward(const at::Tensor& grad, const at::Tensor& x, int64_t seed, int64_t kernel_size,
                               int64_t stride, bool training) {
  const Geometry g(x, kernel_size, stride);
  const int64_t kk = g.window();
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == at::IntArrayRef(g.output_sizes()), "stochastic_backward: bad grad");
  at::Tensor grad_x = at::zeros_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stochastic_backward", [&] {
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* gs = grad.const_data_ptr<scalar_t>();
    scalar_t* gxs = grad_x.mutable_data_ptr<scalar_t>();
    int64_t offsets[kMaxWindow];
    window_offsets(g, offsets);
    parallel_flushed(0, g.batch * g.channels, plane_grain(g), [&](int64_t begin, int64_t end) {
      scalar_t u[kMaxWindow][kLanes];
      for_each_block(g, begin, end, [&](int64_t first, int64_t count, const Lanes& lanes) {
        if (training) window_uniforms_lanes(static_cast<uint64_t>(seed), static_cast<uint64_t>(first), 1, u);
        for (int64_t l = 0; l < count; ++l) {
          const scalar_t* corner = xs + lanes.corner[l];
          scalar_t* gx = gxs + lanes.corner[l];
          const scalar_t go = gs[first + l];
          if (training) {  // the gradient flows only to the sampled element
            const int64_t pick = stochastic_pick(corner, offsets, kk, u[0][l]);
            if (pick >= 0) gx[offsets[pick]] += go;
            continue;
          }
          // out = sum(w * a) / sum(w), w = max(a, 0): d/da_j = p_j + [a_j >= 0] (a_j - out) / sum(w)
          // ([a_j >= 0]: torch's clamp passes the gradient at 0)
          const WeightedWindow<scalar_t> win(corner, offsets, kk);
          if (!(win.total > 0)) continue;  // a window that sums to 0 outputs 0 whatever a is
          const scalar_t out = win.weighted / win.total, inv_total = scalar_t(1) / win.total;
          for (int64_t j = 0; j < kk; ++j) {
            const scalar_t a = corner[offsets[j]], p = std::max(a, scalar_t(0)) * win.inv_peak * inv_total;
            gx[offsets[j]] += go * (p + (a >= 0 ? (a - out) * inv_total * win.inv_peak : scalar_t(0)));
          }
        }
      });
    });
  });
  return grad_x;
}

// S3Pool's pooled map: out[b, c, i, j] = mean over p, q < m of the k x k maximum (padded with -inf
// past the edges) at (rows[i * m + p], cols[j * m + q]), over those inside the map. Training: m = 1
// and the sampled rows and columns; evaluation: m = s and all rows and columns (average pooling of
// the stride-1 max map; with padding a last block may reach past the map's edge).
// Offset (from the plane's start) of the largest element of the k x k window at (row, col), the
// first in row-major order on ties; the window is clipped at the plane's edges (the -inf padding).
// Branch-free for the common 2x2 window: the comparisons are data-dependent and unpredictable.
template <typename scalar_t>
TDGS_INLINE int64_t window_argmax(const scalar_t* plane, const Geometry& g, int64_t row, int64_t col) {
  int64_t best = row * g.width + col;
  if (g.k == 2 && row + 1 < g.height && col + 1 < g.width) {  // unrolled, branch-free selects
    const scalar_t* p = plane + best;
    // arithmetic on comparison results, not branches: the data are unpredictable
    const scalar_t m01 = std::max(p[0], p[1]), m23 = std::max(p[g.width], p[g.width + 1]);
    const int64_t right01 = p[1] > p[0], right23 = p[g.width + 1] > p[g.width], below = m23 > m01;
    return best + below * (g.width + right23) + (1 - below) * right01;
  }
  for (int64_t i = row; i < std::min(row + g.k, g.height); ++i)
    for (int64_t j = col; j < std::min(col + g.k, g.width); ++j)
      if (plane[i * g.width + j] > plane[best]) best = i * g.width + j;
  return best;
}

// The largest element of that window (the forward pass needs no index): a branch-free max chain.
template <typename scalar_t>
TDGS_INLINE scalar_t window_max(const scalar_t* plane, const Geometry& g, int64_t row, int64_t col) {
  const scalar_t* p = plane + row * g.width + col;
  if (g.k == 2 && row + 1 < g.height && col + 1 < g.width)
    return std::max(std::max(p[0], p[1]), std::max(p[g.width], p[g.width + 1]));
  scalar_t top = *p;
  for (int64_t i = row; i < std::min(row + g.k, g.height); ++i)
    for (int64_t j = col; j < std::min(col + g.k, g.width); ++j) top = std::max(top, plane[i * g.width + j]);
  return top;
}

// ---- S3 evaluation with a 2x2 window: average pooling (window and stride `repeat`) of the stride-1
// max map, computed row by row with contiguous loops (no scatter conflicts, so they vectorise).
// For the map position (r, c), which(r, c) in {0, 1, 2, 3} is the first largest of x[r][c],
// x[r][c+1], x[r+1][c], x[r+1][c+1] (-inf past the edges).
template <typename scalar_t>
struct MapRow {
  const scalar_t* top;  // row r
  const scalar_t* below;  // row r + 1, or nullptr past the last row
  int64_t width;

  TDGS_INLINE scalar_t at(const scalar_t* row, int64_t c) const {
    return row != nullptr && c < width ? row[c] : -std::numeric_limits<scalar_t>::infinity();
  }
  TDGS_INLINE scalar_t peak(int64_t c) const {
    return std::max(std::max(top[c], at(top, c + 1)), std::max(at(below, c), at(below, c + 1)));
  }
  TDGS_INLINE int which(int64_t c) const {
    return first_largest(top[c], at(top, c + 1), at(below, c), at(below, c + 1));
  }
  static TDGS_INLINE int first_largest(scalar_t v0, scalar_t v1, scalar_t v2, scalar_t v3) {
    const int right_top = v1 > v0, right_below = v3 > v2;
    return std::max(v2, v3) > std::max(v0, v1) ? 2 + right_below : right_top;
  }
  // Columns [0, interior()) have their whole window inside the map: no edge tests needed.
  int64_t interior(int64_t n) const { return below == nullptr ? 0 : std::min(n, width - 1); }
};

template <typename scalar_t>
void s3_eval_forward_2x2(const Geometry& g, const scalar_t* xs, scalar_t* os, int64_t repeat, int64_t out_h,
                         int64_t out_w) {
  const scalar_t scale = scalar_t(1) / static_cast<scalar_t>(repeat * repeat);
  parallel_flushed(0, g.batch * g.channels, std::max<int64_t>(1, 2048 / (out_h * out_w)), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> peaks(out_w * repeat);
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* xp = xs + plane * g.height * g.width;
      for (int64_t i = 0; i < out_h; ++i) {
        scalar_t* op = os + (plane * out_h + i) * out_w;
        for (int64_t j = 0; j < out_w; ++j) op[j] = 0;
        for (int64_t r = i * repeat; r < (i + 1) * repeat; ++r) {
          const MapRow<scalar_t> row{xp + r * g.width, r + 1 < g.height ? xp + (r + 1) * g.width : nullptr, g.width};
          const int64_t inner = row.interior(out_w * repeat);
          const scalar_t *top = row.top, *below = row.below;
          for (int64_t c = 0; c < inner; ++c)
            peaks[c] = std::max(std::max(top[c], top[c + 1]), std::max(below[c], below[c + 1]));
          for (int64_t c = inner; c < out_w * repeat; ++c) peaks[c] = row.peak(c);
          for (int64_t j = 0; j < out_w; ++j)
            for (int64_t q = 0; q < repeat; ++q) op[j] += peaks[j * repeat + q] * scale;
        }
      }
    }
  });
}

// The backward pass works on each plane as one flat array (row stride W), so that its loops are
// long even for small maps: every map position (r, c) of the first R = Ho * repeat rows passes its
// output's share of the gradient to the first largest element of its window.
template <typename scalar_t>
void s3_eval_backward_2x2(const Geometry& g, const scalar_t* xs, const scalar_t* gs, scalar_t* gxs, int64_t repeat,
                          int64_t out_h, int64_t out_w) {
  const scalar_t scale = scalar_t(1) / static_cast<scalar_t>(repeat * repeat);
  const int64_t W = g.width, R = out_h * repeat, C = out_w * repeat, n = R * W;
  const int64_t full_rows = std::min(R, g.height - 1);  // map rows that have a row below
  std::vector<int64_t> source(n);  // flat map position -> its output, or -1 past column C
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < W; ++c) source[r * W + c] = c < C ? (r / repeat) * out_w + c / repeat : -1;
  parallel_flushed(0, g.batch * g.channels, std::max<int64_t>(1, 2048 / (out_h * out_w)), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> share_buffer(n);
    std::vector<int32_t> which_buffer(n);
    scalar_t* __restrict share = share_buffer.data();
    int32_t* __restrict which = which_buffer.data();
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* __restrict xp = xs + plane * g.height * W;
      const scalar_t* __restrict go = gs + plane * out_h * out_w;
      scalar_t* __restrict gp = gxs + plane * g.height * W;
      // windows taken as whole 2x2 blocks (wrong at column W - 1, fixed just below)
      for (int64_t i = 0; i < full_rows * W - 1; ++i)
        which[i] = MapRow<scalar_t>::first_largest(xp[i], xp[i + 1], xp[i + W], xp[i + W + 1]);
      for (int64_t r = 0; r < R; ++r) {  // the clipped windows: last column, last row
        const MapRow<scalar_t> row{xp + r * W, r + 1 < g.height ? xp + (r + 1) * W : nullptr, W};
        if (r < full_rows)
          which[r * W + W - 1] = row.which(W - 1);
        else
          for (int64_t c = 0; c < W; ++c) which[r * W + c] = row.which(c);
      }
      for (int64_t i = 0; i < n; ++i) share[i] = source[i] >= 0 ? go[source[i]] * scale : scalar_t(0);
      // one pass per element of the window, so that no two lanes write the same place; a window
      // never picks an element past the map's edge, so those passes add zeros there
      for (int64_t i = 0; i < n; ++i) gp[i] += which[i] == 0 ? share[i] : scalar_t(0);
      for (int64_t i = 0; i < n - 1; ++i) gp[i + 1] += which[i] == 1 ? share[i] : scalar_t(0);
      for (int64_t i = 0; i < full_rows * W; ++i) gp[i + W] += which[i] == 2 ? share[i] : scalar_t(0);
      for (int64_t i = 0; i < full_rows * W - 1; ++i) gp[i + W + 1] += which[i] == 3 ? share[i] : scalar_t(0);
    }
  });
}

// The map positions that evaluation's block (i, j) averages: repeat x repeat, fewer where it
// reaches past the map's edge (with padding); 1 in training.
template <typename scalar_t>
TDGS_INLINE scalar_t block_size(const Geometry& g, int64_t repeat, int64_t i, int64_t j) {
  return static_cast<scalar_t>(std::min(repeat, g.height - i * repeat) * std::min(repeat, g.width - j * repeat));
}

// Whether evaluation's blocks all lie inside the map (always without padding).
bool whole_blocks(const Geometry& g, int64_t repeat, int64_t out_h, int64_t out_w) {
  return out_h * repeat <= g.height && out_w * repeat <= g.width;
}

// Whether lines are 0, 1, 2, ... (evaluation: every row or column of the max map).
bool consecutive(const at::Tensor& lines) {
  const int64_t* ls = lines.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < lines.numel(); ++i)
    if (ls[i] != i) return false;
  return true;
}

void check_lines(const at::Tensor& rows, const at::Tensor& cols, int64_t repeat, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(rows.dtype() == at::kLong && cols.dtype() == at::kLong && rows.is_contiguous() && cols.is_contiguous() &&
                  rows.numel() == out_h * repeat && cols.numel() == out_w * repeat,
              "s3 kernels: rows and cols must be int64 of length Ho * repeat and Wo * repeat");
}

at::Tensor s3_forward(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols, int64_t kernel_size,
                      int64_t repeat, int64_t out_h, int64_t out_w) {
  const Geometry g(x, kernel_size, 1, 0, /*clipped=*/true);
  check_lines(rows, cols, repeat, out_h, out_w);
  at::Tensor out = at::empty({g.batch, g.channels, out_h, out_w}, x.options());
  const int64_t* rs = rows.const_data_ptr<int64_t>();
  const int64_t* cs = cols.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "s3_forward", [&] {
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    scalar_t* os = out.mutable_data_ptr<scalar_t>();
    if (kernel_size == 2 && consecutive(rows) && consecutive(cols) && whole_blocks(g, repeat, out_h, out_w)) {
      s3_eval_forward_2x2(g, xs, os, repeat, out_h, out_w);
      return;
    }
    parallel_flushed(0, g.batch * g.channels, std::max<int64_t>(1, 2048 / (out_h * out_w)), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const scalar_t* xp = xs + plane * g.height * g.width;
        scalar_t* op = os + plane * out_h * out_w;
        for (int64_t i = 0; i < out_h; ++i)
          for (int64_t j = 0; j < out_w; ++j) {
            scalar_t sum = 0;
            for (int64_t p = 0; p < repeat; ++p)
              for (int64_t q = 0; q < repeat; ++q)
                if (rs[i * repeat + p] < g.height && cs[j * repeat + q] < g.width)
                  sum += window_max(xp, g, rs[i * repeat + p], cs[j * repeat + q]);
            op[i * out_w + j] = repeat == 1 ? sum : sum / block_size<scalar_t>(g, repeat, i, j);
          }
      }
    });
  });
  return out;
}

at::Tensor s3_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
                       int64_t kernel_size, int64_t repeat) {
  const Geometry g(x, kernel_size, 1, 0, /*clipped=*/true);
  const int64_t out_h = grad.size(2), out_w = grad.size(3);
  check_lines(rows, cols, repeat, out_h, out_w);
  TORCH_CHECK(grad.is_contiguous(), "s3_backward: grad must be contiguous");
  at::Tensor grad_x = at::zeros_like(x);
  const int64_t* rs = rows.const_data_ptr<int64_t>();
  const int64_t* cs = cols.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "s3_backward", [&] {
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* gs = grad.const_data_ptr<scalar_t>();
    scalar_t* gxs = grad_x.mutable_data_ptr<scalar_t>();
    if (kernel_size == 2 && consecutive(rows) && consecutive(cols) && whole_blocks(g, repeat, out_h, out_w)) {
      s3_eval_backward_2x2(g, xs, gs, gxs, repeat, out_h, out_w);
      return;
    }
    parallel_flushed(0, g.batch * g.channels, std::max<int64_t>(1, 2048 / (out_h * out_w)), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const scalar_t* xp = xs + plane * g.height * g.width;
        scalar_t* gp = gxs + plane * g.height * g.width;
        const scalar_t* go = gs + plane * out_h * out_w;
        // every selected (row, col) of the max map, in memory order, passes its output's share
        // of the gradient to its window's largest element
        for (int64_t i = 0; i < out_h; ++i)
          for (int64_t r = i * repeat; r < (i + 1) * repeat; ++r)
            for (int64_t j = 0; j < out_w; ++j) {
              const scalar_t share = go[i * out_w + j] / block_size<scalar_t>(g, repeat, i, j);
              for (int64_t c = j * repeat; c < (j + 1) * repeat; ++c)
                if (rs[r] < g.height && cs[c] < g.width) gp[window_argmax(xp, g, rs[r], cs[c])] += share;
            }
      }
    });
  });
  return grad_x;
}

// The `count` rows (axis 0) or columns (axis 1) S3Pool keeps from a map of `size` lines, for key
// `seed`: the map is cut into blocks of `grid_size` lines; block b (lines b * grid_size + m) gives
// the `take` lines whose keys u_m rank lowest (take = per_block, or fewer in the last blocks: only
// as many as are still needed and as the block holds), in ascending order. u_m is the float
// uniform of word m % 4 of Philox(counter b, m / 4, 2 + axis): the Triton kernels draw the same.
at::Tensor s3_lines(int64_t seed, int64_t size, int64_t count, int64_t grid_size, int64_t per_block, int64_t axis) {
  TORCH_CHECK(grid_size >= 1 && per_block >= 1 && per_block <= grid_size && count >= 0,
              "s3_lines: bad geometry");
  at::Tensor out = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  int64_t* lines = out.mutable_data_ptr<int64_t>();
  std::vector<float> keys(grid_size);
  uint32_t words[4][kLanes];
  for (int64_t block = 0, done = 0; done < count; ++block) {
    const int64_t start = block * grid_size;
    for (int64_t m = 0; m < grid_size; ++m) {
      if (m % 4 == 0) philox_lanes(static_cast<uint64_t>(block), static_cast<uint32_t>(m / 4),
                                   static_cast<uint32_t>(2 + axis), static_cast<uint64_t>(seed), words);
      keys[m] = start + m < size ? (static_cast<float>(words[m % 4][0] >> 9) + 0.5f) * (1.0f / 8388608.0f) : 2.0f;
    }
    const int64_t take = std::min({per_block, count - done, size - start});
    TORCH_CHECK(take > 0, "s3_lines: the map has too few lines");
    for (int64_t m = 0; m < grid_size; ++m) {  // ascending m: the chosen lines come out sorted
      int64_t rank = 0;
      for (int64_t q = 0; q < grid_size; ++q) rank += keys[q] < keys[m] || (keys[q] == keys[m] && q < m);
      if (rank < take) lines[done++] = start + m;
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tdgs_cpu, m) {
  m.def("s3_lines(int seed, int size, int count, int grid_size, int per_block, int axis) -> Tensor");
  m.def("gated_forward(Tensor x, Tensor mask, Tensor bias, int kernel_size, int stride, int pad) -> Tensor");
  m.def("gated_backward(Tensor grad, Tensor x, Tensor mask, Tensor bias, int kernel_size, int stride, int pad) -> (Tensor, Tensor)");
  m.def("stochastic_forward(Tensor x, int seed, int kernel_size, int stride, bool training) -> Tensor");
  m.def("stochastic_backward(Tensor grad, Tensor x, int seed, int kernel_size, int stride, bool training) -> Tensor");
  m.def("s3_forward(Tensor x, Tensor rows, Tensor cols, int kernel_size, int repeat, int out_h, int out_w) -> Tensor");
  m.def("s3_backward(Tensor grad, Tensor x, Tensor rows, Tensor cols, int kernel_size, int repeat) -> Tensor");
}

TORCH_LIBRARY_IMPL(tdgs_cpu, CompositeExplicitAutograd, m) { m.impl("s3_lines", &s3_lines); }

TORCH_LIBRARY_IMPL(tdgs_cpu, CPU, m) {
  m.impl("gated_forward", &gated_forward);
  m.impl("gated_backward", &gated_backward);
  m.impl("stochastic_forward", &stochastic_forward);
  m.impl("stochastic_backward", &stochastic_backward);
  m.impl("s3_forward", &s3_forward);
  m.impl("s3_backward", &s3_backward);
}

}  // namespace tdgs
