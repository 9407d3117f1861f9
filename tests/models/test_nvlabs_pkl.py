"""ganfast.models.nvlabs_pkl / convert.load_nvlabs_pkl: NVIDIA stylegan2-ada-pytorch network pickles
(written here in that format by tests/models/nvlabs_layout.py, without NVIDIA's code) load into
ganfast networks that hold the same tensors and produce the same images and logits; nothing from
the file is executed (the embedded module_src would create a sentinel file); hostile pickles are
refused by the name of what they reach for, before anything runs."""
from __future__ import annotations

import collections
import io
import os
import pickle

import numpy as np
import pytest
import torch

from ganfast.cli import main
from ganfast.models.convert import load_nvlabs_pkl
from ganfast.models.nvlabs_pkl import unpickle_nvlabs
from ganfast.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from ganfast.testing.accuracy import first_mismatches
from tests.models import nvlabs_layout as nv


# ganfast's float64 forward against NVIDIA's (tests/models/nvlabs_layout.generate / discriminate): the
# same arithmetic in another order (a fused modulated convolution, resampling filters applied
# otherwise), so they agree to float64 rounding.
F64_REL = 1e-12


def perturbed(model, seed):
    """Every parameter and buffer moved off its initial value (noise strengths and biases start
    at 0, w_avg at 0), so a tensor left unset or swapped shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not name.endswith("resample_filter"):
                t.add_(torch.randn(t.shape, generator=g) * 0.2)
    return model.eval()


def make_G(resolution=16, c_dim=0, architecture="skip", num_fp16_res=0, conv_clamp=None, seed=0):
    torch.manual_seed(seed)
    G = StyleGAN2Generator(z_dim=12, c_dim=c_dim, w_dim=16, img_resolution=resolution, channel_base=resolution * 16,
                           channel_max=24, mapping_layers=2, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                           architecture=architecture)
    return perturbed(G, seed)


def make_D(resolution=16, c_dim=0, architecture="resnet", num_fp16_res=0, conv_clamp=None, seed=1):
    torch.manual_seed(seed)
    D = StyleGAN2Discriminator(c_dim=c_dim, img_resolution=resolution, architecture=architecture,
                               channel_base=resolution * 16, channel_max=24, num_fp16_res=num_fp16_res,
                               conv_clamp=conv_clamp, mapping_layers=2, mbstd_group_size=2)
    return perturbed(D, seed)


def assert_same_tensors(got: torch.nn.Module, expected: torch.nn.Module):
    a, b = got.state_dict(), expected.state_dict()
    assert a.keys() == b.keys()
    for k in b:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), f"{k}: {first_mismatches(a[k], b[k], 0.0)}"


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """The file module_src and every hostile payload would create; it must never appear."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / nv.SENTINEL_NAME
    yield path
    assert not path.exists(), "code from the pickle was executed"


def test_module_src_would_leave_the_sentinel_if_run(tmp_path):
    # the proof the sentinel tests can fail: executing the embedded source does create the file
    target = tmp_path / "ran"
    exec(nv.module_src(str(target)), {})
    assert target.exists()


# ---- NVIDIA's names, written out from networks.py (not derived from the writer) ----

def test_writer_uses_nvidias_tensor_names():
    G, D = make_G(8, c_dim=2), make_D(8, c_dim=2)
    layer = ["weight", "bias", "affine.weight", "affine.bias"]
    conv = layer + ["noise_strength", "noise_const", "resample_filter"]
    expected_g = {"mapping.w_avg", "mapping.embed.weight", "mapping.embed.bias", "mapping.fc0.weight",
                  "mapping.fc0.bias", "mapping.fc1.weight", "mapping.fc1.bias", "synthesis.b4.const",
                  "synthesis.b4.resample_filter", "synthesis.b8.resample_filter"}
    expected_g |= {f"synthesis.b4.conv1.{n}" for n in conv} | {f"synthesis.b4.torgb.{n}" for n in layer}
    expected_g |= {f"synthesis.b8.{c}.{n}" for c in ("conv0", "conv1") for n in conv}
    expected_g |= {f"synthesis.b8.torgb.{n}" for n in layer}
    assert nv.flat_names(nv.generator_record(G)) == expected_g
    c2d = ["weight", "bias", "resample_filter"]
    expected_d = {f"b8.{c}.{n}" for c in ("fromrgb", "conv0", "conv1") for n in c2d}
    expected_d |= {"b8.resample_filter", "b8.skip.weight", "b8.skip.resample_filter"}
    expected_d |= {f"b4.conv.{n}" for n in c2d} | {f"b4.{fc}.{n}" for fc in ("fc", "out") for n in ("weight", "bias")}
    expected_d |= {f"mapping.{fc}.{n}" for fc in ("embed", "fc0", "fc1") for n in ("weight", "bias")}
    assert nv.flat_names(nv.discriminator_record(D)) == expected_d


