"""Elementwise int8 -> int8 operators with the semantics of LiteRT's BUILTIN_REF kernels, bit for bit.

Each is a function of one int8 value, so the die runs every one of them as a 256-entry table (the vector engine's
LUT opcode; quant.compiler fills the table by running the golden executor on all 256 inputs). What BUILTIN_REF
runs for int8 (tflite/kernels/activations.cc, elementwise.cc, neg.cc of LiteRT):

- TANH, ELU, GELU: a table LUTPopulate<int8_t> fills at Prepare time in float32: x = input_scale * (q - zp),
  f(x) with the C library's float function (std::tanh -> tanhf, std::expm1 -> expm1f, std::erfc -> erfcf), times
  1 / output_scale, std::round, plus the output zero point, clamped. The transforms call the very libm functions
  LiteRT calls (through ctypes): glibc's tanhf and expm1f are not correctly rounded, and a table entry next to a
  rounding boundary follows their last bit (LOGISTIC, the same kind of table, is quant.ref.logistic_params with
  glibc's expf re-implemented in numpy).
- HARD_SWISH: reference_ops::HardSwish, 16-bit fixed point (two Q15 multipliers from HardSwishPrepare).
- LEAKY_RELU: reference_ops::QuantizeLeakyRelu, an identity and an alpha multiplier (a negative alpha gives a
  negative multiplier whose magnitude is applied, then negated).
- PRELU with one alpha for every element: reference_ops::BroadcastPrelu4DSlow with its two multipliers.
- RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1: QuantizedReluX: rescale by input_scale / output_scale (a float32
  quotient), then clamp at the quantized bounds.
- ABS: |q - input_zp| rescaled (when the scales differ) by the float32 quotient of the scales, plus the output
  zero point. NEG: the raw int8 value negated (neg.cc ignores the quantization; -(-128) wraps to -128).

Float kernels (used to calibrate float models) only need to be close.
"""

import ctypes
import ctypes.util
import math

import numpy as np

from .arith import multiply_by_quantized_multiplier, quantize_multiplier, round_half_away

__all__ = ["LUT_KINDS", "lut_populate", "libm_float", "tanh_params", "elu_params", "gelu_params", "lookup_int8",
           "relu_x_params", "relu_x_int8", "hard_swish_params", "hard_swish_int8", "leaky_relu_params",
           "leaky_relu_int8", "prelu_scalar_params", "prelu_scalar_int8", "abs_params", "abs_int8", "neg_int8",
           "float_elementwise", "RELU_BOUNDS"]

# Graph operators that are int8 -> int8 functions of one value (beyond LOGISTIC and QUANTIZE, handled in ref).
LUT_KINDS = ("TANH", "ELU", "GELU", "HARD_SWISH", "LEAKY_RELU", "PRELU", "ABS", "NEG", "RELU", "RELU6",
             "RELU_N1_TO_1", "RELU_0_TO_1")

# QuantizedReluX bounds in real values (None: no upper bound).
RELU_BOUNDS = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}

_F32 = np.float32


# --- the C library's float functions ----------------------------------------------------------------------------

_LIBM = None


def _libm():
    global _LIBM
    if _LIBM is None:
        for name in ("libm.so.6", ctypes.util.find_library("m")):
            if not name:
                continue
            try:
                _LIBM = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            _LIBM = False
    return _LIBM


def libm_float(name):
    """The C library's float function `name` (e.g. "tanhf") on a float32 array, elementwise, float32 out.

    Where no C math library can be loaded, numpy's float64 result rounded to float32 stands in (a correctly
    rounded result, which glibc's functions are on almost every input)."""
    lib = _libm()
    if lib:
        f = getattr(lib, name)
        f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]

        def apply(x):
            x = np.asarray(x, _F32)
            return np.array([f(float(v)) for v in x.reshape(-1)], _F32).reshape(x.shape)
        return apply
    fallback = {"tanhf": np.tanh, "expm1f": np.expm1,
                "erfcf": np.vectorize(lambda v: math.erfc(v), otypes=[np.float64])}[name]
    return lambda x: np.asarray(fallback(np.asarray(x, _F32).astype(np.float64)), np.float64).astype(_F32)


# --- tables -------------------------------------------------------------------------------------------------------

