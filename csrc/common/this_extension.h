// GANFAST_PASS(name): the pass `name` of the extension this file is compiled into: name##_cuda in
// ganfast._C_cuda (GANFAST_WITH_CUDA), name##_cpu in ganfast._C. For the *_common.cpp host code
// that setup.py compiles into both and that composes an op's passes into one call.
#pragma once

#ifdef GANFAST_WITH_CUDA
#define GANFAST_PASS(name) name##_cuda
#else
#define GANFAST_PASS(name) name##_cpu
#endif
