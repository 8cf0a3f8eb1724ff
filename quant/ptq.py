"""Post-training quantization by the TFLite int8 rules: a float Graph plus calibration inputs in, a full-integer
int8 Graph (int8 input and output tensors) out."""

import copy

import numpy as np

from .arith import INT32_MAX
from .export import export_tflite
from .graph import SUPPORTED_OPS, Graph, ModelError, Op, QuantParams, Tensor

__all__ = ["quantize_graph", "collect_ranges", "activation_params", "quantize_weights", "quantize_bias",
           "fold_dequantize", "fuse_activations", "litert_calibrated_model",
           "SAME_QUANT_OPS", "FIXED_OUTPUT_QUANT"]

# Operators whose int8 kernels do not rescale: TFLite requires their output to carry the input's scale and zero
# point (operator_property.cc: restrict_same_input_output_scale), so calibration of their outputs is ignored.
SAME_QUANT_OPS = ("RESHAPE", "MAX_POOL_2D", "AVERAGE_POOL_2D", "PAD", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
                  "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "STRIDED_SLICE", "SLICE")

# Operators whose int8 output quantization TFLite fixes regardless of calibration: (scale, zero point).
# TANH as the converter quantizes it (operator_property.cc: restricted output scale 1/128, zero point 0).
FIXED_OUTPUT_QUANT = {"SOFTMAX": (1.0 / 256.0, -128), "LOGISTIC": (1.0 / 256.0, -128), "TANH": (1.0 / 128.0, 0)}

# Ops with weights (input 1) and bias (input 2): the filter axis that is the output channel (OHWI, 1HWO, [out, in]).
_WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 0}

