"""Bit-exact numpy reference kernels with the semantics of LiteRT's BUILTIN_REF int8 kernels."""

import numpy as np

from .arith import multiply_by_quantized_multiplier

__all__ = ["conv2d_accumulators", "conv2d_int8"]


def conv2d_accumulators(x, layer):
    """int32 accumulators of a CONV_2D (bias included, before requantization) for an int8 HWC input.

    Padding contributes nothing: TFLite adds -input_zero_point to every in-bounds input and skips
    out-of-bounds taps, which equals padding the input with its zero point.
    """
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != layer.in_channels:
        raise ValueError(f"conv2d: input shape {x.shape} does not match {layer.in_channels} input channels")
    in_h, in_w, _ = x.shape
    out_h, out_w, _ = layer.output_shape(in_h, in_w)
    top, bottom, left, right = layer.pads(in_h, in_w)
    kh, kw = layer.kernel
    sh, sw = layer.stride
    xs = x.astype(np.int64) - layer.input_zero_point
    xp = np.zeros((in_h + top + bottom + kh, in_w + left + right + kw, layer.in_channels), np.int64)
    xp[top:top + in_h, left:left + in_w] = xs
    w = layer.weights.astype(np.int64)
    acc = np.zeros((out_h, out_w, layer.out_channels), np.int64)
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[dy:dy + sh * (out_h - 1) + 1:sh, dx:dx + sw * (out_w - 1) + 1:sw]
            acc += patch @ w[:, dy, dx, :].T
    return acc + layer.bias.astype(np.int64)


def conv2d_int8(x, layer):
    """CONV_2D int8 -> int8 with per-channel requantization and the fused activation clamp."""
    acc = conv2d_accumulators(x, layer)
    out = multiply_by_quantized_multiplier(acc, layer.multiplier, layer.shift) + layer.output_zero_point
    return np.clip(out, layer.act_min, layer.act_max).astype(np.int8)
