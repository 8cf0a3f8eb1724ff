"""Write a Graph back to a .tflite flatbuffer (TFLiteBuilder), so LiteRT runs the very same integer model.

What TFLite cannot say directly is spelled with ops it has: explicit conv padding becomes PAD + VALID (the pad
value is the zero point, which the conv's own padding also is), explicit max-pool padding becomes PADV2 with the
dtype's lowest value (never wins a max), and a requantizing CONCATENATION gets an int8->int8 QUANTIZE per input.
"""

import numpy as np

from .executor import concat_input_requant, op_pads
from .graph import Graph, ModelError
from .ref import window_padding
from .tflite import TFLiteBuilder, activation_type, padding_type, schema

__all__ = ["export_tflite"]

_OPS = schema.BuiltinOperator


class _Writer:
    def __init__(self, graph):
        self.g = graph
        self.b = TFLiteBuilder(description=f"stackcam export of {graph.name}", subgraph_name=graph.name)
        self.index = {}

    def tensor(self, name):
        if name == "":
            return -1
        if name not in self.index:
            t = self.g.tensor(name)
            q = t.quant
            self.index[name] = self.b.add_tensor(
                name, t.shape, np.dtype(t.dtype), data=t.data,
                scale=None if q is None else q.scale, zero_point=None if q is None else q.zero_point,
                quantized_dimension=0 if q is None else q.axis)
        return self.index[name]

    def new_tensor(self, name, like, shape, data=None, dtype=None):
        """A tensor the export adds (pad outputs, requantized inputs), quantized like tensor `like`."""
        t = self.g.tensor(like) if like else None
        q = t.quant if t is not None else None
        return self.b.add_tensor(name, shape, np.dtype(dtype or t.dtype), data=data,
                                 scale=None if q is None else q.scale,
                                 zero_point=None if q is None else q.zero_point)

    def op(self, builtin, inputs, outputs, options=None, dtype="int8"):
        # Float graphs get version 1 of every op; int8 ops the versions the converter writes.
        version = None if dtype == "int8" else 1
        self.b.add_operator(builtin, inputs, outputs, options, version=version)

    def explicit_pad(self, op, pads, pad_value=None):
        """Emit PAD (or PADV2 with `pad_value`) in front of `op`'s input; return the padded tensor's index."""
        x = self.g.tensor(op.inputs[0])
        top, bottom, left, right = pads
        n, h, w, c = x.shape
        paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
        p = self.b.add_tensor(f"{op.name or op.outputs[0]}/paddings", (4, 2), np.int32, data=paddings)
        out = self.new_tensor(f"{op.name or op.outputs[0]}/padded", x.name, (n, h + top + bottom, w + left + right, c))
        if pad_value is None:
            self.op(_OPS.PAD, [self.tensor(x.name), p], [out], schema.PadOptionsT(), dtype=x.dtype)
        else:
            # LiteRT wants the pad value quantized exactly like the padded tensor.
            v = self.new_tensor(f"{op.name or op.outputs[0]}/pad_value", x.name, (1,),
                                data=np.array([pad_value], x.dtype))
            self.op(_OPS.PADV2, [self.tensor(x.name), p, v], [out], schema.PadV2OptionsT(), dtype=x.dtype)
        return out

    def padding_of(self, op, kernel, dilation=(1, 1)):
        """("SAME"|"VALID", None) when the op's padding is one of those, else ("VALID", explicit pads)."""
        if "pads" not in op.opts:
            return op.opts.get("padding", "SAME"), None
        pads = op_pads(self.g, op)
        if not any(pads):
            return "VALID", None
        x = self.g.tensor(op.inputs[0])
        stride = op.opts.get("stride", (1, 1))
        same = (*window_padding(x.shape[1], kernel[0], stride[0], dilation[0], "SAME")[1:],
                *window_padding(x.shape[2], kernel[1], stride[1], dilation[1], "SAME")[1:])
        y = self.g.tensor(op.outputs[0])
        same_out = (-(-x.shape[1] // stride[0]), -(-x.shape[2] // stride[1]))
        if tuple(pads) == same and tuple(y.shape[1:3]) == same_out:
            return "SAME", None
        return "VALID", pads

    def write(self, op):
        g, o, k = self.g, op.opts, op.kind
        dtype = g.tensor(op.inputs[0]).dtype if op.inputs and op.inputs[0] else "float32"
        ins = [self.tensor(n) for n in op.inputs]
        outs = [self.tensor(n) for n in op.outputs]
        act = activation_type(o.get("activation", "NONE"))
        if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = g.tensor(op.inputs[1])
            dilation = tuple(o.get("dilation", (1, 1)))
            padding, pads = self.padding_of(op, (w.shape[1], w.shape[2]), dilation)
            if pads is not None:
                ins[0] = self.explicit_pad(op, pads)
            stride = o.get("stride", (1, 1))
            if k == "CONV_2D":
                opts = schema.Conv2DOptionsT(padding=padding_type(padding), strideH=stride[0], strideW=stride[1],
                                             fusedActivationFunction=act, dilationHFactor=dilation[0],
                                             dilationWFactor=dilation[1])
                self.op(_OPS.CONV_2D, ins, outs, opts, dtype)
            else:
                opts = schema.DepthwiseConv2DOptionsT(
                    padding=padding_type(padding), strideH=stride[0], strideW=stride[1],
                    depthMultiplier=o.get("depth_multiplier", 1), fusedActivationFunction=act,
                    dilationHFactor=dilation[0], dilationWFactor=dilation[1])
                self.op(_OPS.DEPTHWISE_CONV_2D, ins, outs, opts, dtype)
        elif k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            padding, pads = self.padding_of(op, tuple(o["filter"]))
            if pads is not None:
                if k == "AVERAGE_POOL_2D":
                    raise ModelError(f"{op.label()}: explicit padding {pads} of an average pool has no TFLite form")
                lowest = np.iinfo(np.int8).min if dtype == "int8" else -np.inf
                ins[0] = self.explicit_pad(op, pads, pad_value=lowest)
            stride, f = o.get("stride", (1, 1)), o["filter"]
            opts = schema.Pool2DOptionsT(padding=padding_type(padding), strideH=stride[0], strideW=stride[1],
                                         filterHeight=f[0], filterWidth=f[1], fusedActivationFunction=act)
            self.op(getattr(_OPS, k), ins, outs, opts, dtype)
        elif k == "FULLY_CONNECTED":
            opts = schema.FullyConnectedOptionsT(fusedActivationFunction=act,
                                                 keepNumDims=bool(o.get("keep_num_dims", False)))
            self.op(_OPS.FULLY_CONNECTED, ins, outs, opts, dtype)
        elif k == "ADD":
            self.op(_OPS.ADD, ins, outs, schema.AddOptionsT(fusedActivationFunction=act), dtype)
        elif k == "MUL":
            self.op(_OPS.MUL, ins, outs, schema.MulOptionsT(fusedActivationFunction=act), dtype)
        elif k == "SUB":
            self.op(_OPS.SUB, ins, outs, schema.SubOptionsT(fusedActivationFunction=act), dtype)
        elif k == "MEAN":
            self.op(_OPS.MEAN, ins, outs, schema.ReducerOptionsT(keepDims=bool(o.get("keep_dims", False))), dtype)
        elif k == "CONCATENATION":
            if dtype == "int8":
                for i, (name, r) in enumerate(zip(op.inputs, concat_input_requant(g, op))):
                    if r is not None:
                        q = self.new_tensor(f"{op.name or op.outputs[0]}/requantized_{i}", op.outputs[0],
                                            g.tensor(name).shape)
                        self.op(_OPS.QUANTIZE, [ins[i]], [q], None, dtype)
                        ins[i] = q
            opts = schema.ConcatenationOptionsT(axis=int(o.get("axis", 0)), fusedActivationFunction=act)
            self.op(_OPS.CONCATENATION, ins, outs, opts, dtype)
        elif k == "RESHAPE":
            shape = np.array(g.tensor(op.outputs[0]).shape, np.int32)
            s = self.b.add_tensor(f"{op.name or op.outputs[0]}/shape", shape.shape, np.int32, data=shape)
            self.op(_OPS.RESHAPE, [ins[0], s], outs, schema.ReshapeOptionsT(newShape=shape.tolist()), dtype)
        elif k in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
            size = np.array(g.tensor(op.outputs[0]).shape[1:3], np.int32)
            s = self.b.add_tensor(f"{op.name or op.outputs[0]}/size", (2,), np.int32, data=size)
            flags = dict(alignCorners=bool(o.get("align_corners", False)),
                         halfPixelCenters=bool(o.get("half_pixel_centers", False)))
            opts = schema.ResizeBilinearOptionsT(**flags) if k == "RESIZE_BILINEAR" else \
                schema.ResizeNearestNeighborOptionsT(**flags)
            self.op(getattr(_OPS, k), [ins[0], s], outs, opts, dtype)
        elif k == "TRANSPOSE_CONV":
            x, w, y = (g.tensor(n) for n in (op.inputs[0], op.inputs[1], op.outputs[0]))
            stride = tuple(o["stride"])
            padding = None
            for name in ("SAME", "VALID"):
                if tuple(window_padding(y.shape[1 + a], w.shape[1 + a], stride[a], 1, name)[1]
                         for a in (0, 1)) == tuple(o["pads"]):
                    padding = name
                    break
            target = outs
            if padding is None:
                # Other pads: the VALID (full) output, then the window the pads select. Exact: each output
                # element, its requantization included, depends only on its own position.
                padding = "VALID"
                full = (y.shape[0], (x.shape[1] - 1) * stride[0] + w.shape[1],
                        (x.shape[2] - 1) * stride[1] + w.shape[2], y.shape[3])
                target = [self.new_tensor(f"{op.name or op.outputs[0]}/full", op.outputs[0], full)]
            shape = np.array(g.tensor(op.outputs[0]).shape if target is outs else full, np.int32)
            s = self.b.add_tensor(f"{op.name or op.outputs[0]}/output_shape", (4,), np.int32, data=shape)
            opts = schema.TransposeConvOptionsT(padding=padding_type(padding), strideH=stride[0], strideW=stride[1],
                                                fusedActivationFunction=act)
            bias = ins[2] if len(ins) > 2 else -1
            self.op(_OPS.TRANSPOSE_CONV, [s, ins[1], ins[0], bias], target, opts, dtype)
            if target is not outs:
                (pt, pl), (_, oh, ow, oc) = o["pads"], y.shape
                window = (("begin", [0, pt, pl, 0]), ("end", [1, pt + oh, pl + ow, oc]), ("strides", [1, 1, 1, 1]))
                vec = [self.b.add_tensor(f"{op.name or op.outputs[0]}/{what}", (4,), np.int32,
                                         data=np.array(v, np.int32)) for what, v in window]
                self.op(_OPS.STRIDED_SLICE, [target[0], *vec], outs, schema.StridedSliceOptionsT(), dtype)
        elif k in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH"):
            # LiteRT's BUILTIN_REF registers int8 DEPTH_TO_SPACE only as version 1.
            opts = (schema.DepthToSpaceOptionsT if k == "DEPTH_TO_SPACE" else schema.SpaceToDepthOptionsT)(
                blockSize=int(o["block_size"]))
            self.b.add_operator(getattr(_OPS, k), ins, outs, opts, version=1)
        elif k in ("STRIDED_SLICE", "SLICE"):
            vec = []
            for what in ("begin", "end", "strides"):
                v = np.array(o[what], np.int32)
                vec.append(self.b.add_tensor(f"{op.name or op.outputs[0]}/{what}", v.shape, np.int32, data=v))
            self.op(_OPS.STRIDED_SLICE, [ins[0], *vec], outs, schema.StridedSliceOptionsT(), dtype)
        elif k == "PAD" and "value" in o:
            v = self.new_tensor(f"{op.name or op.outputs[0]}/pad_value", op.outputs[0], (1,),
                                data=np.array([o["value"]], np.dtype(dtype)))
            self.op(_OPS.PADV2, [*ins[:2], v], outs, schema.PadV2OptionsT(), dtype)
        elif k == "PAD":
            self.op(_OPS.PAD, ins, outs, schema.PadOptionsT(), dtype)
        elif k == "SOFTMAX":
            self.op(_OPS.SOFTMAX, ins, outs, schema.SoftmaxOptionsT(beta=float(o.get("beta", 1.0))), dtype)
        elif k == "LEAKY_RELU":
            self.op(_OPS.LEAKY_RELU, ins, outs, schema.LeakyReluOptionsT(alpha=float(o.get("alpha", 0.2))), dtype)
        elif k == "GELU":
            self.op(_OPS.GELU, ins, outs, schema.GeluOptionsT(approximate=bool(o.get("approximate", False))), dtype)
        elif k in ("TANH", "ELU", "HARD_SWISH", "PRELU", "ABS", "NEG", "RELU_N1_TO_1", "RELU_0_TO_1"):
            self.op(getattr(_OPS, k), ins, outs, None, dtype)
        elif k in ("LOGISTIC", "RELU", "RELU6", "QUANTIZE", "DEQUANTIZE"):
            # QUANTIZE/DEQUANTIZE versions follow their int8 side.
            self.op(getattr(_OPS, k), ins, outs, None, "int8" if k in ("QUANTIZE", "DEQUANTIZE") else dtype)
        else:
            raise ModelError(f"{op.label()}: the exporter has no TFLite form for '{k}'")

    def build(self):
        self.b.inputs = [self.tensor(n) for n in self.g.inputs]
        for op in self.g.ops:
            self.write(op)
        self.b.outputs = [self.tensor(n) for n in self.g.outputs]
        return self.b.build()


def export_tflite(graph: Graph) -> bytes:
    """The .tflite bytes of `graph` (int8 or float), runnable by LiteRT with the same results as run_graph."""
    return _Writer(graph).build()
