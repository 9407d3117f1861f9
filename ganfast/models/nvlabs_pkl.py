"""Read the network pickles of NVIDIA's stylegan2-ada-pytorch and stylegan3 (network-snapshot-*.pkl,
the published ffhq.pkl / afhqdog.pkl / ...) without running any code from them.

    nets = read_nvlabs_pkl("ffhq.pkl")     # {'G_ema': StyleGAN2Generator, 'G': ..., 'D': StyleGAN2Discriminator}

Such a file is a plain pickle of {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}. Each
network is an instance of a class wrapped by NVIDIA's torch_utils.persistence, which pickles as
a call _reconstruct_persistent_obj(meta) with meta = {'type': 'class', 'version', 'module_src':
the source code of the class's module, 'class_name', 'state': the instance's __dict__}. NVIDIA's
loader executes module_src; pickle.load would too. This module never does: NvlabsUnpickler
resolves only the globals of ALLOWED_GLOBALS, each to a function of ours that builds inert data
(PersistentObject records holding class_name and state, tensors rebuilt from raw bytes, numpy
scalars from their bytes), and refuses any other global by its module.name before anything
from the file is called.

The records are then mapped to ganfast's networks. The configuration is read off the stored
state (tensor shapes and the attributes each module stores: z_dim, c_dim, w_dim, the blocks'
architecture, use_fp16 and conv_clamp, the mapping layers' lr multiplier, the minibatch-stddev
group); every stored tensor is copied into the ganfast model or, for the resample filters,
checked against the filter ganfast builds, and every ganfast tensor is written
(ganfast.models.convert's plan-and-copy, as for the rosinality port). StyleGAN3 generators
(alias-free synthesis) and architectures ganfast does not implement (G 'resnet', D 'skip') are
refused with a message saying so.
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import warnings
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ganfast.models.convert import STYLE_MIXING_PROB, Copy, _channel_config, _copy_state, _same
from ganfast.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

__all__ = ["read_nvlabs_pkl", "read_nvlabs_generator", "read_snapshot", "unpickle_nvlabs", "NvlabsUnpickler", "PersistentObject", "NETWORK_ENTRIES",
           "MAX_PICKLE_BYTES"]

PathLike = Union[str, os.PathLike]
CALLER = "load_nvlabs_pkl"
# The networks of a snapshot, in the order they are returned; G_ema is the one NVIDIA samples with.
NETWORK_ENTRIES = ("G_ema", "G", "D")
# The largest FFHQ-1024 snapshot (G, D, G_ema, augment_pipe) is about 380 MB.
MAX_PICKLE_BYTES = 4 << 30
# ganfast's discriminator mapping (labels -> cmap) is built with this lr multiplier, NVIDIA's default.
D_MAPPING_LR_MULTIPLIER = 0.01


class _Refused(pickle.UnpicklingError):
    """A pickle this module refuses (as opposed to one the pickle machinery cannot parse)."""


# ---- inert values the unpickler builds ----

class PersistentObject:
    """What torch_utils.persistence._reconstruct_persistent_obj(meta) becomes here: the class's
    name and the instance's stored __dict__ (state), never an instance: module_src (the class's
    source code) is kept only as its length."""

    __slots__ = ("class_name", "version", "state", "module_src_chars")

    def __init__(self, class_name: str, version: int, state: dict, module_src_chars: int):
        self.class_name, self.version, self.state, self.module_src_chars = class_name, version, state, module_src_chars

    def __setstate__(self, state):
        raise _Refused("a persistent object's reconstruction carries its state in meta['state'], "
                       "not in a BUILD; refusing this pickle")

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r})"


class EasyDict(dict):
    """Stands for dnnlib.util.EasyDict (a dict with attribute access) as plain data."""

    def __setstate__(self, state):
        if state not in (None, {}):
            raise _Refused(f"dnnlib.util.EasyDict with instance attributes {state!r}; refusing "
                           f"this pickle")


class _Storage:
    """A storage rebuilt by _load_from_bytes: its elements as a flat tensor [numel]."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor):
        self.flat = flat

    def __setstate__(self, state):
        raise _Refused("BUILD on a tensor storage; refusing this pickle")


