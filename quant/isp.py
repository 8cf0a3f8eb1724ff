"""Bit-exact numpy model of the ISP front end: crop, Bayer binning and integer input quantization.

This module is the numeric truth the RTL (`rtl/isp.py`) is tested against; it imports no Amaranth.
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["IspQuant", "IspGeometry", "MULT_BITS", "OFFSET_BITS", "GEOMETRY_BITS", "isp_channel_counts",
           "isp_sums", "isp_quant_params", "isp_reference", "isp_float"]

# Port widths of the quantization constants in the RTL (`ISPFrontEnd.mult`, `ISPFrontEnd.offset`).
MULT_BITS = 24       # unsigned
OFFSET_BITS = 32     # signed
# Field widths (unsigned) of the RTL's runtime geometry port (`ISPFrontEnd.geometry`) and of the host registers.
GEOMETRY_BITS = {"crop_x": 16, "crop_y": 16, "bin_factor": 8, "out_width": 16, "out_height": 16}


@dataclass(frozen=True)
class IspGeometry:
    """Runtime geometry of the ISP front end, set by the host and taken by the die at each frame start.

    The crop is `crop_width x crop_height` = `(2k * out_width) x (2k * out_height)` Bayer pixels at
    (`crop_x`, `crop_y`) of the frame (k = `bin_factor`); each output pixel averages one (2k x 2k) block of it.
    The `DieConfig` fixes the frame, the pixels per clock and the largest output (`input_width x input_height`,
    the depth of the ISP's line buffer); `default(config)` is the geometry the config derives. Construction only
    checks that the fields are integers that fit the RTL port (so a test can build a geometry the die must
    refuse); `check(config)` says whether a given die runs it.
    """

    crop_x: int
    crop_y: int
    bin_factor: int
    out_width: int
    out_height: int

    def __post_init__(self):
        for name, bits in GEOMETRY_BITS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < (1 << bits):
                raise ValueError(f"IspGeometry.{name} must be an integer in 0..{(1 << bits) - 1} (the RTL port "
                                 f"field is {bits} bits), got {value!r}")
            object.__setattr__(self, name, int(value))

    @property
    def crop_width(self):
        return 2 * self.bin_factor * self.out_width

    @property
    def crop_height(self):
        return 2 * self.bin_factor * self.out_height

    @classmethod
    def default(cls, config):
        """The geometry the configuration derives (its centred crop, `bin_factor`, `input_width/height`): its
        `isp_geometry` (a DieConfig's is `for_input` of its input size), else `for_input` of its input size."""
        geometry = getattr(config, "isp_geometry", None)
        return geometry if geometry is not None else cls.for_input(config, config.input_width, config.input_height)

    @classmethod
    def for_input(cls, config, out_width, out_height):
        """A network input of `out_width x out_height`: the largest bin factor whose crop fits the frame (with a
        bin width 2k that is a multiple of `pixels_per_clock`), the crop centred and aligned like the config's
        own (crop_x to max(2, pixels_per_clock), crop_y to 2). Raises ValueError if no geometry fits."""
        for name, value in (("out_width", out_width), ("out_height", out_height)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"IspGeometry.for_input: {name} must be a positive integer, got {value!r}")
        P = config.pixels_per_clock
        k = min(config.frame_width // (2 * out_width), config.frame_height // (2 * out_height),
                (1 << GEOMETRY_BITS["bin_factor"]) - 1)
        while k > 0 and (2 * k) % P:
            k -= 1
        if k == 0:
            raise ValueError(f"IspGeometry.for_input: a {out_width}x{out_height} input needs a crop of at least "
                             f"{2 * out_width}x{2 * out_height} Bayer pixels (bins of a width that is a multiple "
                             f"of pixels_per_clock {P}); config {config.name!r} has a "
                             f"{config.frame_width}x{config.frame_height} frame")
        align = max(2, P)
        crop_x = (config.frame_width - 2 * k * out_width) // 2 // align * align
        crop_y = (config.frame_height - 2 * k * out_height) // 2 // 2 * 2
        geometry = cls(crop_x=crop_x, crop_y=crop_y, bin_factor=k, out_width=int(out_width),
                       out_height=int(out_height))
        geometry.check(config)
        return geometry

    def check(self, config):
        """Raise ValueError, naming the offending value, unless the die of `config` runs this geometry.

        These are exactly the geometries the RTL accepts; it drops a frame taken with any other (see
        `rtl.isp.ISPFrontEnd`). Returns the geometry, so `IspGeometry(...).check(config)` can be chained.
        """
        P = config.pixels_per_clock
        align = max(2, P)
        where = f"ISP geometry for config {config.name!r}"
        if self.bin_factor == 0:
            raise ValueError(f"{where}: bin_factor must be at least 1, got 0")
        if self.out_width == 0 or self.out_height == 0:
            raise ValueError(f"{where}: output size {self.out_width}x{self.out_height} is empty")
        if self.out_width > config.input_width or self.out_height > config.input_height:
            raise ValueError(f"{where}: output size {self.out_width}x{self.out_height} exceeds the maximum "
                             f"{config.input_width}x{config.input_height} (input_width x input_height)")
        if (2 * self.bin_factor) % P:
            raise ValueError(f"{where}: bin width {2 * self.bin_factor} (bin_factor {self.bin_factor}) is not a "
                             f"multiple of pixels_per_clock {P}")
        if self.crop_x % align or self.crop_y % 2:
            raise ValueError(f"{where}: crop origin ({self.crop_x}, {self.crop_y}) must be on an RGGB quad, with "
                             f"crop_x a multiple of {align}")
        if (self.crop_x + self.crop_width > config.frame_width or
                self.crop_y + self.crop_height > config.frame_height):
            raise ValueError(f"{where}: crop {self.crop_width}x{self.crop_height} at ({self.crop_x}, "
                             f"{self.crop_y}) leaves the {config.frame_width}x{config.frame_height} frame")
        return self


def _geometry(config, geometry):
    if geometry is None:
        geometry = IspGeometry.default(config)
    elif not isinstance(geometry, IspGeometry):
        raise TypeError(f"expected an IspGeometry or None, got {geometry!r}")
    return geometry.check(config)


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


def isp_channel_counts(config, geometry=None):
    """Samples per bin of (R, G, B): a (2k x 2k) RGGB block holds k*k R, 2*k*k G and k*k B samples.

    k is `geometry.bin_factor` (default: the config's geometry).
    """
    k = _geometry(config, geometry).bin_factor
    return (k * k, 2 * k * k, k * k)


def isp_sums(raw, config, geometry=None):
    """Per-bin channel sums `S_c` as int64 [out_height, out_width, 3] from a RAW RGGB frame [H, W].

    `geometry` is an `IspGeometry` (default: the config's); one that `check(config)` refuses raises ValueError.
    """
    raw = np.asarray(raw)
    if raw.shape != (config.frame_height, config.frame_width):
        raise ValueError(f"raw frame is {raw.shape[1]}x{raw.shape[0]}, config {config.name!r} expects "
                         f"{config.frame_width}x{config.frame_height}")
    g = _geometry(config, geometry)
    k = g.bin_factor
    crop = raw[g.crop_y:g.crop_y + g.crop_height, g.crop_x:g.crop_x + g.crop_width].astype(np.int64)
    # Axes: (bin row, row in bin, bin column, column in bin); crop_x/crop_y are even, so the crop is RGGB too.
    blocks = crop.reshape(g.out_height, 2 * k, g.out_width, 2 * k)
    s_r = blocks[:, 0::2, :, 0::2].sum(axis=(1, 3))
    s_g = blocks[:, 0::2, :, 1::2].sum(axis=(1, 3)) + blocks[:, 1::2, :, 0::2].sum(axis=(1, 3))
    s_b = blocks[:, 1::2, :, 1::2].sum(axis=(1, 3))
    return np.stack([s_r, s_g, s_b], axis=-1)


def isp_quant_params(config, scale, zero_point, lo=-1.0, hi=1.0, geometry=None):
    """Fold the input normalization and TFLite input quantization into integer constants.

    The average 10-bit value v of a channel maps to the real x = lo + (hi - lo) * v / 1023 and then to
    q = x / scale + zero_point. With v = S_c / n_c this is affine in S_c, so
    `mult_c = round((hi - lo) / (1023 * scale * n_c) * 2**shift)` and
    `offset = round((lo / scale + zero_point) * 2**shift) + 2**(shift - 1)` (the rounding constant),
    shift = config.isp_shift and n_c from `isp_channel_counts(config, geometry)` (so `mult` depends on the
    geometry's bin factor k: a host that changes k changes `mult` with it). Rounding mult and offset moves
    (S_c * mult_c + offset) / 2**shift from x / scale + zero_point + 1/2 by at most (S_max + 1) / 2**(shift + 1),
    so q_c differs from the clamped round(x / scale + zero_point) by at most one whenever
    S_max = 2 * k * k * 1023 < 2**shift.

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
    g = _geometry(config, geometry)
    mult = tuple(int(round(gain / n * one)) for n in isp_channel_counts(config, g))
    for channel, m in zip("RGB", mult):
        if m >= (1 << MULT_BITS):
            raise ValueError(f"isp_quant_params: multiplier {channel}={m} does not fit unsigned {MULT_BITS} bits "
                             f"(scale {scale!r} too small for bin_factor {g.bin_factor} at isp_shift {shift})")
    offset = int(math.floor((lo / scale + zero_point) * one + 0.5)) + (one >> 1)
    if not -(1 << (OFFSET_BITS - 1)) <= offset < (1 << (OFFSET_BITS - 1)):
        raise ValueError(f"isp_quant_params: offset {offset} does not fit signed {OFFSET_BITS} bits "
                         f"(lo/scale + zero_point = {lo / scale + zero_point:g} too large for isp_shift {shift})")
    return IspQuant(mult=mult, offset=offset, shift=shift)


def isp_reference(raw, config, quant, geometry=None):
    """The ISP's int8 output tensor [out_height, out_width, 3] for `geometry` (default: the config's geometry,
    [input_height, input_width, 3]), bit-exact with the RTL."""
    sums = isp_sums(raw, config, geometry)
    acc = sums * np.asarray(quant.mult, dtype=np.int64) + np.int64(quant.offset)   # < 2**42: no int64 overflow
    return np.clip(acc >> quant.shift, -128, 127).astype(np.int8)


def isp_float(raw, config, lo=-1.0, hi=1.0, geometry=None):
    """The real-valued input tensor [out_height, out_width, 3] (float32) the quantized ISP approximates."""
    g = _geometry(config, geometry)
    avg = isp_sums(raw, config, g) / np.asarray(isp_channel_counts(config, g), dtype=np.float64)
    return (lo + (hi - lo) * avg / 1023.0).astype(np.float32)
