"""ganfast.models.convert: rosinality-layout StyleGAN2 weights -> ganfast models, checked against an
independent plain-torch model of the port (tests/models/rosinality_layout.py): same images and
logits in float64 and float32, on the fused and the reference backends; errors naming the keys;
safe file loading (pickles that run code refused, safetensors); training checkpoints."""
from __future__ import annotations

import argparse
import copy
import math
import sys

import pytest
import torch

from ganfast.models import count_parameters, set_backend
from ganfast.models import convert
from ganfast.models.convert import from_rosinality, load_rosinality, load_rosinality_checkpoint
from ganfast.testing.accuracy import first_mismatches
from tests.models import rosinality_layout as ros

STYLE_DIM, N_MLP = 64, 2
# Small widths (the port's divided by 16 or 32: 16 to 32 channels) keep the float64 forwards fast.
CONFIGS = [pytest.param(dict(size=32, channel_multiplier=1, channel_divisor=16), id="32-cm1"),
           pytest.param(dict(size=64, channel_multiplier=2, channel_divisor=32), id="64-cm2")]
SMALL = (32, 1, 32)   # size, channel_multiplier, channel_divisor for the tests of errors and files
# Relative tolerances (times max(1, max|expected|)). The port demodulates rsqrt(sum(s W / sqrt(fan_in))^2
# + 1e-8), ganfast rsqrt(sum(s W)^2 + 1e-8): the same up to where the epsilon sits, a relative
# difference of ~5e-9 per layer, so G agrees to ~1e-8 in float64 (with the epsilon moved the two
# agree to 2e-15). D has no such difference.
G_REL_F64, D_REL_F64, REL_F32 = 1e-7, 1e-12, 1e-4


def generator_sd(size, channel_multiplier, channel_divisor, seed=0, **kw):
    return ros.make_generator_state_dict(size, STYLE_DIM, N_MLP, channel_multiplier, channel_divisor, seed=seed, **kw)


def as_double(sd):
    return {k: v.double() for k, v in sd.items()}


def assert_close(got, expected, rel, name):
    tol = rel * max(1.0, float(expected.abs().max()))
    assert got.shape == expected.shape, f"{name}: shape {list(got.shape)} != {list(expected.shape)}"
    err = float((got.detach().double() - expected.double()).abs().max())
    assert err <= tol, f"{name}: max error {err:.3g} > {tol:.3g}\n" + first_mismatches(got, expected, tol)


def port_parameter_count(sd):
    return sum(v.numel() for k, v in sd.items() if not ros.is_buffer(k))


@pytest.mark.parametrize("config", CONFIGS)
def test_generator_matches_port_float64(config):
    sd = generator_sd(**config)
    rng_state = torch.random.get_rng_state()
    G = from_rosinality(sd)
    assert torch.equal(torch.random.get_rng_state(), rng_state), "conversion must not consume the global RNG"
    assert (G.img_resolution, G.img_channels, G.z_dim, G.w_dim, G.c_dim) == (config["size"], 3, STYLE_DIM,
                                                                             STYLE_DIM, 0)
    assert G.mapping.num_layers == N_MLP and not G.training
    assert count_parameters(G) == port_parameter_count(sd)
    sd64 = as_double(sd)
    ws = torch.randn(2, G.num_ws, STYLE_DIM, dtype=torch.float64)   # a different w per layer: checks indexing
    z = torch.randn(2, STYLE_DIM, dtype=torch.float64)
    expected_ws, expected_z = ros.generate(sd64, ws), ros.generate_from_z(sd64, z)
    for backend in (None, "reference"):
        G64 = set_backend(copy.deepcopy(G).double(), backend)
        assert_close(G64.synthesis(ws, noise_mode="const"), expected_ws, G_REL_F64, f"G.synthesis ({backend})")
        assert_close(G64(z, noise_mode="const"), expected_z, G_REL_F64, f"G(z) ({backend})")


@pytest.mark.parametrize("config", CONFIGS)
def test_generator_matches_port_float32(config):
    sd = generator_sd(**config)
    G = from_rosinality(sd)
    z = torch.randn(2, STYLE_DIM)
    expected = ros.generate_from_z(as_double(sd), z.double())
    for backend in (None, "reference"):
        got = set_backend(copy.deepcopy(G), backend)(z, noise_mode="const")
        assert got.dtype == torch.float32
        assert_close(got, expected, REL_F32, f"G(z) float32 ({backend})")


@pytest.mark.parametrize("config", CONFIGS)
def test_discriminator_matches_port(config):
    size = config["size"]
    sd = ros.make_discriminator_state_dict(size, config["channel_multiplier"], config["channel_divisor"])
    D = from_rosinality(sd)
    assert (D.img_resolution, D.img_channels, D.c_dim) == (size, 3, 0) and not D.training
    assert count_parameters(D) == port_parameter_count(sd)
    img = torch.randn(4, 3, size, size, dtype=torch.float64)   # 4: one minibatch-stddev group
    expected = ros.discriminate(as_double(sd), img).squeeze(1)
    for backend in (None, "reference"):
        model = set_backend(copy.deepcopy(D), backend)
        assert_close(copy.deepcopy(model).double()(img), expected, D_REL_F64, f"D float64 ({backend})")
        assert_close(model(img.float()), expected, REL_F32, f"D float32 ({backend})")


