"""Golden graph executor: runs a Graph in numpy with exactly LiteRT's BUILTIN_REF int8 semantics (float graphs too).

Every integer parameter (multipliers, shifts, offsets, clamps) is derived from the float32 scales the way LiteRT's
Prepare() derives it, by the `*_params` functions below, which the compiler reuses for the ROM image.
int8 FULLY_CONNECTED rescales in double, as BUILTIN_REF's reference kernel does (see fully_connected_params).
SOFTMAX and LOGISTIC int8 run LiteRT's reference kernels bit for bit (quant.ref.softmax_int8: gemmlowp fixed
point; logistic_int8: the 256-entry table built in float32 with glibc's expf, which LiteRT calls and which is
not correctly rounded, see quant.ref.expf_glibc), so a model ending in them is exact end to end whichever
side runs them: the die sends the int8 logits and the host applies SOFTMAX with this code; LOGISTIC, a table
lookup, can run on the die (quant.compiler decides).
A CONCATENATION whose inputs are quantized differently from its output requantizes each such input the way an
int8->int8 QUANTIZE does (LiteRT's int8 concat refuses such models; quant.export writes those QUANTIZE ops).
"""

import numpy as np

from . import elementwise as ew
from . import ref
from .arith import activation_range, quantize_multiplier
from .graph import Graph, ModelError, Op

__all__ = ["run_graph", "op_pads", "conv_params", "fully_connected_params", "add_params", "relu_params",
           "mul_params", "mean_axes", "mean_params", "prelu_params",
           "elementwise_params", "requantize_params", "concat_input_requant", "tensor_lower_bound"]


def _scalar_q(graph, name, op):
    t = graph.tensor(name)
    if t.quant is None:
        raise ModelError(f"{op.label()}: tensor '{name}' has no quantization parameters")
    return t.quant.scalar()


def op_pads(graph: Graph, op: Op):
    """(top, bottom, left, right) padding of a CONV_2D / DEPTHWISE_CONV_2D / pool, explicit or from SAME/VALID."""
    if "pads" in op.opts:
        return tuple(int(p) for p in op.opts["pads"])
    x = graph.tensor(op.inputs[0])
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w = graph.tensor(op.inputs[1])
        kh, kw = w.shape[1], w.shape[2]
    else:
        kh, kw = op.opts["filter"]
    sh, sw = op.opts.get("stride", (1, 1))
    dh, dw = op.opts.get("dilation", (1, 1))
    padding = op.opts.get("padding", "SAME")
    _, t, b = ref.window_padding(x.shape[1], kh, sh, dh, padding)
    _, l, r = ref.window_padding(x.shape[2], kw, sw, dw, padding)
    return t, b, l, r


def _channel_scales(q, n):
    s = np.asarray(q.scale, np.float32)
    return np.full(n, s[0], np.float32) if s.size == 1 else s


def conv_params(graph: Graph, op: Op):
    """Integer parameters of an int8 CONV_2D / DEPTHWISE_CONV_2D (PopulateConvolutionQuantizationParams).

    Per output channel: real multiplier = double(input_scale) * double(filter_scale) / double(output_scale),
    quantized to a Q31 multiplier and shift; a per-tensor filter scale is broadcast over the channels.
    """
    x, w, y = (graph.tensor(n) for n in (op.inputs[0], op.inputs[1], op.outputs[0]))
    in_s, in_zp = _scalar_q(graph, x.name, op)
    out_s, out_zp = _scalar_q(graph, y.name, op)
    if w.quant is None:
        raise ModelError(f"{op.label()}: filter '{w.name}' has no quantization parameters")
    cout = w.shape[0] if op.kind in ("CONV_2D", "TRANSPOSE_CONV") else w.shape[3]
    scales = _channel_scales(w.quant, cout)
    mult, shift = zip(*(quantize_multiplier(float(in_s) * float(s) / float(out_s)) for s in scales))
    lo, hi = activation_range(op.opts.get("activation", "NONE"), out_s, out_zp)
    return dict(input_offset=-in_zp, output_zero_point=out_zp, multiplier=np.array(mult, np.int64),
                shift=np.array(shift, np.int64), act_min=lo, act_max=hi)