class _NumpyDType:
    """numpy.dtype(spec, align, copy) plus its BUILD state (which sets the byte order)."""

    __slots__ = ("spec", "byteorder")
    # numpy's dtype.__reduce__ state for a plain numeric dtype: (3, byteorder, None, None, None, -1, -1, 0)
    _PLAIN_STATE_TAIL = (None, None, None, -1, -1, 0)

    def __init__(self, spec: str):
        self.spec, self.byteorder = spec, "="

    def __setstate__(self, state):
        if (not isinstance(state, tuple) or len(state) != 8 or state[0] != 3 or state[1] not in ("<", ">", "|", "=")
                or state[2:] != self._PLAIN_STATE_TAIL):
            raise _Refused(f"numpy.dtype({self.spec!r}) with state {state!r}: only plain numeric "
                           f"dtypes are read")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        order = "<" if self.byteorder == "|" else self.byteorder
        return np.dtype(self.spec).newbyteorder(order)


class _NDArrayType:
    """The numpy.ndarray class as a marker for numpy.core.multiarray._reconstruct."""


class _NumpyArray:
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') followed by BUILD (version, shape,
    dtype, is_fortran, raw bytes): a numeric array built from the bytes."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if (not isinstance(state, tuple) or len(state) != 5 or not isinstance(state[2], _NumpyDType)
                or not isinstance(state[4], bytes) or not _is_shape(state[1])):
            raise _Refused("numpy array state: only numeric arrays stored as raw bytes are read")
        _, shape, dtype, is_fortran, raw = state
        a = np.frombuffer(raw, dtype=dtype.to_numpy())
        if a.size != math.prod(shape):
            raise _Refused(f"numpy array of shape {list(shape)} with {a.size} stored elements")
        self.array = a.reshape(shape, order="F" if is_fortran else "C").copy()


# ---- the functions ALLOWED_GLOBALS resolves to (each checks its arguments) ----

def _reconstruct_persistent_obj(meta) -> PersistentObject:
    if not isinstance(meta, dict) or not {"type", "version", "module_src", "class_name", "state"} <= meta.keys():
        raise _Refused("torch_utils.persistence._reconstruct_persistent_obj: meta must be a dict with "
                       "type, version, module_src, class_name and state")
    if meta["type"] != "class" or not isinstance(meta["class_name"], str) or not isinstance(meta["state"], dict) \
            or not isinstance(meta["module_src"], str):
        raise _Refused(f"torch_utils.persistence._reconstruct_persistent_obj: unexpected meta (type "
                       f"{meta['type']!r}, class_name {type(meta['class_name']).__name__}, state "
                       f"{type(meta['state']).__name__})")
    return PersistentObject(meta["class_name"], meta["version"], meta["state"], len(meta["module_src"]))


def _load_from_bytes(data) -> _Storage:
    """A storage saved by torch.save into `data` (what Storage.__reduce__ writes), read by torch's
    weights-only loader, which itself admits only storages and tensors."""
    if not isinstance(data, bytes):
        raise _Refused(f"torch.storage._load_from_bytes: expected bytes, got {type(data).__name__}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        try:
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
            raise _Refused(f"torch.storage._load_from_bytes: refusing the storage bytes, which hold more than "
                           f"a storage (torch's weights-only loader: {detail})") from None
        if not isinstance(storage, torch.storage.TypedStorage):
            raise _Refused(f"torch.storage._load_from_bytes: the bytes hold a "
                           f"{type(storage).__name__}, not a storage")
        flat = torch.empty(0, dtype=storage.dtype).set_(storage)
    return _Storage(flat)


def _is_shape(t) -> bool:
    return isinstance(t, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in t)


def _check_hooks(hooks, what: str) -> None:
    if hooks is not None and not (isinstance(hooks, collections.OrderedDict) and not hooks):
        raise _Refused(f"{what}: backward hooks must be an empty OrderedDict")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> torch.Tensor:
    if not isinstance(storage, _Storage) or not isinstance(storage_offset, int) or storage_offset < 0 \
            or not _is_shape(size) or not _is_shape(stride) or len(size) != len(stride) \
            or not isinstance(requires_grad, bool):
        raise _Refused("torch._utils._rebuild_tensor_v2: expected (storage, offset >= 0, size, "
                       "stride, requires_grad)")
    _check_hooks(backward_hooks, "torch._utils._rebuild_tensor_v2")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Refused("torch._utils._rebuild_tensor_v2: metadata must be a dict")
    flat = storage.flat
    if math.prod(size) > 0:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.numel():
            raise _Refused(f"torch._utils._rebuild_tensor_v2: a tensor of size {list(size)}, stride "
                           f"{list(stride)} at offset {storage_offset} reaches past its storage of "
                           f"{flat.numel()} elements")
    return flat.as_strided(size, stride, storage_offset)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None) -> torch.Tensor:
    """A Parameter comes back as its tensor (ganfast copies the values into its own model)."""
    if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool):
        raise _Refused("torch._utils._rebuild_parameter: expected (tensor, requires_grad, hooks)")
    _check_hooks(backward_hooks, "torch._utils._rebuild_parameter")
    if state not in (None, {}):
        raise _Refused("torch._utils._rebuild_parameter_with_state: parameters with attributes "
                       "are not read")
    return data


