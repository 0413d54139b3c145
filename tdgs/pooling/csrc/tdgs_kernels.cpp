// TDGS pooling on the CPU (docs/design.md), one pass over each window with no (B, C, Ho, Wo, k*k)
// copies. The Gumbel-max pick i* = argmax(z_j + g_j), g_j = -log(E_j), E_j = -log(u_j) ~ Exp(1), is
// computed as the argmax of w_j = exp(z_j - max z) / E_j, and softmax(z + g) as w / sum(w): the same
// numbers with one logarithm per element instead of two. The noise comes from the counter-based
// Philox stream, so the backward pass regenerates it instead of storing it.
#include "common.h"

namespace tdgs {
namespace {

enum Normalize : int64_t { kNone = 0, kL1 = 1, kL2 = 2, kMax = 3 };
enum Mode : int64_t { kHard = 0, kSoft = 1, kExpectation = 2, kArgmax = 3 };

// kLanes windows, lane-innermost. KK: the window size k*k when fixed at compile time (4 for the
// common 2x2 window, which lets the compiler keep whole blocks in registers), else 0.
template <typename scalar_t, int KK>
struct Block {
  static constexpr int64_t rows = KK > 0 ? KK : kMaxWindow;
  scalar_t a[rows][kLanes];        // raw window values
  scalar_t n[rows][kLanes];        // normalised values, n = a / norm
  scalar_t y[rows][kLanes];        // softmax(z + g) (sampling) or softmax(z) (expectation)
  scalar_t inv_t[kLanes];          // 1 / T
  scalar_t inv_peak[kLanes];       // n = a * inv_peak * inv_scaled: 1 / max|a| (0 for an all-zero
  scalar_t inv_scaled[kLanes];     // window, whose n is 0) and 1 / norm(a / max|a|)
  scalar_t soft[kLanes];           // sum(a * y)
  scalar_t out[kLanes];            // the pooled value
  int32_t peak[kLanes];            // index of the largest |a| (normalize=max)
  int32_t pick[kLanes];            // the chosen element (hard sample, argmax)
  uint64_t absent[kLanes];         // bit j: element j is padding (a = 0, never picked, no weight)
};

template <typename scalar_t, int KK>
inline void normalize_block(Block<scalar_t, KK>& b, int64_t kk_, int64_t normalize) {
  const int64_t kk = KK > 0 ? KK : kk_;
  if (normalize == kNone) {
    for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) b.n[j][l] = b.a[j][l];
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) b.inv_peak[l] = 1, b.inv_scaled[l] = 1;
    return;
  }
  scalar_t peak[kLanes], sum[kLanes];
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) peak[l] = 0, sum[l] = 0, b.peak[l] = 0;
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      const scalar_t m = std::abs(b.a[j][l]);
      const bool larger = m > peak[l];
      peak[l] = larger ? m : peak[l];
      b.peak[l] = larger ? static_cast<int32_t>(j) : b.peak[l];
    }
  // scale by 1 / peak first (values in [-1, 1]) so that the norms cannot overflow
  scalar_t* inv_peak = b.inv_peak;
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l)  // as the reference: 1 / max(peak, tiny), no overflow on denormals
    inv_peak[l] = peak[l] > 0 ? scalar_t(1) / std::max(peak[l], std::numeric_limits<scalar_t>::min()) : scalar_t(0);
  if (normalize != kMax)
    for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const scalar_t v = b.a[j][l] * inv_peak[l];
        sum[l] += normalize == kL1 ? std::abs(v) : v * v;
      }
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    const scalar_t scaled = normalize == kL1 ? sum[l] : normalize == kL2 ? std::sqrt(sum[l]) : scalar_t(1);
    b.inv_scaled[l] = peak[l] > 0 ? scalar_t(1) / scaled : scalar_t(0);
  }
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) b.n[j][l] = b.a[j][l] * inv_peak[l] * b.inv_scaled[l];
}

