// adain_noise on the CPU.
//
// NCHW: one work item per (n, c) plane. The forward computes y into a per-thread buffer (one read
// of x), takes mean and variance from the buffer in two passes (exact, no cancellation), and
// writes out from it; the backward buffers yhat and gain * f'(z) the same way, so x and g are read
// once each. channels_last: one work item per (n, block of channels); the loops run over pixels
// with the channel block contiguous in the inner loop (vectorized), in two sweeps: statistics
// (variance from pivot-shifted sums, the pivot being the plane's first y) and apply.
//
// Noise: one fp32 (fp64 for double x) plane per sample, drawn from the seed or converted from the
// given tensor, is made once per call and shared by every channel (the seeded noise costs
// N * H * W draws, not N * C * H * W). It is scratch, freed on return: nothing is saved for the
// backward, which regenerates it.
#include "adain_noise/adain_noise.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_storage.h"

namespace ganfast {

namespace {

constexpr int64_t kSubBlock = 512;     // short float partial sums; totals carried in double
constexpr int64_t kMinWork = 16384;    // elements per parallel work item, at least
constexpr int64_t kChannelBlock = 64;  // channels per work item (channels_last)

// The noise planes [Nn, M] in acc_t, or an empty vector when there is no noise.
template <typename S, typename acc_t = typename S::acc>
std::vector<acc_t> noise_planes(const AdainNoiseParams& p, int64_t* batch_stride) {
  using raw_t = typename S::raw;
  std::vector<acc_t> buf;
  *batch_stride = 0;
  if (p.seed >= 0) {
    buf.resize(static_cast<size_t>(p.N * p.M));
    *batch_stride = p.M;
    const int64_t M = p.M;
    const uint64_t seed = static_cast<uint64_t>(p.seed);
    at::parallel_for(0, p.N * M, kMinWork, [&](int64_t begin, int64_t end) {
      int64_t i = begin;
      while (i < end) {
        const int64_t n = i / M, p0 = i % M, p1 = std::min(M, p0 + (end - i));
        const NoiseKeys keys = noise_keys(seed, static_cast<uint32_t>(n));
        acc_t* dst = buf.data() + n * M;
        for (int64_t q = p0; q < p1; ++q) dst[q] = static_cast<acc_t>(noise_at<acc_t>(keys, static_cast<uint32_t>(q)));
        i += p1 - p0;
      }
    });
  } else if (p.noise != nullptr) {
    const int64_t planes = p.noise_sN == 0 ? 1 : p.N;
    buf.resize(static_cast<size_t>(planes * p.M));
    *batch_stride = p.noise_sN == 0 ? 0 : p.M;
    const auto* src = static_cast<const raw_t*>(p.noise);
    at::parallel_for(0, planes * p.M, kMinWork, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) buf[i] = S::load(src[i]);
    });
  }
  return buf;
}

template <typename acc_t> inline acc_t rsqrt_of(double v) { return static_cast<acc_t>(1.0 / std::sqrt(v)); }

// ---- NCHW: one plane per work item ----