def _numpy_dtype(spec, align=False, copy=True) -> _NumpyDType:
    if not isinstance(spec, str) or spec not in _NUMPY_SPECS:
        raise _Refused(f"numpy.dtype({spec!r}): only {sorted(_NUMPY_SPECS)} are read")
    return _NumpyDType(spec)


_NUMPY_SPECS = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}


def _numpy_scalar(dtype, data=None) -> Union[int, float, bool]:
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise _Refused("numpy scalar: expected (numeric dtype, bytes)")
    values = np.frombuffer(data, dtype=dtype.to_numpy())
    if values.size != 1:
        raise _Refused(f"numpy scalar of dtype {dtype.spec} from {len(data)} bytes")
    return values[0].item()


def _numpy_reconstruct(subtype, shape, dtype_code) -> _NumpyArray:
    if subtype is not _NDArrayType or shape != (0,) or dtype_code != b"b":
        raise _Refused("numpy.core.multiarray._reconstruct: only plain numpy.ndarray is read")
    return _NumpyArray()


def _set(items=()) -> set:
    if not isinstance(items, (list, tuple)):
        raise _Refused("builtins.set: expected a list")
    return set(items)


def _ordered_dict(items=()) -> collections.OrderedDict:
    if not isinstance(items, (list, tuple, dict)):
        raise _Refused("collections.OrderedDict: expected a list of pairs")
    return collections.OrderedDict(items)


# (module, name) -> what the unpickler gets for it. Everything else is refused by name.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("dnnlib.util", "EasyDict"): EasyDict,              # reached through NEWOBJ: EasyDict.__new__(EasyDict)
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,   # numpy >= 2 writes this name
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): _NDArrayType,
}