// The forward pass of a block whose first window has flat output index `first`. Without
// `need_y` a hard sample only finds its pick (the backward pass needs y).
template <typename scalar_t, int KK>
inline void forward_block(Block<scalar_t, KK>& b, int64_t kk_, int64_t normalize, int64_t mode, uint64_t seed,
                          uint64_t first, bool need_y = true) {
  const int64_t kk = KK > 0 ? KK : kk_;
  normalize_block(b, kk, normalize);
  scalar_t top[kLanes];
  scalar_t (*z)[kLanes] = b.y;  // z is only needed until the weights replace it
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) top[l] = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      z[j][l] = (b.absent[l] >> j) & 1 ? -std::numeric_limits<scalar_t>::infinity() : b.n[j][l] * b.inv_t[l];
      const bool larger = z[j][l] > top[l];
      top[l] = larger ? z[j][l] : top[l];
      b.pick[l] = larger || j == 0 ? static_cast<int32_t>(j) : b.pick[l];  // j == 0: even if z is NaN
      b.out[l] = larger || j == 0 ? b.a[j][l] : b.out[l];
    }
  if (mode == kArgmax) return;
  if (mode == kExpectation) {
    for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) z[j][l] = vexp(z[j][l] - top[l]);
  } else {
    scalar_t u[Block<scalar_t, KK>::rows][kLanes];
    window_uniforms_lanes(seed, first, kk, u);
    if (mode == kHard && !need_y) {
      // argmax of w_j = e_j / E_j without dividing: w_j > w_best <=> e_j E_best > e_best E_j
      scalar_t best_e[kLanes], best_E[kLanes];
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) best_e[l] = 0, best_E[l] = 1;
      for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l) {
          const scalar_t e = vexp(z[j][l] - top[l]), E = -vlog(u[j][l]);
          const bool larger = e * best_E[l] > best_e[l] * E;
          best_e[l] = larger ? e : best_e[l];
          best_E[l] = larger ? E : best_E[l];
          b.out[l] = larger ? b.a[j][l] : b.out[l];
        }
      return;
    }
    scalar_t heaviest[kLanes];
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) heaviest[l] = -1;
    for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        z[j][l] = vexp(z[j][l] - top[l]) / -vlog(u[j][l]);  // exp(z + g - max z)
        const bool larger = z[j][l] > heaviest[l];
        heaviest[l] = larger ? z[j][l] : heaviest[l];
        b.pick[l] = larger ? static_cast<int32_t>(j) : b.pick[l];
        b.out[l] = larger ? b.a[j][l] : b.out[l];
      }
  }
  scalar_t total[kLanes];
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) total[l] = 0, b.soft[l] = 0;
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) total[l] += b.y[j][l];
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) total[l] = scalar_t(1) / total[l];
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      b.y[j][l] *= total[l];
      b.soft[l] += b.a[j][l] * b.y[j][l];
    }
  if (mode != kHard)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) b.out[l] = b.soft[l];
}

// Gradients of a block (after forward_block): ga = d(out)/d(a) * grad, returns d(out)/d(T) * grad
// in grad_t. Straight-through: as if the output were sum(a * y), through y = softmax(z + g).
template <typename scalar_t, int KK>
inline void backward_block(const Block<scalar_t, KK>& b, int64_t kk_, int64_t normalize, int64_t mode,
                           const scalar_t* grad, scalar_t (*ga)[kLanes], scalar_t* grad_t) {
  const int64_t kk = KK > 0 ? KK : kk_;
  const bool direct_pick = mode == kHard || mode == kArgmax;
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l)
      ga[j][l] = direct_pick ? (b.pick[l] == j ? grad[l] : scalar_t(0)) : grad[l] * b.y[j][l];
  if (mode == kArgmax) return;
  scalar_t gn[Block<scalar_t, KK>::rows][kLanes], gz_n[kLanes], gn_n[kLanes];
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) gz_n[l] = 0, gn_n[l] = 0;
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      // d/dz_j of sum(a * softmax(z + g)) = y_j (a_j - sum(a * y)); z = n / T
      const scalar_t gz = grad[l] * b.y[j][l] * (b.a[j][l] - b.soft[l]);
      gz_n[l] += gz * b.n[j][l];
      gn[j][l] = gz * b.inv_t[l];
      gn_n[l] += gn[j][l] * b.n[j][l];
    }
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) grad_t[l] = -gz_n[l] * b.inv_t[l] * b.inv_t[l];
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      const scalar_t a = b.a[j][l];
      const scalar_t sign = a > 0 ? scalar_t(1) : a < 0 ? scalar_t(-1) : scalar_t(0);
      scalar_t g = gn[j][l];
      if (normalize == kL2) g -= b.n[j][l] * gn_n[l];
      if (normalize == kL1) g -= sign * gn_n[l];
      if (normalize == kMax) g -= b.peak[l] == j ? sign * gn_n[l] : scalar_t(0);
      ga[j][l] += g * b.inv_scaled[l] * b.inv_peak[l];  // in this order: no overflow on denormals
    }
}