def lut_populate(input_scale, input_zero_point, output_scale, output_zero_point, transform):
    """LiteRT's LUTPopulate<int8_t>: the table (int8[256], indexed by q + 128) of `transform` (float32 array ->
    float32 array) in float32 arithmetic; rounding ties away from zero, a non-finite entry as the C cast makes it
    (INT32_MIN, clamped to -128)."""
    q = np.arange(-128, 128, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        deq = _F32(input_scale) * (q - int(input_zero_point)).astype(_F32)
        t = np.asarray(transform(deq), _F32)
        scaled = (t * (_F32(1.0) / _F32(output_scale))).astype(_F32).astype(np.float64)
    a = np.abs(scaled)
    fl = np.floor(a)
    rounded = np.sign(scaled) * np.where(a - fl >= 0.5, fl + 1, fl)
    # rescaled + output_zero_point is a float32 sum in the kernel; exact while |rounded| < 2^24, and anything
    # larger clamps anyway.
    lut = np.clip(np.where(np.abs(rounded) < 2 ** 24, rounded, np.sign(rounded) * 2 ** 24) + int(output_zero_point),
                  -128, 127)
    lut = np.where(np.isfinite(scaled), lut, -128)
    return lut.astype(np.int8)


def tanh_params(input_scale, input_zero_point, output_scale, output_zero_point):
    """TanhPrepare (kReference, int8): the table of std::tanh(float)."""
    return dict(table=lut_populate(input_scale, input_zero_point, output_scale, output_zero_point,
                                   libm_float("tanhf")))


def elu_params(input_scale, input_zero_point, output_scale, output_zero_point):
    """EluPrepare (int8): the table of x < 0 ? std::expm1(x) : x."""
    expm1 = libm_float("expm1f")
    return dict(table=lut_populate(input_scale, input_zero_point, output_scale, output_zero_point,
                                   lambda x: np.where(x < _F32(0), expm1(x), x).astype(_F32)))


_SQRT1_2 = _F32(0.70710678118654752440)            # static_cast<float>(M_SQRT1_2)
_SQRT_2_OVER_PI = _F32(1.12837916709551257390 * 0.70710678118654752440)   # kSqrt2dPi (a float constexpr)


def gelu_params(input_scale, input_zero_point, output_scale, output_zero_point, approximate=False):
    """GeluPrepare (int8): the table of GeluTransform (0.5f * x * erfc(x * -sqrt(1/2))) or, approximate,
    GeluTransformApproximate (0.5f * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715f * x^3)))), all float32."""
    if approximate:
        tanh = libm_float("tanhf")

        def f(x):
            cube = _F32(0.044715) * x * x * x
            return (_F32(0.5) * x * (_F32(1) + tanh(_SQRT_2_OVER_PI * (x + cube)))).astype(_F32)
    else:
        erfc = libm_float("erfcf")

        def f(x):
            return (_F32(0.5) * x * erfc(x * -_SQRT1_2)).astype(_F32)
    return dict(table=lut_populate(input_scale, input_zero_point, output_scale, output_zero_point, f))


def lookup_int8(x, p):
    """optimized_integer_ops::LookupTable on int8: the table entry of each value."""
    return p["table"][np.asarray(x, np.int64) + 128]


# --- fixed-point kernels ------------------------------------------------------------------------------------------

def _float_ratio(a, b):
    """float / float in C (both float32: a float32 quotient), widened to double as the kernels store it."""
    return float(_F32(_F32(a) / _F32(b)))


def _signed_quantize_multiplier(real):
    """TFLite QuantizeMultiplier on a possibly negative multiplier: frexp keeps the sign in the Q31 value."""
    if real >= 0:
        return quantize_multiplier(real)
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * (1 << 31))        # in [-2^31, -2^30]: fits int32, no carry to fix
    if shift < -31:
        return 0, 0
    return int(q_fixed), shift


def relu_x_params(kind, input_scale, input_zero_point, output_scale, output_zero_point):
    """ReluPrepare + QuantizedReluX for int8 RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1."""
    lo, hi = RELU_BOUNDS[kind]
    m, s = quantize_multiplier(_float_ratio(input_scale, output_scale))

    def bound(v):
        return int(output_zero_point) + round_half_away(float(_F32(v) / _F32(output_scale)))
    return dict(input_zero_point=int(input_zero_point), output_zero_point=int(output_zero_point), multiplier=m,
                shift=s, act_min=max(-128, bound(lo)), act_max=127 if hi is None else min(127, bound(hi)))


def relu_x_int8(x, p):
    """optimized_ops::ReluX (the int8 RELU kernels): rescale to the output, add its zero point, clamp."""
    v = multiply_by_quantized_multiplier(np.asarray(x, np.int64) - p["input_zero_point"], p["multiplier"],
                                         p["shift"]) + p["output_zero_point"]
    return np.clip(v, p["act_min"], p["act_max"]).astype(np.int8)