class NvlabsUnpickler(pickle.Unpickler):
    """Unpickles NVIDIA's network snapshots into inert data (see ALLOWED_GLOBALS); any other global
    (os.system, builtins.eval, a class of NVIDIA's code, ...) raises pickle.UnpicklingError naming
    it, before it could be called."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            hint = ""
            if module.startswith("dnnlib.tflib"):
                hint = " (a TensorFlow-era StyleGAN/StyleGAN2 pickle; convert it with NVIDIA's legacy.py first)"
            raise _Refused(f"refusing to load {module}.{name}: an NVIDIA network pickle holds only "
                           f"persistent networks, tensors and plain data, and ganfast resolves no "
                           f"other global{hint}") from None

    def persistent_load(self, pid):
        raise _Refused(f"refusing a persistent id ({type(pid).__name__}): NVIDIA's network pickles "
                       f"use none (a torch.save file? use ganfast.models.convert.read_weights)")


def unpickle_nvlabs(data: bytes) -> Any:
    """The object a network pickle holds, as inert data (PersistentObject records, tensors, plain
    containers). Raises ValueError for refused or malformed pickles."""
    try:
        return NvlabsUnpickler(io.BytesIO(data)).load()
    except _Refused as e:
        raise ValueError(f"{CALLER}: {e}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RuntimeError, struct.error, MemoryError) as e:
        # a truncated or corrupted stream, or arguments our builders refused
        raise ValueError(f"{CALLER}: not a readable NVIDIA network pickle (truncated or corrupted?): "
                         f"{type(e).__name__}: {e}") from e


def read_nvlabs_pkl(path: PathLike, which: Optional[Sequence[str]] = None,
                    max_bytes: int = MAX_PICKLE_BYTES) -> dict[str, nn.Module]:
    """ganfast networks from an NVIDIA network pickle: {entry: module} for the entries of `which`
    (None: every one of NETWORK_ENTRIES the file holds; a named entry the file lacks is an error).
    Generators become StyleGAN2Generator, discriminators StyleGAN2Discriminator, float32 on the
    CPU in eval mode."""
    path = os.fspath(path)
    if which is not None:
        which = (which,) if isinstance(which, str) else tuple(which)
        bad = [w for w in which if w not in NETWORK_ENTRIES]
        if bad or not which:
            raise ValueError(f"{CALLER}: which must name some of {NETWORK_ENTRIES}, got {which!r}")
    snapshot = read_snapshot(path, max_bytes)
    present = [e for e in NETWORK_ENTRIES if snapshot.get(e) is not None]
    if which is None:
        if not present:
            raise ValueError(f"{CALLER}: {path!r} holds none of {NETWORK_ENTRIES} (keys: {sorted(map(str, snapshot))})")
        which = tuple(present)
    missing = [w for w in which if w not in present]
    if missing:
        raise ValueError(f"{CALLER}: {path!r} has no {missing} (it has {present})")
    return {entry: network_from_record(snapshot[entry], entry) for entry in which}


def read_nvlabs_generator(path: PathLike, use_ema: bool = True, max_bytes: int = MAX_PICKLE_BYTES
                          ) -> tuple[nn.Module, str]:
    """(generator, entry): the file's G_ema (G when it has none, or use_ema=False) as a ganfast
    StyleGAN2Generator; the other networks are unpickled as inert data but not converted."""
    snapshot = read_snapshot(path, max_bytes)
    order = ("G_ema", "G") if use_ema else ("G",)
    entry = next((e for e in order if snapshot.get(e) is not None), None)
    if entry is None:
        raise ValueError(f"{CALLER}: {os.fspath(path)!r} holds no {' or '.join(order)} "
                         f"(keys: {sorted(map(str, snapshot))})")
    return network_from_record(snapshot[entry], entry), entry


def read_snapshot(path: PathLike, max_bytes: int = MAX_PICKLE_BYTES) -> dict:
    """The snapshot dict of a network pickle as inert data (see unpickle_nvlabs)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError(f"{CALLER}: {path!r} is {size} bytes, more than max_bytes={max_bytes}")
    with open(path, "rb") as f:
        data = f.read()
    snapshot = unpickle_nvlabs(data)
    if not isinstance(snapshot, dict):
        raise ValueError(f"{CALLER}: {path!r} holds a {type(snapshot).__name__}, not a network snapshot dict "
                         f"({NETWORK_ENTRIES})")
    return snapshot


# ---- records -> ganfast networks ----

def network_from_record(record: Any, entry: str = "network") -> nn.Module:
    """A ganfast network from a PersistentObject of NVIDIA's Generator or Discriminator."""
    if not isinstance(record, PersistentObject):
        raise ValueError(f"{CALLER}: {entry} is a {type(record).__name__}, not a persistent network")
    modules, tensors = _flatten(record, entry)
    if record.class_name == "Generator":
        _refuse_stylegan3(modules, entry)
        return _generator(modules, tensors, entry)
    if record.class_name == "Discriminator":
        return _discriminator(modules, tensors, entry)
    raise ValueError(f"{CALLER}: {entry} is a {record.class_name!r}; ganfast reads NVIDIA's StyleGAN2 "
                     f"'Generator' and 'Discriminator'")


