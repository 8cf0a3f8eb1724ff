"""The first-light program: ISP input quantization plus one 3x3 stride-2 ReLU6 convolution, and its reference."""

from dataclasses import dataclass

import numpy as np

from .isp import IspQuant, isp_quant_params, isp_reference
from .layer import ConvLayer, random_conv_layer
from .ref import conv2d_int8

__all__ = ["FirstLightProgram", "first_light_program", "first_light_reference", "INPUT_SCALE",
           "INPUT_ZERO_POINT"]

# The network input: pixels normalized to [-1, 1) and quantized with scale 1/128, zero point 0.
INPUT_SCALE = 1.0 / 128.0
INPUT_ZERO_POINT = 0


@dataclass(frozen=True, eq=False)
class FirstLightProgram:
    """What the die runs on each frame in the first-light configuration."""

    layer: ConvLayer
    isp: IspQuant
    seed: int

    @property
    def input_scale(self):
        return self.layer.input_scale

    @property
    def input_zero_point(self):
        return self.layer.input_zero_point


def first_light_program(config, seed=0):
    """A 3x3 stride-2 SAME conv with ReLU6 and seeded random weights, sized for `config`."""
    rng = np.random.default_rng(seed)
    layer = random_conv_layer(rng, 3, config.conv_out_channels, kernel=(3, 3), stride=(2, 2), padding="SAME",
                              activation="RELU6", input_scale=INPUT_SCALE, input_zero_point=INPUT_ZERO_POINT)
    isp = isp_quant_params(config, INPUT_SCALE, INPUT_ZERO_POINT, lo=-1.0, hi=1.0)
    return FirstLightProgram(layer=layer, isp=isp, seed=seed)


def first_light_reference(raw, config, program):
    """(input tensor, output tensor) the die must produce for one RAW10 frame, both int8 HWC."""
    x = isp_reference(raw, config, program.isp)
    return x, conv2d_int8(x, program.layer)
