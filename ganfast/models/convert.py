"""Import StyleGAN2 weights saved in the layout of the rosinality PyTorch port (stylegan2-pytorch).

    G = from_rosinality(state_dict)                   # kind read off the keys: 'style.1.weight' -> G
    D = load_rosinality("d.safetensors", kind="D")    # a file holding one state dict
    nets = load_rosinality_checkpoint("550000.pt")    # {'G': from g_ema (w_avg = latent_avg), 'D': from d}

The port's Generator(size, style_dim, n_mlp, channel_multiplier) and Discriminator(size,
channel_multiplier) compute the same functions as ganfast's StyleGAN2Generator (skip
architecture) and StyleGAN2Discriminator (resnet), under another key layout: its weights use the
same equalized-learning-rate storage, so every tensor is copied as is, only reshaped (the port
keeps a leading batch axis of 1 on convolution weights, the constant input and the noise maps).
Its blur kernels are buffers derived from blur_kernel=[1, 3, 3, 1]; they are checked, not copied
(ganfast builds its resample filters from the same taps).

The configuration is read off the tensors: resolution from the number of upsampling blocks, the
widths from the convolution weights (expressed through ganfast's rule
min(channel_base // res, channel_max); the port's default widths are channel_max=512,
channel_base=16384 * channel_multiplier), n_mlp and style_dim from the mapping layers. Every key of
the source must be consumed and every tensor of the ganfast model written, or a ValueError lists
the keys that are missing, unexpected or of the wrong shape.

Files are read without running code from them: torch.load(weights_only=True), or safetensors.
Converted models are returned in eval mode (the port's g_ema is only ever used that way); call
.train() to fine-tune.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Mapping
from typing import Callable, Optional, Union

import torch
from torch import nn

from ganfast.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, channels_per_resolution
from ganfast.ops.upfirdn2d import setup_filter

__all__ = ["from_rosinality", "load_rosinality", "load_rosinality_checkpoint", "read_weights",
           "load_nvlabs_pkl", "W_AVG_SAMPLES"]

KINDS = ("G", "D")
# The port's default mapping learning-rate multiplier (Generator(lr_mlp=0.01)); it is not stored.
ROSINALITY_LR_MLP = 0.01
# The port's blur_kernel; other taps are refused (see _check_blur_kernel).
ROSINALITY_BLUR_TAPS = (1, 3, 3, 1)
# Without a stored latent_avg, w_avg is estimated as the port's mean_latent(4096) does.
W_AVG_SAMPLES = 4096
W_AVG_SEED = 0
# The discriminator's minibatch stddev in the port: stddev_group=4, stddev_feat=1.
MBSTD_GROUP_SIZE, MBSTD_NUM_CHANNELS = 4, 1
# The port trains with style mixing 0.9 (train.py --mixing), as ganfast's build_stylegan2.
STYLE_MIXING_PROB = 0.9

PathLike = Union[str, os.PathLike]
# checkpoint entry -> (ganfast name, kind); G prefers g_ema, the averaged weights the port samples with
_CHECKPOINT_NETS = {"g_ema": ("G", "G"), "g": ("G", "G"), "d": ("D", "D")}


# ---- reading files ----

def read_weights(path: PathLike) -> object:
    """The object stored in `path`, read without executing code from the file.

    `.safetensors`: a flat {name: tensor} dict (safetensors.torch.load_file). Anything else:
    torch.load(map_location='cpu', weights_only=True), which rebuilds only tensors and plain
    containers (and argparse.Namespace, the 'args' entry of the port's training checkpoints); a
    pickle that would construct any other object or call a function is refused with a ValueError.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(f"read_weights: reading {path!r} needs the safetensors package "
                              f"(pip install safetensors)") from e
        return load_file(path, device="cpu")
    try:
        # Namespace only holds attributes, themselves unpickled under the same restrictions.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"read_weights: {path!r} is a pickle that would construct objects or call functions beyond "
            f"tensors and plain containers; ganfast refuses to load unsafe pickles (loading it could run "
            f"arbitrary code). If you trust where the file came from, load it yourself and re-save the "
            f"state dict as .safetensors (safetensors.torch.save_file). torch said: {e}") from e


