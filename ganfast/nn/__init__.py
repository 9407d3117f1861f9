"""Drop-in nn.Modules over ganfast.ops."""
from ganfast.nn import utils
from ganfast.nn.adain_noise import AdaINNoise
from ganfast.nn.batch_norm_act import BatchNormAct2d
from ganfast.nn.bias_act import BiasAct
from ganfast.nn.equalized import EqualizedConv2d, EqualizedLinear, MinibatchStd, normalize_2nd_moment
from ganfast.nn.conditional_batch_norm import ConditionalBatchNorm2d, accumulate_standing_stats
from ganfast.nn.modulated_conv2d import ModulatedConv2d, ToRGB
from ganfast.nn.self_attention import SelfAttention2d
from ganfast.nn.spectral_norm import SNConv2d, SNConvTranspose2d, SNEmbedding, SNLinear, SpectralNorm

__all__ = ["AdaINNoise", "BatchNormAct2d", "BiasAct", "ConditionalBatchNorm2d", "EqualizedConv2d", "EqualizedLinear", "MinibatchStd", "normalize_2nd_moment", "accumulate_standing_stats", "ModulatedConv2d",
           "ToRGB", "SelfAttention2d", "SNConv2d", "SNConvTranspose2d", "SNEmbedding", "SNLinear", "SpectralNorm", "utils"]
