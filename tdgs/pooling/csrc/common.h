// Shared pieces of the CPU pooling kernels: geometry, the Philox random stream and vectorisable
// exp/log. Kernels work on blocks of kLanes windows laid out lane-innermost, so that the compiler
// turns every per-window step into SIMD instructions.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif



// The vector math must be inlined into the lane loops, or they cannot be vectorised.
#define TDGS_INLINE inline __attribute__((always_inline))

namespace tdgs {

constexpr int64_t kMaxWindow = 64;  // largest k*k (k <= 8)
constexpr int64_t kLanes = 16;      // windows per block

// Geometry of a (B, C, H, W) -> (B, C, Ho, Wo) pooling with a k x k window and stride s. With
// `pad`, x is the input already padded by `pad` lines on every side: the windows' elements there
// are absent (see absent()). `clipped`: windows are clipped at the edges (S3's), so the input may
// be smaller than one.
struct Geometry {
  int64_t batch, channels, height, width, out_h, out_w, k, s, pad;

  Geometry(const at::Tensor& x, int64_t k_, int64_t s_, int64_t pad_ = 0, bool clipped = false) : k(k_), s(s_), pad(pad_) {
    TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "tdgs kernels: input must be a contiguous (B, C, H, W)");
    TORCH_CHECK(k >= 1 && k * k <= kMaxWindow, "tdgs kernels: kernel_size must be in 1..8, got ", k);
    TORCH_CHECK(s >= 1, "tdgs kernels: stride must be >= 1, got ", s);
    batch = x.size(0);
    channels = x.size(1);
    height = x.size(2);
    width = x.size(3);
    TORCH_CHECK(clipped || (height >= k && width >= k), "tdgs kernels: input smaller than the window");
    out_h = std::max<int64_t>(0, height - k) / s + 1;
    out_w = std::max<int64_t>(0, width - k) / s + 1;
  }
  int64_t window() const { return k * k; }
  // Bit j set: element j of the window of output cell `position` (oh * Wo + ow) lies in the padding.
  uint64_t absent(int64_t position) const {
    if (pad == 0) return 0;
    const int64_t row = (position / out_w) * s, col = (position % out_w) * s;
    uint64_t bits = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const bool outside = row + i < pad || row + i >= height - pad || col + j < pad || col + j >= width - pad;
        bits |= static_cast<uint64_t>(outside) << (i * k + j);
      }
    return bits;
  }
  // the windows cover the input exactly once (stride = kernel_size, sizes divisible)
  bool tiles() const { return s == k && out_h * k == height && out_w * k == width; }
  int64_t plane_outputs() const { return out_h * out_w; }
  std::vector<int64_t> output_sizes() const { return {batch, channels, out_h, out_w}; }
};

// Flushes denormal floats to zero in this thread while alive (x86 MXCSR FTZ+DAZ, Arm FPCR FZ).
// Late in training gradients get tiny, and denormal arithmetic is up to 100x slower; as in
// oneDNN's convolutions, such values become 0 (a difference below 1e-38).
class FlushDenormals {
 public:
#if defined(__SSE__) || defined(__x86_64__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#elif defined(__aarch64__)
  FlushDenormals() {
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    const uint64_t flushed = saved_ | (uint64_t(1) << 24);
    __asm__ __volatile__("msr fpcr, %0" : : "r"(flushed));
  }
  ~FlushDenormals() { __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_)); }

 private:
  uint64_t saved_;
#endif
};

// at::parallel_for over [begin, end) with denormals flushed in every task.
template <typename Body>
inline void parallel_flushed(int64_t begin, int64_t end, int64_t grain, const Body& body) {
  at::parallel_for(begin, end, grain, [&](int64_t first, int64_t last) {
    FlushDenormals flush;
    body(first, last);
  });
}

// Planes per parallel task: about 2048 windows.
inline int64_t plane_grain(const Geometry& g) { return std::max<int64_t>(1, 2048 / g.plane_outputs()); }

// Offsets of the k*k window elements (row-major) from the window's top-left corner.
inline void window_offsets(const Geometry& g, int64_t* offsets) {
  for (int64_t i = 0; i < g.k; ++i)
    for (int64_t j = 0; j < g.k; ++j) offsets[i * g.k + j] = i * g.width + j;
}

// The windows of one block: up to kLanes consecutive windows in output order, across planes.
struct Lanes {
  int64_t corner[kLanes];   // input offset of the window's top-left element
  int64_t cell[kLanes];     // position in a (C, Ho, Wo) parameter map: c * Ho * Wo + oh * Wo + ow
  int64_t channel[kLanes];  // c
};