def _flatten(root: PersistentObject, entry: str) -> tuple[dict[str, PersistentObject], dict[str, torch.Tensor]]:
    """({module path: record} with '' for the root, {dotted name: tensor}) like named_modules and
    state_dict; parameters and buffers alike (frozen layers keep their weights as buffers)."""
    modules, tensors = {}, {}
    stack = [("", root)]
    while stack:
        path, rec = stack.pop()
        if not isinstance(rec, PersistentObject):
            raise ValueError(f"{CALLER}: {entry} module {path!r} is a {type(rec).__name__}, not a persistent module")
        if len(modules) > 100_000:
            raise ValueError(f"{CALLER}: {entry} has more than 100000 modules")
        modules[path] = rec
        prefix = path + "." if path else ""
        for group in ("_parameters", "_buffers"):
            for name, t in _mapping(rec, group, entry, path).items():
                if t is None:
                    continue
                if not isinstance(t, torch.Tensor):
                    raise ValueError(f"{CALLER}: {entry} {prefix}{name} is a {type(t).__name__}, not a tensor")
                tensors[prefix + str(name)] = t
        for name, child in _mapping(rec, "_modules", entry, path).items():
            if child is not None:
                stack.append((prefix + str(name), child))
    return modules, tensors


def _mapping(rec: PersistentObject, key: str, entry: str, path: str) -> Mapping:
    value = rec.state.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{CALLER}: {entry} module {path!r} ({rec.class_name}) stores {key} as a "
                         f"{type(value).__name__}, not a mapping")
    return value


def _attr(modules: dict, path: str, name: str, types: tuple, entry: str) -> Any:
    """modules[path].state[name], which must be one of `types` (None included when listed)."""
    if path not in modules:
        raise ValueError(f"{CALLER}: {entry} has no module {path!r}")
    state = modules[path].state
    if name not in state:
        raise ValueError(f"{CALLER}: {entry} module {path!r} ({modules[path].class_name}) stores no {name!r}")
    value = state[name]
    ok = (value is None and type(None) in types) or (isinstance(value, types) and not (
        isinstance(value, bool) and bool not in types))
    if not ok:
        raise ValueError(f"{CALLER}: {entry} {path}.{name} is {value!r}; expected {[t.__name__ for t in types]}")
    return value


def _check_class(modules: dict, path: str, class_name: str, entry: str) -> None:
    if path not in modules:
        raise ValueError(f"{CALLER}: {entry} has no module {path!r} (a {class_name})")
    if modules[path].class_name != class_name:
        raise ValueError(f"{CALLER}: {entry} module {path!r} is a {modules[path].class_name!r}, expected "
                         f"{class_name!r}")


def _refuse_stylegan3(modules: dict, entry: str) -> None:
    alias_free = [p for p, r in modules.items() if r.class_name == "SynthesisInput" or p == "synthesis.input"]
    if alias_free:
        raise ValueError(f"{CALLER}: {entry} is a StyleGAN3 (alias-free) generator (it has {alias_free[0]!r}); "
                         f"ganfast implements StyleGAN2 only. StyleGAN3's discriminator is StyleGAN2's: read it with "
                         f"which=('D',)")


_INT, _NUM, _BOOL, _STR = (int,), (int, float), (bool,), (str,)
_OPT_NUM = (int, float, type(None))


def _shape(tensors: dict, key: str, ndim: int, entry: str) -> tuple[int, ...]:
    if key not in tensors:
        raise ValueError(f"{CALLER}: {entry} has no tensor {key!r} (needed to infer the configuration)")
    shape = tuple(tensors[key].shape)
    if len(shape) != ndim:
        raise ValueError(f"{CALLER}: {entry} {key!r} must have {ndim} dimensions, got shape {list(shape)}")
    return shape


def _lr_multiplier(modules: dict, path: str, entry: str) -> float:
    """A FullyConnectedLayer's lr multiplier: stored as bias_gain (weight_gain = lr / sqrt(in))."""
    _check_class(modules, path, "FullyConnectedLayer", entry)
    lr = _attr(modules, path, "bias_gain", _NUM, entry)
    if not lr > 0:
        raise ValueError(f"{CALLER}: {entry} {path}.bias_gain (its lr multiplier) must be > 0, got {lr!r}")
    return float(lr)