def load_rosinality(path: PathLike, kind: Optional[str] = None, *, latent_avg: Optional[torch.Tensor] = None,
                    lr_mlp: float = ROSINALITY_LR_MLP) -> nn.Module:
    """from_rosinality on a file holding one state dict (.pt / .pth via torch.load, or
    .safetensors). A full training checkpoint is refused: use load_rosinality_checkpoint."""
    state_dict = read_weights(path)
    if isinstance(state_dict, Mapping) and any(k in state_dict for k in _CHECKPOINT_NETS):
        raise ValueError(f"load_rosinality: {os.fspath(path)!r} is a training checkpoint (keys "
                         f"{sorted(map(str, state_dict))}); use load_rosinality_checkpoint for it")
    return from_rosinality(state_dict, kind, latent_avg=latent_avg, lr_mlp=lr_mlp)


def load_rosinality_checkpoint(path: PathLike, *, lr_mlp: float = ROSINALITY_LR_MLP) -> dict[str, nn.Module]:
    """The networks of one of the port's checkpoints {'g', 'd', 'g_ema', 'latent_avg', 'g_optim',
    'd_optim', 'args', ...}: {'G': from g_ema (from g when the file has no g_ema), with
    mapping.w_avg = latent_avg when stored; 'D': from d}, each as the file has them. Optimizer
    states and the other entries are ignored."""
    checkpoint = read_weights(path)
    if not isinstance(checkpoint, Mapping) or not any(k in checkpoint for k in _CHECKPOINT_NETS):
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"load_rosinality_checkpoint: {os.fspath(path)!r} is not a training checkpoint "
                         f"(expected some of {sorted(_CHECKPOINT_NETS)}, got {found}); for a bare state "
                         f"dict use load_rosinality")
    nets: dict[str, nn.Module] = {}
    for entry, (name, kind) in _CHECKPOINT_NETS.items():
        if entry in checkpoint and name not in nets:
            extra = {"latent_avg": checkpoint.get("latent_avg"), "lr_mlp": lr_mlp} if kind == "G" else {}
            nets[name] = from_rosinality(checkpoint[entry], kind, **extra)
    return nets


def load_nvlabs_pkl(path: PathLike, which: Optional[Union[str, tuple[str, ...]]] = None) -> dict[str, nn.Module]:
    """The networks of an NVIDIA stylegan2-ada-pytorch / stylegan3 network pickle (a
    network-snapshot-*.pkl, or a published one such as ffhq.pkl), read without executing code
    from the file (ganfast.models.nvlabs_pkl: a restricted unpickler that never runs the source
    code such files embed): {'G_ema': ..., 'G': ..., 'D': ...} for the entries of `which` (None:
    all of these the file holds), StyleGAN2Generator / StyleGAN2Discriminator in eval mode with the
    configuration read off the stored networks. StyleGAN3 generators, G 'resnet' and D 'skip'
    architectures are refused with a ValueError saying so, as is any pickle that would construct
    anything but networks, tensors and plain data."""
    from ganfast.models.nvlabs_pkl import read_nvlabs_pkl
    return read_nvlabs_pkl(path, which)


# ---- the conversion ----

def from_rosinality(state_dict: Mapping[str, torch.Tensor], kind: Optional[str] = None, *,
                    latent_avg: Optional[torch.Tensor] = None, lr_mlp: float = ROSINALITY_LR_MLP) -> nn.Module:
    """A ganfast StyleGAN2Generator ('G') or StyleGAN2Discriminator ('D') holding the weights of a
    state dict in the rosinality layout, in eval mode, float32, on the CPU.

    kind: 'G', 'D' or None (read off the keys: 'style.1.weight' -> G, 'final_linear.0.weight' -> D).
    latent_avg (G only): [style_dim] or [1, style_dim], the average w the port stores beside g_ema;
      it becomes mapping.w_avg (truncation's centre). None: w_avg is the mean of the mapping over
      W_AVG_SAMPLES latents drawn from seed W_AVG_SEED (the port's mean_latent recipe).
    lr_mlp (G only): the Generator's lr_mlp (not stored in the file; the port's default 0.01).
    Raises ValueError naming the keys that are missing, unexpected or of the wrong shape, and when
    the widths cannot be expressed as min(channel_base // res, channel_max).
    """
    _check_state_dict(state_dict)
    kind = _resolve_kind(state_dict, kind)
    if kind == "D" and latent_avg is not None:
        raise ValueError("from_rosinality: latent_avg applies to a generator, not to kind='D'")
    if not lr_mlp > 0:
        raise ValueError(f"from_rosinality: lr_mlp must be > 0, got {lr_mlp!r}")
    with torch.random.fork_rng(devices=[]):   # construction draws initial weights we overwrite
        if kind == "G":
            model = _rosinality_generator(state_dict, lr_mlp)
            copies, blur_kernels = _generator_plan(model.mapping.num_layers, len(model.synthesis.blocks) - 1)
        else:
            model = _rosinality_discriminator(state_dict)
            copies, blur_kernels = _discriminator_plan(len(model.blocks))
    _copy_state(model, state_dict, copies, blur_kernels, kind)
    if kind == "G":
        _set_w_avg(model, latent_avg)
    return model.eval()


