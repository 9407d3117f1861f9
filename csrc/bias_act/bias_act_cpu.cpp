// bias_act on the CPU: one pass over x (and g, gg), the bias gradient reduced in the same pass.
#include "bias_act/bias_act.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <type_traits>

#include "common/checks.h"
#include "common/cpu_storage.h"

namespace ganfast {

namespace {

constexpr int64_t kChunk = 16384;  // elements per work item: big enough to amortize, small enough to balance

constexpr int64_t kSubBlock = 512;  // float partial sums stay short; totals are carried in double

// Applies the op to n contiguous elements sharing one bias value bv; returns their sum (db's share).
template <Act A, int Order, typename S, typename scalar_t = typename S::raw, typename acc_t = typename S::acc>
inline double run_span(const scalar_t* __restrict x, const scalar_t* __restrict g,
                       const scalar_t* __restrict gg, scalar_t* __restrict out, int64_t n, acc_t bv,
                       acc_t alpha, acc_t gain, acc_t clamp) {
  double total = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kSubBlock) {
    const int64_t j1 = std::min(n, j0 + kSubBlock);
    acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = j0; j < j1; ++j) {
      acc_t z = S::load(x[j]) + bv;
      acc_t gv = Order >= 1 ? S::load(g[j]) : acc_t(0);
      acc_t ggv = Order == 2 ? S::load(gg[j]) : acc_t(0);
      scalar_t o = S::store(bias_act_element<A, Order, acc_t>(z, gv, ggv, alpha, gain, clamp));
      out[j] = o;
      sum += S::load(o);  // the stored (rounded) value, as a sum over out would see it
    }
    total += static_cast<double>(sum);
  }
  return total;
}

// Applies the op to one row of C contiguous elements with per-element bias b[0..C); adds each
// output into acc[0..C) when kDb. kBias / kDb are template flags so the loop has no branches.
template <Act A, int Order, bool kBias, bool kDb, typename S, typename scalar_t = typename S::raw,
          typename acc_t = typename S::acc>
inline void run_row(const scalar_t* __restrict x, const scalar_t* __restrict b,
                    const scalar_t* __restrict g, const scalar_t* __restrict gg,
                    scalar_t* __restrict out, int64_t n, double* __restrict acc, acc_t alpha,
                    acc_t gain, acc_t clamp) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    acc_t z = S::load(x[j]);
    if (kBias) z += S::load(b[j]);
    acc_t gv = Order >= 1 ? S::load(g[j]) : acc_t(0);
    acc_t ggv = Order == 2 ? S::load(gg[j]) : acc_t(0);
    scalar_t o = S::store(bias_act_element<A, Order, acc_t>(z, gv, ggv, alpha, gain, clamp));
    out[j] = o;
    if (kDb) acc[j] += static_cast<double>(S::load(o));
  }
}