// ---- Fast path: float, 2x2 windows. One SIMD loop over the lanes with the four window values
// unrolled inside it, so that every intermediate stays in a register; the normalisation and the
// mode are template parameters. Same arithmetic as the generic path above.
template <int64_t NORM, int64_t MODE, bool GRAD>
void lanes_2x2(const float (*a)[kLanes], const float* inv_t, const float (*u)[kLanes], const float* grad,
               float* out, float (*ga)[kLanes], float* grad_t) {
  constexpr bool sampling = MODE == kHard || MODE == kSoft;
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    float v[4], n[4], z[4], w[4];
    #pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) v[j] = a[j][l];
    // normalise: n = a * inv_peak * inv_scaled (n = 0 for an all-zero window)
    float inv_peak = 1.0f, inv_scaled = 1.0f;
    int peak_j = 0;
    if constexpr (NORM != kNone) {
      float peak = std::abs(v[0]);
      #pragma GCC unroll 4
      for (int j = 1; j < 4; ++j) {
        const float m = std::abs(v[j]);
        peak_j = m > peak ? j : peak_j;
        peak = m > peak ? m : peak;
      }
      inv_peak = peak > 0 ? 1.0f / std::max(peak, std::numeric_limits<float>::min()) : 0.0f;
      if constexpr (NORM != kMax) {
        float sum = 0;
        #pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const float s = v[j] * inv_peak;
          sum += NORM == kL1 ? std::abs(s) : s * s;
        }
        inv_scaled = peak > 0 ? 1.0f / (NORM == kL1 ? sum : std::sqrt(sum)) : 0.0f;
      }
    }
    float top = -std::numeric_limits<float>::infinity();
    int pick = 0;
    #pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      n[j] = NORM == kNone ? v[j] : v[j] * inv_peak * inv_scaled;
      z[j] = n[j] * inv_t[l];
      pick = z[j] > top ? j : pick;
      top = z[j] > top ? z[j] : top;
    }
    if constexpr (MODE == kArgmax) {
      const float picked = pick == 0 ? v[0] : pick == 1 ? v[1] : pick == 2 ? v[2] : v[3];
      if constexpr (!GRAD) {
        out[l] = picked;
      } else {
        #pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) ga[j][l] = pick == j ? grad[l] : 0.0f;
        grad_t[l] = 0;
      }
      continue;
    }
    if constexpr (MODE == kHard && !GRAD) {  // the pick only: argmax e_j / E_j, no division
      float best_e = 0, best_E = 1, picked = v[0];
      #pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const float e = vexp(z[j] - top), E = -vlog(u[j][l]);
        const bool larger = e * best_E > best_e * E;
        best_e = larger ? e : best_e;
        best_E = larger ? E : best_E;
        picked = larger ? v[j] : picked;
      }
      out[l] = picked;
      continue;
    }
    float total = 0, heaviest = -1, picked = v[0];
    #pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      w[j] = vexp(z[j] - top);
      if constexpr (sampling) w[j] /= -vlog(u[j][l]);
      picked = w[j] > heaviest ? v[j] : picked;
      pick = w[j] > heaviest ? j : pick;
      heaviest = w[j] > heaviest ? w[j] : heaviest;
      total += w[j];
    }
    const float inv_total = 1.0f / total;
    float soft = 0;
    #pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      w[j] *= inv_total;  // y
      soft += v[j] * w[j];
    }
    if constexpr (!GRAD) {
      out[l] = MODE == kHard ? picked : soft;
      continue;
    }
    const float g = grad[l];
    float gn[4], gz_n = 0, gn_n = 0;
    #pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const float gz = g * w[j] * (v[j] - soft);
      gz_n += gz * n[j];
      gn[j] = gz * inv_t[l];
      gn_n += gn[j] * n[j];
    }
    grad_t[l] = -gz_n * inv_t[l] * inv_t[l];
    #pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const float sign = v[j] > 0 ? 1.0f : v[j] < 0 ? -1.0f : 0.0f;
      float d = gn[j];
      if constexpr (NORM == kL2) d -= n[j] * gn_n;
      if constexpr (NORM == kL1) d -= sign * gn_n;
      if constexpr (NORM == kMax) d -= peak_j == j ? sign * gn_n : 0.0f;
      if constexpr (NORM != kNone) d = d * inv_scaled * inv_peak;
      const float direct = MODE == kHard ? (pick == j ? g : 0.0f) : g * w[j];
      ga[j][l] = direct + d;
    }
  }
}

