"""Load a model (.tflite flatbuffer or ONNX) into the toolchain's Graph IR; refuse what we cannot run, by name.

Float16 weights behind DEQUANTIZE ops (and other constant DEQUANTIZEs) are folded into float32 constants.
Sparse constants (SparsityParameters) are made dense on import (quant.sparse) and their DENSIFY ops dropped.
"""

import struct
from pathlib import Path

import numpy as np

from .graph import ACTIVATIONS, SUPPORTED_OPS, Graph, ModelError, Op, QuantParams, Tensor, unsupported_message
from .ref import window_padding
from .sparse import SparsityError, densify
from .tflite import FILE_IDENTIFIER, schema

__all__ = ["load_model", "load_tflite", "graph_from_tflite_model", "BUILTIN_NAMES", "DTYPE_NAMES"]

BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_ACTIVATION_NAMES = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
_PADDING_NAMES = {v: k for k, v in vars(schema.Padding).items() if not k.startswith("_")}
# TFLite ops imported as another IR op (with an option saying the difference).
_KIND_ALIASES = {"PADV2": "PAD"}
DTYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def load_model(src, name=None) -> Graph:
    """A Graph from a path or the bytes of a .tflite or .onnx model. Raises ModelError (one line) on bad input."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        name = name or path.name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"{path}: cannot read the model: {e.strerror or e}") from None
    else:
        data = bytes(src)
        name = name or "model"
    if len(data) >= 8 and data[4:8] == FILE_IDENTIFIER:
        return load_tflite(data, name)
    if _looks_like_onnx(data) or name.lower().endswith(".onnx"):
        from .onnx_import import load_onnx
        return load_onnx(data, name)
    raise ModelError(f"{name}: not a model: neither a TFLite flatbuffer (no '{FILE_IDENTIFIER.decode()}' "
                     f"identifier) nor an ONNX protobuf")


def _looks_like_onnx(data):
    # An ONNX ModelProto starts with field 1 (ir_version, varint): tag byte 0x08.
    return len(data) >= 2 and data[0] == 0x08 and data[1] < 0x80


def load_tflite(data, name="model") -> Graph:
    """A Graph from .tflite bytes (subgraph 0)."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelError(f"{name}: not a TFLite flatbuffer (no '{FILE_IDENTIFIER.decode()}' identifier)")
    (root,) = struct.unpack_from("<I", data, 0)
    if root + 4 > len(data):
        raise ModelError(f"{name}: truncated TFLite file ({len(data)} bytes; root table at offset {root})")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        return graph_from_tflite_model(model, data, name)
    except ModelError:
        raise
    except Exception as e:  # the generated reader raises whatever an out-of-range offset provokes
        raise ModelError(f"{name}: truncated or corrupt TFLite file ({len(data)} bytes: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})") from None


def _tensor_bytes(model, t, file_data, name, tname):
    if t.buffer <= 0 or t.buffer >= len(model.buffers or []):
        return None
    buf = model.buffers[t.buffer]
    if buf.data is not None and len(buf.data) > 0:
        return np.asarray(buf.data, np.uint8).tobytes()
    if (buf.offset or 0) > 1:
        # Large models keep constant data after the flatbuffer, addressed by offset/size from the file start.
        if buf.offset + buf.size > len(file_data):
            raise ModelError(f"{name}: truncated TFLite file: data of tensor '{tname}' ends at byte "
                             f"{buf.offset + buf.size}, the file has {len(file_data)}")
        return file_data[buf.offset:buf.offset + buf.size]
    return None


def _unique_names(tensors):
    names, seen = [], set()
    for i, t in enumerate(tensors):
        n = t.name.decode() if isinstance(t.name, bytes) else (t.name or "")
        n = n or f"tensor_{i}"
        if n in seen:
            n = f"{n}#{i}"
        seen.add(n)
        names.append(n)
    return names


