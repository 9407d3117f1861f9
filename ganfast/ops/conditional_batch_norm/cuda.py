"""conditional_batch_norm's kernel contract on the CUDA extension
(csrc/conditional_batch_norm/conditional_batch_norm_cuda.cu): thin wrappers."""
import functools

from ganfast.ops.conditional_batch_norm.cpu import (backward_dx_on_extension, backward_sums_on_extension,
                                                    channel_stats_on_extension, forward_apply_on_extension)

channel_stats = functools.partial(channel_stats_on_extension, "cuda")
forward_apply = functools.partial(forward_apply_on_extension, "cuda")
backward_sums = functools.partial(backward_sums_on_extension, "cuda")
backward_dx = functools.partial(backward_dx_on_extension, "cuda")
