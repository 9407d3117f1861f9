// spectral_norm's two passes over W on the CPU (the contract in spectral_norm.h).
//
// Both passes walk W in blocks of kRows rows. matvec_gram takes a block's dot products
// t[:, rows] in column chunks of kChunk (each chunk stays in L1 while every group of kMaxJ
// directions sweeps it: one group for the usual k <= 2), then, when gram, adds the block's terms
// t[j, r] W[r, :] into the part's partial s while the block is still in cache (L2: kRows rows).
// matvec_t adds blocks with coefficients u the same way. Sums run in 32-byte vectors (GCC vector
// extensions: one AVX register; fp16 / bf16 rows are widened to float in registers) with
// kRows * J independent accumulators; the column tails not filling a vector go through scalar
// loops. (A sweep that takes block b's dot products while adding block b - 1's terms measured no
// faster here: both uses of a row pass through L1 either way, and that bounds the rate when W
// sits in L2 / L3; from DRAM, memory does.)
//
// Parallelism, deterministic for a given thread count: the rows are split into parts (one per
// thread, each summing its rows in order into its own partial s: part 0 writes the output, the
// others scratch buffers; the partials are then added in part order, in parallel over columns).
// matvec_t also splits the columns (no partials for those) when there are fewer row parts than
// threads (few rows).
#include "spectral_norm/spectral_norm.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__F16C__) || defined(__FMA__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/checks.h"
#include "common/cpu_storage.h"