def _downscale_int16(m32):
    """DownScaleInt32ToInt16Multiplier: a Q31 multiplier to Q15, rounding, saturating at 32767."""
    if m32 >= (1 << 31) - 1 - (1 << 15):
        return (1 << 15) - 1
    return (m32 + (1 << 15)) >> 16


def hard_swish_params(input_scale, input_zero_point, output_scale, output_zero_point):
    """HardSwishPrepare (int8), all in float32 as the kernel computes it."""
    hires_input_scale = _F32(1.0 / 128.0) * _F32(input_scale)
    reluish_scale = _F32(3.0) / _F32(32768.0)
    om, oe = quantize_multiplier(float(_F32(hires_input_scale / _F32(output_scale))))
    if oe > 0:
        raise ValueError(f"HARD_SWISH: input scale {float(input_scale):g} / 128 over output scale "
                         f"{float(output_scale):g} needs a left shift, which LiteRT's int8 kernel refuses")
    rm, re = quantize_multiplier(float(_F32(hires_input_scale / reluish_scale)))
    return dict(input_zero_point=int(input_zero_point), output_zero_point=int(output_zero_point),
                output_multiplier=_downscale_int16(om), output_exponent=oe,
                reluish_multiplier=_downscale_int16(rm), reluish_exponent=re)


def _wrap16(x):
    return ((np.asarray(x, np.int64) + (1 << 15)) & 0xFFFF) - (1 << 15)