def fully_connected_params(graph: Graph, op: Op):
    """Parameters of an int8 FULLY_CONNECTED.

    `effective_scale` (float64, per output channel) is what BUILTIN_REF uses: its reference int8 kernels
    (FullyConnected / FullyConnectedPerChannel with float scales) rescale by round(double(acc) * double(in_scale)
    * double(w_scale) / double(out_scale)), not by a Q31 multiplier. `multiplier`/`shift` are the Q31 form the
    optimized kernels and TFLite Micro use (per tensor: GetQuantizedConvolutionMultipler, whose input*filter
    product is float32; per channel: the conv rule); the two differ on a few outputs in a thousand, at ties.
    """
    x, w, y = (graph.tensor(n) for n in (op.inputs[0], op.inputs[1], op.outputs[0]))
    in_s, in_zp = _scalar_q(graph, x.name, op)
    out_s, out_zp = _scalar_q(graph, y.name, op)
    if w.quant is None:
        raise ModelError(f"{op.label()}: weights '{w.name}' have no quantization parameters")
    lo, hi = activation_range(op.opts.get("activation", "NONE"), out_s, out_zp)
    effective = float(in_s) * np.asarray(w.quant.scale, np.float32).astype(np.float64) / float(out_s)
    if w.quant.per_channel:
        mult, shift = zip(*(quantize_multiplier(float(in_s) * float(s) / float(out_s)) for s in w.quant.scale))
        weights_offset = 0
    else:
        m, s = quantize_multiplier(float(np.float32(in_s) * np.float32(w.quant.scale[0])) / float(out_s))
        mult, shift = [m], [s]
        weights_offset = -int(w.quant.zero_point[0])
    return dict(input_offset=-in_zp, weights_offset=weights_offset, output_zero_point=out_zp,
                multiplier=np.array(mult, np.int64), shift=np.array(shift, np.int64), effective_scale=effective,
                act_min=lo, act_max=hi)


def add_params(graph: Graph, op: Op):
    """Integer parameters of an int8 ADD (add.cc Prepare): both inputs are shifted left by 20 bits and scaled
    by input_scale / (2 * max input scale); the sum by 2 * max / (2^20 * output_scale)."""
    s1, z1 = _scalar_q(graph, op.inputs[0], op)
    s2, z2 = _scalar_q(graph, op.inputs[1], op)
    so, zo = _scalar_q(graph, op.outputs[0], op)
    left_shift = 20
    twice_max = 2.0 * float(max(np.float32(s1), np.float32(s2)))
    m1, sh1 = quantize_multiplier(float(s1) / twice_max)
    m2, sh2 = quantize_multiplier(float(s2) / twice_max)
    mo, sho = quantize_multiplier(twice_max / float(np.float32((1 << left_shift) * np.float32(so))))
    lo, hi = activation_range(op.opts.get("activation", "NONE"), so, zo)
    return dict(input1_offset=-z1, input2_offset=-z2, left_shift=left_shift, input1_multiplier=m1,
                input1_shift=sh1, input2_multiplier=m2, input2_shift=sh2, output_multiplier=mo, output_shift=sho,
                output_offset=zo, act_min=lo, act_max=hi)


def mul_params(graph: Graph, op: Op):
    """Integer parameters of an int8 MUL (mul.cc Prepare): one multiplier, both zero points, the clamp."""
    s1, z1 = _scalar_q(graph, op.inputs[0], op)
    s2, z2 = _scalar_q(graph, op.inputs[1], op)
    so, zo = _scalar_q(graph, op.outputs[0], op)
    p = ref.mul_params(s1, z1, s2, z2, so, zo)
    p["act_min"], p["act_max"] = activation_range(op.opts.get("activation", "NONE"), so, zo)
    return p