template <Act A, typename S, typename acc_t = typename S::acc>
void forward_planes(const AdainNoiseParams& p, const acc_t* nzbuf, int64_t nz_sN) {
  using raw_t = typename S::raw;
  const auto* x = static_cast<const raw_t*>(p.x);
  auto* out = static_cast<raw_t*>(p.out);
  const auto* s = static_cast<const acc_t*>(p.s);
  const auto* t = static_cast<const acc_t*>(p.t);
  const auto* ns = static_cast<const acc_t*>(p.ns);
  const auto* b = static_cast<const acc_t*>(p.b);
  auto* stats = static_cast<acc_t*>(p.stats);
  const int64_t M = p.M, C = p.C;
  const acc_t alpha = static_cast<acc_t>(p.alpha), gain = static_cast<acc_t>(p.gain);
  const int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(M, 1));
  at::parallel_for(0, p.N * C, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> ybuf(static_cast<size_t>(M));
    acc_t* __restrict y = ybuf.data();
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / C, c = plane % C;
      const raw_t* __restrict xp = x + plane * M;
      raw_t* __restrict op = out + plane * M;
      const acc_t* __restrict nz = nzbuf ? nzbuf + n * nz_sN : nullptr;
      const acc_t nsv = ns ? ns[c] : acc_t(1), bv = b ? b[c] : acc_t(0);
      // The mean is summed as deviations from a pivot, the plane's first y, so a plane far from
      // zero (y ~ 1000) keeps its float32 sub-block sums small: their rounding then no longer
      // depends on how many SIMD lanes the compiler splits them over (8 with AVX2, 4 on a
      // portable build, 1 unvectorized: errors 2.5e-5, 5.5e-5, 9.7e-5 of the mean without it).
      acc_t pivot = 0;
      if (M > 0)
        pivot = nz ? gain * ActFn<A, acc_t>::f(adain_z(S::load(xp[0]), nz[0], nsv, bv), alpha)
                   : gain * ActFn<A, acc_t>::f(S::load(xp[0]) + bv, alpha);
      double total = 0;
      for (int64_t j0 = 0; j0 < M; j0 += kSubBlock) {
        const int64_t j1 = std::min(M, j0 + kSubBlock);
        acc_t sum = 0;
        if (nz) {
#pragma omp simd reduction(+ : sum)
          for (int64_t j = j0; j < j1; ++j) {
            const acc_t v = gain * ActFn<A, acc_t>::f(adain_z(S::load(xp[j]), nz[j], nsv, bv), alpha);
            y[j] = v;
            sum += v - pivot;
          }
        } else {
#pragma omp simd reduction(+ : sum)
          for (int64_t j = j0; j < j1; ++j) {
            const acc_t v = gain * ActFn<A, acc_t>::f(S::load(xp[j]) + bv, alpha);
            y[j] = v;
            sum += v - pivot;
          }
        }
        total += static_cast<double>(sum);
      }
      const acc_t mean = static_cast<acc_t>(static_cast<double>(pivot) + total / static_cast<double>(M));
      double sq_total = 0;
      for (int64_t j0 = 0; j0 < M; j0 += kSubBlock) {
        const int64_t j1 = std::min(M, j0 + kSubBlock);
        acc_t sq = 0;
#pragma omp simd reduction(+ : sq)
        for (int64_t j = j0; j < j1; ++j) {
          const acc_t d = y[j] - mean;
          sq += d * d;
        }
        sq_total += static_cast<double>(sq);
      }
      const acc_t rstd = rsqrt_of<acc_t>(sq_total / static_cast<double>(M) + p.eps);
      // (y - mean) * k + t, not y * k + (t - mean * k): with a constant plane rstd is 1/sqrt(eps)
      // and the second form cancels two large terms.
      const acc_t k = rstd * s[plane], tv = t[plane];
#pragma omp simd
      for (int64_t j = 0; j < M; ++j) op[j] = S::store((y[j] - mean) * k + tv);
      stats[2 * plane] = mean;
      stats[2 * plane + 1] = rstd;
    }
  });
}

