"""Model zoo: networks the toolchain is exercised on (MobileNet V1 from its published architecture, BlazeFace)."""

import numpy as np

from .mobilenet import mobilenet_v1

# BlazeFace lives in quant.zoo.blazeface (not imported here, so `python -m quant.zoo.blazeface` runs cleanly).
__all__ = ["count_macs", "count_weights", "mobilenet_v1"]

_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def count_macs(graph):
    """Multiply-accumulates of one inference: CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED (the MAC array's
    work; pooling and ADD are not MACs)."""
    total = 0
    for op in graph.ops:
        if op.kind not in _WEIGHTED:
            continue
        w = graph.tensor(op.inputs[1]).shape
        out = graph.tensor(op.outputs[0]).shape
        if op.kind == "CONV_2D":            # OHWI filter: every output element sums KH*KW*Cin products
            total += int(np.prod(out)) * w[1] * w[2] * w[3]
        elif op.kind == "DEPTHWISE_CONV_2D":  # 1HWO filter: KH*KW products per output element
            total += int(np.prod(out)) * w[1] * w[2]
        else:                               # [out, in] weights: `in` products per output element
            total += int(np.prod(out)) * w[1]
    return total


def count_weights(graph, biases=False):
    """Number of weight values (filter elements) of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED, plus their
    bias values when `biases`."""
    total = 0
    for op in graph.ops:
        if op.kind not in _WEIGHTED:
            continue
        total += int(np.prod(graph.tensor(op.inputs[1]).shape))
        if biases and len(op.inputs) > 2 and op.inputs[2]:
            total += int(np.prod(graph.tensor(op.inputs[2]).shape))
    return total