def mean_axes(graph: Graph, op: Op):
    """The sorted, non-negative axes a MEAN reduces over (its constant second input)."""
    x = graph.tensor(op.inputs[0])
    a = graph.tensor(op.inputs[1])
    if not a.is_const:
        raise ModelError(f"{op.label()}: axes '{a.name}' are not constant")
    rank = len(x.shape)
    axes = sorted({int(v) % rank for v in np.asarray(a.data).reshape(-1)}) if rank else []
    if any(not -rank <= int(v) < rank for v in np.asarray(a.data).reshape(-1)):
        raise ModelError(f"{op.label()}: axes {np.asarray(a.data).tolist()} outside the input's rank {rank}")
    return axes


def mean_params(graph: Graph, op: Op):
    """Integer parameters of an int8 MEAN (reduce.cc PrepareMeanOrSum and QuantizedMeanOrSum): quant.ref."""
    x = graph.tensor(op.inputs[0])
    count = int(np.prod([x.shape[a] for a in mean_axes(graph, op)], dtype=np.int64))
    si, zi = _scalar_q(graph, op.inputs[0], op)
    so, zo = _scalar_q(graph, op.outputs[0], op)
    return ref.mean_params(si, zi, so, zo, count)


def prelu_params(graph: Graph, op: Op):
    """Integer parameters of an int8 PRELU (PreluPrepare): the identity and alpha multipliers, the offsets."""
    si, zi = _scalar_q(graph, op.inputs[0], op)
    sa, za = _scalar_q(graph, op.inputs[1], op)
    so, zo = _scalar_q(graph, op.outputs[0], op)
    return ref.prelu_params(si, zi, sa, za, so, zo)


def requantize_params(in_scale, in_zp, out_scale, out_zp):
    """int8 -> int8 rescale (QUANTIZE, standalone RELU/RELU6): double(in_scale) / double(out_scale)."""
    m, s = quantize_multiplier(float(np.float32(in_scale)) / float(np.float32(out_scale)))
    return dict(input_zero_point=int(in_zp), multiplier=m, shift=s, output_zero_point=int(out_zp))


def relu_params(graph: Graph, op: Op):
    """A standalone int8 RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 (activations.cc ReluPrepare and
    QuantizedReluX): rescale by the float32 quotient input_scale / output_scale, clamp at the bounds."""
    si, zi = _scalar_q(graph, op.inputs[0], op)
    so, zo = _scalar_q(graph, op.outputs[0], op)
    return ew.relu_x_params(op.kind, si, zi, so, zo)


def elementwise_params(graph: Graph, op: Op):
    """Parameters of an int8 elementwise operator of quant.elementwise (LUT_KINDS), as its Prepare() derives them."""
    k = op.kind
    if k == "NEG":
        return {}
    si, zi = _scalar_q(graph, op.inputs[0], op)
    so, zo = _scalar_q(graph, op.outputs[0], op)
    if k in ew.RELU_BOUNDS:
        return ew.relu_x_params(k, si, zi, so, zo)
    if k == "TANH":
        return ew.tanh_params(si, zi, so, zo)
    if k == "ELU":
        return ew.elu_params(si, zi, so, zo)
    if k == "GELU":
        return ew.gelu_params(si, zi, so, zo, bool(op.opts.get("approximate", False)))
    if k == "HARD_SWISH":
        return ew.hard_swish_params(si, zi, so, zo)
    if k == "LEAKY_RELU":
        return ew.leaky_relu_params(si, zi, so, zo, float(op.opts.get("alpha", 0.2)))
    if k == "ABS":
        return ew.abs_params(si, zi, so, zo)
    if k == "PRELU":
        a = graph.tensor(op.inputs[1])
        if not a.is_const or a.data.size != 1:
            raise ModelError(f"{op.label()}: only a PRELU with one constant alpha is an elementwise function")
        sa, za = _scalar_q(graph, a.name, op)
        return ew.prelu_scalar_params(si, zi, int(a.data.reshape(-1)[0]), sa, za, so, zo)
    raise ModelError(f"{op.label()}: '{k}' is not an elementwise operator")


_EW_INT8 = {"TANH": ew.lookup_int8, "ELU": ew.lookup_int8, "GELU": ew.lookup_int8,
            "HARD_SWISH": ew.hard_swish_int8, "LEAKY_RELU": ew.leaky_relu_int8, "ABS": ew.abs_int8,
            "PRELU": ew.prelu_scalar_int8, **{k: ew.relu_x_int8 for k in ew.RELU_BOUNDS}}