template <Act A, typename S, typename acc_t = typename S::acc>
void backward_planes(const AdainNoiseParams& p, const acc_t* nzbuf, int64_t nz_sN) {
  using raw_t = typename S::raw;
  const auto* x = static_cast<const raw_t*>(p.x);
  const auto* g = static_cast<const raw_t*>(p.g);
  auto* dx = static_cast<raw_t*>(p.out);
  const auto* s = static_cast<const acc_t*>(p.s);
  const auto* ns = static_cast<const acc_t*>(p.ns);
  const auto* b = static_cast<const acc_t*>(p.b);
  const auto* stats = static_cast<const acc_t*>(p.stats);
  auto *ds = static_cast<acc_t*>(p.ds), *dt = static_cast<acc_t*>(p.dt);
  auto *sdz = static_cast<acc_t*>(p.sdz), *sdzn = static_cast<acc_t*>(p.sdzn);
  const int64_t M = p.M, C = p.C;
  const acc_t alpha = static_cast<acc_t>(p.alpha), gain = static_cast<acc_t>(p.gain);
  const int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(M, 1));
  at::parallel_for(0, p.N * C, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> hbuf(static_cast<size_t>(M)), dbuf(static_cast<size_t>(M));
    acc_t* __restrict yhat = hbuf.data();
    acc_t* __restrict d1 = dbuf.data();
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / C, c = plane % C;
      const raw_t* __restrict xp = x + plane * M;
      const raw_t* __restrict gp = g + plane * M;
      raw_t* __restrict dp = dx + plane * M;
      const acc_t* __restrict nz = nzbuf ? nzbuf + n * nz_sN : nullptr;
      const acc_t nsv = ns ? ns[c] : acc_t(1), bv = b ? b[c] : acc_t(0);
      const acc_t mean = stats[2 * plane], rstd = stats[2 * plane + 1];
      // Pass 1: sg = sum g, sgy = sum g * yhat, sh = sum yhat; yhat and d1 = gain * f'(z) kept.
      double tg = 0, tgy = 0, th = 0;
      for (int64_t j0 = 0; j0 < M; j0 += kSubBlock) {
        const int64_t j1 = std::min(M, j0 + kSubBlock);
        acc_t sg = 0, sgy = 0, sh = 0;
#pragma omp simd reduction(+ : sg, sgy, sh)
        for (int64_t j = j0; j < j1; ++j) {
          const acc_t z = nz ? adain_z(S::load(xp[j]), nz[j], nsv, bv) : S::load(xp[j]) + bv;
          const acc_t h = (gain * ActFn<A, acc_t>::f(z, alpha) - mean) * rstd;
          const acc_t gv = S::load(gp[j]);
          yhat[j] = h;
          d1[j] = gain * ActFn<A, acc_t>::d1(z, alpha);
          sg += gv;
          sgy += gv * h;
          sh += h;
        }
        tg += static_cast<double>(sg);
        tgy += static_cast<double>(sgy);
        th += static_cast<double>(sh);
      }
      // yhat has zero mean by definition, but the stored mean is rounded to acc_t: on a
      // near-constant plane (rstd >> 1) that rounding shifts every yhat by the same amount, and
      // the shift, times M and k, dominates sum dz (dbias) and sgy (dscale). Re-center on the
      // plane's own mean of yhat.
      const double mh_d = th / static_cast<double>(M);
      tgy -= mh_d * tg;
      for (int64_t j = 0; j < M; ++j) yhat[j] -= static_cast<acc_t>(mh_d);
      const double mg_d = tg / static_cast<double>(M), mgy_d = tgy / static_cast<double>(M);
      const acc_t k = rstd * s[plane];
      const acc_t mg = static_cast<acc_t>(mg_d), mgy = static_cast<acc_t>(mgy_d);
      // Pass 2: dz = d1 * k * (g - mg - yhat * mgy), written as dx. Its plane sums are taken in
      // double as k * sum(d1 * (g - mg - yhat * mgy)): the terms cancel (sum dz is exactly 0 for a
      // linear activation) and k can be 1/sqrt(eps) (constant planes), so neither the rounded dz
      // nor a closed form of separately rounded sums would do.
      double tdz = 0, tdzn = 0;
      for (int64_t j0 = 0; j0 < M; j0 += kSubBlock) {
        const int64_t j1 = std::min(M, j0 + kSubBlock);
        double sz = 0, szn = 0;
        if (nz) {
#pragma omp simd reduction(+ : sz, szn)
          for (int64_t j = j0; j < j1; ++j) {
            const acc_t gv = S::load(gp[j]);
            dp[j] = S::store(d1[j] * k * (gv - mg - yhat[j] * mgy));
            const double u = static_cast<double>(d1[j]) * (static_cast<double>(gv) - mg_d - static_cast<double>(yhat[j]) * mgy_d);
            sz += u;
            szn += u * static_cast<double>(nz[j]);
          }
        } else {
#pragma omp simd reduction(+ : sz)
          for (int64_t j = j0; j < j1; ++j) {
            const acc_t gv = S::load(gp[j]);
            dp[j] = S::store(d1[j] * k * (gv - mg - yhat[j] * mgy));
            sz += static_cast<double>(d1[j]) * (static_cast<double>(gv) - mg_d - static_cast<double>(yhat[j]) * mgy_d);
          }
        }
        tdz += sz;
        tdzn += szn;
      }
      const double k_d = static_cast<double>(rstd) * static_cast<double>(s[plane]);
      tdz *= k_d;
      tdzn *= k_d;
      ds[plane] = static_cast<acc_t>(tgy);
      dt[plane] = static_cast<acc_t>(tg);
      sdz[plane] = static_cast<acc_t>(tdz);
      sdzn[plane] = static_cast<acc_t>(tdzn);
    }
  });
}