def test_port_widths_at_full_scale():
    # The port's own widths (512 channels, style_dim 512, 8 mapping layers) at 8x8.
    sd = ros.make_generator_state_dict(8, style_dim=512, n_mlp=8, channel_multiplier=2)
    G = from_rosinality(sd)
    assert [b.out_channels for b in G.synthesis.blocks] == [512, 512]
    assert count_parameters(G) == port_parameter_count(sd)
    z = torch.randn(1, 512)
    assert_close(G(z, noise_mode="const"), ros.generate_from_z(as_double(sd), z.double()), REL_F32, "G(z) 512")


@pytest.mark.parametrize("channel_multiplier", [1, 2])
@pytest.mark.parametrize("size", [64, 256, 1024])
def test_channel_config_reproduces_the_port_rule(size, channel_multiplier):
    # channel_max=512, channel_base=16384 * channel_multiplier (for sizes >= 64, where it shows)
    widths = {r: c for r, c in ros.rosinality_channels(channel_multiplier).items() if r <= size}
    assert convert._channel_config(widths, "G") == (16384 * channel_multiplier, 512)


def test_channel_widths_that_the_rule_cannot_express_raise():
    sd = generator_sd(*SMALL, channels={4: 32, 8: 32, 16: 24, 32: 16})
    with pytest.raises(ValueError, match="channel widths"):
        from_rosinality(sd)


def _drop(key):
    def mutate(sd):
        del sd[key]
    return mutate


def _set(key, shape):
    def mutate(sd):
        sd[key] = torch.randn(shape)
    return mutate


@pytest.mark.parametrize("kind, mutate, key", [
    ("G", _drop("convs.1.noise.weight"), "convs.1.noise.weight"),
    ("G", _drop("noises.noise_2"), "noises.noise_2"),
    ("G", _drop("to_rgbs.1.upsample.kernel"), "to_rgbs.1.upsample.kernel"),
    ("G", _drop("input.input"), "input.input"),                                  # needed for the widths
    ("G", _set("convs.1.extra", [3]), "convs.1.extra"),                          # unexpected
    ("G", _set("convs.0.conv.modulation.bias", [7]), "convs.0.conv.modulation.bias"),   # wrong shape
    ("G", _set("to_rgb1.bias", [3]), "to_rgb1.bias"),                            # the port's is [1, 3, 1, 1]
    ("G", lambda sd: sd.__setitem__("to_rgbs.0.upsample.kernel", ros.make_kernel()), "to_rgbs.0.upsample.kernel"),
    ("D", _drop("final_linear.1.bias"), "final_linear.1.bias"),
    ("D", _set("convs.1.skip.1.bias", [16]), "convs.1.skip.1.bias"),             # the skip has no bias
    ("D", _set("convs.1.skip.1.weight", [16, 32, 3, 3]), "convs.1.skip.1.weight"),
    ("D", lambda sd: sd.__setitem__("convs.2.conv2.0.kernel", ros.make_kernel([1, 2, 1])), "convs.2.conv2.0.kernel"),
])
def test_bad_state_dicts_raise_naming_the_key(kind, mutate, key):
    sd = generator_sd(*SMALL) if kind == "G" else ros.make_discriminator_state_dict(*SMALL)
    mutate(sd)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        from_rosinality(sd)


