"""first-light: the smallest network of the zoo, one 3x3 stride-2 SAME CONV_2D with ReLU6 and seeded weights.

The die's first program; now an ordinary zoo network compiled for the NPU like any other, sized for the
configuration's network input (`height` x `width` x 3, in [-1, 1) quantized with scale 1/128, zero point 0).
"""

import numpy as np

from ..graph import Graph, Op, QuantParams, Tensor
from ..layer import random_conv_layer

__all__ = ["first_light_graph", "INPUT_SCALE", "INPUT_ZERO_POINT", "CHANNELS"]

INPUT_SCALE = 1.0 / 128.0
INPUT_ZERO_POINT = 0
CHANNELS = 8            # output channels


def first_light_graph(height, width, seed=0, channels=CHANNELS):
    """The first-light layer as an int8 Graph: input [1, height, width, 3], one CONV_2D to `channels`."""
    rng = np.random.default_rng(seed)
    layer = random_conv_layer(rng, 3, channels, kernel=(3, 3), stride=(2, 2), padding="SAME", activation="RELU6",
                              input_scale=INPUT_SCALE, input_zero_point=INPUT_ZERO_POINT)
    oh, ow, oc = layer.output_shape(height, width)
    tensors = {
        "input": Tensor("input", (1, height, width, 3), "int8",
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