// ---- channels_last: [N, M, C] storage; one (n, channel block) per work item ----

template <Act A, typename S, typename acc_t = typename S::acc>
void forward_channels_last(const AdainNoiseParams& p, const acc_t* nzbuf, int64_t nz_sN) {
  using raw_t = typename S::raw;
  const auto* x = static_cast<const raw_t*>(p.x);
  auto* out = static_cast<raw_t*>(p.out);
  const auto* s = static_cast<const acc_t*>(p.s);
  const auto* t = static_cast<const acc_t*>(p.t);
  const auto* ns = static_cast<const acc_t*>(p.ns);
  const auto* b = static_cast<const acc_t*>(p.b);
  auto* stats = static_cast<acc_t*>(p.stats);
  const int64_t M = p.M, C = p.C, blocks = (C + kChannelBlock - 1) / kChannelBlock;
  const acc_t alpha = static_cast<acc_t>(p.alpha), gain = static_cast<acc_t>(p.gain);
  at::parallel_for(0, p.N * blocks, 1, [&](int64_t begin, int64_t end) {
    acc_t nsv[kChannelBlock], bv[kChannelBlock], pivot[kChannelBlock], k[kChannelBlock], mu[kChannelBlock],
        tv[kChannelBlock];
    // Sums in double: with the pivot (the plane's first y) far from the mean, E[d^2] - E[d]^2
    // cancels, and float sums would cost the variance several digits.
    double s1[kChannelBlock], s2[kChannelBlock];
    double t1[kChannelBlock], t2[kChannelBlock];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks, c0 = (item % blocks) * kChannelBlock;
      const int64_t cb = std::min(kChannelBlock, C - c0);
      const raw_t* __restrict xn = x + n * M * C + c0;
      raw_t* __restrict on = out + n * M * C + c0;
      const acc_t* __restrict nz = nzbuf ? nzbuf + n * nz_sN : nullptr;
      for (int64_t j = 0; j < cb; ++j) {
        nsv[j] = nz ? (ns ? ns[c0 + j] : acc_t(1)) : acc_t(0);
        bv[j] = b ? b[c0 + j] : acc_t(0);
        t1[j] = t2[j] = 0;
      }
      auto y_at = [&](int64_t q, int64_t j) {
        const acc_t nzq = nz ? nz[q] : acc_t(0);
        return gain * ActFn<A, acc_t>::f(adain_z(S::load(xn[q * C + j]), nzq, nsv[j], bv[j]), alpha);
      };
      for (int64_t j = 0; j < cb; ++j) pivot[j] = y_at(0, j);
      for (int64_t q0 = 0; q0 < M; q0 += kSubBlock) {
        const int64_t q1 = std::min(M, q0 + kSubBlock);
        for (int64_t j = 0; j < cb; ++j) s1[j] = s2[j] = 0;
        for (int64_t q = q0; q < q1; ++q) {
          const acc_t nzq = nz ? nz[q] : acc_t(0);
          const raw_t* __restrict xr = xn + q * C;
#pragma omp simd
          for (int64_t j = 0; j < cb; ++j) {
            const double d = static_cast<double>(
                gain * ActFn<A, acc_t>::f(adain_z(S::load(xr[j]), nzq, nsv[j], bv[j]), alpha) - pivot[j]);
            s1[j] += d;
            s2[j] += d * d;
          }
        }
        for (int64_t j = 0; j < cb; ++j) {
          t1[j] += s1[j];
          t2[j] += s2[j];
        }
      }
      for (int64_t j = 0; j < cb; ++j) {
        const double m1 = t1[j] / static_cast<double>(M);
        const double var = std::max(0.0, t2[j] / static_cast<double>(M) - m1 * m1);
        const acc_t mean = static_cast<acc_t>(static_cast<double>(pivot[j]) + m1);
        const acc_t rstd = rsqrt_of<acc_t>(var + p.eps);
        const int64_t plane = n * C + c0 + j;
        k[j] = rstd * s[plane];
        mu[j] = mean;
        tv[j] = t[plane];
        stats[2 * plane] = mean;
        stats[2 * plane + 1] = rstd;
      }
      for (int64_t q = 0; q < M; ++q) {
        const acc_t nzq = nz ? nz[q] : acc_t(0);
        const raw_t* __restrict xr = xn + q * C;
        raw_t* __restrict orow = on + q * C;
#pragma omp simd
        for (int64_t j = 0; j < cb; ++j) {
          const acc_t y = gain * ActFn<A, acc_t>::f(adain_z(S::load(xr[j]), nzq, nsv[j], bv[j]), alpha);
          orow[j] = S::store((y - mu[j]) * k[j] + tv[j]);
        }
      }
    }
  });
}