namespace ganfast {

namespace {

constexpr int kRows = 4;                        // rows per block
constexpr int kMaxJ = 2;                        // directions per sweep: kRows * kMaxJ vector accumulators
constexpr int64_t kChunk = 1024;                // columns per sweep (kRows rows of a chunk fit L1)
constexpr int64_t kMinPartElems = int64_t(1) << 16;  // W elements per parallel part, at least
constexpr int64_t kMinCols = 256;               // columns per column part (matvec_t), at least
constexpr int64_t kColAlign = 32;               // column part boundaries: whole 64-byte lines of 16-bit W
constexpr int64_t kReduceGrain = 8192;          // partial elements per reduction work item

// ---- 32-byte vectors ----

template <typename A> struct Vec32;
template <> struct Vec32<float> { typedef float type __attribute__((vector_size(32))); };
template <> struct Vec32<double> { typedef double type __attribute__((vector_size(32))); };
template <typename A> using Vec = typename Vec32<A>::type;
template <typename A> constexpr int64_t kLanes = 32 / sizeof(A);

// kLanes<A> consecutive elements of W (raw storage) as a vector of A.
inline Vec<float> load_vec(const float* p) {
  Vec<float> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline Vec<double> load_vec(const double* p) {
  Vec<double> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline Vec<float> load_vec(const uint16_t* p) {  // bf16 bits: the float's upper half
#if defined(__AVX2__)
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));  // one widening load
#else
  typedef uint16_t U16x8 __attribute__((vector_size(16)));
  typedef uint32_t U32x8 __attribute__((vector_size(32)));
  U16x8 h;
  std::memcpy(&h, p, sizeof h);
  const U32x8 bits = __builtin_convertvector(h, U32x8) << 16;
  Vec<float> v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
#endif
}
inline Vec<float> load_vec(const c10::Half* p) {
  Vec<float> v;
#if defined(__F16C__)
  v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(p[i]);
#endif
  return v;
}

template <typename A> inline Vec<A> splat(A x) { return Vec<A>{} + x; }

// a * b + c, fused where the target has FMA (ISO C++ mode does not contract a * b + c).
inline Vec<float> fma_vec(Vec<float> a, Vec<float> b, Vec<float> c) {
#if defined(__FMA__)
  return _mm256_fmadd_ps(a, b, c);  // __m256 is the same GCC vector type
#else
  return a * b + c;
#endif
}
inline Vec<double> fma_vec(Vec<double> a, Vec<double> b, Vec<double> c) {
#if defined(__FMA__)
  return _mm256_fmadd_pd(a, b, c);
#else
  return a * b + c;
#endif
}

template <typename A> inline A hsum(Vec<A> v) {
  A s = v[0];
  for (int i = 1; i < kLanes<A>; ++i) s += v[i];
  return s;
}

// ---- the blocks ----

// acc[j * R + r] += x_j[c] * w_r[c] lane-wise over the whole vectors of [c0, c1) (a multiple of
// the lane count), for R rows w_r and J directions x_j = x + j * ldx.
template <typename S, int R, int J, typename raw_t = typename S::raw, typename A = typename S::acc>
inline void dot_vectors(const raw_t* const* rows, const A* x, int64_t ldx, int64_t c0, int64_t c1, Vec<A>* acc_io) {
  constexpr int64_t L = kLanes<A>;
  Vec<A> acc[J][R];
  for (int j = 0; j < J; ++j)
    for (int r = 0; r < R; ++r) acc[j][r] = acc_io[j * R + r];
  for (int64_t c = c0; c < c1; c += L) {
    Vec<A> wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load_vec(rows[r] + c);
    for (int j = 0; j < J; ++j) {
      const Vec<A> xv = load_vec(x + j * ldx + c);
      for (int r = 0; r < R; ++r) acc[j][r] = fma_vec(xv, wv[r], acc[j][r]);
    }
  }
  for (int j = 0; j < J; ++j)
    for (int r = 0; r < R; ++r) acc_io[j * R + r] = acc[j][r];
}

// t_block[j * R + r] = the dot products of R rows with x_j (j < k) from their vector sums acc
// [k * R] (over the columns [0, K - K % L)) plus the scalar tail.
template <typename S, int R, typename raw_t = typename S::raw, typename A = typename S::acc>
inline void finish_dots(const raw_t* const* rows, const A* x, int64_t K, int64_t k, const Vec<A>* acc, A* t_block) {
  for (int64_t j = 0; j < k; ++j) {
    for (int r = 0; r < R; ++r) {
      A sum = hsum<A>(acc[j * R + r]);
      for (int64_t c = K - K % kLanes<A>; c < K; ++c) sum += x[j * K + c] * S::load(rows[r][c]);
      t_block[j * R + r] = sum;
    }
  }
}

// s_j[c] += sum_r coef[j][r] * w_r[c] for c in [c0, c1), R rows and J directions s_j = s + j * lds.
template <typename S, int R, int J, typename raw_t = typename S::raw, typename A = typename S::acc>
inline void axpy_chunk(const raw_t* const* rows, const A* coef, A* s, int64_t lds, int64_t c0, int64_t c1) {
  constexpr int64_t L = kLanes<A>;
  Vec<A> cv[J][R];
  for (int j = 0; j < J; ++j)
    for (int r = 0; r < R; ++r) cv[j][r] = splat<A>(coef[j * R + r]);
  int64_t c = c0;
  for (; c + L <= c1; c += L) {
    Vec<A> acc[J];
    for (int j = 0; j < J; ++j) std::memcpy(&acc[j], s + j * lds + c, sizeof(Vec<A>));
    for (int r = 0; r < R; ++r) {
      const Vec<A> wv = load_vec(rows[r] + c);
      for (int j = 0; j < J; ++j) acc[j] = fma_vec(cv[j][r], wv, acc[j]);
    }
    for (int j = 0; j < J; ++j) std::memcpy(s + j * lds + c, &acc[j], sizeof(Vec<A>));
  }
  for (; c < c1; ++c) {
    for (int j = 0; j < J; ++j) {
      A a = s[j * lds + c];
      for (int r = 0; r < R; ++r) a += coef[j * R + r] * S::load(rows[r][c]);
      s[j * lds + c] = a;
    }
  }
}

// Rows [r0, r0 + R) of W.
// dots: t_block[j * R + r] (t_block [k * R], j-major) = row r0 + r's dot product with x_j (x: v
// [k, K]), in column chunks of kChunk, kMaxJ directions at a time; acc [k * R] is scratch.
// Then, when s != nullptr: s_j[c] (s: [k, lds]) += sum_r t_block[j * R + r] * W[r0 + r, c] for c
// in [c0, c1).
template <typename S, int R, typename raw_t = typename S::raw, typename A = typename S::acc>
void row_block(const raw_t* w, int64_t K, int64_t k, int64_t r0, const A* x, bool dots, Vec<A>* acc, A* t_block, A* s,
               int64_t lds, int64_t c0, int64_t c1) {
  const raw_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w + (r0 + r) * K;
  if (dots) {
    const int64_t kv = K - K % kLanes<A>;
    std::fill(acc, acc + k * R, Vec<A>{});
    for (int64_t cb = 0; cb < kv; cb += kChunk) {
      const int64_t ce = std::min(kv, cb + kChunk);
      for (int64_t j0 = 0; j0 < k; j0 += kMaxJ) {
        if (k - j0 >= 2) dot_vectors<S, R, 2>(rows, x + j0 * K, K, cb, ce, acc + j0 * R);
        else dot_vectors<S, R, 1>(rows, x + j0 * K, K, cb, ce, acc + j0 * R);
      }
    }
    finish_dots<S, R>(rows, x, K, k, acc, t_block);
  }
  if (s == nullptr) return;
  for (int64_t cb = c0; cb < c1; cb += kChunk) {
    const int64_t ce = std::min(c1, cb + kChunk);
    for (int64_t j0 = 0; j0 < k; j0 += kMaxJ) {
      if (k - j0 >= 2) axpy_chunk<S, R, 2>(rows, t_block + j0 * R, s + j0 * lds, lds, cb, ce);
      else axpy_chunk<S, R, 1>(rows, t_block + j0 * R, s + j0 * lds, lds, cb, ce);
    }
  }
}

// f(std::integral_constant<int, R>{}) for R = rows in 1 .. kRows.
template <typename F> inline void with_rows(int64_t rows, F&& f) {
  switch (rows) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}
static_assert(kRows == 4, "with_rows covers 1 .. 4 rows");

// matvec_gram over rows [r0, r1): t[:, r0:r1] and, when s != nullptr, s += the rows' terms.
// acc [k * kRows], t_block [k * kRows]: scratch.
template <typename S, typename raw_t = typename S::raw, typename A = typename S::acc>
void gram_rows(const raw_t* w, int64_t O, int64_t K, int64_t k, int64_t r0, int64_t r1, const A* v, A* t, A* s,
               Vec<A>* acc, A* t_block) {
  for (int64_t r = r0; r < r1; r += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, r1 - r);
    with_rows(rows, [&](auto R) { row_block<S, R.value>(w, K, k, r, v, /*dots=*/true, acc, t_block, s, K, 0, K); });
    for (int64_t j = 0; j < k; ++j)
      for (int64_t i = 0; i < rows; ++i) t[j * O + r + i] = t_block[j * rows + i];
  }
}

// Parts over n items for the given work: at most one per thread, each at least kMinPartElems of W.
int64_t parts_for(int64_t n, int64_t elems, int64_t min_items) {
  const int64_t by_work = std::max<int64_t>(1, elems / kMinPartElems);
  const int64_t by_items = std::max<int64_t>(1, n / min_items);
  return std::max<int64_t>(1, std::min({int64_t(at::get_num_threads()), by_work, by_items}));
}

// s (the output, [k, K]) += partials[p] for p = 0, 1, ... in order; partials [parts, k, K].
template <typename A>
void add_partials(A* s, const A* partials, int64_t parts, int64_t n) {
  if (parts == 0) return;
  at::parallel_for(0, n, kReduceGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = 0; p < parts; ++p) {
      const A* __restrict src = partials + p * n;
      A* __restrict dst = s;
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) dst[i] += src[i];
    }
  });
}

