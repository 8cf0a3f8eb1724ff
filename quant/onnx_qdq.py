"""ONNX QDQ models (QuantizeLinear / DequantizeLinear around float operators, as onnxruntime's quantize_static
writes them) to the int8 Graph the die runs, keeping the model's own quantization exactly.

The ONNX importer (quant.onnx_import) reads a QDQ model as its float graph and records, on the side, what the
QDQ nodes say: each activation tensor's scale and zero point (from the QuantizeLinear that quantizes it), and on
each weight and bias constant the scale, zero point and axis of the DequantizeLinear it came through (its values
are the dequantized reals). `qdq_to_int8` then writes the int8 graph:

- activations: int8 with the QuantizeLinear's scale and zero point (a uint8 tensor is the same reals as int8 with
  its zero point minus 128); the graph's inputs and outputs are int8 like every full-integer model here;
- weights: the model's own integers, recovered exactly as ``round(real / scale) + zero_point`` (the reals are
  ``(q - zp) * scale`` in float32, within far less than half a step of q); zero points must be 0 (TFLite's int8
  kernels have symmetric weights);
- bias: the model's own int32 values at the bias DequantizeLinear's scale, which must equal input scale x weight
  scale (TFLite's kernels assume it); a bias the model left float is quantized at that scale;
- where TFLite's int8 kernel fixes or forbids an output quantization (LOGISTIC / SOFTMAX 1/256, TANH 1/128, a
  pool or reshape that does not rescale) and the QDQ model chose another, the kernel's output is followed by an
  int8 -> int8 QUANTIZE to the model's quantization (what the TFLite converter does).

Every activation must be quantized by the model (a fully quantized QDQ model); anything else is refused in one
line naming the tensor.
"""

import numpy as np

from .graph import Graph, ModelError, Op, QuantParams, Tensor
from .ptq import FIXED_OUTPUT_QUANT, SAME_QUANT_OPS, quantize_bias

__all__ = ["qdq_to_int8", "WEIGHTED"]

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_CONST_OPERANDS = ("RESHAPE", "PAD")       # ops whose constant inputs are shapes/paddings, copied as they are


def _same(a, b):
    return float(a.scale[0]) == float(b.scale[0]) and int(a.zero_point[0]) == int(b.zero_point[0])


def _recover(real, q, what):
    """The integers of a constant dequantized as (q - zp) * scale: round(real / scale) + zp, checked."""
    shape = [1] * real.ndim
    if q.scale.size > 1:
        shape[q.axis] = -1
    scale = q.scale.astype(np.float64).reshape(shape)
    zp = q.zero_point.astype(np.float64).reshape(shape)
    steps = real.astype(np.float64) / scale
    ints = np.round(steps)
    if steps.size and float(np.max(np.abs(steps - ints))) > 1e-3:
        raise ModelError(f"{what}: its values are not a whole number of quantization steps")
    return ints + zp


def qdq_to_int8(graph, act_quant, name, exact=None):
    """The int8 Graph of a QDQ model read as `graph` (float, with weight/bias hints in Tensor.quant),
    `act_quant` ({tensor: QuantParams}, int8 zero points) and `exact` ({bias tensor: its int32 values})."""
    exact = exact or {}
    tensors, ops, quant = {}, [], {}

    def act(n, q, shape=None):
        quant[n] = q
        tensors[n] = Tensor(n, tuple(shape or graph.tensor(n).shape), "int8", None, q)

    for n in graph.inputs:
        if n not in act_quant:
            raise ModelError(f"{name}: input '{n}' is not quantized (no QuantizeLinear reads it); a QDQ model "
                             f"must quantize every activation")
        act(n, act_quant[n])
    for op in graph.ops:
        new = Op(op.kind, list(op.inputs), list(op.outputs), dict(op.opts), op.name)
        for n in op.inputs:
            if n and n not in quant and not graph.tensor(n).is_const:
                raise ModelError(f"{name}: {op.label()} reads '{n}', which is not quantized")
        if op.kind in WEIGHTED:
            _weights(graph, op, quant[op.inputs[0]], tensors, name, exact)
        else:
            for n in op.inputs:
                if n and graph.tensor(n).is_const:
                    if op.kind not in _CONST_OPERANDS or n == op.inputs[0]:
                        raise ModelError(f"{name}: {op.label()}: constant operand '{n}' is not supported in a "
                                         f"QDQ model")
                    t = graph.tensor(n)
                    tensors[n] = Tensor(n, tuple(t.shape), t.dtype, t.data, None)
        out = op.outputs[0]
        want = act_quant.get(out)
        fixed = None
        if op.kind in FIXED_OUTPUT_QUANT:
            fixed = QuantParams.per_tensor(*FIXED_OUTPUT_QUANT[op.kind])
        elif op.kind in SAME_QUANT_OPS:
            qi = quant[op.inputs[0]]
            fixed = QuantParams(qi.scale.copy(), qi.zero_point.copy())
        if want is None:
            if fixed is None:
                raise ModelError(f"{name}: tensor '{out}' ({op.label()}) is not quantized (no QuantizeLinear "
                                 f"after it); a QDQ model must quantize every activation")
            want = fixed
        if fixed is not None and not _same(fixed, want):
            # The kernel writes its own quantization; an int8 -> int8 QUANTIZE gives the model's.
            mid = f"{out}/{op.kind.lower()}_output"
            act(mid, fixed, graph.tensor(out).shape)
            new.outputs = [mid]
            ops.append(new)
            act(out, want)
            ops.append(Op("QUANTIZE", [mid], [out], {}, f"{op.name or out}/requantize"))
            continue
        act(out, want)
        ops.append(new)
    for n in graph.outputs:
        if n not in quant:
            raise ModelError(f"{name}: output '{n}' is not quantized")
    notes = list(graph.notes) + [f"QDQ model: {len(quant)} activation tensors with the model's own quantization"]
    return Graph(tensors=tensors, ops=ops, inputs=list(graph.inputs), outputs=list(graph.outputs), name=graph.name,
                 notes=notes)