def _check_state_dict(state_dict: Mapping) -> None:
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"from_rosinality: state_dict must be a mapping of names to tensors, got "
                         f"{type(state_dict).__name__}")
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"from_rosinality: state_dict entries must be tensors; not tensors: {not_tensors} "
                         f"(a training checkpoint? use load_rosinality_checkpoint)")


def _resolve_kind(state_dict: Mapping, kind: Optional[str]) -> str:
    if kind is not None:
        if kind not in KINDS:
            raise ValueError(f"from_rosinality: kind must be one of {KINDS} or None, got {kind!r}")
        return kind
    looks_like = [k for k, key in (("G", "style.1.weight"), ("D", "final_linear.0.weight")) if key in state_dict]
    if len(looks_like) != 1:
        raise ValueError(f"from_rosinality: cannot tell a generator ('style.1.weight') from a discriminator "
                         f"('final_linear.0.weight') in a state dict with keys {sorted(state_dict)[:8]}...; "
                         f"pass kind='G' or kind='D'")
    return looks_like[0]


def _shape(state_dict: Mapping, key: str, ndim: int, kind: str) -> tuple[int, ...]:
    """The shape of state_dict[key], which the configuration is read from."""
    if key not in state_dict:
        raise ValueError(f"from_rosinality: the {kind} state dict has no key {key!r} "
                         f"(needed to infer the configuration)")
    shape = tuple(state_dict[key].shape)
    if len(shape) != ndim:
        raise ValueError(f"from_rosinality: {key!r} must have {ndim} dimensions, got shape {list(shape)}")
    return shape