template <typename A> at::Tensor scratch_for(int64_t elems) {
  return at::empty({std::max<int64_t>(elems, 0)}, at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value));
}

template <typename S, typename raw_t = typename S::raw, typename A = typename S::acc>
void matvec_gram_kernel(const SpectralNormParams& p) {
  const auto* w = static_cast<const raw_t*>(p.w);
  const auto* v = static_cast<const A*>(p.x);
  auto* t = static_cast<A*>(p.t);
  auto* s = static_cast<A*>(p.s);
  const int64_t O = p.O, K = p.K, k = p.k;
  const int64_t parts = parts_for(O, O * K, kRows);
  const at::Tensor scratch = scratch_for<A>(s ? (parts - 1) * k * K : 0);
  A* partials = scratch.data_ptr<A>();
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> t_block(static_cast<size_t>(k * kRows));
    std::vector<Vec<A>> acc(static_cast<size_t>(k * kRows));
    for (int64_t part = begin; part < end; ++part) {
      const int64_t r0 = part_begin(part, parts, O, kRows), r1 = part_begin(part + 1, parts, O, kRows);
      A* sp = s == nullptr ? nullptr : (part == 0 ? s : partials + (part - 1) * k * K);
      if (sp) std::fill(sp, sp + k * K, A(0));
      gram_rows<S>(w, O, K, k, r0, r1, v, t, sp, acc.data(), t_block.data());
    }
  });
  if (s) add_partials(s, partials, parts - 1, k * K);
}