def test_bad_arguments_raise():
    sd = generator_sd(*SMALL)
    with pytest.raises(ValueError, match="kind"):
        from_rosinality(sd, kind="generator")
    with pytest.raises(ValueError, match="kind"):
        from_rosinality({"foo.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="D state dict has no key"):        # a G state dict read as a D
        from_rosinality(sd, kind="D")
    with pytest.raises(ValueError, match="tensors"):
        from_rosinality({**sd, "args": argparse.Namespace()})
    with pytest.raises(ValueError, match="latent_avg"):
        from_rosinality(sd, latent_avg=torch.zeros(STYLE_DIM + 1))
    with pytest.raises(ValueError, match="latent_avg"):
        from_rosinality(ros.make_discriminator_state_dict(*SMALL), latent_avg=torch.zeros(STYLE_DIM))
    with pytest.raises(ValueError, match="lr_mlp"):
        from_rosinality(sd, lr_mlp=0)


def test_w_avg_without_latent_avg_is_the_ports_mean_latent():
    sd = generator_sd(*SMALL)
    G = from_rosinality(sd)
    z = torch.randn(convert.W_AVG_SAMPLES, STYLE_DIM, generator=torch.Generator().manual_seed(convert.W_AVG_SEED))
    assert_close(G.mapping.w_avg, ros.mapping(as_double(sd), z.double()).mean(dim=0), REL_F32, "w_avg")


def test_lr_mlp_other_than_the_default():
    sd = generator_sd(*SMALL)
    G = from_rosinality(sd, lr_mlp=0.1)
    z = torch.randn(2, STYLE_DIM, dtype=torch.float64)
    expected = ros.generate_from_z(as_double(sd), z, lr_mlp=0.1)
    assert_close(G.double()(z, noise_mode="const"), expected, G_REL_F64, "G(z), lr_mlp=0.1")


def assert_same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_load_torch_file(tmp_path):
    sd = generator_sd(*SMALL)
    torch.save(sd, tmp_path / "g.pt")
    assert_same_tensors(load_rosinality(tmp_path / "g.pt"), from_rosinality(sd))


def test_load_safetensors_file(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    sd = ros.make_discriminator_state_dict(*SMALL)
    safetensors_torch.save_file(sd, str(tmp_path / "d.safetensors"))
    assert_same_tensors(load_rosinality(tmp_path / "d.safetensors"), from_rosinality(sd))


def test_safetensors_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        load_rosinality(tmp_path / "d.safetensors")


PAYLOAD_CALLS = []


def record_payload_call(*args):
    """What the malicious pickle below calls when unpickled: harmless, but observable."""
    PAYLOAD_CALLS.append(args)


class MaliciousPayload:
    def __reduce__(self):
        return (record_payload_call, ("pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "g.pt"
    torch.save({**generator_sd(*SMALL), "style.1.weight": MaliciousPayload()}, path)
    PAYLOAD_CALLS.clear()
    with pytest.raises(ValueError, match="refuses to load unsafe pickles.*safetensors"):
        load_rosinality(path)
    assert PAYLOAD_CALLS == [], "the payload ran"
    torch.load(path, weights_only=False)            # the payload is live: an unsafe load runs it
    assert PAYLOAD_CALLS == [("pwned",)]


def training_checkpoint(with_g_ema=True):
    g, g_ema = generator_sd(*SMALL, seed=0), generator_sd(*SMALL, seed=5)
    d = ros.make_discriminator_state_dict(*SMALL)
    # an Adam state_dict's structure (building a real torch.optim.Adam imports torch._dynamo: seconds)
    optim = {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.randn(3), "exp_avg_sq": torch.rand(3)}},
             "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "eps": 1e-8, "weight_decay": 0,
                               "amsgrad": False, "params": [0]}]}
    checkpoint = {"g": g, "d": d, "latent_avg": torch.randn(STYLE_DIM), "g_optim": optim, "d_optim": optim,
                  "args": argparse.Namespace(size=32, channel_multiplier=1, mixing=0.9, arch="stylegan2"),
                  "ada_aug_p": 0.0}
    if with_g_ema:
        checkpoint["g_ema"] = g_ema
    return checkpoint


def test_training_checkpoint(tmp_path):
    checkpoint = training_checkpoint()
    torch.save(checkpoint, tmp_path / "000100.pt")
    nets = load_rosinality_checkpoint(tmp_path / "000100.pt")
    assert sorted(nets) == ["D", "G"]
    latent_avg = checkpoint["latent_avg"]
    assert_same_tensors(nets["G"], from_rosinality(checkpoint["g_ema"], latent_avg=latent_avg))
    assert_same_tensors(nets["D"], from_rosinality(checkpoint["d"]))
    assert torch.equal(nets["G"].mapping.w_avg, latent_avg)
    # truncation toward latent_avg, as the port's truncation / truncation_latent
    z = torch.randn(2, STYLE_DIM, dtype=torch.float64)
    expected = ros.generate_from_z(as_double(checkpoint["g_ema"]), z, truncation=0.5,
                                   truncation_latent=latent_avg.double())
    got = nets["G"].double()(z, truncation_psi=0.5, noise_mode="const")
    assert_close(got, expected, G_REL_F64, "truncated G(z)")
    with pytest.raises(ValueError, match="load_rosinality_checkpoint"):
        load_rosinality(tmp_path / "000100.pt")


def test_checkpoint_without_g_ema_uses_g(tmp_path):
    checkpoint = training_checkpoint(with_g_ema=False)
    del checkpoint["d"]
    torch.save(checkpoint, tmp_path / "g_only.pt")
    nets = load_rosinality_checkpoint(tmp_path / "g_only.pt")
    assert sorted(nets) == ["G"]
    assert_same_tensors(nets["G"], from_rosinality(checkpoint["g"], latent_avg=checkpoint["latent_avg"]))
    torch.save(checkpoint["g"], tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="load_rosinality"):
        load_rosinality_checkpoint(tmp_path / "bare.pt")


def test_num_ws_matches_the_ports_n_latent():
    for size in (4, 8, 32):
        sd = generator_sd(size, *SMALL[1:])
        assert from_rosinality(sd).num_ws == ros.n_latent(sd) == 2 * int(math.log2(size)) - 2
