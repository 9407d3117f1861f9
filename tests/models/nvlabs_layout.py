"""Writes network pickles in the format of NVIDIA's stylegan2-ada-pytorch / stylegan3 snapshots,
without NVIDIA's code, to test ganfast.models.nvlabs_pkl. Written from the documented structure:

- a snapshot is a pickled dict {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'};
- every network module is an instance of a class wrapped by torch_utils.persistence, pickled as
  REDUCE(GLOBAL torch_utils.persistence._reconstruct_persistent_obj, (meta,)) with meta =
  {'type': 'class', 'version': 6, 'module_src': <its module's source>, 'class_name', 'state'},
  state being the nn.Module's __dict__ (training, _parameters / _buffers / _modules and the hook
  OrderedDicts, _non_persistent_buffers_set, the attributes its __init__ sets: numpy scalars for
  the gains, _init_args / _init_kwargs with dnnlib.util.EasyDict values);
- tensors pickled as plain pickle.dump stores them (torch._utils._rebuild_parameter /
  _rebuild_tensor_v2 over torch.storage._load_from_bytes(torch.save of the storage));
- NVIDIA's names: mapping.fc{i} / mapping.embed / mapping.w_avg; synthesis.b{res}.const /
  conv0 / conv1 (weight, bias, noise_strength, noise_const, resample_filter, affine.weight / bias)
  / torgb; D's b{res}.fromrgb / conv0 / conv1 / skip, b4.mbstd / conv / fc / out, mapping.

module_src is code that would create SENTINEL_NAME in the working directory if anyone ran it.

    nets = nvidia_records_from(G, D)          # ganfast models -> stand-in records, NVIDIA names
    write_snapshot(path, nets)                # the pickle
"""
from __future__ import annotations

import collections
import io
import pickle
from typing import Optional

import numpy as np
import torch

from ganfast.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

SENTINEL_NAME = "nvlabs_module_src_ran"


def module_src(sentinel: str) -> str:
    """Source that, if executed, would leave evidence behind (the loader must never run it)."""
    return f"import pathlib\npathlib.Path({sentinel!r}).write_text('module_src was executed')\n"


# ---- stand-ins pickled in NVIDIA's format ----

class GlobalRef:
    """Pickles as GLOBAL 'module name' (a function or class NVIDIA's pickles name, which need not
    exist here)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise AssertionError("a stand-in; never called")


class Persistent:
    """An instance of a persistent class: pickles as _reconstruct_persistent_obj(meta)."""

    def __init__(self, class_name: str, state: dict, src: str = "", version: int = 6):
        self.class_name, self.state, self.src, self.version = class_name, state, src, version


class EasyDict(dict):
    """dnnlib.util.EasyDict: pickled as NEWOBJ(EasyDict) followed by its items."""


class NumpyScalar:
    """A numpy scalar under the names numpy 1.x wrote (numpy.core.multiarray.scalar)."""

    def __init__(self, value: np.generic):
        self.value = value


class Reduce:
    """Anything as REDUCE(func, args): the hostile pickles' payloads."""

    def __init__(self, func: GlobalRef, args: tuple):
        self.func, self.args = func, args