using LanesFn = void (*)(const float (*)[kLanes], const float*, const float (*)[kLanes], const float*, float*,
                         float (*)[kLanes], float*);

template <bool GRAD>
LanesFn lanes_2x2_for(int64_t normalize, int64_t mode) {
  static constexpr LanesFn table[4][4] = {
      {lanes_2x2<kNone, kHard, GRAD>, lanes_2x2<kNone, kSoft, GRAD>, lanes_2x2<kNone, kExpectation, GRAD>, lanes_2x2<kNone, kArgmax, GRAD>},
      {lanes_2x2<kL1, kHard, GRAD>, lanes_2x2<kL1, kSoft, GRAD>, lanes_2x2<kL1, kExpectation, GRAD>, lanes_2x2<kL1, kArgmax, GRAD>},
      {lanes_2x2<kL2, kHard, GRAD>, lanes_2x2<kL2, kSoft, GRAD>, lanes_2x2<kL2, kExpectation, GRAD>, lanes_2x2<kL2, kArgmax, GRAD>},
      {lanes_2x2<kMax, kHard, GRAD>, lanes_2x2<kMax, kSoft, GRAD>, lanes_2x2<kMax, kExpectation, GRAD>, lanes_2x2<kMax, kArgmax, GRAD>}};
  return table[normalize][mode];
}

Geometry check_args(const at::Tensor& x, const at::Tensor& temperature, int64_t kernel_size, int64_t stride,
                int64_t pad, int64_t normalize, int64_t mode) {
  const Geometry g(x, kernel_size, stride, pad);
  TORCH_CHECK(temperature.dim() == 3 && temperature.size(0) == g.channels &&
                  temperature.size(1) == g.out_h && temperature.size(2) == g.out_w,
              "tdgs kernels: temperature must be (C, Ho, Wo), got ", temperature.sizes());
  TORCH_CHECK(temperature.scalar_type() == x.scalar_type(), "tdgs kernels: dtype mismatch");
  TORCH_CHECK(normalize >= kNone && normalize <= kMax, "tdgs kernels: bad normalize ", normalize);
  TORCH_CHECK(mode >= kHard && mode <= kArgmax, "tdgs kernels: bad mode ", mode);
  return g;
}

// Offsets into the temperature of every (c, oh, ow) cell.
std::vector<int64_t> temperature_offsets(const Geometry& g, const at::Tensor& temperature) {
  std::vector<int64_t> offsets(g.channels * g.plane_outputs());
  for (int64_t c = 0; c < g.channels; ++c)
    for (int64_t oh = 0; oh < g.out_h; ++oh)
      for (int64_t ow = 0; ow < g.out_w; ++ow)
        offsets[(c * g.out_h + oh) * g.out_w + ow] =
            c * temperature.stride(0) + oh * temperature.stride(1) + ow * temperature.stride(2);
  return offsets;
}

// Loads the windows and inverse temperatures of a block (lanes past the block's windows repeat its
// last window; their results are not used).
template <typename scalar_t, int KK>
inline void load_block(Block<scalar_t, KK>& b, const Geometry& g, const scalar_t* xs, const scalar_t* ts,
                       const int64_t* t_offsets, const int64_t* offsets, const Lanes& lanes) {
  const int64_t kk = KK > 0 ? KK : g.window();
  for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) b.a[j][l] = xs[lanes.corner[l] + offsets[j]];
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) b.inv_t[l] = scalar_t(1) / ts[t_offsets[lanes.cell[l]]];
  for (int64_t l = 0; l < kLanes; ++l) b.absent[l] = g.absent(lanes.cell[l] % g.plane_outputs());
}