template <Act A, typename S, typename acc_t = typename S::acc>
void backward_channels_last(const AdainNoiseParams& p, const acc_t* nzbuf, int64_t nz_sN) {
  using raw_t = typename S::raw;
  const auto* x = static_cast<const raw_t*>(p.x);
  const auto* g = static_cast<const raw_t*>(p.g);
  auto* dx = static_cast<raw_t*>(p.out);
  const auto* s = static_cast<const acc_t*>(p.s);
  const auto* ns = static_cast<const acc_t*>(p.ns);
  const auto* b = static_cast<const acc_t*>(p.b);
  const auto* stats = static_cast<const acc_t*>(p.stats);
  auto *ds = static_cast<acc_t*>(p.ds), *dt = static_cast<acc_t*>(p.dt);
  auto *sdz = static_cast<acc_t*>(p.sdz), *sdzn = static_cast<acc_t*>(p.sdzn);
  const int64_t M = p.M, C = p.C, blocks = (C + kChannelBlock - 1) / kChannelBlock;
  const acc_t alpha = static_cast<acc_t>(p.alpha), gain = static_cast<acc_t>(p.gain);
  at::parallel_for(0, p.N * blocks, 1, [&](int64_t begin, int64_t end) {
    acc_t nsv[kChannelBlock], bv[kChannelBlock], mean[kChannelBlock], rstd[kChannelBlock], k[kChannelBlock];
    acc_t mg[kChannelBlock], mgy[kChannelBlock], mh[kChannelBlock];
    double mg_d[kChannelBlock], mgy_d[kChannelBlock], a1[kChannelBlock], a2[kChannelBlock], a3[kChannelBlock];
    double t1[kChannelBlock], t2[kChannelBlock], t3[kChannelBlock];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks, c0 = (item % blocks) * kChannelBlock;
      const int64_t cb = std::min(kChannelBlock, C - c0);
      const raw_t* __restrict xn = x + n * M * C + c0;
      const raw_t* __restrict gn = g + n * M * C + c0;
      raw_t* __restrict dn = dx + n * M * C + c0;
      const acc_t* __restrict nz = nzbuf ? nzbuf + n * nz_sN : nullptr;
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t plane = n * C + c0 + j;
        nsv[j] = nz ? (ns ? ns[c0 + j] : acc_t(1)) : acc_t(0);
        bv[j] = b ? b[c0 + j] : acc_t(0);
        mean[j] = stats[2 * plane];
        rstd[j] = stats[2 * plane + 1];
        k[j] = rstd[j] * s[plane];
        t1[j] = t2[j] = t3[j] = 0;
      }
      // Sweep 1: sg = sum g, sgy = sum g * yhat, sh = sum yhat (re-centering: see backward_planes).
      for (int64_t q0 = 0; q0 < M; q0 += kSubBlock) {
        const int64_t q1 = std::min(M, q0 + kSubBlock);
        for (int64_t j = 0; j < cb; ++j) a1[j] = a2[j] = a3[j] = 0;
        for (int64_t q = q0; q < q1; ++q) {
          const acc_t nzq = nz ? nz[q] : acc_t(0);
          const raw_t* __restrict xr = xn + q * C;
          const raw_t* __restrict gr = gn + q * C;
#pragma omp simd
          for (int64_t j = 0; j < cb; ++j) {
            const acc_t z = adain_z(S::load(xr[j]), nzq, nsv[j], bv[j]);
            const acc_t h = (gain * ActFn<A, acc_t>::f(z, alpha) - mean[j]) * rstd[j];
            const acc_t gv = S::load(gr[j]);
            a1[j] += static_cast<double>(gv);
            a2[j] += static_cast<double>(gv * h);
            a3[j] += static_cast<double>(h);
          }
        }
        for (int64_t j = 0; j < cb; ++j) {
          t1[j] += a1[j];
          t2[j] += a2[j];
          t3[j] += a3[j];
        }
      }
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t plane = n * C + c0 + j;
        const double mh_d = t3[j] / static_cast<double>(M);
        mh[j] = static_cast<acc_t>(mh_d);
        t2[j] -= mh_d * t1[j];
        dt[plane] = static_cast<acc_t>(t1[j]);
        ds[plane] = static_cast<acc_t>(t2[j]);
        mg_d[j] = t1[j] / static_cast<double>(M);
        mgy_d[j] = t2[j] / static_cast<double>(M);
        mg[j] = static_cast<acc_t>(mg_d[j]);
        mgy[j] = static_cast<acc_t>(mgy_d[j]);
        t1[j] = t2[j] = 0;
      }
      // Sweep 2: dz, written as dx, and its plane sums.
      for (int64_t q0 = 0; q0 < M; q0 += kSubBlock) {
        const int64_t q1 = std::min(M, q0 + kSubBlock);
        for (int64_t j = 0; j < cb; ++j) a1[j] = a2[j] = 0;
        for (int64_t q = q0; q < q1; ++q) {
          const acc_t nzq = nz ? nz[q] : acc_t(0);
          const raw_t* __restrict xr = xn + q * C;
          const raw_t* __restrict gr = gn + q * C;
          raw_t* __restrict dr = dn + q * C;
#pragma omp simd
          for (int64_t j = 0; j < cb; ++j) {
            const acc_t z = adain_z(S::load(xr[j]), nzq, nsv[j], bv[j]);
            const acc_t h = (gain * ActFn<A, acc_t>::f(z, alpha) - mean[j]) * rstd[j] - mh[j];
            const acc_t gv = S::load(gr[j]);
            dr[j] = S::store(adain_dz<A, acc_t>(z, gv, h, alpha, gain, k[j], mg[j], mgy[j]));
            // The plane sums in double, k applied after (see backward_planes).
            const double u = static_cast<double>(gain * ActFn<A, acc_t>::d1(z, alpha)) *
                             (static_cast<double>(gv) - mg_d[j] - static_cast<double>(h) * mgy_d[j]);
            a1[j] += u;
            a2[j] += u * static_cast<double>(nzq);
          }
        }
        for (int64_t j = 0; j < cb; ++j) {
          t1[j] += a1[j];
          t2[j] += a2[j];
        }
      }
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t plane = n * C + c0 + j;
        const double k_d = static_cast<double>(rstd[j]) * static_cast<double>(s[plane]);
        sdz[plane] = static_cast<acc_t>(k_d * t1[j]);
        sdzn[plane] = static_cast<acc_t>(k_d * t2[j]);
      }
    }
  });
}