class NvlabsPickler(pickle._Pickler):
    """The pure-Python pickler, taught the stand-ins above (test code only)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, protocol: int, src: str):
        super().__init__(file, protocol)
        self.src = src

    def reducer_override(self, obj):
        if isinstance(obj, Persistent):
            meta = dict(type="class", version=obj.version, module_src=obj.src or self.src, class_name=obj.class_name,
                        state=obj.state)
            return GlobalRef("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,)
        if isinstance(obj, NumpyScalar):
            dtype = obj.value.dtype
            return GlobalRef("numpy.core.multiarray", "scalar"), (NumpyDType(dtype.str[1:]), obj.value.tobytes())
        if isinstance(obj, NumpyDType):
            return GlobalRef("numpy", "dtype"), (obj.spec, False, True), (3, "<", None, None, None, -1, -1, 0)
        if isinstance(obj, Reduce):
            return obj.func, obj.args
        return NotImplemented

    def _save_global_ref(self, obj: GlobalRef):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def _save_easydict(self, obj: EasyDict):
        self.save(GlobalRef("dnnlib.util", "EasyDict"))
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self._batch_setitems(iter(obj.items()))

    dispatch[GlobalRef] = _save_global_ref
    dispatch[EasyDict] = _save_easydict


class NumpyDType:
    def __init__(self, spec: str):
        self.spec = spec


def dumps(obj, protocol: int = 4, src: str = "") -> bytes:
    f = io.BytesIO()
    NvlabsPickler(f, protocol, src).dump(obj)
    return f.getvalue()


def write_snapshot(path, nets: dict, protocol: int = 4, sentinel: Optional[str] = None, extra: Optional[dict] = None):
    """A snapshot dict {'training_set_kwargs', then the given networks, 'augment_pipe'} pickled to path."""
    snapshot = {"training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "data.zip",
                                        "use_labels": False, "max_size": 70000, "xflip": True, "resolution": 32}}
    snapshot.update(nets)
    snapshot.setdefault("augment_pipe", augment_pipe())
    snapshot.update(extra or {})
    data = dumps(snapshot, protocol, module_src(sentinel or SENTINEL_NAME))
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---- nn.Module __dict__ in NVIDIA's layout ----

def module_state(params: dict = None, buffers: dict = None, modules: dict = None, numpy_gains: str = "native",
                 **attrs) -> dict:
    """An nn.Module's __dict__ as torch >= 2 has it, with parameters as frozen Parameters (snapshots
    are saved after requires_grad_(False))."""
    state = {"training": False,
             "_parameters": collections.OrderedDict(
                 (k, None if v is None else torch.nn.Parameter(v.detach().clone(memory_format=torch.preserve_format),
                                                               requires_grad=False))
                 for k, v in (params or {}).items()),
             "_buffers": collections.OrderedDict((k, v.detach().clone(memory_format=torch.preserve_format))
                                                 for k, v in (buffers or {}).items()),
             "_non_persistent_buffers_set": set(), "_backward_pre_hooks": collections.OrderedDict(),
             "_backward_hooks": collections.OrderedDict(), "_is_full_backward_hook": None,
             "_forward_hooks": collections.OrderedDict(), "_forward_hooks_with_kwargs": collections.OrderedDict(),
             "_forward_hooks_always_called": collections.OrderedDict(),
             "_forward_pre_hooks": collections.OrderedDict(), "_forward_pre_hooks_with_kwargs": collections.OrderedDict(),
             "_state_dict_hooks": collections.OrderedDict(), "_state_dict_pre_hooks": collections.OrderedDict(),
             "_load_state_dict_pre_hooks": collections.OrderedDict(),
             "_load_state_dict_post_hooks": collections.OrderedDict(),
             "_modules": collections.OrderedDict(modules or {})}
    for k, v in attrs.items():
        if isinstance(v, np.generic):
            v = {"native": v, "legacy": NumpyScalar(v)}[numpy_gains]
        state[k] = v
    state["_init_args"] = ()
    state["_init_kwargs"] = {}
    return state


def _filter() -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(f, f)
    return f / f.sum()


class _Builder:
    def __init__(self, numpy_gains: str, channels_last: bool, frozen: set):
        self.numpy_gains, self.channels_last, self.frozen = numpy_gains, channels_last, frozen

    def persistent(self, class_name, params=None, buffers=None, modules=None, **attrs) -> Persistent:
        return Persistent(class_name, module_state(params, buffers, modules, self.numpy_gains, **attrs))

    def fc(self, weight, bias, lr=1.0, act="linear") -> Persistent:
        return self.persistent("FullyConnectedLayer", {"weight": weight, "bias": bias}, activation=act,
                               weight_gain=np.float64(lr / np.sqrt(weight.shape[1])), bias_gain=lr)

    def conv(self, layer, act="lrelu", up=1, down=1, fp16=False, path="") -> Persistent:
        weight = layer.weight.detach()
        if fp16 and self.channels_last:
            weight = weight.to(memory_format=torch.channels_last)
        k = weight.shape[-1]
        tensors = {"weight": weight, "bias": None if layer.bias is None else layer.bias.detach()}
        frozen = path in self.frozen      # Freeze-D: trainable=False keeps weight and bias as buffers
        return self.persistent("Conv2dLayer", params=None if frozen else tensors,
                               buffers={"resample_filter": _filter(), **({k_: v for k_, v in tensors.items()
                                                                          if v is not None} if frozen else {})},
                               activation=act, up=up, down=down, conv_clamp=layer.conv_clamp, padding=k // 2,
                               weight_gain=np.float64(1 / np.sqrt(weight.shape[1] * k * k)),
                               act_gain=np.float64(np.sqrt(2) if act == "lrelu" else 1.0))

    def mapping(self, m, num_ws, c_dim, z_dim) -> Persistent:
        modules = {}
        if c_dim > 0:
            modules["embed"] = self.fc(m.embed.weight, m.embed.bias)
        for i, layer in enumerate(m.layers):
            modules[f"fc{i}"] = self.fc(layer.weight, layer.bias, layer.lr_multiplier, "lrelu")
        buffers = {"w_avg": m.w_avg} if hasattr(m, "w_avg") and m.w_avg is not None else {}
        return self.persistent("MappingNetwork", buffers=buffers, modules=modules, z_dim=z_dim, c_dim=c_dim,
                               w_dim=m.w_dim, num_ws=num_ws, num_layers=len(m.layers), w_avg_beta=m.w_avg_beta)

    def synthesis_layer(self, mc, res, up, fp16) -> Persistent:
        weight = mc.weight.detach()
        if fp16 and self.channels_last:
            weight = weight.to(memory_format=torch.channels_last)
        return self.persistent("SynthesisLayer", {"weight": weight, "noise_strength": mc.noise_strength,
                                                  "bias": mc.bias},
                               {"resample_filter": _filter(), "noise_const": mc.noise_const},
                               {"affine": self.fc(mc.affine_weight, mc.affine_bias)},
                               resolution=res, up=up, use_noise=True, activation="lrelu", conv_clamp=mc.conv_clamp,
                               padding=1, act_gain=np.float64(np.sqrt(2)))

    def torgb(self, t, fp16) -> Persistent:
        weight = t.weight.detach()
        if fp16 and self.channels_last:
            weight = weight.to(memory_format=torch.channels_last)
        return self.persistent("ToRGBLayer", {"weight": weight, "bias": t.bias},
                               modules={"affine": self.fc(t.affine_weight, t.affine_bias)}, conv_clamp=t.conv_clamp,
                               weight_gain=np.float64(1 / np.sqrt(weight.shape[1])))


def generator_record(G: StyleGAN2Generator, numpy_gains: str = "native", channels_last: bool = False,
                     architecture: Optional[str] = None) -> Persistent:
    """NVIDIA's Generator holding G's weights (architecture: override the stored one)."""
    b = _Builder(numpy_gains, channels_last, set())
    syn = G.synthesis
    arch = architecture or ("skip" if all(blk.torgb is not None for blk in syn.blocks) else "orig")
    blocks = {}
    for blk in syn.blocks:
        res = blk.resolution
        modules, params = {}, {}
        if blk.const is not None:
            params["const"] = blk.const
        else:
            modules["conv0"] = b.synthesis_layer(blk.conv0, res, 2, blk.use_fp16)
        modules["conv1"] = b.synthesis_layer(blk.conv1, res, 1, blk.use_fp16)
        if blk.torgb is not None:
            modules["torgb"] = b.torgb(blk.torgb, blk.use_fp16)
        blocks[f"b{res}"] = b.persistent("SynthesisBlock", params, {"resample_filter": _filter()}, modules,
                                         in_channels=blk.in_channels, w_dim=G.w_dim, resolution=res,
                                         img_channels=G.img_channels, is_last=res == G.img_resolution,
                                         architecture=arch, use_fp16=blk.use_fp16, channels_last=False,
                                         num_conv=blk.num_conv, num_torgb=int(blk.torgb is not None))
    res_log2 = int(np.log2(G.img_resolution))
    synthesis = b.persistent("SynthesisNetwork", modules=blocks, w_dim=G.w_dim, img_resolution=G.img_resolution,
                             img_resolution_log2=res_log2, img_channels=G.img_channels,
                             block_resolutions=[2 ** i for i in range(2, res_log2 + 1)], num_ws=G.num_ws)
    mapping = b.mapping(G.mapping, G.num_ws, G.c_dim, G.z_dim)
    g = b.persistent("Generator", modules={"synthesis": synthesis, "mapping": mapping}, z_dim=G.z_dim, c_dim=G.c_dim,
                     w_dim=G.w_dim, img_resolution=G.img_resolution, img_channels=G.img_channels, num_ws=G.num_ws)
    g.state["_init_kwargs"] = {"z_dim": G.z_dim, "mapping_kwargs": EasyDict(num_layers=len(G.mapping.layers)),
                               "synthesis_kwargs": EasyDict(channel_base=16384, architecture=arch)}
    return g


def discriminator_record(D: StyleGAN2Discriminator, numpy_gains: str = "native", channels_last: bool = False,
                         frozen: tuple = ()) -> Persistent:
    """NVIDIA's Discriminator holding D's weights; frozen: layer paths stored as buffers (Freeze-D)."""
    b = _Builder(numpy_gains, channels_last, set(frozen))
    modules = {}
    arch = "resnet" if D.blocks[0].skip is not None else "orig"
    res = D.img_resolution
    for blk in D.blocks:
        m = {}
        if blk.fromrgb is not None:
            m["fromrgb"] = b.conv(blk.fromrgb, fp16=blk.use_fp16, path=f"b{res}.fromrgb")
        m["conv0"] = b.conv(blk.conv0, fp16=blk.use_fp16, path=f"b{res}.conv0")
        m["conv1"] = b.conv(blk.conv1, down=2, fp16=blk.use_fp16, path=f"b{res}.conv1")
        if blk.skip is not None:
            m["skip"] = b.conv(blk.skip, act="linear", down=2, fp16=blk.use_fp16, path=f"b{res}.skip")
        modules[f"b{res}"] = b.persistent("DiscriminatorBlock", buffers={"resample_filter": _filter()}, modules=m,
                                          in_channels=0 if blk.fromrgb is not None else blk.conv0.in_channels,
                                          resolution=res, img_channels=D.img_channels, first_layer_idx=0,
                                          architecture=arch, use_fp16=blk.use_fp16, channels_last=False,
                                          num_layers=len(m))
        res //= 2
    if D.mapping is not None:
        modules["mapping"] = b.mapping(D.mapping, None, D.c_dim, 0)
    epilogue = {"conv": b.conv(D.conv, path="b4.conv"), "fc": b.fc(D.fc.weight, D.fc.bias, act="lrelu"),
                "out": b.fc(D.out.weight, D.out.bias)}
    if D.mbstd is not None:
        epilogue = {"mbstd": b.persistent("MinibatchStdLayer", group_size=D.mbstd.group_size,
                                          num_channels=D.mbstd.num_channels), **epilogue}
    modules["b4"] = b.persistent("DiscriminatorEpilogue", modules=epilogue, in_channels=D.conv.out_channels,
                                 cmap_dim=D.cmap_dim, resolution=4, img_channels=D.img_channels, architecture=arch)
    return b.persistent("Discriminator", modules=modules, c_dim=D.c_dim, img_resolution=D.img_resolution,
                        img_resolution_log2=int(np.log2(D.img_resolution)), img_channels=D.img_channels,
                        block_resolutions=[2 ** i for i in range(int(np.log2(D.img_resolution)), 2, -1)])


def augment_pipe() -> Persistent:
    """An AugmentPipe record (never converted; only unpickled)."""
    return Persistent("AugmentPipe", module_state(buffers={"p": torch.zeros([]), "Hz_geom": torch.randn(12)},
                                                  xflip=1.0, rotate90=1.0, xint=1.0, scale=np.float64(1.0)))


def stylegan3_generator_record() -> Persistent:
    """A minimal StyleGAN3 (alias-free) Generator: synthesis.input (SynthesisInput), L0_36_512."""
    inp = Persistent("SynthesisInput", module_state({"weight": torch.randn(8, 8)},
                                                    {"transform": torch.eye(3), "freqs": torch.randn(8, 2),
                                                     "phases": torch.randn(8)},
                                                    w_dim=8, channels=8, size=np.array([36, 36]).tolist(),
                                                    sampling_rate=np.float64(16.0), bandwidth=np.float64(2.0)))
    layer = Persistent("SynthesisLayer", module_state({"weight": torch.randn(8, 8, 3, 3), "bias": torch.zeros(8)},
                                                      is_torgb=False, is_critically_sampled=False,
                                                      in_cutoff=np.float64(2.0), out_cutoff=np.float64(2.0)))
    synthesis = Persistent("SynthesisNetwork", module_state(modules={"input": inp, "L0_36_8": layer}, w_dim=8,
                                                            img_resolution=16, img_channels=3, num_ws=2))
    mapping = Persistent("MappingNetwork", module_state(buffers={"w_avg": torch.zeros(8)}, z_dim=8, c_dim=0,
                                                        w_dim=8, num_ws=2, num_layers=2, w_avg_beta=0.998))
    return Persistent("Generator", module_state(modules={"synthesis": synthesis, "mapping": mapping}, z_dim=8,
                                                c_dim=0, w_dim=8, img_resolution=16, img_channels=3))


def flat_names(record: Persistent, prefix: str = "") -> set[str]:
    """The dotted tensor names of a record (its parameters and buffers, as NVIDIA's state_dict)."""
    names = set()
    for group in ("_parameters", "_buffers"):
        names |= {prefix + k for k, v in record.state[group].items() if v is not None}
    for name, child in record.state["_modules"].items():
        if child is not None:
            names |= flat_names(child, f"{prefix}{name}.")
    return names


# ---- NVIDIA's forward, functional, over the records (float64), from networks.py's documented semantics ----

def flatten(record: Persistent) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """({dotted name: tensor as float64}, {module path: its state}) of a record."""
    tensors, states = {}, {}

    def walk(rec, path):
        states[path] = rec.state
        prefix = path + "." if path else ""
        for group in ("_parameters", "_buffers"):
            tensors.update({prefix + k: v.detach().double() for k, v in rec.state[group].items() if v is not None})
        for name, child in rec.state["_modules"].items():
            if child is not None:
                walk(child, prefix + name)

    walk(record, "")
    return tensors, states


def _gain(value) -> float:
    return float(value.value if isinstance(value, NumpyScalar) else value)


def _fc(t, s, path, x):
    """FullyConnectedLayer: x @ (W * weight_gain)^T + b * bias_gain, then its activation."""
    st = s[path]
    y = x @ (t[f"{path}.weight"] * _gain(st["weight_gain"])).T + t[f"{path}.bias"] * _gain(st["bias_gain"])
    return torch.nn.functional.leaky_relu(y, 0.2) * np.sqrt(2) if st["activation"] == "lrelu" else y


def _normalize(x):
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


def _upfirdn(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    from tests.models.rosinality_layout import upfirdn2d
    return upfirdn2d(x, f * gain, up=up, down=down, pad=pad)


def _bias_act(x, b, act, gain, clamp):
    x = x + b.reshape(1, -1, 1, 1) if b is not None else x
    x = torch.nn.functional.leaky_relu(x, 0.2) * np.sqrt(2) * gain if act == "lrelu" else x * gain
    return x.clamp(-clamp * gain, clamp * gain) if clamp is not None else x


def _mapping(t, s, path, z, c):
    st = s[path]
    parts = []
    if st["z_dim"] > 0:
        parts.append(_normalize(z))
    if st["c_dim"] > 0:
        onehot = torch.nn.functional.one_hot(c, st["c_dim"]).double()
        parts.append(_normalize(_fc(t, s, f"{path}.embed", onehot)))
    x = torch.cat(parts, dim=1)
    for i in range(st["num_layers"]):
        x = _fc(t, s, f"{path}.fc{i}", x)
    return x


def _modulated_conv(t, s, path, x, w, demodulate, up):
    weight = t[f"{path}.weight"]                                        # [O, I, k, k]
    styles = _fc(t, s, f"{path}.affine", w)                             # [N, I]
    if not demodulate:
        styles = styles * _gain(s[path]["weight_gain"])
    wt = weight[None] * styles[:, None, :, None, None]                  # [N, O, I, k, k]
    if demodulate:
        wt = wt * (wt.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    out = []
    for n in range(x.shape[0]):
        xn = x[n:n + 1]
        if up == 2:      # zero insertion + filter (gain 4, padding [3, 2]), then a true convolution
            xn = _upfirdn(xn, t[f"{path}.resample_filter"], up=2, pad=(3, 2), gain=4.0)
            out.append(torch.nn.functional.conv2d(xn, wt[n].flip([2, 3])))
        else:
            out.append(torch.nn.functional.conv2d(xn, wt[n], padding=weight.shape[-1] // 2))
    return torch.cat(out)


def generate(record: Persistent, z: torch.Tensor, c: Optional[torch.Tensor] = None,
             truncation_psi: float = 1.0) -> torch.Tensor:
    """NVIDIA's Generator(z, c, truncation_psi, noise_mode='const') in float64 -> [N, C, R, R]."""
    t, s = flatten(record)
    w = _mapping(t, s, "mapping", z.double(), c)
    num_ws = s[""]["num_ws"]
    ws = w[:, None].repeat(1, num_ws, 1)
    if truncation_psi != 1:
        ws = t["mapping.w_avg"].lerp(ws, truncation_psi)
    x = img = None
    w_idx = 0
    for res in s["synthesis"]["block_resolutions"]:
        b = f"synthesis.b{res}"
        bs = s[b]
        block_ws = ws[:, w_idx:w_idx + bs["num_conv"] + bs["num_torgb"]]
        w_idx += bs["num_conv"]
        k = 0
        if bs["in_channels"] == 0:
            x = t[f"{b}.const"][None].repeat(z.shape[0], 1, 1, 1)
        convs = ["conv1"] if bs["in_channels"] == 0 else ["conv0", "conv1"]
        for conv in convs:
            p = f"{b}.{conv}"
            x = _modulated_conv(t, s, p, x, block_ws[:, k], True, s[p]["up"])
            x = x + t[f"{p}.noise_const"] * t[f"{p}.noise_strength"]
            x = _bias_act(x, t[f"{p}.bias"], "lrelu", 1.0, s[p]["conv_clamp"])
            k += 1
        if img is not None:
            img = _upfirdn(img, t[f"{b}.resample_filter"], up=2, pad=(2, 1), gain=4.0)
        if f"{b}.torgb" in s:
            p = f"{b}.torgb"
            y = _modulated_conv(t, s, p, x, block_ws[:, k], False, 1)
            y = _bias_act(y, t[f"{p}.bias"], "linear", 1.0, s[p]["conv_clamp"])
            img = y if img is None else img + y
    return img


def _conv_layer(t, s, path, x, gain=1.0):
    """Conv2dLayer: pad, convolve (weight * weight_gain), then the filter with downsampling."""
    st = s[path]
    weight = t[f"{path}.weight"] * _gain(st["weight_gain"])
    k = weight.shape[-1]
    if st["down"] == 2:      # the padding conv2d_resample adds for the 4-tap filter and down=2
        pad = k // 2 + 1
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [pad] * 4), weight)
        x = _upfirdn(x, t[f"{path}.resample_filter"], down=2)
    else:
        x = torch.nn.functional.conv2d(x, weight, padding=k // 2)
    return _bias_act(x, t.get(f"{path}.bias"), st["activation"], gain, st["conv_clamp"])


def discriminate(record: Persistent, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """NVIDIA's Discriminator(img, c) in float64 -> [N, 1]."""
    t, s = flatten(record)
    img = img.double()
    x = None
    for res in s[""]["block_resolutions"]:
        b = f"b{res}"
        if s[b]["in_channels"] == 0:
            x = _conv_layer(t, s, f"{b}.fromrgb", img)
        if s[b]["architecture"] == "resnet":
            y = _conv_layer(t, s, f"{b}.skip", x, gain=np.sqrt(0.5))
            x = y + _conv_layer(t, s, f"{b}.conv1", _conv_layer(t, s, f"{b}.conv0", x), gain=np.sqrt(0.5))
        else:
            x = _conv_layer(t, s, f"{b}.conv1", _conv_layer(t, s, f"{b}.conv0", x))
    if "b4.mbstd" in s:
        g, f = min(s["b4.mbstd"]["group_size"], x.shape[0]), s["b4.mbstd"]["num_channels"]
        n, ch, h, w = x.shape
        y = x.reshape(g, -1, f, ch // f, h, w)
        y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean(dim=[2, 3, 4])   # [n / g, F]
        x = torch.cat([x, y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)], dim=1)
    x = _conv_layer(t, s, "b4.conv", x)
    x = _fc(t, s, "b4.out", _fc(t, s, "b4.fc", x.flatten(1)))
    cmap_dim = s["b4"]["cmap_dim"]
    if cmap_dim > 0:
        cmap = _mapping(t, s, "mapping", None, c)
        x = (x * cmap).sum(dim=1, keepdim=True) / np.sqrt(cmap_dim)
    return x
