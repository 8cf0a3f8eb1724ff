"""Quantized layer descriptions (TFLite int8 semantics) and their construction from float weights."""

from dataclasses import dataclass

import numpy as np

from .arith import activation_range, quantize_multiplier

__all__ = ["ConvLayer", "quantize_conv", "random_conv_layer", "same_padding"]


def same_padding(size, kernel, stride):
    """TensorFlow SAME padding along one axis: (output size, pad before, pad after).

    When the total is odd the extra row/column goes after (bottom/right), as TensorFlow and TFLite do.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


@dataclass(frozen=True, eq=False)
class ConvLayer:
    """A CONV_2D layer in TFLite full-integer int8 form.

    weights: int8 [Cout, KH, KW, Cin] (OHWI, symmetric per output channel, zero point 0);
    bias: int32 [Cout]; multiplier/shift: per-channel Q31 multiplier and shift of
    input_scale * weight_scale / output_scale; activations int8 asymmetric per tensor.
    """

    weights: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int
    stride: tuple = (1, 1)
    padding: str = "SAME"
    input_scale: float = 1.0
    output_scale: float = 1.0
    weight_scales: np.ndarray = None
    activation: str = "NONE"

    @property
    def out_channels(self):
        return self.weights.shape[0]

    @property
    def in_channels(self):
        return self.weights.shape[3]

    @property
    def kernel(self):
        return self.weights.shape[1], self.weights.shape[2]

    def output_shape(self, in_h, in_w):
        kh, kw = self.kernel
        sh, sw = self.stride
        if self.padding == "SAME":
            return same_padding(in_h, kh, sh)[0], same_padding(in_w, kw, sw)[0], self.out_channels
        return (in_h - kh) // sh + 1, (in_w - kw) // sw + 1, self.out_channels

    def pads(self, in_h, in_w):
        """(top, bottom, left, right) zero-point padding of the input."""
        kh, kw = self.kernel
        sh, sw = self.stride
        if self.padding == "VALID":
            return 0, 0, 0, 0
        _, t, b = same_padding(in_h, kh, sh)
        _, l, r = same_padding(in_w, kw, sw)
        return t, b, l, r

    def macs(self, in_h, in_w):
        oh, ow, oc = self.output_shape(in_h, in_w)
        kh, kw = self.kernel
        return oh * ow * oc * kh * kw * self.in_channels


def quantize_conv(w_float, b_float, input_scale, input_zero_point, output_scale, output_zero_point,
                  stride=(1, 1), padding="SAME", activation="NONE"):
    """Quantize a float CONV_2D (weights OHWI) by the TFLite int8 rules.

    Per-channel symmetric weights (scale max|w|/127, values in [-127, 127]), int32 bias at
    input_scale * weight_scale, and the per-channel multiplier computed in double from float32 scales,
    as TFLite's PopulateConvolutionQuantizationParams does.
    """
    w_float = np.asarray(w_float, dtype=np.float32)
    cout = w_float.shape[0]
    b_float = np.zeros(cout, np.float32) if b_float is None else np.asarray(b_float, dtype=np.float32)
    max_abs = np.abs(w_float.reshape(cout, -1)).max(axis=1)
    w_scale = np.where(max_abs > 0, max_abs / 127.0, 1.0).astype(np.float32)
    w_q = np.clip(np.round(w_float / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    in_s = np.float32(input_scale)
    out_s = np.float32(output_scale)
    bias_scale = in_s.astype(np.float64) * w_scale.astype(np.float64)
    b_q = np.clip(np.round(b_float / bias_scale), -(1 << 31), (1 << 31) - 1).astype(np.int32)
    mults, shifts = zip(*(quantize_multiplier(float(in_s) * float(ws) / float(out_s)) for ws in w_scale))
    act_min, act_max = activation_range(activation, float(out_s), int(output_zero_point))
    return ConvLayer(weights=w_q, bias=b_q, multiplier=np.array(mults, np.int64), shift=np.array(shifts, np.int64),
                     input_zero_point=int(input_zero_point), output_zero_point=int(output_zero_point),
                     act_min=act_min, act_max=act_max, stride=tuple(stride), padding=padding,
                     input_scale=float(in_s), output_scale=float(out_s), weight_scales=w_scale,
                     activation=activation)


def random_conv_layer(rng, in_channels, out_channels, kernel=(3, 3), stride=(2, 2), padding="SAME",
                      activation="RELU6", input_scale=1 / 128, input_zero_point=0, output_scale=None,
                      output_zero_point=None):
    """A conv layer with seeded random (He-initialised) float weights, quantized by the TFLite rules.

    Without an explicit output quantization, RELU6 layers get TFLite's usual [0, 6] range (scale 6/255,
    zero point -128) and others a range wide enough for the random weights.
    """
    kh, kw = kernel
    fan_in = kh * kw * in_channels
    w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(out_channels, kh, kw, in_channels)).astype(np.float32)
    b = rng.normal(0.0, 0.1, size=out_channels).astype(np.float32)
    if output_scale is None:
        if activation == "RELU6":
            output_scale, output_zero_point = 6.0 / 255.0, -128
        else:
            output_scale, output_zero_point = 4.0 / 255.0, 0
    return quantize_conv(w, b, input_scale, input_zero_point, output_scale, output_zero_point,
                         stride=stride, padding=padding, activation=activation)
