"""Drop-in nn.Modules over ganfast.ops."""
from ganfast.nn.bias_act import BiasAct

__all__ = ["BiasAct"]
