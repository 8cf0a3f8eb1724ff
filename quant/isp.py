"""Bit-exact numpy model of the ISP front end: crop, Bayer binning and integer input quantization.

This module is the numeric truth the RTL (`rtl/isp.py`) is tested against; it imports no Amaranth.
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["IspQuant", "MULT_BITS", "OFFSET_BITS", "isp_channel_counts", "isp_sums", "isp_quant_params",
           "isp_reference", "isp_float"]

# Port widths of the quantization constants in the RTL (`ISPFrontEnd.mult`, `ISPFrontEnd.offset`).
MULT_BITS = 24       # unsigned
OFFSET_BITS = 32     # signed


@dataclass(frozen=True)
class IspQuant:
    """Integer input quantization: `q_c = clamp(-128, 127, (S_c * mult[c] + offset) >> shift)`.

    `S_c` is the sum of the Bayer samples of channel c in one bin, `>>` is an arithmetic (flooring) shift and
    `offset` already contains the rounding constant `1 << (shift - 1)`.
    """

    mult: tuple      # 3 unsigned ints (R, G, B), each < 2**MULT_BITS
    offset: int      # signed, fits OFFSET_BITS
    shift: int

    def __post_init__(self):
        if len(self.mult) != 3:
            raise ValueError(f"IspQuant.mult needs 3 values (R, G, B), got {self.mult!r}")
        for m in self.mult:
            if not 0 <= m < (1 << MULT_BITS):
                raise ValueError(f"IspQuant.mult value {m} does not fit unsigned {MULT_BITS} bits")
        if not -(1 << (OFFSET_BITS - 1)) <= self.offset < (1 << (OFFSET_BITS - 1)):
            raise ValueError(f"IspQuant.offset {self.offset} does not fit signed {OFFSET_BITS} bits")
        if not 1 <= self.shift <= 62:
            raise ValueError(f"IspQuant.shift must be in 1..62, got {self.shift}")


def isp_channel_counts(config):
    """Samples per bin of (R, G, B): a (2k x 2k) RGGB block holds k*k R, 2*k*k G and k*k B samples."""
    k = config.bin_factor
    return (k * k, 2 * k * k, k * k)


def isp_sums(raw, config):
    """Per-bin channel sums `S_c` as int64 [input_height, input_width, 3] from a RAW RGGB frame [H, W]."""
    raw = np.asarray(raw)
    if raw.shape != (config.frame_height, config.frame_width):
        raise ValueError(f"raw frame is {raw.shape[1]}x{raw.shape[0]}, config {config.name!r} expects "
                         f"{config.frame_width}x{config.frame_height}")
    k = config.bin_factor
    crop = raw[config.crop_y:config.crop_y + config.crop_height,
               config.crop_x:config.crop_x + config.crop_width].astype(np.int64)
    # Axes: (bin row, row in bin, bin column, column in bin); crop_x/crop_y are even, so the crop is RGGB too.
    blocks = crop.reshape(config.input_height, 2 * k, config.input_width, 2 * k)
    s_r = blocks[:, 0::2, :, 0::2].sum(axis=(1, 3))
    s_g = blocks[:, 0::2, :, 1::2].sum(axis=(1, 3)) + blocks[:, 1::2, :, 0::2].sum(axis=(1, 3))
    s_b = blocks[:, 1::2, :, 1::2].sum(axis=(1, 3))
    return np.stack([s_r, s_g, s_b], axis=-1)


def isp_quant_params(config, scale, zero_point, lo=-1.0, hi=1.0):
    """Fold the input normalization and TFLite input quantization into integer constants.

    The average 10-bit value v of a channel maps to the real x = lo + (hi - lo) * v / 1023 and then to
    q = x / scale + zero_point. With v = S_c / n_c this is affine in S_c, so
    `mult_c = round((hi - lo) / (1023 * scale * n_c) * 2**shift)` and
    `offset = round((lo / scale + zero_point) * 2**shift) + 2**(shift - 1)` (the rounding constant),
    shift = config.isp_shift. Rounding mult and offset moves (S_c * mult_c + offset) / 2**shift from
    x / scale + zero_point + 1/2 by at most (S_max + 1) / 2**(shift + 1), so q_c differs from the clamped
    round(x / scale + zero_point) by at most one whenever S_max = 2 * k * k * 1023 < 2**shift.

    Raises ValueError if scale <= 0, hi <= lo, or a constant does not fit its RTL port: each mult_c must fit
    unsigned 24 bits and offset signed 32 bits (a large |lo / scale + zero_point| with a large shift overflows
    the offset; a small scale with k = 1 overflows mult).
    """
    if not scale > 0:
        raise ValueError(f"isp_quant_params: scale must be positive, got {scale!r}")
    if not hi > lo:
        raise ValueError(f"isp_quant_params: need hi > lo, got lo={lo!r}, hi={hi!r}")
    shift = config.isp_shift
    one = 1 << shift
    gain = (hi - lo) / (1023.0 * scale)
    mult = tuple(int(round(gain / n * one)) for n in isp_channel_counts(config))
    for channel, m in zip("RGB", mult):
        if m >= (1 << MULT_BITS):
            raise ValueError(f"isp_quant_params: multiplier {channel}={m} does not fit unsigned {MULT_BITS} bits "
                             f"(scale {scale!r} too small for bin_factor {config.bin_factor} at isp_shift {shift})")
    offset = int(math.floor((lo / scale + zero_point) * one + 0.5)) + (one >> 1)
    if not -(1 << (OFFSET_BITS - 1)) <= offset < (1 << (OFFSET_BITS - 1)):
        raise ValueError(f"isp_quant_params: offset {offset} does not fit signed {OFFSET_BITS} bits "
                         f"(lo/scale + zero_point = {lo / scale + zero_point:g} too large for isp_shift {shift})")
    return IspQuant(mult=mult, offset=offset, shift=shift)


def isp_reference(raw, config, quant):
    """The ISP's int8 output tensor [input_height, input_width, 3], bit-exact with the RTL."""
    sums = isp_sums(raw, config)
    acc = sums * np.asarray(quant.mult, dtype=np.int64) + np.int64(quant.offset)   # < 2**42: no int64 overflow
    return np.clip(acc >> quant.shift, -128, 127).astype(np.int8)


def isp_float(raw, config, lo=-1.0, hi=1.0):
    """The real-valued input tensor [input_height, input_width, 3] (float32) the quantized ISP approximates."""
    avg = isp_sums(raw, config) / np.asarray(isp_channel_counts(config), dtype=np.float64)
    return (lo + (hi - lo) * avg / 1023.0).astype(np.float32)