# ---- round trips: same tensors, same images ----

G_CASES = [
    # resolution, c_dim, architecture, num_fp16_res, conv_clamp, protocol, numpy names, fp16 weights channels_last
    pytest.param(16, 0, "skip", 0, None, 4, "native", False, id="16-uncond-p4"),
    pytest.param(32, 3, "skip", 2, 256, 3, "legacy", True, id="32-cond-fp16-clamp-p3-numpy1"),
    pytest.param(8, 0, "orig", 1, 64, 3, "native", True, id="8-orig-p3"),
]


@pytest.mark.parametrize("resolution, c_dim, arch, fp16, clamp, protocol, numpy_names, channels_last", G_CASES)
def test_generator_pickle_reproduces_the_images(tmp_path, sentinel, resolution, c_dim, arch, fp16, clamp, protocol,
                                                numpy_names, channels_last):
    G = make_G(resolution, c_dim, arch, fp16, clamp)
    record = nv.generator_record(G, numpy_names, channels_last)
    path = nv.write_snapshot(tmp_path / "snap.pkl", {"G": nv.generator_record(make_G(resolution, c_dim, arch, fp16,
                                                                                      clamp, seed=5)),
                                                     "G_ema": record}, protocol)
    nets = load_nvlabs_pkl(path, which=("G_ema",))
    assert list(nets) == ["G_ema"]
    G2 = nets["G_ema"]
    assert isinstance(G2, StyleGAN2Generator) and not G2.training
    assert G2.synthesis.num_fp16_res == fp16 and G2.mapping.num_layers == 2
    assert [b.conv1.conv_clamp for b in G2.synthesis.blocks] == [clamp] * len(G2.synthesis.blocks)
    assert_same_tensors(G2, G)
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(3))
    c = torch.tensor([0, 1, 2]) % max(c_dim, 1) if c_dim else None
    for psi in (1.0, 0.6):
        expected = G(z, c, truncation_psi=psi, noise_mode="const")
        got = G2(z, c, truncation_psi=psi, noise_mode="const")
        assert torch.equal(got, expected), first_mismatches(got, expected, 0.0)
    # and the images of NVIDIA's forward over the pickled tensors, by their NVIDIA names (float64)
    expected = nv.generate(record, z, c, truncation_psi=0.6)
    got = G2.double()(z.double(), c, truncation_psi=0.6, noise_mode="const")
    tol = F64_REL * expected.abs().max().item()
    assert (got - expected).abs().max() <= tol, first_mismatches(got, expected, tol)


D_CASES = [
    pytest.param(16, 0, "resnet", 0, None, (), id="16-resnet"),
    pytest.param(32, 4, "resnet", 2, 256, ("b32.fromrgb", "b32.conv0"), id="32-cond-fp16-frozen"),
    pytest.param(16, 2, "orig", 0, None, (), id="16-orig-cond"),
]


@pytest.mark.parametrize("resolution, c_dim, arch, fp16, clamp, frozen", D_CASES)
def test_discriminator_pickle_reproduces_the_logits(tmp_path, sentinel, resolution, c_dim, arch, fp16, clamp, frozen):
    D = make_D(resolution, c_dim, arch, fp16, clamp)
    path = nv.write_snapshot(tmp_path / "snap.pkl", {"D": nv.discriminator_record(D, channels_last=True,
                                                                                  frozen=frozen)})
    D2 = load_nvlabs_pkl(path)["D"]
    assert isinstance(D2, StyleGAN2Discriminator) and D2.c_dim == c_dim
    assert_same_tensors(D2, D)
    img = torch.randn(4, 3, resolution, resolution, generator=torch.Generator().manual_seed(4))
    c = torch.arange(4) % c_dim if c_dim else None
    assert torch.equal(D2(img, c), D(img, c))
    expected = nv.discriminate(nv.discriminator_record(D), img, c)[:, 0]
    got = D2.double()(img.double(), c)
    tol = F64_REL * expected.abs().max().item()
    assert (got - expected).abs().max() <= tol, first_mismatches(got, expected, tol)


