"""adain_noise on the CPU extension (csrc/adain_noise/adain_noise_cpu.cpp): thin wrapper."""
from __future__ import annotations

import functools

from ganfast import _ext
from ganfast.ops.bias_act.reference import ACTIVATIONS


def forward_on_extension(kind, x, s, t, noise, ns, b, act, alpha, gain, eps, seed, out=None):
    """The forward contract (see reference.py) on extension `kind` ("cpu" or "cuda")."""
    out, stats = _ext.extension(kind).adain_noise_forward(
        x, s, t, noise, ns, b, ACTIVATIONS[act].code, alpha, gain, eps, seed, out)
    return out, stats


def backward_on_extension(kind, g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, out=None):
    """The backward contract (see reference.py) on extension `kind`."""
    return tuple(_ext.extension(kind).adain_noise_backward(
        g, x, s, noise, ns, b, stats, ACTIVATIONS[act].code, alpha, gain, eps, seed, out))


forward = functools.partial(forward_on_extension, "cpu")
backward = functools.partial(backward_on_extension, "cpu")
