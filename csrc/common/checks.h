// Input checks used by every binding: messages name the argument and what was expected.
#pragma once
#include <torch/extension.h>

#define GANFAST_CHECK_DEVICE(t, dev, name) \
  TORCH_CHECK((t).device().type() == (dev), "ganfast: ", name, " must be on ", (dev), ", got ", (t).device())
#define GANFAST_CHECK_SAME_DTYPE(t, ref, name) \
  TORCH_CHECK((t).scalar_type() == (ref).scalar_type(), "ganfast: ", name, " must have dtype ", \
              (ref).scalar_type(), ", got ", (t).scalar_type())
#define GANFAST_CHECK_DENSE(t, name)                                                   \
  TORCH_CHECK((t).is_non_overlapping_and_dense(), "ganfast: ", name,                   \
              " must be non-overlapping and dense (contiguous or channels_last), got strides ", \
              (t).strides())
#define GANFAST_CHECK_SAME_LAYOUT(t, ref, name)                                               \
  TORCH_CHECK((t).sizes() == (ref).sizes() && (t).strides() == (ref).strides(), "ganfast: ", \
              name, " must match x in shape and strides: got ", (t).sizes(), "/", (t).strides(), \
              " vs ", (ref).sizes(), "/", (ref).strides())

namespace ganfast {

// A kernel's output like x: `out` when given (checked to have x's shape, strides, dtype and
// device; the tests pass a NaN-filled one so an unwritten element fails), else a new tensor like x.
inline at::Tensor output_like(const at::Tensor& x, const c10::optional<at::Tensor>& out) {
  if (!out.has_value()) return at::empty_like(x);
  GANFAST_CHECK_SAME_LAYOUT(*out, x, "out");
  GANFAST_CHECK_SAME_DTYPE(*out, x, "out");
  TORCH_CHECK(out->device() == x.device(), "ganfast: out must be on ", x.device(), ", got ", out->device());
  return *out;
}

}  // namespace ganfast