def test_default_reads_every_network_and_which_names_missing_ones(tmp_path, sentinel):
    G, D = make_G(8), make_D(8)
    path = nv.write_snapshot(tmp_path / "s.pkl", {"G": nv.generator_record(G), "D": nv.discriminator_record(D),
                                                  "G_ema": nv.generator_record(G)})
    assert list(load_nvlabs_pkl(path)) == ["G_ema", "G", "D"]
    only_g = nv.write_snapshot(tmp_path / "g.pkl", {"G_ema": nv.generator_record(G)})
    assert list(load_nvlabs_pkl(only_g)) == ["G_ema"]
    with pytest.raises(ValueError, match=r"has no \['D'\]"):
        load_nvlabs_pkl(only_g, which=("D",))
    with pytest.raises(ValueError, match="which must name"):
        load_nvlabs_pkl(only_g, which=("G_avg",))


# ---- refusals ----

def _command(sentinel) -> str:
    return f"touch {sentinel}"


def _payloads(sentinel):
    """(what the refusal must name, a stand-in that would create the sentinel if called)."""
    code = f"open({str(sentinel)!r}, 'w').write('ran')"
    return [
        ("os.system", nv.Reduce(nv.GlobalRef("os", "system"), (_command(sentinel),))),
        ("posix.system", nv.Reduce(nv.GlobalRef("posix", "system"), (_command(sentinel),))),
        ("builtins.eval", nv.Reduce(nv.GlobalRef("builtins", "eval"), (code,))),
        ("builtins.exec", nv.Reduce(nv.GlobalRef("builtins", "exec"), (code,))),
        ("subprocess.call", nv.Reduce(nv.GlobalRef("subprocess", "call"), (["touch", str(sentinel)],))),
        ("subprocess.Popen", nv.Reduce(nv.GlobalRef("subprocess", "Popen"), (["touch", str(sentinel)],))),
        # NVIDIA's own loader path: running module_src is exactly what must not happen
        ("torch_utils.persistence._src_to_module", nv.Reduce(nv.GlobalRef("torch_utils.persistence", "_src_to_module"),
                                                             (code,))),
        ("training.networks.Generator", nv.Reduce(nv.GlobalRef("training.networks", "Generator"), ())),
        ("builtins.getattr", nv.Reduce(nv.GlobalRef("builtins", "getattr"), ((), "__class__"))),
        ("copyreg._reconstructor", nv.Reduce(nv.GlobalRef("copyreg", "_reconstructor"), (dict, dict, {}))),
    ]


@pytest.mark.parametrize("index", range(10), ids=[name for name, _ in _payloads("x")])
@pytest.mark.parametrize("where", ["top-level", "in-module-state", "as-hook"])
def test_hostile_pickles_are_refused_by_name_before_anything_runs(tmp_path, sentinel, index, where):
    name, payload = _payloads(sentinel)[index]
    G = make_G(8)
    record = nv.generator_record(G)
    extra = {}
    if where == "top-level":
        extra["augment_pipe"] = payload
    elif where == "in-module-state":        # a callable smuggled in as an attribute of a persistent module
        record.state["_modules"]["synthesis"].state["forward"] = payload
    else:                                    # or as a forward hook
        record.state["_forward_hooks"][0] = payload
    path = nv.write_snapshot(tmp_path / "evil.pkl", {"G_ema": record}, extra=extra)
    with pytest.raises(ValueError, match=f"refusing to load {name}"):
        load_nvlabs_pkl(path)


class _RunsACommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_hostile_bytes_inside_a_storage_are_refused(tmp_path, sentinel):
    # torch.storage._load_from_bytes is allowed; its bytes (a torch.save stream, as Storage.__reduce__
    # writes them) go through torch's weights-only loader, which refuses anything but storages
    inner = io.BytesIO()
    torch.save(_RunsACommand(_command(sentinel)), inner, _use_new_zipfile_serialization=False)
    evil = nv.Reduce(nv.GlobalRef("torch.storage", "_load_from_bytes"), (inner.getvalue(),))
    path = nv.write_snapshot(tmp_path / "evil.pkl", {"G_ema": nv.generator_record(make_G(8))},
                             extra={"augment_pipe": evil})
    with pytest.raises(ValueError, match=r"refusing the storage bytes.*GLOBAL \w+\.system"):
        load_nvlabs_pkl(path)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_a_tensor_reaching_past_its_storage_is_refused(sentinel):
    storage = torch.arange(4.0).storage()
    func, args = storage.__reduce__()
    rebuilt = nv.Reduce(nv.GlobalRef("torch._utils", "_rebuild_tensor_v2"),
                        (nv.Reduce(nv.GlobalRef("torch.storage", "_load_from_bytes"), args), 0, (100,), (1,), False,
                         collections.OrderedDict()))
    with pytest.raises(ValueError, match="reaches past its storage of 4 elements"):
        unpickle_nvlabs(nv.dumps(rebuilt))
    ok = nv.Reduce(rebuilt.func, (rebuilt.args[0], 1, (3,), (1,), False, collections.OrderedDict()))
    assert torch.equal(unpickle_nvlabs(nv.dumps(ok)), torch.tensor([1.0, 2.0, 3.0]))