// Calls body(first, count, lanes) for blocks of up to kLanes consecutive windows of the planes
// [begin, end) (plane = b * C + c), `first` being the flat output index of the block's first window.
// Lanes from `count` on repeat the last window, so that every lane reads valid memory.
template <typename Body>
inline void for_each_block(const Geometry& g, int64_t begin, int64_t end, const Body& body) {
  Lanes lanes;
  const int64_t per_plane = g.plane_outputs(), last = end * per_plane;
  int64_t plane = begin, c = begin % g.channels, oh = 0, ow = 0;  // no divisions in the loop
  int64_t corner = plane * g.height * g.width, cell = c * per_plane;
  for (int64_t first = begin * per_plane; first < last; first += kLanes) {
    const int64_t count = std::min(kLanes, last - first);
    for (int64_t l = 0; l < count; ++l) {
      lanes.corner[l] = corner + ow * g.s;
      lanes.cell[l] = cell++;
      lanes.channel[l] = c;
      if (++ow < g.out_w) continue;
      ow = 0;
      corner += g.s * g.width;
      if (++oh < g.out_h) continue;
      oh = 0;
      corner = ++plane * g.height * g.width;
      if (++c == g.channels) c = 0, cell = 0;
    }
    for (int64_t l = count; l < kLanes; ++l)
      lanes.corner[l] = lanes.corner[count - 1], lanes.cell[l] = lanes.cell[count - 1], lanes.channel[l] = lanes.channel[count - 1];
    body(first, count, lanes);
  }
}

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator, so the backward pass regenerates the forward pass's numbers. This
// computes it for the counters (first + l, counter_2, counter_3) of the kLanes lanes l at once.
TDGS_INLINE void philox_lanes(uint64_t first, uint32_t counter_2, uint32_t counter_3, uint64_t key,
                         uint32_t (*out)[kLanes]) {
  uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    const uint64_t counter = first + static_cast<uint64_t>(l);
    c0[l] = static_cast<uint32_t>(counter);
    c1[l] = static_cast<uint32_t>(counter >> 32);
    c2[l] = counter_2;
    c3[l] = counter_3;
  }
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0[l];
      const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2[l];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[l] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[l] ^ k1;
      c1[l] = static_cast<uint32_t>(p1);
      c3[l] = static_cast<uint32_t>(p0);
      c0[l] = n0;
      c2[l] = n2;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) out[0][l] = c0[l], out[1][l] = c1[l], out[2][l] = c2[l], out[3][l] = c3[l];
}

// The uniforms u[j][l] in the open interval (0, 1), j < kk, of the windows first + l of stream
// `seed`: (b + 1/2) / 2^bits for `bits` random bits b, 23 for float (word j % 4 of Philox(window,
// j / 4, 0)), 52 for double (words 0 and 1 of Philox(window, j, 1)). One bit short of the full
// precision, so that the largest value, 1 - 2^-(bits+1), is representable and rounds below 1.
template <typename scalar_t>
TDGS_INLINE void window_uniforms_lanes(uint64_t seed, uint64_t first, int64_t kk, scalar_t (*u)[kLanes]) {
  uint32_t words[4][kLanes];
  if constexpr (std::is_same_v<scalar_t, float>) {
    for (int64_t j4 = 0; j4 < kk; j4 += 4) {
      philox_lanes(first, static_cast<uint32_t>(j4 / 4), 0, seed, words);
      for (int64_t r = 0; r < std::min<int64_t>(4, kk - j4); ++r)
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l)
          u[j4 + r][l] = (static_cast<float>(words[r][l] >> 9) + 0.5f) * (1.0f / 8388608.0f);
    }
  } else {
    for (int64_t j = 0; j < kk; ++j) {
      philox_lanes(first, static_cast<uint32_t>(j), 1, seed, words);
      for (int64_t l = 0; l < kLanes; ++l) {
        const uint64_t bits = (static_cast<uint64_t>(words[0][l]) << 20) ^ (words[1][l] >> 12);
        u[j][l] = (static_cast<double>(bits & ((uint64_t(1) << 52) - 1)) + 0.5) * (1.0 / 4503599627370496.0);
      }
    }
  }
}

template <typename To, typename From>
TDGS_INLINE To bits_as(From v) {
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

// exp(x) for float, branch-free, 1-2 ulp (Cephes expf); exact std::exp for double. Inputs below
// -87 give exp(-87) ~ 1.6e-38 instead of a denormal: those weights never matter.
template <typename scalar_t>
TDGS_INLINE scalar_t vexp(scalar_t x) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    constexpr float round = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
    const float n = (x * 1.44269504088896341f + round) - round;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * bits_as<float>((static_cast<int32_t>(n) + 127) << 23);
  } else {
    return std::exp(x);
  }
}

// log(x) for positive normal float x, branch-free, ~1 ulp (Cephes logf); std::log for double.
template <typename scalar_t>
TDGS_INLINE scalar_t vlog(scalar_t x) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int32_t bits = bits_as<int32_t>(x);
    float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
    float m = bits_as<float>((bits & 0x007fffff) | 0x3f000000);  // in [0.5, 1)
    const bool small = m < 0.707106781186547524f;
    e = small ? e - 1.0f : e;
    m = small ? m + m - 1.0f : m - 1.0f;
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return m + y + 0.693359375f * e;
  } else {
    return std::log(x);
  }
}

}  // namespace tdgs