def graph_from_tflite_model(model, file_data, name="model") -> Graph:
    """Convert a schema ModelT to a Graph; `file_data` is the file (for buffers stored outside the flatbuffer)."""
    if not model.subgraphs:
        raise ModelError(f"{name}: the TFLite model has no subgraph")
    sg = model.subgraphs[0]
    ts = sg.tensors or []
    names = _unique_names(ts)
    tensors = {}
    batch_taken = []                # tensors whose dynamic batch dimension is taken as 1
    for i, t in enumerate(ts):
        tname = names[i]
        dtype = DTYPE_NAMES.get(t.type, f"type{t.type}")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        sig = t.shapeSignature
        if any(d < 0 for d in shape) or (sig is not None and any(int(d) < 0 for d in sig)):
            dims = [int(d) for d in (sig if sig is not None and len(sig) else shape)]
            if dims and dims[0] < 0 and all(d >= 0 for d in dims[1:]) and len(shape) == len(dims) \
                    and shape[0] in (1, -1) and all(s == d for s, d in zip(shape[1:], dims[1:])):
                # A dynamic batch (what every Keras/TF export writes): the die runs one image at a time.
                shape = (1, *dims[1:])
                batch_taken.append((tname, dims))
            else:
                raise ModelError(f"{name}: tensor '{tname}' has a dynamic shape {dims}; the die needs static "
                                 f"shapes (fix the image size when exporting the model; only a dynamic batch "
                                 f"dimension is taken as 1)")
        raw = _tensor_bytes(model, t, file_data, name, tname)
        data = None
        if raw is not None and t.sparsity is not None:
            # A sparse constant (what DENSIFY reads): the buffer holds only the values present.
            np_dtype = np.dtype(dtype).newbyteorder("<")
            if len(raw) % np_dtype.itemsize:
                raise ModelError(f"{name}: sparse constant tensor '{tname}' holds {len(raw)} bytes, not a whole "
                                 f"number of {dtype} values (truncated or corrupt file)")
            try:
                data = densify(np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("=")), shape,
                               t.sparsity)
            except SparsityError as e:
                raise ModelError(f"{name}: sparse constant tensor '{tname}': {e}") from None
        elif raw is not None:
            np_dtype = np.dtype(dtype).newbyteorder("<")
            count = int(np.prod(shape, dtype=np.int64))
            if len(raw) != count * np_dtype.itemsize:
                raise ModelError(f"{name}: constant tensor '{tname}' holds {len(raw)} bytes, its shape {list(shape)} "
                                 f"of {dtype} needs {count * np_dtype.itemsize} (truncated or corrupt file)")
            data = np.frombuffer(raw, dtype=np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))
        quant = _quant(t.quantization)
        _check_quant(quant, dtype, name, tname)
        tensors[tname] = Tensor(tname, shape, dtype, data, quant)

    ops = []
    unsupported = []
    arity = {"CONV_2D": (2, 3), "DEPTHWISE_CONV_2D": (2, 3), "FULLY_CONNECTED": (2, 3), "ADD": (2, 2),
             "PAD": (2, 3), "CONCATENATION": (1, None), "PRELU": (2, 2), "MUL": (2, 2), "SUB": (2, 2),
             "MEAN": (2, 2),
             "RESIZE_BILINEAR": (2, 2), "RESIZE_NEAREST_NEIGHBOR": (2, 2), "STRIDED_SLICE": (4, 4), "SLICE": (3, 3),
             "DEPTH_TO_SPACE": (1, 1), "SPACE_TO_DEPTH": (1, 1), "TRANSPOSE_CONV": (3, 4)}
    for index, op in enumerate(sg.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        kind = BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")
        if kind == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            kind = f"CUSTOM:{custom}"
        ins = [names[i] if i >= 0 else "" for i in (op.inputs if op.inputs is not None else [])]
        if kind in ("SPLIT", "SPLIT_V"):
            # Each output of a SPLIT is a STRIDED_SLICE of the input (the same bytes, one op per output).
            ops.extend(_split_as_slices(kind, op, tensors, ins, [names[i] for i in op.outputs], name, index))
            continue
        if kind == "CUSTOM:Convolution2DTransposeBias":
            # MediaPipe's transpose conv with a bias: a TRANSPOSE_CONV whose options are a raw
            # TfLiteTransposeConvParams (int32 padding, stride_width, stride_height).
            if len(ins) != 3 or op.outputs is None or len(op.outputs) != 1:
                raise ModelError(f"{name}: operator {index} (Convolution2DTransposeBias) has {len(ins)} inputs")
            raw = bytes(op.customOptions if op.customOptions is not None else b"")
            if len(raw) < 12:
                raise ModelError(f"{name}: operator {index} (Convolution2DTransposeBias) has {len(raw)} option "
                                 f"bytes, not a 12-byte TfLiteTransposeConvParams")
            padding, sw, sh = np.frombuffer(raw[:12], "<i4").tolist()
            x_t, w_t = tensors[ins[0]], tensors[ins[1]]
            if padding not in (1, 2) or min(sw, sh) < 1 or len(x_t.shape) != 4 or len(w_t.shape) != 4:
                raise ModelError(f"{name}: operator {index} (Convolution2DTransposeBias): padding {padding}, "
                                 f"strides {sh}x{sw} (a corrupt model?)")
            pads = []
            for size, k, st in ((x_t.shape[1], w_t.shape[1], sh), (x_t.shape[2], w_t.shape[2], sw)):
                pads.append(max(0, k - (size - 1) % st - 1) // 2 if padding == 1 else 0)
            custom_opts = dict(stride=(sh, sw), pads=tuple(pads), padding="SAME" if padding == 1 else "VALID",
                               activation="NONE")
            layer = names[op.outputs[0]]
            ops.append(Op("TRANSPOSE_CONV", ins, [layer], custom_opts, name=layer))
            continue
        outs = [names[i] for i in (op.outputs if op.outputs is not None else [])]
        lo, hi = arity.get(_KIND_ALIASES.get(kind, kind), (1, None))
        given = len([n for n in ins if n]) if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") \
            else len(ins)
        if kind in SUPPORTED_OPS and (given < lo or (hi is not None and len(ins) > hi) or len(outs) != 1
                                      or not ins[0]):
            raise ModelError(f"{name}: operator {index} ({kind}) has {len(ins)} inputs and {len(outs)} outputs, "
                             f"which {kind} does not take (a corrupt model?)")
        layer = outs[0] if outs else f"op{index}"
        kind = _KIND_ALIASES.get(kind, kind)
        if kind == "DENSIFY" and len(ins) == 1 and len(outs) == 1 and ins[0] and tensors[ins[0]].is_const:
            # The sparse constant was made dense on import: its DENSIFY is a constant copy, dropped.
            src, dst = tensors[ins[0]], tensors[outs[0]]
            if src.data.shape != tuple(dst.shape):
                raise ModelError(f"{name}: DENSIFY in layer '{layer}' (op {index}) turns shape "
                                 f"{list(src.data.shape)} into {list(dst.shape)}")
            dst.data, dst.dtype = src.data, src.dtype
            if dst.quant is None:
                dst.quant = src.quant
            continue
        if kind not in SUPPORTED_OPS:
            unsupported.append(f"'{kind}' in layer '{layer}' (op {index})")
            continue
        if unsupported:
            continue                # only the list of unsupported operators is wanted now
        if kind == "DEQUANTIZE" and tensors[ins[0]].is_const:
            _fold_dequantize(tensors, ins[0], outs[0])
            continue
        opts = _options(kind, op.builtinOptions, tensors, ins, outs, layer, index)
        if kind == "TRANSPOSE_CONV":
            ins = [ins[2], ins[1], ins[3] if len(ins) > 3 else ""]      # (input, filter, bias) like CONV_2D
        if kind in ("RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "STRIDED_SLICE", "SLICE"):
            ins = ins[:1]           # the target shape is static: it is the output tensor's shape
        if kind == "PAD" and len(ins) > 2:
            ins = ins[:2]           # PADV2: the pad value became opts["value"]
        ops.append(Op(kind, ins, outs, opts, name=layer))

    if unsupported:
        raise ModelError(unsupported_message(unsupported))
    for t in tensors.values():
        if t.dtype == "float16" and t.is_const:
            # float16 constants read directly (not through DEQUANTIZE) are widened the same way.
            t.data, t.dtype = t.data.astype(np.float32), "float32"
    used = {n for op in ops for n in op.inputs + op.outputs if n}
    used.update(names[i] for i in sg.inputs)
    used.update(names[i] for i in sg.outputs)
    for t in tensors.values():
        if t.name in used and not t.is_const and t.dtype not in ("int8", "float32", "int32"):
            raise ModelError(f"{name}: tensor '{t.name}' is {t.dtype}; the toolchain runs int8 and float32 models")
    if sg.outputs is None or not len(sg.outputs):
        raise ModelError(f"{name}: the model has no outputs (a corrupt file?)")
    graph = Graph({k: v for k, v in tensors.items() if k in used}, ops, [names[i] for i in sg.inputs],
                  [names[i] for i in sg.outputs], name=Path(name).stem)
    if batch_taken:
        first, dims = batch_taken[0]
        graph.notes.append(f"dynamic batch dimension taken as 1 ({len(batch_taken)} tensors, e.g. '{first}' "
                           f"{dims} -> {[1, *dims[1:]]})")
    return graph



def _quant(q):
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scale = np.asarray(q.scale, np.float32)
    zp = np.zeros(scale.shape, np.int64) if q.zeroPoint is None or len(q.zeroPoint) == 0 else \
        np.asarray(q.zeroPoint, np.int64)
    return QuantParams(scale, zp, int(q.quantizedDimension or 0))



_ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _check_quant(q, dtype, name, tname):
    """A scale that is negative, infinite or NaN, or a zero point its type cannot hold, is a damaged file (the
    arithmetic downstream would fail on it with a ValueError, or compile it)."""
    if q is None:
        return
    bad = ~np.isfinite(q.scale) | (q.scale < np.finfo(np.float32).tiny)     # 0 and subnormals divide to inf
    if np.any(bad):
        bad = q.scale[bad][0]
        if 0 < bad < np.finfo(np.float32).tiny:
            # LiteRT's quantizer writes such a scale for an activation whose calibration range was empty (a ReLU
            # output that stayed 0): the multipliers into it overflow the integer kernels' shifts.
            raise ModelError(f"{name}: tensor '{tname}' has the subnormal quantization scale {float(bad):g} (its "
                             f"calibration range was empty, e.g. a ReLU output that stayed 0; calibrate on inputs "
                             f"that reach it)")
        raise ModelError(f"{name}: tensor '{tname}' has the quantization scale {float(bad):g} (a corrupt file?)")
    lo, hi = _ZERO_POINT_RANGE.get(dtype, (-(1 << 31), (1 << 31) - 1))
    if np.any((q.zero_point < lo) | (q.zero_point > hi)):
        bad = q.zero_point[(q.zero_point < lo) | (q.zero_point > hi)][0]
        raise ModelError(f"{name}: tensor '{tname}' of {dtype} has the zero point {int(bad)} (a corrupt file?)")


def _fold_dequantize(tensors, src, dst):
    s, d = tensors[src], tensors[dst]
    if s.dtype in ("float16", "float32"):
        data = s.data.astype(np.float32)
    else:
        q = s.quant
        if q is None:
            raise ModelError(f"DEQUANTIZE '{dst}': constant input '{src}' has no quantization")
        shape = [1] * s.data.ndim
        if q.per_channel:
            shape[q.axis] = -1
        data = ((s.data.astype(np.int64) - q.zero_point.reshape(shape)) *
                q.scale.astype(np.float64).reshape(shape)).astype(np.float32)
    d.data, d.dtype, d.quant = data, "float32", None


def _activation(o, layer, index):
    act = _ACTIVATION_NAMES.get(getattr(o, "fusedActivationFunction", 0) or 0, "?")
    if act not in ACTIVATIONS:
        raise ModelError(f"unsupported fused activation '{act}' in layer '{layer}' (op {index})")
    return act


def _padding(o):
    return _PADDING_NAMES.get(o.padding, "SAME") if o is not None else "SAME"


def _check_window(opts, layer, index):
    """A stride, dilation or pool window below 1 is a damaged file (it divided by zero downstream)."""
    for key in ("stride", "dilation", "filter"):
        if key in opts and min(opts[key]) < 1:
            raise ModelError(f"layer '{layer}' (op {index}) has {key} {tuple(int(v) for v in opts[key])} "
                             f"(a corrupt model?)")
    return opts


def _split_as_slices(kind, op, tensors, ins, outs, name, index):
    """SPLIT (axis, input; num_splits equal parts) or SPLIT_V (input, size_splits, axis) as one STRIDED_SLICE
    per output."""
    where = f"{name}: operator {index} ({kind})"
    axis_name, x_name = (ins[0], ins[1]) if kind == "SPLIT" else (ins[2] if len(ins) > 2 else "", ins[0])
    if not axis_name or not tensors[axis_name].is_const or not x_name:
        raise ModelError(f"{where} has a non-constant axis")
    x = tensors[x_name]
    rank = len(x.shape)
    axis = int(np.asarray(tensors[axis_name].data).reshape(-1)[0])
    axis = axis + rank if axis < 0 else axis
    sizes = [tensors[o].shape[axis] if 0 <= axis < rank and len(tensors[o].shape) == rank else -1 for o in outs]
    if not 0 <= axis < rank or min(sizes) < 1 or sum(sizes) != x.shape[axis]:
        raise ModelError(f"{where}: outputs {[list(tensors[o].shape) for o in outs]} do not split {list(x.shape)} "
                         f"along axis {axis}")
    result, start = [], 0
    for o, size in zip(outs, sizes):
        begin, end = [0] * rank, list(x.shape)
        begin[axis], end[axis] = start, start + size
        start += size
        result.append(Op("STRIDED_SLICE", [x_name], [o], dict(begin=tuple(begin), end=tuple(end),
                                                              strides=(1,) * rank), name=o))
    return result


def _slice_options(kind, o, tensors, ins, outs, layer, index):
    """begin, end, strides of a STRIDED_SLICE or SLICE as absolute indices with positive strides (masks applied,
    negative indices resolved, clamped like the kernel), checked against the output shape."""
    x, y = tensors[ins[0]], tensors[outs[0]]
    consts = [tensors[n] for n in ins[1:]]
    where = f"{kind} in layer '{layer}' (op {index})"
    if any(not t.is_const for t in consts):
        raise ModelError(f"{where} has non-constant begin/end/strides")
    rank = len(x.shape)
    vals = [np.asarray(t.data, np.int64).reshape(-1) for t in consts]
    if any(v.size != rank for v in vals):
        raise ModelError(f"{where}: begin/end/strides of {[v.size for v in vals]} values on a rank-{rank} tensor")
    begin, end, strides = [], [], []
    if kind == "SLICE":
        for d, (b, size) in enumerate(zip(*vals)):
            b = int(b)
            e = x.shape[d] if size == -1 else b + int(size)
            begin.append(b)
            end.append(e)
            strides.append(1)
    else:
        if o is not None and (o.ellipsisMask or o.newAxisMask or o.shrinkAxisMask or getattr(o, "offset", False)):
            raise ModelError(f"{where}: ellipsis, new-axis, shrink-axis masks and offset are not supported")
        bm, em = (int(o.beginMask), int(o.endMask)) if o is not None else (0, 0)
        for d in range(rank):
            st = int(vals[2][d])
            if st < 1:
                raise ModelError(f"{where}: stride {st} on axis {d}; only positive strides are supported")
            start = None if bm >> d & 1 else int(vals[0][d])
            stop = None if em >> d & 1 else int(vals[1][d])
            b, e, _ = slice(start, stop, st).indices(x.shape[d])
            begin.append(b)
            end.append(max(e, b))
            strides.append(st)
    out_shape = tuple(len(range(b, e, s)) for b, e, s in zip(begin, end, strides))
    if any(b < 0 or e > n for b, e, n in zip(begin, end, x.shape)) or out_shape != tuple(y.shape):
        raise ModelError(f"{where}: begin {begin} end {end} strides {strides} of {list(x.shape)} does not make "
                         f"{list(y.shape)}")
    return dict(begin=tuple(begin), end=tuple(end), strides=tuple(strides))


def _options(kind, o, tensors, ins, outs, layer, index):
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        opts = dict(stride=(o.strideH, o.strideW), padding=_padding(o), activation=_activation(o, layer, index),
                    dilation=(o.dilationHFactor or 1, o.dilationWFactor or 1))
        if kind == "DEPTHWISE_CONV_2D":
            w = tensors[ins[1]].shape
            cin = tensors[ins[0]].shape[-1]
            # Old converters wrote depth_multiplier 0 or inconsistent values; the filter shape is what counts.
            opts["depth_multiplier"] = int(w[3] // cin) if cin else int(o.depthMultiplier or 1)
        return _check_window(opts, layer, index)
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return _check_window(dict(filter=(o.filterHeight, o.filterWidth), stride=(o.strideH, o.strideW),
                                  padding=_padding(o), activation=_activation(o, layer, index)), layer, index)
    if kind == "FULLY_CONNECTED":
        if o is not None and o.weightsFormat != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise ModelError(f"unsupported shuffled weights format in layer '{layer}' (op {index})")
        return dict(activation=_activation(o, layer, index) if o is not None else "NONE",
                    keep_num_dims=bool(o.keepNumDims) if o is not None else False)
    if kind in ("ADD", "MUL", "SUB"):
        return dict(activation=_activation(o, layer, index) if o is not None else "NONE")
    if kind == "MEAN":
        if not tensors[ins[1]].is_const:
            raise ModelError(f"MEAN in layer '{layer}' (op {index}) has non-constant axes")
        return dict(keep_dims=bool(o.keepDims) if o is not None else False)
    if kind == "CONCATENATION":
        rank = len(tensors[outs[0]].shape)
        axis = int(o.axis) if o is not None else 0
        return dict(axis=axis + rank if axis < 0 else axis,
                    activation=_activation(o, layer, index) if o is not None else "NONE")
    if kind == "RESHAPE":
        return dict(new_shape=tuple(tensors[outs[0]].shape))
    if kind == "PAD":
        if len(ins) < 2 or not ins[1] or not tensors[ins[1]].is_const:
            raise ModelError(f"PAD in layer '{layer}' (op {index}) has non-constant paddings")
        if len(ins) > 2 and ins[2]:
            v = tensors[ins[2]]
            if not v.is_const or v.data.size != 1:
                raise ModelError(f"PADV2 in layer '{layer}' (op {index}) has a non-constant pad value")
            if v.quant is not None and tensors[outs[0]].quant is not None and not (
                    np.array_equal(v.quant.scale, tensors[outs[0]].quant.scale)
                    and np.array_equal(v.quant.zero_point, tensors[outs[0]].quant.zero_point)):
                raise ModelError(f"PADV2 in layer '{layer}' (op {index}): pad value quantized unlike the output")
            value = v.data.reshape(-1)[0]
            return dict(value=int(value) if v.dtype == "int8" else float(value))
        return {}
    if kind in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        size, x, y = tensors[ins[1]], tensors[ins[0]], tensors[outs[0]]
        if not size.is_const or size.data.size != 2:
            raise ModelError(f"{kind} in layer '{layer}' (op {index}) has a non-constant output size")
        if len(x.shape) != 4 or len(y.shape) != 4 or tuple(int(v) for v in size.data.reshape(-1)) != \
                tuple(y.shape[1:3]) or y.shape[3] != x.shape[3] or min(y.shape[1:3]) < 1:
            raise ModelError(f"{kind} in layer '{layer}' (op {index}): size {size.data.reshape(-1).tolist()} "
                             f"does not make {list(x.shape)} into {list(y.shape)}")
        align = bool(o.alignCorners) if o is not None else False
        half = bool(o.halfPixelCenters) if o is not None else False
        if align and half:
            raise ModelError(f"{kind} in layer '{layer}' (op {index}): align_corners and half_pixel_centers "
                             f"both set (LiteRT refuses it)")
        return dict(align_corners=align, half_pixel_centers=half)
    if kind in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH"):
        b = int(o.blockSize) if o is not None else 0
        x, y = tensors[ins[0]], tensors[outs[0]]
        if b < 1 or len(x.shape) != 4:
            raise ModelError(f"{kind} in layer '{layer}' (op {index}) has block size {b} on {list(x.shape)}")
        n, h, w, c = x.shape
        want = (n, h * b, w * b, c // (b * b)) if kind == "DEPTH_TO_SPACE" else (n, h // b, w // b, c * b * b)
        if (kind == "DEPTH_TO_SPACE" and c % (b * b)) or (kind == "SPACE_TO_DEPTH" and (h % b or w % b)) or \
                tuple(y.shape) != want:
            raise ModelError(f"{kind} in layer '{layer}' (op {index}): block {b} does not make {list(x.shape)} "
                             f"into {list(y.shape)}")
        return dict(block_size=b)
    if kind == "TRANSPOSE_CONV":
        x, w, y = tensors[ins[2]], tensors[ins[1]], tensors[outs[0]]
        if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4 or w.shape[3] != x.shape[3] or \
                w.shape[0] != y.shape[3]:
            raise ModelError(f"TRANSPOSE_CONV in layer '{layer}' (op {index}): filter {list(w.shape)} on "
                             f"{list(x.shape)} -> {list(y.shape)}")
        padding = _padding(o)
        stride = (int(o.strideH), int(o.strideW)) if o is not None else (1, 1)
        pads = tuple(window_padding(y.shape[1 + a], w.shape[1 + a], stride[a], 1, padding)[1] for a in (0, 1))
        act = _activation(o, layer, index) if o is not None else "NONE"
        return _check_window(dict(stride=stride, pads=pads, padding=padding, activation=act), layer, index)
    if kind in ("STRIDED_SLICE", "SLICE"):
        return _slice_options(kind, o, tensors, ins, outs, layer, index)
    if kind == "SOFTMAX":
        return dict(beta=float(o.beta) if o is not None else 1.0)
    if kind == "LEAKY_RELU":
        return dict(alpha=float(o.alpha) if o is not None else 0.2)
    if kind == "GELU":
        return dict(approximate=bool(o.approximate) if o is not None else False)
    return {}