def concat_input_requant(graph: Graph, op: Op):
    """For each CONCATENATION input: None when its quantization equals the output's (a plain copy), else the
    requantize_params that bring it to the output's scale and zero point."""
    so, zo = _scalar_q(graph, op.outputs[0], op)
    out = []
    for name in op.inputs:
        si, zi = _scalar_q(graph, name, op)
        same = np.float32(si) == np.float32(so) and zi == zo
        out.append(None if same else requantize_params(si, zi, so, zo))
    return out


def tensor_lower_bound(graph: Graph, name):
    """A value no element of tensor `name` can fall below, from its producer's clamp (None if unknown)."""
    prod = graph.producers().get(name)
    t = graph.tensor(name)
    if prod is None:
        return None
    act = prod.kind if prod.kind in ("RELU", "RELU6") else prod.opts.get("activation", "NONE")
    if act == "NONE":
        return None
    if t.dtype == "int8":
        s, z = t.quant.scalar()
        return activation_range(act, s, z)[0]
    return {"RELU": 0.0, "RELU6": 0.0, "RELU_N1_TO_1": -1.0}[act]


def _check_shape(op, name, got, want):
    if tuple(got) != tuple(want):
        raise ModelError(f"{op.label()}: computed shape {tuple(got)} for '{name}' but the model says {tuple(want)}")


