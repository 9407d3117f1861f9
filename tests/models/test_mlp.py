"""The MLP generator / discriminator pair for points (ganfast.models.mlp)."""
import copy

import pytest
import torch

from ganfast.models import set_backend
from ganfast.models.mlp import MLPDiscriminator, MLPGenerator


def test_shapes_and_parameter_counts():
    G, D = MLPGenerator(z_dim=3, dim=2, hidden=8, layers=2), MLPDiscriminator(dim=2, hidden=8, layers=2)
    assert G(torch.randn(5, 3)).shape == (5, 2) and D(torch.randn(5, 2)).shape == (5,)
    # G: 3*8 + 8 (bias) + 8*8 + 8 + 8*2 + 2; D: 2*8 + 8 + 8*8 + 8 + 8*1 + 1
    assert sum(p.numel() for p in G.parameters()) == 24 + 8 + 64 + 8 + 16 + 2
    assert sum(p.numel() for p in D.parameters()) == 16 + 8 + 64 + 8 + 8 + 1


def test_fast_ops_match_the_reference_in_float64():
    torch.manual_seed(0)
    G, D = MLPGenerator(z_dim=4, hidden=16), MLPDiscriminator(hidden=16)
    G_ref, D_ref = copy.deepcopy(G).double(), copy.deepcopy(D).double()
    set_backend(G_ref, "reference")
    set_backend(D_ref, "reference")
    z = torch.randn(7, 4)
    x = G(z)
    torch.testing.assert_close(x.double(), G_ref(z.double()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(D(x).double(), D_ref(x.double()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, name", [
    (lambda: MLPGenerator(z_dim=0), "z_dim"), (lambda: MLPGenerator(hidden=0), "hidden"),
    (lambda: MLPDiscriminator(layers=0), "layers"), (lambda: MLPDiscriminator(act="gelu"), "act"),
])
def test_bad_constructor_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_inputs_and_labels():
    G, D = MLPGenerator(z_dim=2), MLPDiscriminator()
    with pytest.raises(ValueError, match=r"z must be a floating \[N, 2\]"):
        G(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"x must be a floating \[N, 2\]"):
        D(torch.randn(3))
    with pytest.raises(ValueError, match="unconditional"):
        D(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