def _activation(modules: dict, path: str, expected: str, entry: str) -> None:
    act = _attr(modules, path, "activation", _STR, entry)
    if act != expected:
        raise ValueError(f"{CALLER}: {entry} {path} uses activation {act!r}; ganfast's StyleGAN2 uses {expected!r} "
                         f"there")


def _one_value(values: dict[str, Any], what: str, entry: str) -> Any:
    """The value every listed module stores (ganfast has one setting for all of them)."""
    distinct = set(values.values())
    if len(distinct) != 1:
        raise ValueError(f"{CALLER}: {entry} {what} differs between layers ({values}); ganfast uses one value")
    return distinct.pop()


def _num_fp16_res(use_fp16: dict[int, bool], resolution: int, entry: str) -> int:
    """num_fp16_res reproducing the blocks' use_fp16 flags {res: flag} under the rule both codebases
    share: a block runs in fp16 when res >= max(2 ** (log2(resolution) + 1 - num_fp16_res), 8)."""
    n = sum(use_fp16.values())
    log2 = int(math.log2(resolution))
    fp16_resolution = max(2 ** (log2 + 1 - n), 8)
    if {r: (r >= fp16_resolution and n > 0) for r in use_fp16} != use_fp16:
        raise ValueError(f"{CALLER}: {entry} runs fp16 at resolutions {sorted(r for r, f in use_fp16.items() if f)}, "
                         f"not the highest ones; ganfast cannot express that with num_fp16_res")
    return n


def _mapping_plan(mapping: str, num_layers: int, c_dim: int) -> list[Copy]:
    copies = [c for i in range(num_layers) for c in _linear(f"{mapping}.layers.{i}", f"{mapping}.fc{i}")]
    if c_dim > 0:
        copies += _linear(f"{mapping}.embed", f"{mapping}.embed")
    return copies


def _linear(dst: str, src: str) -> list[Copy]:
    return [(f"{dst}.weight", f"{src}.weight", _same), (f"{dst}.bias", f"{src}.bias", _same)]


def _mapping_config(modules: dict, path: str, entry: str) -> tuple[int, float]:
    """(num_layers, lr_multiplier) of a MappingNetwork record."""
    _check_class(modules, path, "MappingNetwork", entry)
    num_layers = _attr(modules, path, "num_layers", _INT, entry)
    if num_layers < 1:
        raise ValueError(f"{CALLER}: {entry} {path}.num_layers must be >= 1, got {num_layers}")
    lrs = {}
    for i in range(num_layers):
        lrs[f"fc{i}"] = _lr_multiplier(modules, f"{path}.fc{i}", entry)
        _activation(modules, f"{path}.fc{i}", "lrelu", entry)
    return num_layers, _one_value(lrs, f"{path} lr multiplier", entry)