def _run_op(graph, op, env):
    ins = [env[n] if n else None for n in op.inputs]
    x = ins[0]
    y = graph.tensor(op.outputs[0])
    integer = x is not None and x.dtype == np.int8
    o = op.opts
    k = op.kind
    if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w, b = ins[1], (ins[2] if len(ins) > 2 else None)
        pads = op_pads(graph, op)
        geo = dict(stride=tuple(o.get("stride", (1, 1))), dilation=tuple(o.get("dilation", (1, 1))), pads=pads)
        if integer:
            p = conv_params(graph, op)
            if k == "CONV_2D":
                acc = ref.conv2d_acc(x, w, input_offset=p["input_offset"], **geo)
            else:
                acc = ref.depthwise_conv2d_acc(x, w, o.get("depth_multiplier", 1), input_offset=p["input_offset"],
                                               **geo)
            out = ref.requantize_acc(acc, b, p["multiplier"], p["shift"], p["output_zero_point"], p["act_min"],
                                     p["act_max"])
        else:
            if k == "CONV_2D":
                acc = ref.conv2d_acc(x, w, **geo)
            else:
                acc = ref.depthwise_conv2d_acc(x, w, o.get("depth_multiplier", 1), **geo)
            out = ref.float_activation(acc + (b if b is not None else np.float32(0)), o.get("activation", "NONE"))
    elif k == "TRANSPOSE_CONV":
        w, b = ins[1], (ins[2] if len(ins) > 2 else None)
        geo = dict(stride=tuple(o["stride"]), pads=tuple(o["pads"]), out_hw=tuple(y.shape[1:3]))
        if integer:
            p = conv_params(graph, op)
            acc = ref.transpose_conv_acc(x, w, input_offset=p["input_offset"], **geo)
            out = ref.requantize_acc(acc, b, p["multiplier"], p["shift"], p["output_zero_point"], p["act_min"],
                                     p["act_max"])
        else:
            acc = ref.transpose_conv_acc(x, w, **geo)
            out = ref.float_activation(acc + (b if b is not None else np.float32(0)), o.get("activation", "NONE"))
    elif k == "FULLY_CONNECTED":
        w, b = ins[1], (ins[2] if len(ins) > 2 else None)
        if integer:
            p = fully_connected_params(graph, op)
            acc = ref.fully_connected_acc(x, w, p["input_offset"], p["weights_offset"])
            out = ref.requantize_acc_double(acc, b, p["effective_scale"], p["output_zero_point"], p["act_min"],
                                            p["act_max"])
        else:
            acc = ref.fully_connected_acc(x, w)
            out = ref.float_activation(acc + (b if b is not None else np.float32(0)), o.get("activation", "NONE"))
        out = out.reshape(y.shape)
    elif k == "ADD":
        if integer:
            out = ref.add_int8(x, ins[1], add_params(graph, op))
        else:
            out = ref.float_activation(x + ins[1], o.get("activation", "NONE"))
    elif k == "SUB":
        if integer:
            out = ref.sub_int8(x, ins[1], add_params(graph, op))
        else:
            out = ref.float_activation(x - ins[1], o.get("activation", "NONE"))
    elif k == "MUL":
        if integer:
            p = mul_params(graph, op)
            out = ref.mul_int8(x, ins[1], p, p["act_min"], p["act_max"])
        else:
            out = ref.float_activation(x * ins[1], o.get("activation", "NONE"))
    elif k == "MEAN":
        axes = tuple(mean_axes(graph, op))
        keep = bool(o.get("keep_dims", False))
        if integer:
            out = ref.mean_int8(x, axes, keep, mean_params(graph, op))
        else:
            n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
            out = (x.sum(axis=axes, keepdims=keep, dtype=np.float32) / np.float32(n)).astype(np.float32)
    elif k == "PRELU" and ins[1].size != 1:
        if integer:
            out = ref.prelu_int8(x, ins[1], prelu_params(graph, op))
        else:
            out = np.where(x >= 0, x, x * ins[1]).astype(np.float32)
    elif k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        pads = op_pads(graph, op)
        f, s = tuple(o["filter"]), tuple(o.get("stride", (1, 1)))
        act = o.get("activation", "NONE")
        if integer:
            sy, zy = _scalar_q(graph, y.name, op)
            lo, hi = activation_range(act, sy, zy)
            out = ref.average_pool_int8(x, f, s, pads, lo, hi) if k == "AVERAGE_POOL_2D" else \
                ref.max_pool(x, f, s, pads, lo, hi)
        else:
            out = ref.average_pool_float(x, f, s, pads, act) if k == "AVERAGE_POOL_2D" else \
                ref.float_activation(ref.max_pool(x, f, s, pads), act)
    elif k == "PAD":
        if "value" in o:
            value = o["value"]
        else:
            value = _scalar_q(graph, y.name, op)[1] if integer else 0
        out = ref.pad(x, ins[1], value)
    elif k in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        flags = (bool(o.get("align_corners", False)), bool(o.get("half_pixel_centers", False)))
        if integer:
            out = ref.resize_int8(x, k, tuple(y.shape[1:3]), *flags)
        else:
            out = ref.resize_float(x, k, tuple(y.shape[1:3]), *flags)
    elif k == "DEPTH_TO_SPACE":
        out = ref.depth_to_space(x, int(o["block_size"]))
    elif k == "SPACE_TO_DEPTH":
        out = ref.space_to_depth(x, int(o["block_size"]))
    elif k in ("STRIDED_SLICE", "SLICE"):
        out = ref.strided_slice(x, o["begin"], o["end"], o["strides"])
    elif k == "RESHAPE":
        if x.size != int(np.prod(y.shape)):
            raise ModelError(f"{op.label()}: cannot reshape {list(x.shape)} to {list(y.shape)}")
        out = x.reshape(y.shape)
    elif k == "CONCATENATION":
        if integer:
            reqs = concat_input_requant(graph, op)
            parts = [v if r is None else ref.requantize_int8(v, r["input_zero_point"], r["multiplier"], r["shift"],
                                                             r["output_zero_point"]) for v, r in zip(ins, reqs)]
        else:
            parts = ins
        out = np.concatenate(parts, axis=o.get("axis", 0))
        if o.get("activation", "NONE") != "NONE":
            if integer:
                lo, hi = activation_range(o["activation"], *_scalar_q(graph, y.name, op))
                out = np.clip(out, lo, hi).astype(np.int8)
            else:
                out = ref.float_activation(out, o["activation"])
    elif k in ew.LUT_KINDS:
        if integer and k == "NEG":
            out = ew.neg_int8(x).astype(np.int8)
        elif integer:
            out = _EW_INT8[k](x, elementwise_params(graph, op))
        else:
            alpha = o.get("alpha")
            if k == "PRELU":
                a = ins[1]
                if a.size != 1:
                    raise ModelError(f"{op.label()}: only a PRELU with one constant alpha is an elementwise function")
                alpha = float(a.reshape(-1)[0])
            out = ew.float_elementwise(k, x, alpha, bool(o.get("approximate", False)))
    elif k == "QUANTIZE":
        sy, zy = _scalar_q(graph, y.name, op)
        if x.dtype == np.int8:
            r = requantize_params(*_scalar_q(graph, op.inputs[0], op), sy, zy)
            out = ref.requantize_int8(x, r["input_zero_point"], r["multiplier"], r["shift"], r["output_zero_point"])
        else:
            out = ref.quantize_float(x, sy, zy)
    elif k == "DEQUANTIZE":
        if x.dtype == np.float16:
            out = x.astype(np.float32)
        else:
            out = ref.dequantize(x, *_scalar_q(graph, op.inputs[0], op))
    elif k == "SOFTMAX":
        beta = float(o.get("beta", 1.0))
        if integer:
            sx, _ = _scalar_q(graph, op.inputs[0], op)
            sy, zy = _scalar_q(graph, y.name, op)
            if zy != -128 or abs(sy - 1 / 256) > 0.001 / 256:
                raise ModelError(f"{op.label()}: an int8 SOFTMAX output must have scale 1/256 and zero point -128 "
                                 f"(LiteRT refuses scale {sy:g}, zero point {zy})")
            out = ref.softmax_int8(x, ref.softmax_params(beta, sx))
        else:
            out = ref.softmax_float(x, beta)
    elif k == "LOGISTIC":
        if integer:
            sy, zy = _scalar_q(graph, y.name, op)
            if np.float32(sy) != np.float32(1 / 256):
                raise ModelError(f"{op.label()}: an int8 LOGISTIC output must have scale 1/256 (LiteRT refuses "
                                 f"{sy:g})")
            out = ref.logistic_int8(x, ref.logistic_params(*_scalar_q(graph, op.inputs[0], op), sy, zy))
        else:
            out = ref.logistic_float(x)
    else:
        raise ModelError(f"{op.label()}: the executor has no kernel for operator '{k}'")
    want = np.dtype(y.dtype)
    if out.dtype != want:
        if want.kind != "f" or out.dtype.kind != "f":
            raise ModelError(f"{op.label()}: produced {out.dtype}, the model says {want}")
        out = out.astype(want)
    _check_shape(op, y.name, out.shape, y.shape)
    env[y.name] = out