template <typename F>
void dispatch_cpu_dtype(at::ScalarType st, F&& fn) {
  switch (st) {
    case at::kFloat: fn(CpuStorage<float>{}); break;
    case at::kDouble: fn(CpuStorage<double>{}); break;
    case at::kHalf: fn(CpuStorage<c10::Half>{}); break;
    case at::kBFloat16: fn(CpuStorage<c10::BFloat16>{}); break;
    default: TORCH_CHECK(false, "ganfast: adain_noise x must be float16, bfloat16, float32 or float64, got ", st);
  }
}

at::Tensor small_like(const at::Tensor& s) { return at::empty(s.sizes(), s.options()); }

}  // namespace

std::vector<at::Tensor> adain_noise_forward_cpu(
    const at::Tensor& x, const at::Tensor& s, const at::Tensor& t,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& ns,
    const c10::optional<at::Tensor>& b, int64_t act, double alpha, double gain, double eps,
    int64_t seed, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(x, at::kCPU, "x");
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor stats = at::empty({x.size(0), x.size(1), 2}, x.options().dtype(acc));
  AdainNoiseParams p = make_adain_noise_params(x, c10::nullopt, s, t, noise, ns, b, stats, act,
                                               alpha, gain, eps, seed);
  at::Tensor y = adain_noise_like_x(x, out);
  p.out = y.data_ptr();
  if (x.numel() == 0) {
    stats.fill_(std::numeric_limits<double>::quiet_NaN());  // statistics of empty planes, as torch.mean
    return {y, stats};
  }
  dispatch_cpu_dtype(x.scalar_type(), [&](auto storage) {
    using S = decltype(storage);
    using acc_t = typename S::acc;
    int64_t nz_sN = 0;
    const std::vector<acc_t> nzbuf = noise_planes<S>(p, &nz_sN);
    const acc_t* nz = nzbuf.empty() ? nullptr : nzbuf.data();
    dispatch_act(p.act, [&](auto a) {
      constexpr Act A = decltype(a)::value;
      if (p.sP == 1) forward_planes<A, S>(p, nz, nz_sN);
      else forward_channels_last<A, S>(p, nz, nz_sN);
    });
  });
  return {y, stats};
}