# The real-valued range a fused activation allows; calibration ranges are clipped to it.
_ACT_RANGE = {"NONE": (-np.inf, np.inf), "RELU": (0.0, np.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}

# Standalone activation ops that fold into a producer's fused activation of the same name.
_FUSIBLE_ACT = ("RELU", "RELU6")
_FUSING_PRODUCERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD")


# --- TFLite quantization rules ----------------------------------------------------------------------------------

def _round_away(x):
    """std::round elementwise (ties away from zero). Exact for float32 inputs: |x| + 0.5 is exact in double."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def activation_params(lo, hi, qmin=-128, qmax=127):
    """Per-tensor asymmetric int8 parameters from a real range, as TFLite's GetAsymmetricQuantizationParams.

    The range is widened to include 0; scale = (max - min) / 255 and zero point = round(qmin - min / scale),
    clamped, all in float32 as the TFLite tool computes them (so our scale is bit-identical to its scale).
    """
    f = np.float32
    lo = min(f(lo), f(0.0))
    hi = max(f(hi), f(0.0))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ModelError(f"calibration range [{lo}, {hi}] is not finite")
    if hi == lo:
        # A tensor that was exactly zero on every calibration input. TFLite writes scale 0 here, which makes every
        # requantization multiplier of its consumers 0 or infinite; a unit range keeps the arithmetic defined.
        hi = f(1.0)
    scale = f(f(hi - lo) / f(qmax - qmin))
    zp_from_min = f(f(qmin) - f(lo / scale))
    if zp_from_min < qmin:
        zp = qmin
    elif zp_from_min > qmax:
        zp = qmax
    else:
        zp = int(_round_away(zp_from_min))
    return QuantParams.per_tensor(scale, zp)


def quantize_weights(w, axis, per_channel=True, half_range=None):
    """Symmetric int8 weights, as TFLite's SymmetricPerChannelQuantization: (int8 values, float32 scales).

    scale = max|w| / 127 per output channel (along `axis`; one scale when not per_channel), values
    round(w * (127 / max|w|)) in [-127, 127], computed in float32. `half_range` overrides max|w| (see
    _widen_for_bias). A channel of zeros gets scale 1/127 instead of TFLite's 0, so that its bias survives.
    """
    w = np.asarray(w, np.float32)
    if half_range is None:
        half_range = _half_range(w, axis, per_channel)
    half = np.asarray(half_range, np.float32).reshape(-1)
    half = np.where(half > 0, half, np.float32(1.0)).astype(np.float32)
    scales = (half / np.float32(127.0)).astype(np.float32)
    inv = (np.float32(127.0) / half).astype(np.float32)
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
    q = _round_away((w * inv.reshape(shape)).astype(np.float32))
    return np.clip(q, -127, 127).astype(np.int8), scales


def _half_range(w, axis, per_channel):
    if not per_channel:
        return np.array([np.max(np.abs(w))], np.float32)
    return np.max(np.abs(w), axis=tuple(i for i in range(w.ndim) if i != axis)).astype(np.float32)


def quantize_bias(b, input_scale, weight_scales):
    """int32 bias at scale input_scale * weight_scale (float32 product), as SymmetricPerChannelBiasQuantize.

    Returns (int32 values, float32 bias scales). Values are clamped to [-(2^31 - 1), 2^31 - 1] as TFLite does.
    """
    b = np.asarray(b, np.float32)
    scales = (np.float32(input_scale) * np.asarray(weight_scales, np.float32)).astype(np.float32)
    scales = np.broadcast_to(scales, b.shape).astype(np.float32)
    inv = np.where(scales != 0, 1.0 / scales.astype(np.float64), 0.0).astype(np.float32)
    q = _round_away((b * inv).astype(np.float32))
    return np.clip(q, -INT32_MAX, INT32_MAX).astype(np.int32), scales


def _widen_for_bias(w, b, axis, input_scale, per_channel):
    """AdjustWeightsForBiasScale: the weights' half-ranges, widened where a bias would not fit in int32 at
    input_scale * weight_scale (TFLite keeps every bias within half the int32 range)."""
    half = _half_range(np.asarray(w, np.float32), axis, per_channel).astype(np.float64)
    if b is None:
        return half
    b = np.abs(np.asarray(b, np.float64)).reshape(-1)
    if not per_channel:
        b = np.array([b.max(initial=0.0)])
    need = 2.0 * b / INT32_MAX * (127.0 / float(input_scale))
    return np.where(b >= 0.5 * float(input_scale) * (half / 127.0) * INT32_MAX, np.maximum(half, need), half)


# --- float graph passes -----------------------------------------------------------------------------------------

def fold_dequantize(graph):
    """Replace DEQUANTIZE ops of constants (float16 or int8 weights) by float32 constants.

    Models like BlazeFace store float16 weights behind DEQUANTIZE; the calibrator and PTQ want plain float32.
    """
    g = copy.deepcopy(graph)
    keep = []
    for op in g.ops:
        if op.kind == "DEQUANTIZE" and g.tensor(op.inputs[0]).is_const:
            src = g.tensor(op.inputs[0])
            data = src.data.astype(np.float32)
            if src.quant is not None and src.dtype not in ("float16", "float32"):
                scale, zp = src.quant.scale, src.quant.zero_point
                shape = [1] * data.ndim
                if src.quant.per_channel:
                    shape[src.quant.axis] = -1
                data = (data - zp.reshape(shape)) * scale.reshape(shape)
            out = g.tensor(op.outputs[0])
            g.tensors[out.name] = Tensor(out.name, tuple(out.shape), "float32", data.astype(np.float32))
        else:
            keep.append(op)
    g.ops = keep
    used = {n for op in g.ops for n in op.inputs} | set(g.inputs) | set(g.outputs)
    g.tensors = {n: t for n, t in g.tensors.items() if n in used or not t.is_const}
    return g


def fuse_activations(graph):
    """Fold a standalone RELU/RELU6 into the CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED/ADD that feeds it.

    Exact in float. Done before calibration because an unfused producer's int8 output would spend half its
    range on negative values that the next op throws away (the TFLite converter fuses the same way). Only when
    the producer has no fused activation yet and the RELU is its only consumer and not a graph output.
    """
    g = copy.deepcopy(graph)
    producers = g.producers()
    consumers = g.consumers()
    rename = {}
    drop = set()
    for op in g.ops:
        if op.kind not in _FUSIBLE_ACT:
            continue
        src = op.inputs[0]
        prod = producers.get(src)
        if (prod is None or prod.kind not in _FUSING_PRODUCERS or prod.opts.get("activation", "NONE") != "NONE"
                or len(consumers.get(src, [])) != 1 or src in g.outputs):
            continue
        prod.opts = dict(prod.opts, activation=op.kind)
        # The producer now writes the RELU's output tensor; the pre-activation tensor disappears.
        prod.outputs = [op.outputs[0] if o == src else o for o in prod.outputs]
        rename[src] = op.outputs[0]
        drop.add(id(op))
    g.ops = [op for op in g.ops if id(op) not in drop]
    for src in rename:
        g.tensors.pop(src, None)
    return g


def _ensure_bias(graph):
    """Give every CONV_2D / DEPTHWISE_CONV_2D without a bias a zero one: LiteRT's conv kernels require it (the
    TFLite converter always writes one)."""
    for op in graph.ops:
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and (len(op.inputs) < 3 or not op.inputs[2]):
            w = graph.tensor(op.inputs[1])
            cout = w.shape[3] if op.kind == "DEPTHWISE_CONV_2D" else w.shape[0]
            name = f"{op.name or op.outputs[0]}/zero_bias"
            while name in graph.tensors:
                name += "_"
            graph.tensors[name] = Tensor(name, (cout,), "float32", np.zeros(cout, np.float32))
            op.inputs = [op.inputs[0], op.inputs[1], name]
    return graph


def _check_float(graph):
    for op in graph.ops:
        if op.kind not in SUPPORTED_OPS or op.kind in ("QUANTIZE", "DEQUANTIZE"):
            why = "is not supported" if op.kind not in SUPPORTED_OPS else "in a float model is not supported"
            raise ModelError(f"operator {op.kind} (layer '{op.name or op.outputs[0]}') {why} by post-training "
                             "quantization")
        for name in op.outputs:
            t = graph.tensor(name)
            if t.dtype != "float32":
                raise ModelError(f"post-training quantization needs a float32 model; tensor '{name}' of "
                                 f"{op.label()} is {t.dtype}")
    for name in graph.inputs:
        if graph.tensor(name).dtype != "float32":
            raise ModelError(f"post-training quantization needs a float32 model; input '{name}' is "
                             f"{graph.tensor(name).dtype}")


# --- calibration ---------------------------------------------------------------------------------------------------

def _samples(calib_inputs, n_inputs):
    """Normalize calibration data to a list of per-sample tuples of float32 arrays."""
    samples = []
    for s in calib_inputs:
        if isinstance(s, (list, tuple)):
            s = tuple(np.asarray(x, np.float32) for x in s)
        else:
            s = (np.asarray(s, np.float32),)
        if len(s) != n_inputs:
            raise ModelError(f"calibration sample has {len(s)} arrays; the model has {n_inputs} inputs")
        samples.append(s)
    if not samples:
        raise ModelError("post-training quantization of a float model needs calibration data; got none")
    return samples


def collect_ranges(float_graph, calib_inputs):
    """Min and max of every activation tensor over the calibration inputs: {name: (min, max)}.

    Runs the float model in LiteRT (builtin kernels, no delegate, every intermediate tensor preserved), the way
    TFLite's calibrator logs them. Each sample must match the input shapes exactly (batch of 1 per sample).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    g = float_graph
    samples = _samples(calib_inputs, len(g.inputs))
    interp = Interpreter(model_content=export_tflite(_ensure_bias(copy.deepcopy(g))),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    by_name = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    names = list(g.inputs) + [n for op in g.ops for n in op.outputs]
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    in_details = interp.get_input_details()
    for s in samples:
        for d, x in zip(in_details, s):
            if tuple(x.shape) != tuple(d["shape"]):
                raise ModelError(f"calibration input for '{d['name']}' has shape {list(x.shape)}; "
                                 f"the model wants {list(d['shape'])}")
            interp.set_tensor(d["index"], x)
        interp.invoke()
        for n in names:
            v = interp.get_tensor(by_name[n])
            lo[n] = min(lo[n], float(v.min()))
            hi[n] = max(hi[n], float(v.max()))
    return {n: (lo[n], hi[n]) for n in names}


def _unify_concat_ranges(graph, ranges):
    """Give every CONCATENATION input the output's range, so that no requantization is needed.

    TFLite's int8 CONCATENATION requires all inputs to share the output's scale and zero point. Its converter
    inserts a requantizing QUANTIZE op per input; we instead widen the range where the input is produced (through
    RESHAPE/pool/PAD, which keep their input's quantization), so the concatenation stays pure data movement; only
    an input whose quantization is fixed (`FIXED_OUTPUT_QUANT`) is left to requantize.
    Ranges only widen, so iterating to a fixed point terminates.
    """
    producers = graph.producers()

    def root(name):
        while name in producers and producers[name].kind in SAME_QUANT_OPS:
            name = producers[name].inputs[0]
        return name

    changed = True
    while changed:
        changed = False
        for op in graph.ops:
            if op.kind != "CONCATENATION":
                continue
            # An input whose quantization TFLite fixes (a LOGISTIC's, a TANH's) keeps it: the concatenation
            # requantizes that one (exported as a QUANTIZE before it, as LiteRT's converter does).
            members = [m for m in (root(n) for n in op.inputs)
                       if m not in producers or producers[m].kind not in FIXED_OUTPUT_QUANT] + [op.outputs[0]]
            lo = min(ranges[m][0] for m in members)
            hi = max(ranges[m][1] for m in members)
            for m in members:
                if ranges[m] != (lo, hi):
                    ranges[m] = (lo, hi)
                    changed = True
    return ranges


# --- the quantizer ---------------------------------------------------------------------------------------------------

def quantize_graph(float_graph, calib_inputs, *, input_range=None, fuse=True, per_channel=True, ranges=None):
    """Quantize a float Graph to a full-integer int8 Graph by the TFLite int8 rules.

    calib_inputs: iterable of samples, each one float32 array (single-input model) or a tuple per input, in the
    input's exact shape. input_range: optional (min, max) used for every graph input instead of the calibrated
    range (e.g. (-1, 1) for a model fed [-1, 1]); calibration can only widen it. fuse: fold standalone RELU/RELU6
    into their producer first (see fuse_activations). per_channel: per-output-channel weights (TFLite default).
    ranges: precomputed {tensor: (min, max)} for the (folded, fused) graph, skipping the float runs.

    Weights: symmetric int8 (zero point 0, scale max|w| / 127, per output channel); bias int32 at
    input_scale * weight_scale; activations: asymmetric int8 per tensor from calibration min/max (TFLite's
    nudging); RESHAPE/MAX_POOL_2D/AVERAGE_POOL_2D/PAD keep their input's quantization; CONCATENATION inputs and
    output share one; SOFTMAX/LOGISTIC outputs are 1/256, -128. Input and output tensors are int8 (like a
    converter run with inference_input_type=inference_output_type=int8), so there is no QUANTIZE/DEQUANTIZE.
    """
    g = fold_dequantize(float_graph)
    _check_float(g)
    _ensure_bias(g)
    notes = []
    if fuse:
        before = len(g.ops)
        g = fuse_activations(g)
        if len(g.ops) < before:
            notes.append(f"ptq: fused {before - len(g.ops)} standalone RELU/RELU6 into their producers")
    if ranges is None:
        ranges = collect_ranges(g, calib_inputs)
    ranges = dict(ranges)
    for n in g.inputs:
        if input_range is not None:
            lo, hi = ranges.get(n, input_range)
            ranges[n] = (min(lo, input_range[0]), max(hi, input_range[1]))
    for op in g.ops:
        # A fused activation bounds its output: clip the range to it (a no-op for ranges measured on the float
        # model, which applies the activation, but not for ranges given by the caller).
        activation = op.kind if op.kind in _FUSIBLE_ACT else op.opts.get("activation", "NONE")
        if op.kind not in SAME_QUANT_OPS and op.kind not in FIXED_OUTPUT_QUANT:
            lo, hi = ranges[op.outputs[0]]
            a_lo, a_hi = _ACT_RANGE[activation]
            ranges[op.outputs[0]] = (max(lo, a_lo), min(hi, a_hi))
    widened = dict(ranges)
    _unify_concat_ranges(g, ranges)
    widened = [n for n in ranges if ranges[n] != widened[n]]
    if widened:
        notes.append(f"ptq: gave {len(widened)} tensors feeding CONCATENATION the output's range, so it needs no "
                     "requantization")

    tensors = {}
    quant = {}

    def act(name, q):
        t = g.tensor(name)
        quant[name] = q
        tensors[name] = Tensor(name, tuple(t.shape), "int8", None, q)

    for n in g.inputs:
        act(n, activation_params(*ranges[n]))
    ops = []
    for op in g.ops:
        new = Op(op.kind, list(op.inputs), list(op.outputs), dict(op.opts), op.name)
        out = op.outputs[0]
        if op.kind in _WEIGHT_AXIS:
            _quantize_weighted(g, op, quant[op.inputs[0]], per_channel, tensors)
        else:
            for n in op.inputs[1:] if op.kind not in ("ADD", "SUB", "MUL") else op.inputs:
                if n and g.tensor(n).is_const and op.kind in ("PRELU", "ADD", "SUB", "MUL"):
                    # LiteRT's quantizer: a constant operand (a PRELU's alpha, an ADD/SUB/MUL's constant) is
                    # symmetric int8 with one scale, max|value| / 127.
                    t = g.tensor(n)
                    qa, sa = quantize_weights(t.data.astype(np.float32), 0, per_channel=False)
                    tensors[n] = Tensor(n, tuple(t.shape), "int8", qa, QuantParams(sa, np.zeros(1, np.int64)))
                elif n and g.tensor(n).is_const:
                    if op.kind not in ("PAD", "RESHAPE", "MEAN"):
                        raise ModelError(f"{op.label()}: constant operand '{n}' is not supported by the quantizer")
                    tensors[n] = copy.deepcopy(g.tensor(n))
        if op.kind in SAME_QUANT_OPS:
            q = quant[op.inputs[0]]
            act(out, QuantParams(q.scale.copy(), q.zero_point.copy()))
        elif op.kind in FIXED_OUTPUT_QUANT:
            act(out, QuantParams.per_tensor(*FIXED_OUTPUT_QUANT[op.kind]))
        else:
            act(out, activation_params(*ranges[out]))
        ops.append(new)
    for op in g.ops:
        if op.kind == "CONCATENATION":
            qo = quant[op.outputs[0]]
            for n in op.inputs:
                qi = quant[n]
                if qi.scale[0] != qo.scale[0] or qi.zero_point[0] != qo.zero_point[0]:
                    notes.append(f"ptq: {op.label()} requantizes input '{n}' (its quantization is fixed)")
    return Graph(tensors=tensors, ops=ops, inputs=list(g.inputs), outputs=list(g.outputs), name=g.name,
                 notes=list(getattr(g, "notes", [])) + notes)


def _quantize_weighted(g, op, in_quant, per_channel, tensors):
    """Quantize the filter and bias of a CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED into `tensors`."""
    axis = _WEIGHT_AXIS[op.kind]
    in_scale = float(in_quant.scale[0])
    wt = g.tensor(op.inputs[1])
    if not wt.is_const:
        raise ModelError(f"{op.label()}: weights '{wt.name}' are not constant")
    bias = g.tensor(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] else None
    w = wt.data.astype(np.float32)
    half = _widen_for_bias(w, None if bias is None else bias.data, axis, in_scale, per_channel)
    q, scales = quantize_weights(w, axis, per_channel, half)
    n_ch = scales.size
    w_axis = axis if per_channel else 0
    tensors[wt.name] = Tensor(wt.name, tuple(wt.shape), "int8", q,
                              QuantParams(scales, np.zeros(n_ch, np.int64), w_axis))
    if bias is not None:
        bq, bscales = quantize_bias(bias.data, in_scale, scales if per_channel else scales[0])
        bq_scales = bscales if per_channel else bscales[:1]
        tensors[bias.name] = Tensor(bias.name, tuple(bias.shape), "int32", bq,
                                    QuantParams(bq_scales.astype(np.float32), np.zeros(bq_scales.size, np.int64), 0))


# --- LiteRT's own calibrator, for comparison -------------------------------------------------------------------------

def litert_calibrated_model(float_tflite, calib_inputs):
    """int8 .tflite bytes from LiteRT's classic calibrator and quantizer (int8 input/output, per-channel).

    A sanity check on our ranges, not a bit-exact reference: its quantizer inserts requantize ops around
    CONCATENATION and keeps unfused activations. The model must have no DEQUANTIZE ops (fold them first).
    """
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as cw

    calib_inputs = list(calib_inputs)
    first = calib_inputs[0] if calib_inputs else None
    samples = _samples(calib_inputs, len(first) if isinstance(first, (list, tuple)) else 1)
    cal = cw.CalibrationWrapper(bytes(float_tflite), [], [])
    cal.Prepare([list(x.shape) for x in samples[0]])
    for s in samples:
        cal.FeedTensor(list(s))
    i8, i32 = np.dtype(np.int8).num, np.dtype(np.int32).num
    # (input type, output type, allow_float, activations type, bias type, disable_per_channel, disable per-channel
    # for dense layers)
    return bytes(cal.QuantizeModel(i8, i8, False, i8, i32, False, False))
