"""Import a float ONNX model into the Graph IR: NCHW becomes NHWC, ONNX's explicit pads stay explicit pads.

4-D activations are NHWC in the IR (graph inputs and outputs too: transpose NCHW data on the host). A flatten of
an NHWC tensor feeding Gemm/MatMul keeps ONNX's (C, H, W) order by permuting the weight columns instead.
"""

import numpy as np

from .graph import Graph, ModelError, Op, Tensor, unsupported_message
from .ref import window_output_size

__all__ = ["load_onnx", "ONNX_OPS"]

ONNX_OPS = ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "AveragePool", "GlobalAveragePool", "MaxPool", "Pad",
            "Reshape", "Flatten", "Concat", "Softmax", "Sigmoid", "Identity", "Dropout", "Constant",
            "Tanh", "HardSwish", "LeakyRelu", "Elu", "Abs", "Neg", "QuantizeLinear", "DequantizeLinear", "Mul", "Sub",
            "PRelu", "ReduceMean", "ConvTranspose", "Resize", "DepthToSpace", "SpaceToDepth", "Slice", "Split")

_NCHW_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError("reading ONNX models needs the 'onnx' package (pip install onnx)") from exc
    return onnx, numpy_helper


class _Converter:
    def __init__(self, model, name):
        self.onnx, self.nh = _onnx()
        self.model = model
        self.name = name
        self.tensors = {}
        self.ops = []
        self.consts = {}        # onnx name -> numpy array (original ONNX layout)
        self.layout = {}        # onnx name -> "NHWC" for converted 4-D activations
        self.alias = {}         # onnx name -> IR tensor name (Identity/Dropout pass-through)
        self.flat_from = {}     # IR tensor name -> (H, W, C) when it is a flattened NHWC tensor
        self.users = {}
        self.producer = {}
        self.counter = 0
        self.batch_taken = []   # inputs/outputs whose dynamic batch dimension is taken as 1
        # QDQ models (quant.onnx_qdq): the activation quantization QuantizeLinear nodes state, by IR tensor, and
        # the (scale, zero point, axis, integers) of constants that came through a DequantizeLinear, by ONNX name
        self.act_quant = {}
        self.const_quant = {}
        self.exact_ints = {}

    # --- helpers -------------------------------------------------------------------------------------------
    def fail(self, msg):
        raise ModelError(f"{self.name}: {msg}")

    def ir(self, name):
        return self.alias.get(name, name)

    def shape(self, name):
        return self.tensors[self.ir(name)].shape

    def add_tensor(self, name, shape, data=None):
        self.tensors[name] = Tensor(name, tuple(int(d) for d in shape), "float32",
                                    None if data is None else np.ascontiguousarray(data, np.float32))
        return name

    def const_tensor(self, base, data):
        self.counter += 1
        return self.add_tensor(f"{base}#{self.counter}", np.shape(data), data)

    def attrs(self, node):
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name, node, what):
        if name not in self.consts:
            self.fail(f"{node.op_type} '{node.name}': {what} '{name}' must be a constant")
        return self.consts[name]

    def emit(self, kind, inputs, output, shape, opts, layer):
        self.add_tensor(output, shape)
        op = Op(kind, inputs, [output], opts, name=layer)
        self.ops.append(op)
        self.producer[output] = op
        return op

    # --- conversion ----------------------------------------------------------------------------------------
    def run(self):
        g = self.model.graph
        for init in g.initializer:
            self.consts[init.name] = self.nh.to_array(init).astype(np.float32) \
                if self.nh.to_array(init).dtype.kind == "f" else self.nh.to_array(init)
        for node in g.node:
            for i in node.input:
                self.users.setdefault(i, []).append(node)
        inputs = []
        for vi in g.input:
            if vi.name in self.consts:
                continue
            dims = self._static_dims(vi)
            elem = vi.type.tensor_type.elem_type
            if elem != self.onnx.TensorProto.FLOAT:
                self.fail(f"input '{vi.name}' is {self.onnx.TensorProto.DataType.Name(elem)}; "
                          f"ONNX import takes float32 models")
            if len(dims) == 4:
                n, c, h, w = dims
                self.add_tensor(vi.name, (n, h, w, c))
                self.layout[vi.name] = "NHWC"
            else:
                self.add_tensor(vi.name, dims)
            inputs.append(vi.name)
        unsupported = [f"'{node.op_type}' in layer '{node.name or (node.output[0] if node.output else f'op{i}')}' "
                       f"(op {i})" for i, node in enumerate(g.node)
                       if node.op_type not in ONNX_OPS or node.domain not in ("", "ai.onnx")]
        if unsupported:
            raise ModelError(unsupported_message(unsupported))
        for index, node in enumerate(g.node):
            self.node(node, index)
        outputs = []
        for vo in g.output:
            if vo.name in self.consts:
                self.fail(f"output '{vo.name}' is a constant")
            outputs.append(self.ir(vo.name))
        used = {n for op in self.ops for n in op.inputs + op.outputs if n} | set(inputs) | set(outputs)
        tensors = {k: v for k, v in self.tensors.items() if k in used}
        graph = Graph(tensors, self.ops, inputs, outputs, name=self.name.rsplit(".", 1)[0])
        if self.batch_taken:
            graph.notes.append(f"dynamic batch dimension taken as 1 ({', '.join(self.batch_taken)})")
        if self.act_quant:
            from .onnx_qdq import qdq_to_int8
            return qdq_to_int8(graph, self.act_quant, self.name, self.exact_ints)
        for t in graph.tensors.values():     # weights-only quantization: a float model with dequantized weights
            t.quant = None
        return graph

    def _static_dims(self, vi):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            self.fail(f"tensor '{vi.name}' has no shape (dynamic); export the model with a fixed input size")
        dims = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif i == 0 and len(tt.shape.dim) > 1 and all(x.HasField("dim_value") and x.dim_value > 0
                                                             for x in list(tt.shape.dim)[1:]):
                dims.append(1)              # a dynamic batch: the die runs one image at a time
                self.batch_taken.append(vi.name)
            else:
                shown = [x.dim_param or (x.dim_value if x.HasField("dim_value") else "?") for x in tt.shape.dim]
                self.fail(f"tensor '{vi.name}' has a dynamic shape {shown}; the die needs static shapes "
                          f"(export the model with a fixed batch and image size)")
        return dims

    def node(self, node, index):
        op = node.op_type
        layer = node.name or (node.output[0] if node.output else f"op{index}")
        if op not in ONNX_OPS or node.domain not in ("", "ai.onnx"):
            raise ModelError(f"unsupported operator '{op}' in layer '{layer}' (op {index})")
        getattr(self, f"op_{op}")(node, self.attrs(node), layer)

    def _window(self, node, a, x_shape, kernel, layer):
        """(stride, dilation, pads (t, b, l, r)) from ONNX attributes; ONNX pads are [t, l, b, r]."""
        n, h, w, c = x_shape
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for size, k, s, d in ((h, kernel[0], strides[0], dil[0]), (w, kernel[1], strides[1], dil[1])):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                pads += [small, big] if auto == "SAME_UPPER" else [big, small]
            pads = tuple(pads)
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        else:
            p = list(a.get("pads", (0, 0, 0, 0)))
            if len(p) != 4:
                self.fail(f"{node.op_type} '{layer}': pads {p} are not 2-D")
            pads = (p[0], p[2], p[1], p[3])
        if min(pads) < 0:
            self.fail(f"{node.op_type} '{layer}': negative pads {pads}")
        return strides, dil, tuple(int(v) for v in pads)

    def _out_hw(self, x_shape, kernel, strides, dil, pads, ceil=False):
        h = window_output_size(x_shape[1], kernel[0], strides[0], dil[0], pads[0], pads[1])
        w = window_output_size(x_shape[2], kernel[1], strides[1], dil[1], pads[2], pads[3])
        return h, w

    def _need_nhwc(self, node, name, layer):
        if self.layout.get(self.ir(name)) != "NHWC":
            self.fail(f"{node.op_type} '{layer}': input '{name}' is not a 4-D NCHW activation")

    def op_Conv(self, node, a, layer):
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        w = self.const(node.input[1], node, "weight")
        b = self.const(node.input[2], node, "bias") if len(node.input) > 2 and node.input[2] else None
        xs = self.shape(x)
        cin = xs[3]
        m, cpg, kh, kw = w.shape
        group = int(a.get("group", 1))
        strides, dil, pads = self._window(node, a, xs, (kh, kw), layer)
        oh, ow = self._out_hw(xs, (kh, kw), strides, dil, pads)
        bias = np.zeros(m, np.float32) if b is None else b.astype(np.float32)
        opts = dict(stride=strides, dilation=dil, pads=pads, activation="NONE")
        if group == 1:
            if cpg != cin:
                self.fail(f"Conv '{layer}': weight has {cpg} input channels, the input {cin}")
            kind, wt = "CONV_2D", w.transpose(0, 2, 3, 1)                   # OIHW -> OHWI
        elif group == cin and cpg == 1 and m % cin == 0:
            kind, wt = "DEPTHWISE_CONV_2D", w.transpose(1, 2, 3, 0)         # (M, 1, kh, kw) -> 1HWO
            opts["depth_multiplier"] = m // cin
        else:
            raise ModelError(f"unsupported operator 'Conv' with group={group} (grouped, not depthwise) in layer "
                             f"'{layer}'")
        wn = self.const_tensor(f"{layer}/weights", wt)
        bn = self.const_tensor(f"{layer}/bias", bias)
        self._hint(wn, node.input[1], 0, 0 if kind == "CONV_2D" else 3, node, layer)
        if b is not None:
            self._hint(bn, node.input[2], 0, 0, node, layer)
        self.emit(kind, [self.ir(x), wn, bn], node.output[0], (xs[0], oh, ow, m), opts, layer)
        self.layout[node.output[0]] = "NHWC"

    def op_ConvTranspose(self, node, a, layer):
        """ONNX ConvTranspose (group 1, no dilation, no output_shape) as TRANSPOSE_CONV: out = in * s - pad + k."""
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        w = self.const(node.input[1], node, "weight")                          # (C_in, C_out, kh, kw)
        b = self.const(node.input[2], node, "bias") if len(node.input) > 2 and node.input[2] else None
        xs = self.shape(x)
        cin, cout, kh, kw = w.shape
        if int(a.get("group", 1)) != 1 or tuple(a.get("dilations", (1, 1))) != (1, 1) or "output_shape" in a \
                or cin != xs[3]:
            self.fail(f"ConvTranspose '{layer}': only group 1, dilation 1, no output_shape (weight {list(w.shape)}, "
                      f"input channels {xs[3]})")
        strides = tuple(int(v) for v in a.get("strides", (1, 1)))
        opad = tuple(int(v) for v in a.get("output_padding", (0, 0)))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        full = [(xs[1] - 1) * strides[0] + kh + opad[0], (xs[2] - 1) * strides[1] + kw + opad[1]]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out = [xs[1] * strides[0], xs[2] * strides[1]]
            total = [f - o for f, o in zip(full, out)]
            begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        elif auto == "VALID":
            begin, out = [0, 0], full
        else:
            p = [int(v) for v in a.get("pads", (0, 0, 0, 0))]
            begin, out = [p[0], p[1]], [full[0] - p[0] - p[2], full[1] - p[1] - p[3]]
        if min(begin) < 0 or min(out) < 1:
            self.fail(f"ConvTranspose '{layer}': pads {begin} give an output of {out}")
        wn = self.const_tensor(f"{layer}/weights", w.transpose(1, 2, 3, 0))   # -> OHWI
        bn = self.const_tensor(f"{layer}/bias", np.zeros(cout, np.float32) if b is None else b.astype(np.float32))
        self.emit("TRANSPOSE_CONV", [self.ir(x), wn, bn], node.output[0], (xs[0], out[0], out[1], cout),
                  dict(stride=strides, pads=tuple(begin), activation="NONE"), layer)
        self.layout[node.output[0]] = "NHWC"

    def op_Resize(self, node, a, layer):
        """ONNX Resize on H and W in the forms TFLite's RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR compute."""
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        xs = self.shape(x)
        n, h, w, c = xs
        sizes = self.const(node.input[3], node, "sizes") if len(node.input) > 3 and node.input[3] else None
        if sizes is not None:
            out_nchw = [int(v) for v in np.asarray(sizes).reshape(-1)]
        else:
            scales = [float(v) for v in np.asarray(self.const(node.input[2], node, "scales")).reshape(-1)]
            out_nchw = [int(np.floor(d * s)) for d, s in zip((n, c, h, w), scales)]
        if len(out_nchw) != 4 or out_nchw[:2] != [n, c]:
            self.fail(f"Resize '{layer}': output {out_nchw} resizes more than H and W of {[n, c, h, w]}")
        get = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in a.items()}
        mode = get.get("mode", "nearest")
        coord = get.get("coordinate_transformation_mode", "half_pixel")
        nearest = get.get("nearest_mode", "round_prefer_floor")
        forms = {("linear", "half_pixel", None): ("RESIZE_BILINEAR", False, True),
                 ("linear", "pytorch_half_pixel", None): ("RESIZE_BILINEAR", False, True),
                 ("linear", "align_corners", None): ("RESIZE_BILINEAR", True, False),
                 ("linear", "asymmetric", None): ("RESIZE_BILINEAR", False, False),
                 ("nearest", "asymmetric", "floor"): ("RESIZE_NEAREST_NEIGHBOR", False, False),
                 ("nearest", "tf_half_pixel_for_nn", "floor"): ("RESIZE_NEAREST_NEIGHBOR", False, True),
                 ("nearest", "align_corners", "round_prefer_ceil"): ("RESIZE_NEAREST_NEIGHBOR", True, False)}
        key = (mode, coord, nearest if mode == "nearest" else None)
        if key not in forms or (coord == "pytorch_half_pixel" and min(out_nchw[2:]) < 2):
            self.fail(f"Resize '{layer}': mode {mode}, coordinate_transformation_mode {coord}"
                      + (f", nearest_mode {nearest}" if mode == "nearest" else "") + " has no TFLite form")
        kind, align, half = forms[key]
        self.emit(kind, [self.ir(x)], node.output[0], (n, out_nchw[2], out_nchw[3], c),
                  dict(align_corners=align, half_pixel_centers=half), layer)
        self.layout[node.output[0]] = "NHWC"

    def op_DepthToSpace(self, node, a, layer):
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        mode = a.get("mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        b = int(a["blocksize"])
        n, h, w, c = self.shape(x)
        if mode != "DCR" or b < 1 or c % (b * b):
            self.fail(f"DepthToSpace '{layer}': mode {mode}, block {b} on {c} channels (DCR only)")
        self.emit("DEPTH_TO_SPACE", [self.ir(x)], node.output[0], (n, h * b, w * b, c // (b * b)),
                  dict(block_size=b), layer)
        self.layout[node.output[0]] = "NHWC"

    def op_SpaceToDepth(self, node, a, layer):
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        b = int(a["blocksize"])
        n, h, w, c = self.shape(x)
        if b < 1 or h % b or w % b:
            self.fail(f"SpaceToDepth '{layer}': block {b} on {h}x{w}")
        self.emit("SPACE_TO_DEPTH", [self.ir(x)], node.output[0], (n, h // b, w // b, c * b * b),
                  dict(block_size=b), layer)
        self.layout[node.output[0]] = "NHWC"

    def op_Slice(self, node, a, layer):
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        xs = self.shape(x)
        vec = [np.asarray(self.const(node.input[i], node, what), np.int64).reshape(-1)
               if len(node.input) > i and node.input[i] else None
               for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))]
        starts, ends, axes, steps = vec
        axes = list(range(len(starts))) if axes is None else [int(v) + 4 if v < 0 else int(v) for v in axes]
        steps = [1] * len(starts) if steps is None else steps
        begin, end, stride = [0, 0, 0, 0], list(xs), [1, 1, 1, 1]
        for ax, st, en, sp in zip(axes, starts, ends, steps):
            d = _NCHW_TO_NHWC_AXIS[ax]
            if sp < 1:
                self.fail(f"Slice '{layer}': step {sp}; only positive steps are supported")
            en = min(int(en), np.iinfo(np.int32).max)
            b_, e_, _ = slice(int(st), en, int(sp)).indices(xs[d])
            begin[d], end[d], stride[d] = b_, max(e_, b_), int(sp)
        shape = tuple(len(range(b_, e_, s_)) for b_, e_, s_ in zip(begin, end, stride))
        if min(shape) < 1:
            self.fail(f"Slice '{layer}': empty output {shape}")
        self.emit("STRIDED_SLICE", [self.ir(x)], node.output[0], shape,
                  dict(begin=tuple(begin), end=tuple(end), strides=tuple(stride)), layer)
        self.layout[node.output[0]] = "NHWC"

    def op_Split(self, node, a, layer):
        """Each output a STRIDED_SLICE of the input (split sizes from the input, the attribute or equal parts)."""
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        xs = self.shape(x)
        axis = int(a.get("axis", 0))
        axis = _NCHW_TO_NHWC_AXIS[axis + 4 if axis < 0 else axis]
        n_out = len(node.output)
        if len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in np.asarray(self.const(node.input[1], node, "split")).reshape(-1)]
        elif "split" in a:
            sizes = [int(v) for v in a["split"]]
        else:
            part = -(-xs[axis] // n_out)
            sizes = [min(part, xs[axis] - i * part) for i in range(n_out)]
        if len(sizes) != n_out or min(sizes) < 1 or sum(sizes) != xs[axis]:
            self.fail(f"Split '{layer}': sizes {sizes} do not split {xs[axis]} into {n_out} outputs")
        start = 0
        for out, size in zip(node.output, sizes):
            begin, end = [0, 0, 0, 0], list(xs)
            begin[axis], end[axis] = start, start + size
            start += size
            shape = tuple(e - b for b, e in zip(begin, end))
            self.emit("STRIDED_SLICE", [self.ir(x)], out, shape,
                      dict(begin=tuple(begin), end=tuple(end), strides=(1, 1, 1, 1)), f"{layer}/{out}")
            self.layout[out] = "NHWC"

    def _fc(self, node, layer, x, w_units_by_k, bias, w_source=None, b_source=None):
        """FULLY_CONNECTED from [N, K] input and weights [units, K]; undoes an NHWC flatten's order."""
        xi = self.ir(x)
        xs = self.tensors[xi].shape
        if len(xs) != 2:
            self.fail(f"{node.op_type} '{layer}': input '{x}' must be 2-D [N, K], got {list(xs)}")
        if w_units_by_k.shape[1] != xs[1]:
            self.fail(f"{node.op_type} '{layer}': weights take {w_units_by_k.shape[1]} features, input has {xs[1]}")
        w = w_units_by_k
        if xi in self.flat_from:
            h, wd, c = self.flat_from[xi]
            # ONNX flattened (C, H, W); the IR buffer is (H, W, C): reorder the weight columns to match.
            w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        units = w.shape[0]
        wn = self.const_tensor(f"{layer}/weights", w)
        bn = self.const_tensor(f"{layer}/bias", np.zeros(units, np.float32) if bias is None else bias)
        if w_source is not None:
            self._hint(wn, w_source[0], w_source[1], 0, node, layer)
        if b_source is not None and bias is not None:
            self._hint(bn, b_source, 0, 0, node, layer)
        self.emit("FULLY_CONNECTED", [xi, wn, bn], node.output[0], (xs[0], units),
                  dict(activation="NONE", keep_num_dims=False), layer)

    def op_Gemm(self, node, a, layer):
        if a.get("transA", 0):
            self.fail(f"Gemm '{layer}': transA=1 is not supported")
        b = self.const(node.input[1], node, "weight").astype(np.float32)
        w = (b if a.get("transB", 0) else b.T) * np.float32(a.get("alpha", 1.0))
        bias = None
        quantized = node.input[1] in self.const_quant
        if quantized and a.get("alpha", 1.0) != 1.0:
            self.fail(f"Gemm '{layer}': alpha != 1 on quantized weights is not supported")
        if len(node.input) > 2 and node.input[2]:
            c = self.const(node.input[2], node, "bias").astype(np.float32) * np.float32(a.get("beta", 1.0))
            if node.input[2] in self.const_quant and (a.get("beta", 1.0) != 1.0 or c.size != w.shape[0]):
                self.fail(f"Gemm '{layer}': a quantized bias must have one value per unit and beta 1")
            bias = np.broadcast_to(c.reshape(-1), (w.shape[0],)).astype(np.float32)
        bias_source = node.input[2] if len(node.input) > 2 and node.input[2] else None
        self._fc(node, layer, node.input[0], w, bias, (node.input[1], 0 if a.get("transB", 0) else 1), bias_source)

    def op_MatMul(self, node, a, layer):
        b = self.const(node.input[1], node, "weight").astype(np.float32)
        if b.ndim != 2:
            self.fail(f"MatMul '{layer}': weight must be 2-D")
        self._fc(node, layer, node.input[0], b.T, None, (node.input[1], 1))

    def op_Add(self, node, a, layer):
        x, y = node.input
        if x in self.consts and y not in self.consts:
            x, y = y, x
        if y in self.consts:
            c = self.consts[y].astype(np.float32)
            prod = self.producer.get(self.ir(x))
            if prod is not None and prod.kind == "FULLY_CONNECTED" and len(self.users.get(x, [])) == 1 \
                    and c.size == self.tensors[prod.outputs[0]].shape[-1]:
                # MatMul + Add(bias) is one FULLY_CONNECTED with that bias.
                bias = self.tensors[prod.inputs[2]]
                bias.data = bias.data + c.reshape(-1)
                self.alias[node.output[0]] = self.ir(x)
                return
            yn = self.const_tensor(f"{layer}/constant", self._nhwc_const(c, x))
        else:
            yn = self.ir(y)
        self._binary(node, layer, "ADD", self.ir(x), yn)

    def _nhwc_const(self, c, x):
        """A constant operand broadcast against activation `x`: NCHW-shaped constants in NHWC order."""
        if self.layout.get(self.ir(x)) == "NHWC":
            if c.ndim == 4:
                return c.transpose(0, 2, 3, 1)
            if c.ndim == 3:                             # (C, H, W) against (N, C, H, W)
                return c.transpose(1, 2, 0)
        return c

    def _binary(self, node, layer, kind, xn, yn):
        xs, ys = self.tensors[xn].shape, self.tensors[yn].shape
        try:
            shape = np.broadcast_shapes(xs, ys)
        except ValueError:
            self.fail(f"{node.op_type} '{layer}': shapes {list(xs)} and {list(ys)} do not broadcast")
        self.emit(kind, [xn, yn], node.output[0], shape, dict(activation="NONE"), layer)
        if self.layout.get(xn) == "NHWC" or self.layout.get(yn) == "NHWC":
            self.layout[node.output[0]] = "NHWC"

    def _operands(self, node, layer, commutative):
        x, y = node.input
        if commutative and x in self.consts and y not in self.consts:
            x, y = y, x
        names = []
        for n, other in ((x, y), (y, x)):
            if n in self.consts:
                names.append(self.const_tensor(f"{layer}/constant",
                                               self._nhwc_const(self.consts[n].astype(np.float32), other)))
            else:
                names.append(self.ir(n))
        return names

    def op_Mul(self, node, a, layer):
        self._binary(node, layer, "MUL", *self._operands(node, layer, True))

    def op_Sub(self, node, a, layer):
        self._binary(node, layer, "SUB", *self._operands(node, layer, False))

    def op_PRelu(self, node, a, layer):
        x = node.input[0]
        slope = self.const(node.input[1], node, "slope").astype(np.float32)
        xs = self.shape(x)
        if slope.size == 1:
            slope = slope.reshape(1)
        elif self.layout.get(self.ir(x)) == "NHWC":
            c = xs[3]
            if slope.ndim < 3 or slope.shape[-3] != c or slope.size != c:      # (C, 1, 1) or (1, C, 1, 1)
                self.fail(f"PRelu '{layer}': slope of shape {list(slope.shape)}; one per channel or one for all")
            slope = slope.reshape(1, 1, c)
        an = self.const_tensor(f"{layer}/alpha", slope)
        self.emit("PRELU", [self.ir(x), an], node.output[0], xs, {}, layer)
        if self.layout.get(self.ir(x)) == "NHWC":
            self.layout[node.output[0]] = "NHWC"

    def op_ReduceMean(self, node, a, layer):
        x = node.input[0]
        xs = self.shape(x)
        axes = a.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1], node, "axes")
        if axes is None:
            self.fail(f"ReduceMean '{layer}': reducing over every axis is not supported")
        axes = sorted({int(v) % len(xs) for v in np.asarray(axes).reshape(-1)})
        if self.layout.get(self.ir(x)) == "NHWC":
            axes = sorted(_NCHW_TO_NHWC_AXIS[v] for v in axes)
        keep = bool(a.get("keepdims", 1))
        shape = tuple(1 if i in axes else d for i, d in enumerate(xs)) if keep else \
            tuple(d for i, d in enumerate(xs) if i not in axes)
        an = self.const_tensor(f"{layer}/axes", np.array(axes, np.int32))
        self.tensors[an].dtype, self.tensors[an].data = "int32", np.array(axes, np.int32)
        self.emit("MEAN", [self.ir(x), an], node.output[0], shape, dict(keep_dims=keep), layer)
        if self.layout.get(self.ir(x)) == "NHWC" and keep:
            self.layout[node.output[0]] = "NHWC"
        elif self.layout.get(self.ir(x)) == "NHWC" and axes != [1, 2]:
            self.fail(f"ReduceMean '{layer}': keepdims=0 over NCHW axes other than H and W is not supported")

    def _unary(self, node, kind, layer, opts=None):
        x = node.input[0]
        self.emit(kind, [self.ir(x)], node.output[0], self.shape(x), opts or {}, layer)
        if self.layout.get(self.ir(x)) == "NHWC":
            self.layout[node.output[0]] = "NHWC"

    # --- QDQ models -------------------------------------------------------------------------------------------
    def _qparams(self, node, layer):
        """(scale float32 [n], zero point int64 [n], the zero point's dtype) of a Quantize/DequantizeLinear."""
        scale = np.asarray(self.const(node.input[1], node, "scale"), np.float32).reshape(-1)
        if len(node.input) > 2 and node.input[2]:
            zp = np.asarray(self.const(node.input[2], node, "zero point"))
        else:
            zp = np.zeros(1, np.uint8)          # ONNX's default: uint8, zero point 0
        if zp.dtype not in (np.int8, np.uint8, np.int32):
            self.fail(f"{node.op_type} '{layer}': {zp.dtype} quantization is not supported (int8 and uint8)")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            self.fail(f"{node.op_type} '{layer}': scale must be positive and finite")
        return scale, zp.astype(np.int64).reshape(-1), zp.dtype

    def op_QuantizeLinear(self, node, a, layer):
        from .graph import QuantParams

        x = node.input[0]
        if x in self.consts:
            self.fail(f"QuantizeLinear '{layer}': quantizes the constant '{x}' in the graph; a QDQ model stores "
                      f"its weights quantized")
        scale, zp, dtype = self._qparams(node, layer)
        if scale.size != 1 or zp.size != 1:
            self.fail(f"QuantizeLinear '{layer}': per-channel quantization of an activation is not supported")
        if dtype == np.int32:
            self.fail(f"QuantizeLinear '{layer}': int32 activations are not supported (int8 and uint8)")
        # A uint8 tensor holds the same reals as int8 with the zero point 128 lower.
        q = QuantParams.per_tensor(float(scale[0]), int(zp[0]) - (128 if dtype == np.uint8 else 0))
        xi = self.ir(x)
        prev = self.act_quant.get(xi)
        if prev is not None and (prev.scale[0] != q.scale[0] or prev.zero_point[0] != q.zero_point[0]):
            self.fail(f"QuantizeLinear '{layer}': tensor '{x}' is quantized twice with different parameters")
        self.act_quant[xi] = q
        self.alias[node.output[0]] = xi

    def op_DequantizeLinear(self, node, a, layer):
        x = node.input[0]
        scale, zp, _ = self._qparams(node, layer)
        if x in self.consts:
            q = np.asarray(self.consts[x])
            if q.dtype.kind not in "iu":
                self.fail(f"DequantizeLinear '{layer}': constant '{x}' is not integer")
            axis = int(a.get("axis", 1))
            axis = axis + q.ndim if axis < 0 else axis
            shape = [1] * q.ndim
            if scale.size > 1:
                if not 0 <= axis < q.ndim or q.shape[axis] != scale.size:
                    self.fail(f"DequantizeLinear '{layer}': {scale.size} scales for axis {axis} of shape "
                              f"{list(q.shape)}")
                shape[axis] = -1
            if zp.size not in (1, scale.size):
                self.fail(f"DequantizeLinear '{layer}': {zp.size} zero points for {scale.size} scales")
            zpa = np.broadcast_to(zp, scale.shape)
            real = (q.astype(np.float64) - zpa.reshape(shape)) * scale.astype(np.float64).reshape(shape)
            self.consts[node.output[0]] = real.astype(np.float32)
            self.const_quant[node.output[0]] = (scale, zpa.astype(np.int64), axis if scale.size > 1 else None,
                                                q.astype(np.int64))
            return
        xi = self.ir(x)
        if xi not in self.act_quant:
            self.fail(f"DequantizeLinear '{layer}': '{x}' is not made by a QuantizeLinear (int8 graph inputs are "
                      f"not supported: give the model a float input and a QuantizeLinear)")
        self.alias[node.output[0]] = xi

    def _hint(self, ir_name, onnx_name, onnx_axis, ir_axis, node, layer):
        """Put the DequantizeLinear parameters of constant `onnx_name` on the IR constant `ir_name` (a QDQ
        model's weights or bias): scale, zero point and the axis they run along in the IR layout."""
        from .graph import QuantParams

        info = self.const_quant.get(onnx_name)
        if info is None:
            return
        scale, zp, axis, ints = info
        if axis is not None and axis != onnx_axis:
            self.fail(f"{node.op_type} '{layer}': '{onnx_name}' is quantized along axis {axis}, not per output "
                      f"channel (axis {onnx_axis})")
        self.tensors[ir_name].quant = QuantParams(scale.copy(), zp.copy(), ir_axis if axis is not None else 0)
        if ints.ndim == 1:
            self.exact_ints[ir_name] = ints     # a bias: int32 values beyond float32's exact integers

    def op_Relu(self, node, a, layer):
        self._unary(node, "RELU", layer)

    def op_Sigmoid(self, node, a, layer):
        self._unary(node, "LOGISTIC", layer)

    def op_Tanh(self, node, a, layer):
        self._unary(node, "TANH", layer)

    def op_HardSwish(self, node, a, layer):
        self._unary(node, "HARD_SWISH", layer)           # x * clip(x / 6 + 1/2, 0, 1): TFLite's HARD_SWISH

    def op_LeakyRelu(self, node, a, layer):
        self._unary(node, "LEAKY_RELU", layer, dict(alpha=float(a.get("alpha", 0.01))))

    def op_Elu(self, node, a, layer):
        alpha = float(a.get("alpha", 1.0))
        if alpha != 1.0:
            raise ModelError(f"unsupported operator 'Elu(alpha={alpha:g})' in layer '{layer}': TFLite's ELU has "
                             f"alpha 1")
        self._unary(node, "ELU", layer)

    def op_Abs(self, node, a, layer):
        self._unary(node, "ABS", layer)

    def op_Neg(self, node, a, layer):
        self._unary(node, "NEG", layer)

    def op_Clip(self, node, a, layer):
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node.input[1], node, "min"))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node.input[2], node, "max"))
        if lo == 0.0 and hi == 6.0:
            self._unary(node, "RELU6", layer)
        elif lo == 0.0 and hi == np.inf:
            self._unary(node, "RELU", layer)
        else:
            raise ModelError(f"unsupported operator 'Clip({lo}, {hi})' in layer '{layer}': only [0, 6] (RELU6) "
                             f"and [0, inf) (RELU)")

    def _pool(self, node, a, layer, kind):
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        xs = self.shape(x)
        k = tuple(a["kernel_shape"])
        strides, dil, pads = self._window(node, a, xs, k, layer)
        if dil != (1, 1):
            self.fail(f"{node.op_type} '{layer}': dilated pooling is not supported")
        if a.get("ceil_mode", 0):
            self.fail(f"{node.op_type} '{layer}': ceil_mode=1 is not supported")
        if kind == "AVERAGE_POOL_2D" and a.get("count_include_pad", 0) and any(pads):
            self.fail(f"AveragePool '{layer}': count_include_pad=1 with padding is not supported (TFLite divides "
                      f"by the in-bounds taps)")
        oh, ow = self._out_hw(xs, k, strides, dil, pads)
        self.emit(kind, [self.ir(x)], node.output[0], (xs[0], oh, ow, xs[3]),
                  dict(filter=k, stride=strides, pads=pads, activation="NONE"), layer)
        self.layout[node.output[0]] = "NHWC"

    def op_AveragePool(self, node, a, layer):
        self._pool(node, a, layer, "AVERAGE_POOL_2D")

    def op_MaxPool(self, node, a, layer):
        if len(node.output) > 1 and node.output[1]:
            self.fail(f"MaxPool '{layer}': the indices output is not supported")
        self._pool(node, a, layer, "MAX_POOL_2D")

    def op_GlobalAveragePool(self, node, a, layer):
        x = node.input[0]
        self._need_nhwc(node, x, layer)
        n, h, w, c = self.shape(x)
        self.emit("AVERAGE_POOL_2D", [self.ir(x)], node.output[0], (n, 1, 1, c),
                  dict(filter=(h, w), stride=(1, 1), padding="VALID", activation="NONE"), layer)
        self.layout[node.output[0]] = "NHWC"

    def op_Pad(self, node, a, layer):
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise ModelError(f"unsupported operator 'Pad(mode={mode})' in layer '{layer}'")
        pads = a.get("pads")
        if len(node.input) > 1 and node.input[1]:
            pads = self.const(node.input[1], node, "pads")
        if len(node.input) > 2 and node.input[2] and float(self.const(node.input[2], node, "value")) != 0.0:
            self.fail(f"Pad '{layer}': only zero padding is supported")
        if len(node.input) > 3 and node.input[3]:
            self.fail(f"Pad '{layer}': the axes input is not supported")
        x = node.input[0]
        xs = self.shape(x)
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        r = len(xs)
        pairs = [(pads[i], pads[i + r]) for i in range(r)]
        if self.layout.get(self.ir(x)) == "NHWC":
            pairs = [pairs[0], pairs[2], pairs[3], pairs[1]]                # NCHW -> NHWC
        if any(p < 0 for pair in pairs for p in pair):
            self.fail(f"Pad '{layer}': negative pads (cropping) are not supported")
        pn = self.const_tensor(f"{layer}/paddings", np.array(pairs, np.int32))
        self.tensors[pn].dtype, self.tensors[pn].data = "int32", np.array(pairs, np.int32)
        shape = tuple(d + a_ + b_ for d, (a_, b_) in zip(xs, pairs))
        self.emit("PAD", [self.ir(x), pn], node.output[0], shape, {}, layer)
        if self.layout.get(self.ir(x)) == "NHWC":
            self.layout[node.output[0]] = "NHWC"

    def _flatten_to(self, node, layer, new_shape):
        x = node.input[0]
        xi = self.ir(x)
        xs = self.shape(x)
        new_shape = tuple(int(d) for d in new_shape)
        if int(np.prod(new_shape)) != int(np.prod(xs)):
            self.fail(f"{node.op_type} '{layer}': cannot reshape {list(xs)} to {list(new_shape)}")
        if self.layout.get(xi) == "NHWC":
            n, h, w, c = xs
            if new_shape == (n, c * h * w) and h * w > 1:
                readers = self.users.get(node.output[0], [])
                if not readers or any(u.op_type not in ("Gemm", "MatMul") for u in readers):
                    self.fail(f"{node.op_type} '{layer}': flattening an NCHW tensor with H*W > 1 is only supported "
                              f"in front of Gemm/MatMul")
                self.flat_from[node.output[0]] = (h, w, c)
            elif not (h == w == 1 and new_shape in ((n, c), (n, c, 1, 1))):
                self.fail(f"{node.op_type} '{layer}': reshaping the NCHW tensor {list((n, c, h, w))} to "
                          f"{list(new_shape)} is not supported (it would need a transpose)")
            if new_shape == (n, c, 1, 1):
                new_shape = (n, 1, 1, c)
                self.layout[node.output[0]] = "NHWC"
        self.emit("RESHAPE", [xi], node.output[0], new_shape, dict(new_shape=new_shape), layer)

    def op_Flatten(self, node, a, layer):
        xs = self.shape(node.input[0])
        axis = int(a.get("axis", 1))
        axis = axis + len(xs) if axis < 0 else axis
        logical = xs if self.layout.get(self.ir(node.input[0])) != "NHWC" else \
            (xs[0], xs[3], xs[1], xs[2])
        self._flatten_to(node, layer, (int(np.prod(logical[:axis])), int(np.prod(logical[axis:]))))

    def op_Reshape(self, node, a, layer):
        target = [int(d) for d in self.const(node.input[1], node, "shape")]
        xs = self.shape(node.input[0])
        logical = xs if self.layout.get(self.ir(node.input[0])) != "NHWC" else (xs[0], xs[3], xs[1], xs[2])
        if not a.get("allowzero", 0):
            target = [logical[i] if d == 0 else d for i, d in enumerate(target)]
        if target.count(-1) == 1:
            known = int(np.prod([d for d in target if d != -1]))
            target[target.index(-1)] = int(np.prod(logical)) // known
        self._flatten_to(node, layer, target)

    def op_Concat(self, node, a, layer):
        names = [self.ir(n) for n in node.input]
        shapes = [self.tensors[n].shape for n in names]
        rank = len(shapes[0])
        axis = int(a["axis"])
        axis = axis + rank if axis < 0 else axis
        nhwc = [self.layout.get(n) == "NHWC" for n in names]
        if any(nhwc) and not all(nhwc):
            self.fail(f"Concat '{layer}': mixes 4-D activations with other tensors")
        if all(nhwc):
            axis = _NCHW_TO_NHWC_AXIS[axis]
        shape = list(shapes[0])
        shape[axis] = sum(s[axis] for s in shapes)
        self.emit("CONCATENATION", names, node.output[0], shape, dict(axis=axis, activation="NONE"), layer)
        if all(nhwc):
            self.layout[node.output[0]] = "NHWC"

    def op_Softmax(self, node, a, layer):
        x = node.input[0]
        xs = self.shape(x)
        opset = max((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), default=13)
        axis = int(a.get("axis", -1 if opset >= 13 else 1))
        axis = axis + len(xs) if axis < 0 else axis
        last = len(xs) - 1
        if self.layout.get(self.ir(x)) == "NHWC":
            ok = axis == 1 and (opset >= 13 or xs[1] == xs[2] == 1)
        else:
            ok = axis == last
        if not ok:
            self.fail(f"Softmax '{layer}': only softmax over the channels/last axis is supported (axis {axis})")
        self._unary(node, "SOFTMAX", layer, dict(beta=1.0))

    def op_Identity(self, node, a, layer):
        self.alias[node.output[0]] = self.ir(node.input[0])

    def op_Dropout(self, node, a, layer):
        self.alias[node.output[0]] = self.ir(node.input[0])

    def op_Constant(self, node, a, layer):
        if "value" not in a:
            self.fail(f"Constant '{layer}': only 'value' constants are supported")
        arr = self.nh.to_array(a["value"])
        self.consts[node.output[0]] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr


def load_onnx(data, name="model.onnx") -> Graph:
    """A Graph (float32, NHWC) from the bytes of an ONNX model. Raises ModelError (one line) on bad input."""
    onnx, _ = _onnx()
    try:
        model = onnx.load_model_from_string(bytes(data))
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelError(f"{name}: not a readable ONNX model ({type(e).__name__}); truncated or not a model") \
            from None
    if not model.graph.node:
        raise ModelError(f"{name}: not an ONNX model (no graph nodes); truncated or not a model")
    from onnx.checker import ValidationError

    try:
        return _Converter(model, name).run()
    except ModelError:
        raise
    except MemoryError:
        raise ModelError(f"{name}: a tensor of the model is too large to hold in memory") from None
    except (ValueError, IndexError, KeyError, TypeError, ArithmeticError, ValidationError) as e:
        # A damaged model (a weight whose declared shape its data does not fill, a node missing an input ...):
        # the reference reader and numpy raise whatever the damage provokes.
        raise ModelError(f"{name}: corrupt ONNX model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
