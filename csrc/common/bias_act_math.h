// bias_act per-element math, shared by the CPU and CUDA kernels.
//
//   z = x + b[c];  y = clamp(gain * f(z), -clamp, clamp)   (no clamp: +infinity, see host_clamp)
//   order 0: out = y
//   order 1: out = g  * gain * f'(z)  * [|gain * f(z)| <= clamp]       (dL/dx given g = dL/dy)
//   order 2: out = gg * g * gain * f''(z) * [|gain * f(z)| <= clamp]   (d/dz of order 1, times gg)
// Derivative conventions at kinks follow PyTorch's autograd: relu'(0) = 0, lrelu'(0) = alpha,
// elu/selu use the negative branch at 0 for f' but not for f'' (PyTorch's double backward tests
// z < 0 strictly), softplus is linear above z > 20 (beta = 1).
#pragma once
#include "common/host_device.h"

namespace ganfast {

enum class Act : int {
  Linear = 0, Relu = 1, Lrelu = 2, Tanh = 3, Sigmoid = 4, Elu = 5, Selu = 6, Softplus = 7, Swish = 8
};
constexpr int kNumActs = 9;

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSoftplusThreshold = 20.0;

template <typename T> GANFAST_HD T sigmoid(T z) { return T(1) / (T(1) + gf_exp(-z)); }

// f, f', f'' in one place. `alpha` is the lrelu slope or the elu alpha.
template <Act A, typename T> struct ActFn;

template <typename T> struct ActFn<Act::Linear, T> {
  static GANFAST_HD T f(T z, T) { return z; }
  static GANFAST_HD T d1(T, T) { return T(1); }
  static GANFAST_HD T d2(T, T) { return T(0); }
};
template <typename T> struct ActFn<Act::Relu, T> {
  // z <= 0, not z > 0: a NaN z stays NaN, as torch.relu propagates it
  static GANFAST_HD T f(T z, T) { return z <= T(0) ? T(0) : z; }
  static GANFAST_HD T d1(T z, T) { return z > T(0) ? T(1) : T(0); }
  static GANFAST_HD T d2(T, T) { return T(0); }
};
template <typename T> struct ActFn<Act::Lrelu, T> {
  static GANFAST_HD T f(T z, T a) { return z > T(0) ? z : z * a; }
  static GANFAST_HD T d1(T z, T a) { return z > T(0) ? T(1) : a; }
  static GANFAST_HD T d2(T, T) { return T(0); }
};
template <typename T> struct ActFn<Act::Tanh, T> {
  static GANFAST_HD T f(T z, T) { return gf_tanh(z); }
  static GANFAST_HD T d1(T z, T) { T t = gf_tanh(z); return T(1) - t * t; }
  static GANFAST_HD T d2(T z, T) { T t = gf_tanh(z); return T(-2) * t * (T(1) - t * t); }
};
template <typename T> struct ActFn<Act::Sigmoid, T> {
  static GANFAST_HD T f(T z, T) { return sigmoid(z); }
  static GANFAST_HD T d1(T z, T) { T s = sigmoid(z); return s * (T(1) - s); }
  static GANFAST_HD T d2(T z, T) { T s = sigmoid(z); return s * (T(1) - s) * (T(1) - T(2) * s); }
};
template <typename T> struct ActFn<Act::Elu, T> {
  static GANFAST_HD T f(T z, T a) { return z > T(0) ? z : a * (gf_exp(z) - T(1)); }
  static GANFAST_HD T d1(T z, T a) { return z > T(0) ? T(1) : a * gf_exp(z); }
  static GANFAST_HD T d2(T z, T a) { return z < T(0) ? a * gf_exp(z) : T(0); }
};
template <typename T> struct ActFn<Act::Selu, T> {
  static GANFAST_HD T f(T z, T) {
    return T(kSeluScale) * (z > T(0) ? z : T(kSeluAlpha) * (gf_exp(z) - T(1)));
  }
  static GANFAST_HD T d1(T z, T) { return T(kSeluScale) * (z > T(0) ? T(1) : T(kSeluAlpha) * gf_exp(z)); }
  static GANFAST_HD T d2(T z, T) { return z < T(0) ? T(kSeluScale * kSeluAlpha) * gf_exp(z) : T(0); }
};
template <typename T> struct ActFn<Act::Softplus, T> {
  // log(1 + e^z) = max(z, 0) + log1p(e^-|z|): the log1p argument stays in (0, 1]. Selects, not
  // branches, so the CPU loops vectorize.
  static GANFAST_HD T f(T z, T) {
    const T a = z < T(0) ? -z : z;
    const T soft = (z > T(0) ? z : T(0)) + gf_log1p_unit(gf_exp(-a));
    return z > T(kSoftplusThreshold) ? z : soft;
  }
  static GANFAST_HD T d1(T z, T) { return z > T(kSoftplusThreshold) ? T(1) : sigmoid(z); }
  static GANFAST_HD T d2(T z, T) {
    const T s = sigmoid(z);
    return z > T(kSoftplusThreshold) ? T(0) : s * (T(1) - s);
  }
};
template <typename T> struct ActFn<Act::Swish, T> {
  static GANFAST_HD T f(T z, T) { return z * sigmoid(z); }
  static GANFAST_HD T d1(T z, T) { T s = sigmoid(z); return s * (T(1) + z * (T(1) - s)); }
  static GANFAST_HD T d2(T z, T) { T s = sigmoid(z); return s * (T(1) - s) * (T(2) + z * (T(1) - T(2) * s)); }
};

// Acts whose f'' is zero everywhere it exists: the double-backward x-term vanishes.
GANFAST_HD bool act_has_zero_second_derivative(int act) {
  return act == int(Act::Linear) || act == int(Act::Relu) || act == int(Act::Lrelu);
}

struct BiasActScalars {
  double alpha;  // lrelu slope / elu alpha
  double gain;   // multiplier after the activation
  double clamp;  // output bound; +infinity when the op does not clamp
};

// The public API says "clamp < 0: no clamp"; the kernels want a branch-free bound.
inline double host_clamp(double clamp) { return clamp < 0 ? INFINITY : clamp; }

// One element of the fused op. T is the compute type (float or double); g, gg unused below their
// order. Branch-free (selects only) so that the CPU loops vectorize.
template <Act A, int Order, typename T>
GANFAST_HD T bias_act_element(T z, T g, T gg, T alpha, T gain, T clamp) {
  using F = ActFn<A, T>;
  const T y = F::f(z, alpha) * gain;
  if (Order == 0) {
    const T lo = y < -clamp ? -clamp : y;
    return lo > clamp ? clamp : lo;
  }
  // Gradient mask of the clamp; PyTorch's clamp passes the gradient on the closed interval.
  const T pass = (y <= clamp && y >= -clamp) ? T(1) : T(0);
  if (Order == 1) return g * gain * F::d1(z, alpha) * pass;
  return gg * g * gain * F::d2(z, alpha) * pass;
}

// Dispatches a runtime activation code to a functor templated on it (host code: the kernel
// launchers of every op that applies an activation).
template <typename F>
void dispatch_act(int act, F&& fn) {
  switch (static_cast<Act>(act)) {
    case Act::Linear: fn(std::integral_constant<Act, Act::Linear>{}); break;
    case Act::Relu: fn(std::integral_constant<Act, Act::Relu>{}); break;
    case Act::Lrelu: fn(std::integral_constant<Act, Act::Lrelu>{}); break;
    case Act::Tanh: fn(std::integral_constant<Act, Act::Tanh>{}); break;
    case Act::Sigmoid: fn(std::integral_constant<Act, Act::Sigmoid>{}); break;
    case Act::Elu: fn(std::integral_constant<Act, Act::Elu>{}); break;
    case Act::Selu: fn(std::integral_constant<Act, Act::Selu>{}); break;
    case Act::Softplus: fn(std::integral_constant<Act, Act::Softplus>{}); break;
    case Act::Swish: fn(std::integral_constant<Act, Act::Swish>{}); break;
  }
}

}  // namespace ganfast