def _count_indexed(state_dict: Mapping, prefix: str) -> int:
    """1 + the largest i among keys 'prefix.{i}.*' (0 when there are none)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = [int(m.group(1)) for k in state_dict if (m := pattern.match(k))]
    return max(indices) + 1 if indices else 0


def _channel_config(widths: dict[int, int], kind: str, caller: str = "from_rosinality") -> tuple[int, int]:
    """(channel_base, channel_max) with min(channel_base // res, channel_max) == widths[res] for
    every res, from the widths {res: channels} read off the tensors."""
    channel_max = max(widths.values())
    # The smallest base that gives every width: base // res >= width for all res.
    channel_base = max(res * width for res, width in widths.items())
    if channels_per_resolution(max(widths), channel_base, channel_max) != widths:
        raise ValueError(f"{caller}: the {kind} channel widths {widths} (resolution: channels) cannot "
                         f"be expressed as ganfast's min(channel_base // res, channel_max)")
    return channel_base, channel_max


def _rosinality_generator(state_dict: Mapping, lr_mlp: float) -> StyleGAN2Generator:
    style_dim = _shape(state_dict, "style.1.weight", 2, "G")[1]
    n_mlp = _count_indexed(state_dict, "style") - 1                        # style.0 is the PixelNorm
    num_up_blocks = max(_count_indexed(state_dict, "to_rgbs"), (_count_indexed(state_dict, "convs") + 1) // 2)
    widths = {4: _shape(state_dict, "input.input", 4, "G")[1]}              # [1, C4, 4, 4]
    for j in range(num_up_blocks):                                          # convs.{2j}: [1, out, in, 3, 3]
        widths[8 << j] = _shape(state_dict, f"convs.{2 * j}.conv.weight", 5, "G")[1]
    img_channels = _shape(state_dict, "to_rgb1.conv.weight", 5, "G")[1]     # [1, 3, C4, 1, 1]
    channel_base, channel_max = _channel_config(widths, "G")
    return StyleGAN2Generator(z_dim=style_dim, c_dim=0, w_dim=style_dim, img_resolution=4 << num_up_blocks,
                              img_channels=img_channels, channel_base=channel_base, channel_max=channel_max,
                              mapping_layers=n_mlp, mapping_lr_multiplier=lr_mlp,
                              style_mixing_prob=STYLE_MIXING_PROB)


def _rosinality_discriminator(state_dict: Mapping) -> StyleGAN2Discriminator:
    num_res_blocks = _count_indexed(state_dict, "convs") - 1               # convs.0 is fromRGB
    if num_res_blocks < 1:
        raise ValueError("from_rosinality: the D state dict has no ResBlocks ('convs.1.*'); ganfast's "
                         "discriminator needs a resolution >= 8")
    size = 4 << num_res_blocks
    img_channels = _shape(state_dict, "convs.0.0.weight", 4, "D")[1]      # [C_size, 3, 1, 1]
    widths = {4: _shape(state_dict, "final_conv.0.weight", 4, "D")[0]}     # [C4, C4 + 1, 3, 3]
    for k in range(1, num_res_blocks + 1):                                  # convs.{k} runs at size / 2^(k-1)
        widths[size >> (k - 1)] = _shape(state_dict, f"convs.{k}.conv1.0.weight", 4, "D")[0]
    channel_base, channel_max = _channel_config(dict(sorted(widths.items())), "D")
    return StyleGAN2Discriminator(c_dim=0, img_resolution=size, img_channels=img_channels, architecture="resnet",
                                  channel_base=channel_base, channel_max=channel_max,
                                  mbstd_group_size=MBSTD_GROUP_SIZE, mbstd_num_channels=MBSTD_NUM_CHANNELS)


# ---- the key maps: (ganfast name, port key, ganfast shape -> port shape) ----

def _same(shape: tuple) -> tuple:
    return shape


def _leading_1(shape: tuple) -> tuple:
    """conv weights [1, out, in, k, k], the constant input [1, C, 4, 4], noise strength [1]."""
    return (1, *shape)


def _noise_map(shape: tuple) -> tuple:
    """noise buffers [1, 1, H, W] (ganfast: noise_const [H, W])."""
    return (1, 1, *shape)


def _rgb_bias(shape: tuple) -> tuple:
    """ToRGB.bias [1, C, 1, 1] (ganfast: [C])."""
    return (1, *shape, 1, 1)


Copy = tuple[str, str, Callable[[tuple], tuple]]


def _modulated(dst: str, src: str) -> list[Copy]:
    return [(f"{dst}.weight", f"{src}.conv.weight", _leading_1),
            (f"{dst}.affine_weight", f"{src}.conv.modulation.weight", _same),
            (f"{dst}.affine_bias", f"{src}.conv.modulation.bias", _same)]


def _styled_conv(dst: str, src: str, noise: str) -> list[Copy]:
    return _modulated(dst, src) + [(f"{dst}.noise_strength", f"{src}.noise.weight", _leading_1),
                                   (f"{dst}.bias", f"{src}.activate.bias", _same),
                                   (f"{dst}.noise_const", noise, _noise_map)]


def _to_rgb(dst: str, src: str) -> list[Copy]:
    return _modulated(dst, src) + [(f"{dst}.bias", f"{src}.bias", _rgb_bias)]


def _conv_layer(dst: str, src: str, weight_index: int, bias: bool = True) -> list[Copy]:
    """A ConvLayer Sequential: [Blur,] EqualConv2d (no bias of its own), FusedLeakyReLU (the bias)."""
    copies = [(f"{dst}.weight", f"{src}.{weight_index}.weight", _same)]
    return copies + ([(f"{dst}.bias", f"{src}.{weight_index + 1}.bias", _same)] if bias else [])


def _linear(dst: str, src: str) -> list[Copy]:
    return [(f"{dst}.weight", f"{src}.weight", _same), (f"{dst}.bias", f"{src}.bias", _same)]


def _generator_plan(n_mlp: int, num_up_blocks: int) -> tuple[list[Copy], list[tuple[str, float]]]:
    """The copies and the blur kernels (key, gain) of a port Generator with n_mlp mapping layers
    and num_up_blocks upsampling resolutions."""
    copies = [c for i in range(1, n_mlp + 1) for c in _linear(f"mapping.layers.{i - 1}", f"style.{i}")]
    copies.append(("synthesis.blocks.0.const", "input.input", _leading_1))
    copies += _styled_conv("synthesis.blocks.0.conv1", "conv1", "noises.noise_0")
    copies += _to_rgb("synthesis.blocks.0.torgb", "to_rgb1")
    blur_kernels = []
    for j in range(num_up_blocks):
        block = f"synthesis.blocks.{j + 1}"
        copies += _styled_conv(f"{block}.conv0", f"convs.{2 * j}", f"noises.noise_{2 * j + 1}")
        copies += _styled_conv(f"{block}.conv1", f"convs.{2 * j + 1}", f"noises.noise_{2 * j + 2}")
        copies += _to_rgb(f"{block}.torgb", f"to_rgbs.{j}")
        # the upsampling convolution's Blur and the skip's Upsample both carry the up^2 gain
        blur_kernels += [(f"convs.{2 * j}.conv.blur.kernel", 4.0), (f"to_rgbs.{j}.upsample.kernel", 4.0)]
    return copies, blur_kernels


def _discriminator_plan(num_res_blocks: int) -> tuple[list[Copy], list[tuple[str, float]]]:
    copies = _conv_layer("blocks.0.fromrgb", "convs.0", 0)
    blur_kernels = []
    for k in range(1, num_res_blocks + 1):
        block, res_block = f"blocks.{k - 1}", f"convs.{k}"
        copies += _conv_layer(f"{block}.conv0", f"{res_block}.conv1", 0)
        copies += _conv_layer(f"{block}.conv1", f"{res_block}.conv2", 1)
        copies += _conv_layer(f"{block}.skip", f"{res_block}.skip", 1, bias=False)
        blur_kernels += [(f"{res_block}.conv2.0.kernel", 1.0), (f"{res_block}.skip.0.kernel", 1.0)]
    copies += _conv_layer("conv", "final_conv", 0) + _linear("fc", "final_linear.0") + _linear("out", "final_linear.1")
    return copies, blur_kernels


def _set_by_constructor(name: str) -> bool:
    """ganfast tensors that hold no weights: the resample filters (built from the same taps as
    the port's checked blur kernels) and w_avg (set by _set_w_avg)."""
    return name.endswith("resample_filter") or name == "mapping.w_avg"


def _check_blur_kernel(key: str, kernel: torch.Tensor, gain: float, caller: str = "from_rosinality") -> None:
    expected = setup_filter(list(ROSINALITY_BLUR_TAPS)).double() * gain
    if tuple(kernel.shape) != tuple(expected.shape) or not torch.allclose(kernel.double(), expected, rtol=1e-5,
                                                                          atol=1e-7):
        raise ValueError(f"{caller}: {key!r} is not the blur kernel of blur_kernel="
                         f"{list(ROSINALITY_BLUR_TAPS)} (times {gain:g}); ganfast converts only that filter")


def _copy_state(model: nn.Module, state_dict: Mapping, copies: list[Copy], blur_kernels: list[tuple[str, float]],
                kind: str, caller: str = "from_rosinality") -> None:
    """Check the keys and shapes of state_dict against the plan, then copy into model. caller
    names the public function in error messages."""
    expected = {src for _, src, _ in copies} | {key for key, _ in blur_kernels}
    missing, unexpected = sorted(expected - state_dict.keys()), sorted(state_dict.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{caller}: the {kind} state dict does not match the inferred configuration; "
                         f"missing keys: {missing}; unexpected keys: {unexpected}")
    targets = dict(model.named_parameters()) | dict(model.named_buffers())
    planned = {dst for dst, _, _ in copies}
    unset = sorted(name for name in targets if name not in planned and not _set_by_constructor(name))
    if unset or not planned <= targets.keys():
        # ganfast's model and this map disagree: a bug here, not in the user's file
        raise RuntimeError(f"{caller}: internal error: ganfast {kind} tensors never set: {unset}; "
                           f"mapped names that do not exist: {sorted(planned - targets.keys())}")
    for key, gain in blur_kernels:
        _check_blur_kernel(key, state_dict[key], gain, caller)
    wrong = [f"{src!r}: {list(state_dict[src].shape)}, expected {list(to_src(tuple(targets[dst].shape)))}"
             for dst, src, to_src in copies if tuple(state_dict[src].shape) != to_src(tuple(targets[dst].shape))]
    if wrong:
        raise ValueError(f"{caller}: {kind} tensors of the wrong shape for the inferred configuration: "
                         + "; ".join(wrong))
    with torch.no_grad():
        for dst, src, _ in copies:
            targets[dst].copy_(state_dict[src].reshape(targets[dst].shape))


def _set_w_avg(G: StyleGAN2Generator, latent_avg: Optional[torch.Tensor]) -> None:
    w_avg = G.mapping.w_avg   # [w_dim]
    with torch.no_grad():
        if latent_avg is not None:
            if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != w_avg.numel() or \
                    latent_avg.squeeze().shape != w_avg.shape:
                got = list(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
                raise ValueError(f"from_rosinality: latent_avg must be [{w_avg.numel()}] or [1, {w_avg.numel()}], "
                                 f"got {got}")
            w_avg.copy_(latent_avg.reshape(w_avg.shape))
            return
        rng = torch.Generator().manual_seed(W_AVG_SEED)
        z = torch.randn(W_AVG_SAMPLES, G.z_dim, generator=rng)
        w_avg.copy_(G.mapping(z, update_w_avg=False)[:, 0].mean(dim=0))   # mapping: [N, num_ws, w_dim]
