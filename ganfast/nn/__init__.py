"""Drop-in nn.Modules over ganfast.ops."""
from ganfast.nn.adain_noise import AdaINNoise
from ganfast.nn.bias_act import BiasAct

__all__ = ["AdaINNoise", "BiasAct"]
