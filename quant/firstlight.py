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


def first_light_graph(config, seed=0):
    """The first-light layer as an int8 Graph (input 1 x H x W x 3, one CONV_2D), for the compiler."""
    from .graph import Graph, Op, QuantParams, Tensor

    program = first_light_program(config, seed)
    layer = program.layer
    h, w = config.input_height, config.input_width
    oh, ow, oc = layer.output_shape(h, w)
    tensors = {
        "input": Tensor("input", (1, h, w, 3), "int8",
                        quant=QuantParams.per_tensor(layer.input_scale, layer.input_zero_point)),
        "filter": Tensor("filter", layer.weights.shape, "int8", data=layer.weights,
                         quant=QuantParams(np.asarray(layer.weight_scales, np.float32),
                                           np.zeros(oc, np.int64), 0)),
        "bias": Tensor("bias", (oc,), "int32", data=layer.bias.astype(np.int32),
                       quant=QuantParams(np.float32(layer.input_scale) * np.asarray(layer.weight_scales, np.float32),
                                         np.zeros(oc, np.int64), 0)),
        "output": Tensor("output", (1, oh, ow, oc), "int8",
                         quant=QuantParams.per_tensor(layer.output_scale, layer.output_zero_point)),
    }
    ops = [Op("CONV_2D", ["input", "filter", "bias"], ["output"],
              {"stride": layer.stride, "padding": layer.padding, "activation": layer.activation}, name="conv1")]
    return Graph(tensors=tensors, ops=ops, inputs=["input"], outputs=["output"], name="first_light")