def _generator(modules: dict, tensors: dict, entry: str) -> StyleGAN2Generator:
    z_dim = _attr(modules, "", "z_dim", _INT, entry)
    c_dim = _attr(modules, "", "c_dim", _INT, entry)
    w_dim = _attr(modules, "", "w_dim", _INT, entry)
    resolution = _attr(modules, "", "img_resolution", _INT, entry)
    img_channels = _attr(modules, "", "img_channels", _INT, entry)
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"{CALLER}: {entry} img_resolution must be a power of two >= 4, got {resolution}")
    _check_class(modules, "synthesis", "SynthesisNetwork", entry)
    num_layers, lr_mapping = _mapping_config(modules, "mapping", entry)
    w_avg_beta = _attr(modules, "mapping", "w_avg_beta", _OPT_NUM, entry)
    resolutions = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
    widths, archs, use_fp16, clamps = {}, {}, {}, {}
    for res in resolutions:
        block = f"synthesis.b{res}"
        _check_class(modules, block, "SynthesisBlock", entry)
        archs[block] = _attr(modules, block, "architecture", _STR, entry)
        use_fp16[res] = _attr(modules, block, "use_fp16", _BOOL, entry)
        widths[res] = _shape(tensors, f"{block}.conv1.weight", 4, entry)[0]     # [out, in, 3, 3]
        layers = ["conv1"] + (["conv0"] if res > 4 else []) + (["torgb"] if f"{block}.torgb" in modules else [])
        for layer in layers:
            _check_class(modules, f"{block}.{layer}", "ToRGBLayer" if layer == "torgb" else "SynthesisLayer", entry)
            clamps[f"{block}.{layer}"] = _attr(modules, f"{block}.{layer}", "conv_clamp", _OPT_NUM, entry)
            if layer != "torgb":
                _activation(modules, f"{block}.{layer}", "lrelu", entry)
    architecture = _one_value(archs, "synthesis architecture", entry)
    if architecture not in ("skip", "orig"):
        raise ValueError(f"{CALLER}: {entry} has a {architecture!r} synthesis network; ganfast's StyleGAN2 "
                         f"generator implements 'skip' (NVIDIA's default) and 'orig'")
    channel_base, channel_max = _channel_config(widths, entry, CALLER)
    with torch.random.fork_rng(devices=[]):   # construction draws initial weights we overwrite
        G = StyleGAN2Generator(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=resolution,
                               img_channels=img_channels, channel_base=channel_base, channel_max=channel_max,
                               mapping_layers=num_layers, mapping_lr_multiplier=lr_mapping, w_avg_beta=w_avg_beta,
                               num_fp16_res=_num_fp16_res(use_fp16, resolution, entry),
                               conv_clamp=_one_value(clamps, "conv_clamp", entry),
                               style_mixing_prob=STYLE_MIXING_PROB, architecture=architecture)
    copies = _mapping_plan("mapping", num_layers, c_dim)
    if w_avg_beta is not None:
        copies.append(("mapping.w_avg", "mapping.w_avg", _same))
    filters = []
    for k, res in enumerate(resolutions):
        dst, src = f"synthesis.blocks.{k}", f"synthesis.b{res}"
        filters.append((f"{src}.resample_filter", 1.0))
        if res == 4:
            copies.append((f"{dst}.const", f"{src}.const", _same))
        convs = ["conv0", "conv1"] if res > 4 else ["conv1"]
        for conv in convs:
            copies += _modulated(f"{dst}.{conv}", f"{src}.{conv}")
            copies += [(f"{dst}.{conv}.noise_strength", f"{src}.{conv}.noise_strength", _same),
                       (f"{dst}.{conv}.noise_const", f"{src}.{conv}.noise_const", _same)]
            filters.append((f"{src}.{conv}.resample_filter", 1.0))
        if architecture == "skip" or res == resolution:
            copies += _modulated(f"{dst}.torgb", f"{src}.torgb")
    _copy_state(G, tensors, copies, filters, entry, CALLER)
    return G.eval()


def _modulated(dst: str, src: str) -> list[Copy]:
    """A SynthesisLayer / ToRGBLayer: its affine FullyConnectedLayer becomes affine_weight / affine_bias."""
    return [(f"{dst}.weight", f"{src}.weight", _same), (f"{dst}.bias", f"{src}.bias", _same),
            (f"{dst}.affine_weight", f"{src}.affine.weight", _same),
            (f"{dst}.affine_bias", f"{src}.affine.bias", _same)]


def _conv(dst: str, src: str, bias: bool = True) -> list[Copy]:
    return [(f"{dst}.weight", f"{src}.weight", _same)] + ([(f"{dst}.bias", f"{src}.bias", _same)] if bias else [])