template <typename scalar_t, int KK>
void forward_kernel(const Geometry& g, const at::Tensor& x, const at::Tensor& temperature, int64_t seed,
                    int64_t normalize, int64_t mode, at::Tensor& out) {
  const scalar_t* xs = x.const_data_ptr<scalar_t>();
  const scalar_t* ts = temperature.const_data_ptr<scalar_t>();
  scalar_t* os = out.mutable_data_ptr<scalar_t>();
  int64_t offsets[kMaxWindow];
  window_offsets(g, offsets);
  const std::vector<int64_t> t_offsets = temperature_offsets(g, temperature);
  [[maybe_unused]] const LanesFn fast = lanes_2x2_for<false>(normalize, mode);
  parallel_flushed(0, g.batch * g.channels, plane_grain(g), [&](int64_t begin, int64_t end) {
    Block<scalar_t, KK> b;
    for_each_block(g, begin, end, [&](int64_t first, int64_t count, const Lanes& lanes) {
      load_block(b, g, xs, ts, t_offsets.data(), offsets, lanes);
      bool fast_done = false;
      if constexpr (std::is_same_v<scalar_t, float> && KK == 4) {
        if (g.pad == 0) {  // the fast path knows no padding
          if (mode == kHard || mode == kSoft) window_uniforms_lanes(static_cast<uint64_t>(seed), static_cast<uint64_t>(first), 4, b.y);
          fast(b.a, b.inv_t, b.y, nullptr, b.out, nullptr, nullptr);
          fast_done = true;
        }
      }
      if (!fast_done)
        forward_block(b, g.window(), normalize, mode, static_cast<uint64_t>(seed), static_cast<uint64_t>(first), false);
      // a NaN anywhere in the window (or T) gives NaN, as in the reference
      const int64_t kk = KK > 0 ? KK : g.window();
      for (int64_t j = 0; j < kk; ++j)
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l) b.inv_t[l] += b.a[j][l] - b.a[j][l];  // NaN if a is NaN (or infinite)
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l)
        b.out[l] = b.inv_t[l] != b.inv_t[l] ? std::numeric_limits<scalar_t>::quiet_NaN() : b.out[l];
      for (int64_t l = 0; l < count; ++l) os[first + l] = b.out[l];
    });
  });
}

// x: the input padded by `pad` lines (zeros) on every side.
at::Tensor tdgs_forward(const at::Tensor& x, const at::Tensor& temperature, int64_t seed,
                        int64_t kernel_size, int64_t stride, int64_t pad, int64_t normalize, int64_t mode) {
  const Geometry g = check_args(x, temperature, kernel_size, stride, pad, normalize, mode);
  at::Tensor out = at::empty(g.output_sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tdgs_forward", [&] {
    if (g.window() == 4)
      forward_kernel<scalar_t, 4>(g, x, temperature, seed, normalize, mode, out);
    else
      forward_kernel<scalar_t, 0>(g, x, temperature, seed, normalize, mode, out);
  });
  return out;
}

template <typename scalar_t, int KK>
void backward_kernel(const Geometry& g, const at::Tensor& grad, const at::Tensor& x, const at::Tensor& temperature,
                     int64_t seed, int64_t normalize, int64_t mode, at::Tensor& grad_x, at::Tensor& grad_t) {
  const scalar_t* xs = x.const_data_ptr<scalar_t>();
  const scalar_t* gs = grad.const_data_ptr<scalar_t>();
  const scalar_t* ts = temperature.const_data_ptr<scalar_t>();
  scalar_t* gxs = grad_x.mutable_data_ptr<scalar_t>();
  scalar_t* gts = grad_t.mutable_data_ptr<scalar_t>();
  int64_t offsets[kMaxWindow];
  window_offsets(g, offsets);
  const int64_t kk = g.window();
  const std::vector<int64_t> t_offsets = temperature_offsets(g, temperature);
  [[maybe_unused]] const LanesFn fast = lanes_2x2_for<true>(normalize, mode);
  // a task owns whole planes, so overlapping windows (stride < kernel_size) never race
  parallel_flushed(0, g.batch * g.channels, plane_grain(g), [&](int64_t begin, int64_t end) {
    Block<scalar_t, KK> b;
    scalar_t ga[Block<scalar_t, KK>::rows][kLanes], grad_block[kLanes], grad_t_block[kLanes];
    for_each_block(g, begin, end, [&](int64_t first, int64_t count, const Lanes& lanes) {
      load_block(b, g, xs, ts, t_offsets.data(), offsets, lanes);
      for (int64_t l = 0; l < kLanes; ++l) grad_block[l] = l < count ? gs[first + l] : scalar_t(0);
      bool fast_done = false;
      if constexpr (std::is_same_v<scalar_t, float> && KK == 4) {
        if (g.pad == 0) {  // the fast path knows no padding
          if (mode == kHard || mode == kSoft) window_uniforms_lanes(static_cast<uint64_t>(seed), static_cast<uint64_t>(first), 4, b.y);
          fast(b.a, b.inv_t, b.y, grad_block, nullptr, ga, grad_t_block);
          fast_done = true;
        }
      }
      if (!fast_done) {
        forward_block(b, kk, normalize, mode, static_cast<uint64_t>(seed), static_cast<uint64_t>(first));
        backward_block(b, kk, normalize, mode, grad_block, ga, grad_t_block);
      }
      for (int64_t l = 0; l < count; ++l) {
        if (g.tiles())  // every input element is in exactly one window
          for (int64_t j = 0; j < kk; ++j) gxs[lanes.corner[l] + offsets[j]] = ga[j][l];
        else
          for (int64_t j = 0; j < kk; ++j) gxs[lanes.corner[l] + offsets[j]] += ga[j][l];
        gts[first + l] = mode == kArgmax ? scalar_t(0) : grad_t_block[l];
      }
    });
  });
}