def _srdhm16(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int16."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    t = ab + nudge
    q = np.where(t >= 0, t >> 15, -((-t) >> 15))
    return np.where((a == b) & (a == -(1 << 15)), (1 << 15) - 1, _wrap16(q))


def _sdhm16(a, b):
    """SaturatingDoublingHighMul on int16: the product's high half, truncated toward zero (no rounding)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    q = np.where(ab >= 0, ab >> 15, -((-ab) >> 15))
    return np.where((a == b) & (a == -(1 << 15)), (1 << 15) - 1, _wrap16(q))


def _sat_shl16(x, amount):
    return np.clip(np.asarray(x, np.int64) * (1 << amount), -(1 << 15), (1 << 15) - 1)


def _rdbp16(x, exponent):
    """gemmlowp RoundingDivideByPOT on int16 values (ties away from zero). The mask is an int16 too: from an
    exponent of 16 on it is all ones (-1), which makes the result sign-like (-1 below zero, else +1), as LiteRT
    computes it for a tiny output multiplier."""
    x = np.asarray(x, np.int64)
    if exponent == 0:
        return x
    mask = int(_wrap16((1 << exponent) - 1))
    remainder = x & mask
    threshold = (mask >> 1) + np.where(x < 0, 1, 0)
    return (x >> exponent) + np.where(remainder > threshold, 1, 0)


def hard_swish_int8(x, p):
    """reference_ops::HardSwish on int8 (16-bit fixed point; int16 intermediates)."""
    v = _wrap16(np.asarray(x, np.int64) - p["input_zero_point"])
    hires = _wrap16(v * (1 << 7))
    preshift = _srdhm16(hires, p["output_multiplier"])
    reluish = hires
    e = p["reluish_exponent"]
    if e > 0:
        reluish = _sat_shl16(reluish, e - 1)
    reluish = _srdhm16(reluish, p["reluish_multiplier"])
    if e > 0:
        reluish = _sat_shl16(reluish, 1)
    if e < 0:
        reluish = _rdbp16(reluish, -e)
    reluish = _wrap16((reluish + (1 << 15)) >> 1)
    out = _rdbp16(_sdhm16(reluish, preshift), -p["output_exponent"])
    out = _wrap16(out + p["output_zero_point"])
    return np.clip(out, -128, 127).astype(np.int8)


def leaky_relu_params(input_scale, input_zero_point, output_scale, output_zero_point, alpha):
    """LeakyReluPrepare (int8): identity multiplier input/output and alpha multiplier input*alpha/output, both
    float32 expressions widened to double."""
    alpha_real = float(_F32(_F32(input_scale) * _F32(alpha)) / _F32(output_scale))
    ma, sa = _signed_quantize_multiplier(alpha_real)
    mi, si = quantize_multiplier(_float_ratio(input_scale, output_scale))
    return dict(input_zero_point=int(input_zero_point), output_zero_point=int(output_zero_point),
                alpha_multiplier=ma, alpha_shift=sa, identity_multiplier=mi, identity_shift=si)


def leaky_relu_int8(x, p):
    """reference_ops::QuantizeLeakyRelu on int8."""
    v = np.asarray(x, np.int64) - p["input_zero_point"]
    ident = multiply_by_quantized_multiplier(v, p["identity_multiplier"], p["identity_shift"])
    ma = p["alpha_multiplier"]
    scaled = multiply_by_quantized_multiplier(v, abs(ma), p["alpha_shift"])
    neg = -scaled if ma < 0 else scaled
    out = p["output_zero_point"] + np.where(v >= 0, ident, neg)
    return np.clip(out, -128, 127).astype(np.int8)


def prelu_scalar_params(input_scale, input_zero_point, alpha_q, alpha_scale, alpha_zero_point, output_scale,
                        output_zero_point):
    """PreluPrepare (int8) for one alpha value: multiplier 1 = input/output, multiplier 2 = input*alpha/output
    (float32 expressions)."""
    m1, s1 = quantize_multiplier(_float_ratio(input_scale, output_scale))
    m2, s2 = _signed_quantize_multiplier(
        float(_F32(_F32(input_scale) * _F32(alpha_scale)) / _F32(output_scale)))
    return dict(input_offset=-int(input_zero_point), alpha_value=int(alpha_q) - int(alpha_zero_point),
                output_offset=int(output_zero_point), multiplier_1=m1, shift_1=s1, multiplier_2=m2, shift_2=s2)


def prelu_scalar_int8(x, p):
    """reference_ops::BroadcastPrelu4DSlow on int8 with a single alpha."""
    v = np.asarray(x, np.int64) + p["input_offset"]
    pos = multiply_by_quantized_multiplier(v, p["multiplier_1"], p["shift_1"])
    neg = multiply_by_quantized_multiplier(v * p["alpha_value"], p["multiplier_2"], p["shift_2"])
    out = np.where(v >= 0, pos, neg) + p["output_offset"]
    return np.clip(out, -128, 127).astype(np.int8)


def abs_params(input_scale, input_zero_point, output_scale, output_zero_point):
    """AbsPrepare (int8): a rescale only when the float32 scales differ, by their float32 quotient."""
    rescale = _F32(input_scale) != _F32(output_scale)
    m, s = quantize_multiplier(_float_ratio(input_scale, output_scale)) if rescale else (0, 0)
    return dict(input_zero_point=int(input_zero_point), output_zero_point=int(output_zero_point),
                needs_rescale=bool(rescale), multiplier=m, shift=s)


def abs_int8(x, p):
    """AbsEvalQuantized on int8."""
    v = np.abs(np.asarray(x, np.int64) - p["input_zero_point"])
    if p["needs_rescale"]:
        v = multiply_by_quantized_multiplier(v, p["multiplier"], p["shift"])
    return np.clip(v + p["output_zero_point"], -128, 127).astype(np.int8)


def neg_int8(x):
    """reference_ops::Negate on int8: the raw value negated, wrapping (-(-128) is -128); quantization ignored."""
    return (((-np.asarray(x, np.int64)) + 128) & 0xFF) - 128


def float_elementwise(kind, x, alpha=None, approximate=False):
    """The float kernels (close to LiteRT's, for calibration)."""
    x = np.asarray(x, _F32)
    if kind == "TANH":
        out = np.tanh(x)
    elif kind == "ELU":
        out = np.where(x < 0, np.expm1(x), x)
    elif kind == "GELU":
        if approximate:
            out = 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + _F32(0.044715) * x * x * x)))
        else:
            out = 0.5 * x * (1 + np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64) / math.sqrt(2)))
    elif kind == "HARD_SWISH":
        out = x * np.clip(x + 3, 0, 6) / 6
    elif kind in ("LEAKY_RELU", "PRELU"):
        out = np.where(x > 0 if kind == "LEAKY_RELU" else x >= 0, x, x * _F32(alpha))
    elif kind == "ABS":
        out = np.abs(x)
    elif kind == "NEG":
        out = -x
    elif kind in RELU_BOUNDS:
        lo, hi = RELU_BOUNDS[kind]
        out = np.maximum(x, _F32(lo)) if hi is None else np.clip(x, _F32(lo), _F32(hi))
    else:
        raise ValueError(f"no float kernel for {kind}")
    return np.asarray(out, _F32)