def _discriminator(modules: dict, tensors: dict, entry: str) -> StyleGAN2Discriminator:
    c_dim = _attr(modules, "", "c_dim", _INT, entry)
    resolution = _attr(modules, "", "img_resolution", _INT, entry)
    img_channels = _attr(modules, "", "img_channels", _INT, entry)
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"{CALLER}: {entry} img_resolution must be a power of two >= 8, got {resolution}")
    block_resolutions = [2 ** i for i in range(int(math.log2(resolution)), 2, -1)]
    widths, archs, use_fp16, clamps = {}, {}, {}, {}
    for res in block_resolutions:
        block = f"b{res}"
        _check_class(modules, block, "DiscriminatorBlock", entry)
        archs[block] = _attr(modules, block, "architecture", _STR, entry)
        use_fp16[res] = _attr(modules, block, "use_fp16", _BOOL, entry)
        widths[res] = _shape(tensors, f"{block}.conv0.weight", 4, entry)[0]      # [tmp, tmp, 3, 3]
        for layer in (["fromrgb"] if res == resolution else []) + ["conv0", "conv1"]:
            _check_class(modules, f"{block}.{layer}", "Conv2dLayer", entry)
            _activation(modules, f"{block}.{layer}", "lrelu", entry)
            clamps[f"{block}.{layer}"] = _attr(modules, f"{block}.{layer}", "conv_clamp", _OPT_NUM, entry)
    _check_class(modules, "b4", "DiscriminatorEpilogue", entry)
    archs["b4"] = _attr(modules, "b4", "architecture", _STR, entry)
    _check_class(modules, "b4.conv", "Conv2dLayer", entry)
    clamps["b4.conv"] = _attr(modules, "b4.conv", "conv_clamp", _OPT_NUM, entry)
    widths[4] = _shape(tensors, "b4.conv.weight", 4, entry)[0]                  # [C4, C4 + mbstd, 3, 3]
    architecture = _one_value(archs, "architecture", entry)
    if architecture not in ("resnet", "orig"):
        raise ValueError(f"{CALLER}: {entry} has a {architecture!r} discriminator; ganfast's StyleGAN2 "
                         f"discriminator implements 'resnet' (NVIDIA's default) and 'orig'")
    for path in ("b4.fc", "b4.out"):
        if _lr_multiplier(modules, path, entry) != 1:
            raise ValueError(f"{CALLER}: {entry} {path} has lr multiplier {modules[path].state['bias_gain']}; "
                             f"ganfast's is 1")
    _activation(modules, "b4.fc", "lrelu", entry)
    _activation(modules, "b4.out", "linear", entry)
    if "b4.mbstd" in modules:
        _check_class(modules, "b4.mbstd", "MinibatchStdLayer", entry)
        group_size = _attr(modules, "b4.mbstd", "group_size", (int, type(None)), entry)
        mbstd_channels = _attr(modules, "b4.mbstd", "num_channels", _INT, entry)
    else:
        group_size, mbstd_channels = 4, 0
    mapping_layers, cmap_dim = 8, None
    if c_dim > 0:
        mapping_layers, lr = _mapping_config(modules, "mapping", entry)
        if lr != D_MAPPING_LR_MULTIPLIER:
            raise ValueError(f"{CALLER}: {entry} mapping has lr multiplier {lr}; ganfast's discriminator mapping "
                             f"uses {D_MAPPING_LR_MULTIPLIER}")
        cmap_dim = _attr(modules, "b4", "cmap_dim", _INT, entry)
    channel_base, channel_max = _channel_config(dict(sorted(widths.items())), entry, CALLER)
    with torch.random.fork_rng(devices=[]):
        D = StyleGAN2Discriminator(c_dim=c_dim, img_resolution=resolution, img_channels=img_channels,
                                   architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                                   num_fp16_res=_num_fp16_res(use_fp16, resolution, entry),
                                   conv_clamp=_one_value(clamps, "conv_clamp", entry), cmap_dim=cmap_dim,
                                   mbstd_group_size=group_size, mbstd_num_channels=mbstd_channels,
                                   mapping_layers=mapping_layers)
    copies, filters = [], []
    for k, res in enumerate(block_resolutions):
        dst, src = f"blocks.{k}", f"b{res}"
        filters.append((f"{src}.resample_filter", 1.0))
        layers = (["fromrgb"] if res == resolution else []) + ["conv0", "conv1"]
        for layer in layers:
            copies += _conv(f"{dst}.{layer}", f"{src}.{layer}")
            filters.append((f"{src}.{layer}.resample_filter", 1.0))
        if architecture == "resnet":
            copies += _conv(f"{dst}.skip", f"{src}.skip", bias=False)
            filters.append((f"{src}.skip.resample_filter", 1.0))
    copies += _conv("conv", "b4.conv") + _linear("fc", "b4.fc") + _linear("out", "b4.out")
    filters.append(("b4.conv.resample_filter", 1.0))
    if c_dim > 0:
        copies += _mapping_plan("mapping", mapping_layers, c_dim)
    _copy_state(D, tensors, copies, filters, entry, CALLER)
    return D.eval()