template <typename S, typename raw_t = typename S::raw, typename A = typename S::acc>
void matvec_t_kernel(const SpectralNormParams& p) {
  const auto* w = static_cast<const raw_t*>(p.w);
  const auto* u = static_cast<const A*>(p.x);
  auto* s = static_cast<A*>(p.s);
  const int64_t O = p.O, K = p.K, k = p.k;
  const int64_t threads = at::get_num_threads();
  const int64_t row_parts = parts_for(O, O * K, kRows);
  int64_t col_parts = 1;
  if (row_parts < threads) {  // few rows: split the columns too (no partials for those)
    const int64_t by_work = std::max<int64_t>(1, O * K / kMinPartElems / row_parts);
    col_parts = std::max<int64_t>(1, std::min({(threads + row_parts - 1) / row_parts, by_work, K / kMinCols}));
  }
  const at::Tensor scratch = scratch_for<A>((row_parts - 1) * k * K);
  A* partials = scratch.data_ptr<A>();
  at::parallel_for(0, row_parts * col_parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> coef(static_cast<size_t>(k * kRows));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t rp = item / col_parts, cp = item % col_parts;
      const int64_t r0 = part_begin(rp, row_parts, O, kRows), r1 = part_begin(rp + 1, row_parts, O, kRows);
      const int64_t c0 = part_begin(cp, col_parts, K, kColAlign), c1 = part_begin(cp + 1, col_parts, K, kColAlign);
      A* sp = rp == 0 ? s : partials + (rp - 1) * k * K;
      for (int64_t j = 0; j < k; ++j) std::fill(sp + j * K + c0, sp + j * K + c1, A(0));
      for (int64_t r = r0; r < r1; r += kRows) {
        const int64_t rows = std::min<int64_t>(kRows, r1 - r);
        for (int64_t j = 0; j < k; ++j)
          for (int64_t i = 0; i < rows; ++i) coef[j * rows + i] = u[j * O + r + i];
        with_rows(rows, [&](auto R) {
          row_block<S, R.value>(w, K, k, r, static_cast<const A*>(nullptr), /*dots=*/false, nullptr, coef.data(), sp, K,
                                c0, c1);
        });
      }
    }
  });
  add_partials(s, partials, row_parts - 1, k * K);
}

template <template <typename> class Kernel>
void dispatch(at::ScalarType st, const SpectralNormParams& p, const char* op) {
  switch (st) {
    case at::kFloat: Kernel<CpuStorage<float>>::run(p); break;
    case at::kDouble: Kernel<CpuStorage<double>>::run(p); break;
    case at::kHalf: Kernel<CpuStorage<c10::Half>>::run(p); break;
    case at::kBFloat16: Kernel<CpuStorage<c10::BFloat16>>::run(p); break;
    default: TORCH_CHECK(false, "ganfast: ", op, " w has an unsupported dtype ", st);  // checked before
  }
}
template <typename S> struct MatvecT { static void run(const SpectralNormParams& p) { matvec_t_kernel<S>(p); } };
template <typename S> struct MatvecGram { static void run(const SpectralNormParams& p) { matvec_gram_kernel<S>(p); } };

}  // namespace

at::Tensor sn_matvec_t_cpu(const at::Tensor& w, const at::Tensor& u, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(w, at::kCPU, "sn_matvec_t w");
  at::Tensor s;
  const SpectralNormParams p = make_matvec_t_params(w, u, out, /*allow_double=*/true, &s);
  if (p.O == 0 || p.K == 0) return s.zero_();
  dispatch<MatvecT>(w.scalar_type(), p, "sn_matvec_t");
  return s;
}

std::tuple<at::Tensor, c10::optional<at::Tensor>> sn_matvec_gram_cpu(const at::Tensor& w, const at::Tensor& v, bool gram,
                                                                     const c10::optional<at::Tensor>& t_out,
                                                                     const c10::optional<at::Tensor>& s_out) {
  GANFAST_CHECK_DEVICE(w, at::kCPU, "sn_matvec_gram w");
  at::Tensor t, s;
  const SpectralNormParams p = make_matvec_gram_params(w, v, gram, t_out, s_out, /*allow_double=*/true, &t, &s);
  if (p.O == 0 || p.K == 0) {
    t.zero_();
    if (gram) s.zero_();
  } else {
    dispatch<MatvecGram>(w.scalar_type(), p, "sn_matvec_gram");
  }
  return {t, gram ? c10::optional<at::Tensor>(s) : c10::nullopt};
}

}  // namespace ganfast