def _weights(graph, op, in_quant, tensors, name, exact):
    wt = graph.tensor(op.inputs[1])
    if wt.quant is None:
        raise ModelError(f"{name}: {op.label()}: weights '{wt.name}' are float (no DequantizeLinear); a QDQ model "
                         f"must quantize its weights")
    wq = wt.quant
    if np.any(wq.zero_point != 0):
        raise ModelError(f"{name}: {op.label()}: weights '{wt.name}' have a non-zero zero point (asymmetric "
                         f"weights); TFLite's int8 kernels take symmetric weights (quantize with "
                         f"weight_type=QInt8)")
    w_axis = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}[op.kind]
    channels = wt.shape[w_axis]
    if wq.scale.size not in (1, channels):
        raise ModelError(f"{name}: {op.label()}: weights '{wt.name}' have {wq.scale.size} scales for {channels} "
                         f"output channels")
    if wq.scale.size > 1 and wq.axis != w_axis:
        raise ModelError(f"{name}: {op.label()}: weights '{wt.name}' are quantized along axis {wq.axis}, not "
                         f"per output channel")
    ints = _recover(wt.data, wq, f"{name}: weights '{wt.name}'")
    if ints.min(initial=0) < -128 or ints.max(initial=0) > 127:
        raise ModelError(f"{name}: {op.label()}: weights '{wt.name}' do not fit int8")
    scales = wq.scale.astype(np.float32)
    tensors[wt.name] = Tensor(wt.name, tuple(wt.shape), "int8", ints.astype(np.int8),
                              QuantParams(scales.copy(), np.zeros(scales.size, np.int64),
                                          w_axis if scales.size > 1 else 0))
    if len(op.inputs) < 3 or not op.inputs[2]:
        return
    bt = graph.tensor(op.inputs[2])
    in_scale = float(in_quant.scale[0])
    want = (np.float32(in_scale) * scales).astype(np.float32)
    if bt.quant is None:
        bq, bscales = quantize_bias(bt.data, in_scale, scales if scales.size > 1 else scales[0])
        bscales = bscales if scales.size > 1 else bscales[:1]
    else:
        got = np.broadcast_to(bt.quant.scale.astype(np.float32), want.shape)
        if not np.allclose(got, want, rtol=1e-6, atol=0):
            raise ModelError(f"{name}: {op.label()}: bias '{bt.name}' has scale {float(got.flat[0]):g}, not input "
                             f"scale x weight scale {float(want.flat[0]):g} as TFLite's int8 kernels assume")
        ints = exact.get(bt.name)
        if ints is None or ints.shape != tuple(bt.shape):
            ints = _recover(bt.data, bt.quant, f"{name}: bias '{bt.name}'")
        if np.any(bt.quant.zero_point != 0):
            raise ModelError(f"{name}: {op.label()}: bias '{bt.name}' has a non-zero zero point")
        if ints.min(initial=0) < -(2**31) or ints.max(initial=0) > 2**31 - 1:
            raise ModelError(f"{name}: {op.label()}: bias '{bt.name}' does not fit int32")
        bq, bscales = ints.astype(np.int32), np.broadcast_to(bt.quant.scale.astype(np.float32), want.shape)
    tensors[bt.name] = Tensor(bt.name, tuple(bt.shape), "int32", np.asarray(bq, np.int32),
                              QuantParams(np.asarray(bscales, np.float32).reshape(-1).copy(),
                                          np.zeros(np.size(bscales), np.int64), 0))