def test_truncated_empty_and_persistent_id_pickles_get_clear_errors(tmp_path, sentinel):
    path = nv.write_snapshot(tmp_path / "s.pkl", {"G_ema": nv.generator_record(make_G(8))})
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 0):
        (tmp_path / "cut.pkl").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or corrupted"):
            load_nvlabs_pkl(tmp_path / "cut.pkl")
    with pytest.raises(ValueError, match="persistent id"):          # a torch.save-style stream
        unpickle_nvlabs(b"\x80\x02X\x01\x00\x00\x00aQ.")
    with pytest.raises(ValueError, match="max_bytes"):
        from ganfast.models.nvlabs_pkl import read_nvlabs_pkl
        read_nvlabs_pkl(path, max_bytes=100)


def test_stylegan3_generator_is_refused_with_a_clear_message(tmp_path, sentinel):
    path = nv.write_snapshot(tmp_path / "sg3.pkl", {"G_ema": nv.stylegan3_generator_record(),
                                                    "D": nv.discriminator_record(make_D(16))})
    with pytest.raises(ValueError, match=r"StyleGAN3 \(alias-free\) generator .*'synthesis.input'"):
        load_nvlabs_pkl(path)
    assert list(load_nvlabs_pkl(path, which=("D",))) == ["D"]     # its discriminator is StyleGAN2's


def test_unsupported_architecture_and_wrong_shapes_are_named(tmp_path, sentinel):
    G = make_G(8)
    path = nv.write_snapshot(tmp_path / "r.pkl", {"G_ema": nv.generator_record(G, architecture="resnet")})
    with pytest.raises(ValueError, match="'resnet' synthesis network; ganfast's StyleGAN2 generator implements"):
        load_nvlabs_pkl(path)
    record = nv.generator_record(G)
    affine = record.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv0"]
    affine.state["_modules"]["affine"].state["_parameters"]["bias"] = torch.nn.Parameter(torch.ones(5))
    path = nv.write_snapshot(tmp_path / "w.pkl", {"G_ema": record})
    with pytest.raises(ValueError, match=r"'synthesis.b8.conv0.affine.bias': \[5\], expected"):
        load_nvlabs_pkl(path)
    record = nv.generator_record(G)
    record.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_buffers"]["extra"] = torch.zeros(2)
    path = nv.write_snapshot(tmp_path / "x.pkl", {"G_ema": record})
    with pytest.raises(ValueError, match=r"unexpected keys: \['synthesis.b8.extra'\]"):
        load_nvlabs_pkl(path)


# ---- ganfast generate --ckpt file.pkl ----

def test_generate_command_reads_a_network_pickle(tmp_path, sentinel, capsys):
    from PIL import Image
    path = nv.write_snapshot(tmp_path / "net.pkl", {"G_ema": nv.generator_record(make_G(8))})
    out = tmp_path / "grid.png"
    assert main(["generate", "--ckpt", str(path), "--n", "2", "--out", str(out), "--scale", "1"]) == 0
    assert np.asarray(Image.open(out)).shape[:2] == (1 * 9 + 1, 2 * 9 + 1)
    evil = nv.write_snapshot(tmp_path / "evil.pkl", {"G_ema": nv.generator_record(make_G(8))},
                             extra={"x": nv.Reduce(nv.GlobalRef("os", "system"), (_command(sentinel),))})
    assert main(["generate", "--ckpt", str(evil), "--out", str(out)]) == 2
    assert "refusing to load os.system" in capsys.readouterr().err


def test_numpy_values_come_back_as_plain_numbers_and_arrays(sentinel):
    # the gains NVIDIA's layers store are numpy scalars (np.sqrt(...)); real numpy pickles them here
    values = [np.float64(0.5), np.int64(-3), np.float32(2.0), np.bool_(True), np.float16(1.5)]
    got = unpickle_nvlabs(pickle.dumps(values, protocol=4))
    assert got == [0.5, -3, 2.0, True, 1.5] and [type(v) for v in got] == [float, int, float, bool, float]
    big_endian = np.arange(6, dtype=">f4").reshape(2, 3)
    np.testing.assert_array_equal(unpickle_nvlabs(pickle.dumps(big_endian, protocol=3)).array, big_endian)
    fortran = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    np.testing.assert_array_equal(unpickle_nvlabs(pickle.dumps(fortran)).array, fortran)
    with pytest.raises(ValueError, match=r"numpy.dtype\('O8'\)"):           # object arrays hold pickles
        unpickle_nvlabs(pickle.dumps(np.array([None], dtype=object)))