std::vector<at::Tensor> adain_noise_backward_cpu(
    const at::Tensor& g, const at::Tensor& x, const at::Tensor& s,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& ns,
    const c10::optional<at::Tensor>& b, const at::Tensor& stats, int64_t act, double alpha,
    double gain, double eps, int64_t seed, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(x, at::kCPU, "x");
  AdainNoiseParams p = make_adain_noise_params(x, g, s, c10::nullopt, noise, ns, b, stats, act,
                                               alpha, gain, eps, seed);
  at::Tensor dx = adain_noise_like_x(x, out);
  at::Tensor ds = small_like(s), dt = small_like(s), sdz = small_like(s), sdzn = small_like(s);
  p.out = dx.data_ptr();
  p.ds = ds.data_ptr();
  p.dt = dt.data_ptr();
  p.sdz = sdz.data_ptr();
  p.sdzn = sdzn.data_ptr();
  if (x.numel() == 0) {
    for (at::Tensor* v : {&ds, &dt, &sdz, &sdzn}) v->zero_();
    return {dx, ds, dt, sdz, sdzn};
  }
  dispatch_cpu_dtype(x.scalar_type(), [&](auto storage) {
    using S = decltype(storage);
    using acc_t = typename S::acc;
    int64_t nz_sN = 0;
    const std::vector<acc_t> nzbuf = noise_planes<S>(p, &nz_sN);
    const acc_t* nz = nzbuf.empty() ? nullptr : nzbuf.data();
    dispatch_act(p.act, [&](auto a) {
      constexpr Act A = decltype(a)::value;
      if (p.sP == 1) backward_planes<A, S>(p, nz, nz_sN);
      else backward_channels_last<A, S>(p, nz, nz_sN);
    });
  });
  return {dx, ds, dt, sdz, sdzn};
}

}  // namespace ganfast