template <Act A, int Order, typename scalar_t>
void bias_act_cpu_impl(const BiasActParams& p, at::Tensor* db) {
  using S = CpuStorage<scalar_t>;
  using raw_t = typename S::raw;
  using acc_t = typename S::acc;
  const auto* x = static_cast<const raw_t*>(p.x);
  const auto* b = static_cast<const raw_t*>(p.b);
  const auto* g = static_cast<const raw_t*>(p.g);
  const auto* gg = static_cast<const raw_t*>(p.gg);
  auto* out = static_cast<raw_t*>(p.out);
  const acc_t alpha = static_cast<acc_t>(p.s.alpha), gain = static_cast<acc_t>(p.s.gain),
              clamp = static_cast<acc_t>(p.s.clamp);
  const int64_t C = p.channels, inner = p.inner, outer = p.outer;
  const bool want_db = db != nullptr;

  if (inner > 1) {
    // Rows of `inner` elements share one bias value. Rows up to kChunk are one work item each
    // (the channel index is carried, not divided out per row); longer rows are cut into chunks.
    const int64_t chunks_per_row = (inner + kChunk - 1) / kChunk;
    const int64_t items = outer * C * chunks_per_row;
    std::vector<double> partial(want_db ? items : 0);
    const int64_t grain = std::max<int64_t>(1, kChunk / std::min(inner, kChunk));
    at::parallel_for(0, items, grain, [&](int64_t lo, int64_t hi) {
      if (chunks_per_row == 1) {
        int64_t c = lo % C;
        for (int64_t r = lo; r < hi; ++r) {
          const int64_t start = r * inner;
          const acc_t bv = b ? S::load(b[c]) : acc_t(0);
          const double sum = run_span<A, Order, S>(
              x + start, g ? g + start : nullptr, gg ? gg + start : nullptr, out + start, inner, bv,
              alpha, gain, clamp);
          if (want_db) partial[r] = sum;
          if (++c == C) c = 0;
        }
        return;
      }
      for (int64_t it = lo; it < hi; ++it) {
        const int64_t row = it / chunks_per_row, k = it % chunks_per_row;
        const int64_t start = row * inner + k * kChunk;
        const int64_t n = std::min(kChunk, inner - k * kChunk);
        const acc_t bv = b ? S::load(b[row % C]) : acc_t(0);
        const double sum = run_span<A, Order, S>(
            x + start, g ? g + start : nullptr, gg ? gg + start : nullptr, out + start, n, bv, alpha,
            gain, clamp);
        if (want_db) partial[it] = sum;
      }
    });
    if (want_db) {
      at::Tensor sums = at::zeros({C}, db->options().dtype(at::kDouble));
      double* s = sums.data_ptr<double>();
      const double* part = partial.data();
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t k = 0; k < chunks_per_row; ++k) s[c] += *part++;
      *db = sums.to(db->scalar_type());
    }
  } else {
    // inner == 1 (channels_last, [N, C]): each row is C elements with the bias vector.
    const int64_t nthreads = at::get_num_threads();
    std::vector<double> acc(want_db ? nthreads * C : 0, 0.0);
    const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(C, 1));
    auto rows = [&](auto has_bias, auto with_db) {
      at::parallel_for(0, outer, grain, [&](int64_t lo, int64_t hi) {
        double* mine = with_db ? acc.data() + at::get_thread_num() * C : nullptr;
        for (int64_t r = lo; r < hi; ++r) {
          const int64_t start = r * C;
          run_row<A, Order, decltype(has_bias)::value, decltype(with_db)::value, S>(
              x + start, b, g ? g + start : nullptr, gg ? gg + start : nullptr, out + start, C,
              mine, alpha, gain, clamp);
        }
      });
    };
    using T_ = std::true_type;
    using F_ = std::false_type;
    if (b && want_db) rows(T_{}, T_{});
    else if (b) rows(T_{}, F_{});
    else rows(F_{}, F_{});  // no bias, no bias gradient
    if (want_db) {
      at::Tensor sums = at::zeros({C}, db->options().dtype(at::kDouble));
      double* s = sums.data_ptr<double>();
      for (int64_t t = 0; t < nthreads; ++t)
        for (int64_t c = 0; c < C; ++c) s[c] += acc[t * C + c];
      *db = sums.to(db->scalar_type());
    }
  }
}

}  // namespace

std::vector<at::Tensor> bias_act_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                                     const c10::optional<at::Tensor>& g,
                                     const c10::optional<at::Tensor>& gg, int64_t order,
                                     int64_t dim, int64_t act, double alpha, double gain,
                                     double clamp, bool want_db,
                                     const c10::optional<at::Tensor>& out_opt) {
  GANFAST_CHECK_DEVICE(x, at::kCPU, "x");
  check_bias_act_args(x, b, g, gg, order, dim, act);
  at::Tensor out = bias_act_output(x, out_opt);  // x's dense strides
  const bool with_db = want_db && b.has_value();
  at::Tensor db;
  if (with_db) db = at::empty({x.size(dim)}, x.options());
  if (x.numel() == 0) {
    if (with_db) db.zero_();
    return {out, db};
  }
  const BiasActParams p = make_bias_act_params(x, b, g, gg, out, order, dim, act, alpha, gain, clamp);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cpu", [&] {
    dispatch_act_order(p.act, p.order, [&](auto a, auto o) {
      bias_act_cpu_impl<decltype(a)::value, decltype(o)::value, scalar_t>(p, with_db ? &db : nullptr);
    });
  });
  return {out, db};
}

}  // namespace ganfast