// Returns d/dx and the per-window d/dT, shape (B, C, Ho, Wo) (the caller sums it over the batch).
std::tuple<at::Tensor, at::Tensor> tdgs_backward(const at::Tensor& grad, const at::Tensor& x,
                                                 const at::Tensor& temperature, int64_t seed,
                                                 int64_t kernel_size, int64_t stride, int64_t pad,
                                                 int64_t normalize, int64_t mode) {
  const Geometry g = check_args(x, temperature, kernel_size, stride, pad, normalize, mode);
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == at::IntArrayRef(g.output_sizes()) &&
                  grad.scalar_type() == x.scalar_type(),
              "tdgs_backward: grad must be a contiguous (B, C, Ho, Wo) tensor of the input's dtype");
  at::Tensor grad_x = g.tiles() ? at::empty_like(x) : at::zeros_like(x);
  at::Tensor grad_t = at::empty(g.output_sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tdgs_backward", [&] {
    if (g.window() == 4)
      backward_kernel<scalar_t, 4>(g, grad, x, temperature, seed, normalize, mode, grad_x, grad_t);
    else
      backward_kernel<scalar_t, 0>(g, grad, x, temperature, seed, normalize, mode, grad_x, grad_t);
  });
  return {grad_x, grad_t};
}

// The (windows, k*k) uniforms the kernels use for the stream `seed` (tests rebuild the noise).
at::Tensor window_uniforms(int64_t seed, int64_t windows, int64_t window_size, at::ScalarType dtype) {
  TORCH_CHECK(window_size >= 1 && window_size <= kMaxWindow, "window_uniforms: bad window_size ", window_size);
  at::Tensor out = at::empty({windows, window_size}, at::TensorOptions().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES(dtype, "window_uniforms", [&] {
    scalar_t* os = out.mutable_data_ptr<scalar_t>();
    scalar_t u[kMaxWindow][kLanes];
    for (int64_t first = 0; first < windows; first += kLanes) {
      window_uniforms_lanes(static_cast<uint64_t>(seed), static_cast<uint64_t>(first), window_size, u);
      for (int64_t l = 0; l < std::min(kLanes, windows - first); ++l)
        for (int64_t j = 0; j < window_size; ++j) os[(first + l) * window_size + j] = u[j][l];
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tdgs_cpu, m) {
  m.def("tdgs_forward(Tensor x, Tensor temperature, int seed, int kernel_size, int stride, int pad, int normalize, int mode) -> Tensor");
  m.def("tdgs_backward(Tensor grad, Tensor x, Tensor temperature, int seed, int kernel_size, int stride, int pad, int normalize, int mode) -> (Tensor, Tensor)");
  m.def("window_uniforms(int seed, int windows, int window_size, ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(tdgs_cpu, CPU, m) {
  m.impl("tdgs_forward", &tdgs_forward);
  m.impl("tdgs_backward", &tdgs_backward);
}

TORCH_LIBRARY_IMPL(tdgs_cpu, CompositeExplicitAutograd, m) { m.impl("window_uniforms", &window_uniforms); }

}  // namespace tdgs
