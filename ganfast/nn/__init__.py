"""Drop-in nn.Modules over ganfast.ops."""
from ganfast.nn.adain_noise import AdaINNoise
from ganfast.nn.bias_act import BiasAct
from ganfast.nn.modulated_conv2d import ModulatedConv2d, ToRGB

__all__ = ["AdaINNoise", "BiasAct", "ModulatedConv2d", "ToRGB"]