def run_graph(graph: Graph, inputs, trace=None):
    """Run `graph` on `inputs` (numpy arrays in graph input order, each of the input's dtype and shape).

    Returns the outputs in graph output order. `trace`, if a dict, receives every tensor computed (by name).
    """
    inputs = list(inputs)
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"run_graph: the model has {len(graph.inputs)} inputs, got {len(inputs)}")
    env = {}
    for name, x in zip(graph.inputs, inputs):
        t = graph.tensor(name)
        x = np.asarray(x)
        if x.dtype != np.dtype(t.dtype) or tuple(x.shape) != tuple(t.shape):
            raise ValueError(f"run_graph: input '{name}' wants {t.dtype}{tuple(t.shape)}, got {x.dtype}{x.shape}")
        env[name] = x
    for t in graph.tensors.values():
        if t.is_const:
            env[t.name] = t.data
    for op in graph.ops:
        missing = [n for n in op.inputs if n and n not in env]
        if missing:
            raise ModelError(f"{op.label()}: input '{missing[0]}' is not computed before it is used")
        try:
            _run_op(graph, op, env)
        except ModelError:
            raise
        except ValueError as e:                 # a kernel's range check: name the layer it happened in
            raise ModelError(f"{op.label()}: {str(e).splitlines()[0]}") from None
    if trace is not None:
        trace.update(env)
    return [env[name] for name in graph.outputs]
