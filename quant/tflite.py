"""Write (and read back) TFLite flatbuffers with the schema shipped in LiteRT, without TensorFlow."""

import flatbuffers
import numpy as np

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("quant.tflite needs the TFLite schema from the 'ai-edge-litert' package "
                      "(pip install ai-edge-litert)") from exc

from .layer import ConvLayer

__all__ = ["schema", "FILE_IDENTIFIER", "SCHEMA_VERSION", "INT8_OP_VERSIONS", "TFLiteBuilder", "activation_type",
           "padding_type", "conv2d_options", "conv_layer_to_tflite", "read_model", "buffer_array"]

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

# Constant buffers are aligned like the TFLite converter aligns them, so a kernel may read int32/float data
# in place from the mapped model.
_BUFFER_ALIGNMENT = 16

_TENSOR_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int16): schema.TensorType.INT16,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.bool_): schema.TensorType.BOOL,
}
_NUMPY_TYPES = {v: k for k, v in _TENSOR_TYPES.items()}

_ACTIVATIONS = {
    "NONE": schema.ActivationFunctionType.NONE,
    "RELU": schema.ActivationFunctionType.RELU,
    "RELU_N1_TO_1": schema.ActivationFunctionType.RELU_N1_TO_1,
    "RELU6": schema.ActivationFunctionType.RELU6,
}

_PADDINGS = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}

# The operator versions the TFLite converter writes for full-integer int8 models (per-channel weights where the
# op has them). LiteRT itself runs an int8 CONV_2D marked version 1, but the version is how other runtimes
# (TFLite Micro, delegates, vendor compilers) learn which features an op needs, so write what the converter does.
INT8_OP_VERSIONS = {
    schema.BuiltinOperator.CONV_2D: 3,
    schema.BuiltinOperator.DEPTHWISE_CONV_2D: 3,
    schema.BuiltinOperator.FULLY_CONNECTED: 4,
    schema.BuiltinOperator.ADD: 2,
    schema.BuiltinOperator.AVERAGE_POOL_2D: 2,
    schema.BuiltinOperator.MAX_POOL_2D: 2,
    schema.BuiltinOperator.RESHAPE: 1,
    schema.BuiltinOperator.PAD: 2,
    schema.BuiltinOperator.CONCATENATION: 2,
    schema.BuiltinOperator.SOFTMAX: 2,
    schema.BuiltinOperator.QUANTIZE: 2,
    schema.BuiltinOperator.DEQUANTIZE: 2,
    schema.BuiltinOperator.LOGISTIC: 2,
    schema.BuiltinOperator.RELU: 2,
    schema.BuiltinOperator.RELU6: 2,
    schema.BuiltinOperator.PADV2: 2,
    schema.BuiltinOperator.TANH: 2,
    schema.BuiltinOperator.GELU: 2,
    schema.BuiltinOperator.ABS: 2,
    schema.BuiltinOperator.HARD_SWISH: 1,
    schema.BuiltinOperator.LEAKY_RELU: 1,
    schema.BuiltinOperator.ELU: 1,             # LiteRT registers ELU version 1 only (and not in BUILTIN_REF)
    schema.BuiltinOperator.NEG: 1,
    schema.BuiltinOperator.PRELU: 1,
    schema.BuiltinOperator.RELU_N1_TO_1: 1,
    schema.BuiltinOperator.RELU_0_TO_1: 1,
    schema.BuiltinOperator.MUL: 2,
    schema.BuiltinOperator.SUB: 2,
    schema.BuiltinOperator.MEAN: 2,
    schema.BuiltinOperator.RESIZE_BILINEAR: 3,          # int8 is 2, half_pixel_centers 3
    schema.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR: 3,
    schema.BuiltinOperator.STRIDED_SLICE: 2,
    schema.BuiltinOperator.SPACE_TO_DEPTH: 2,
    schema.BuiltinOperator.TRANSPOSE_CONV: 3,           # int8 per channel, with a bias input
}


def _tensor_type(dtype):
    try:
        return _TENSOR_TYPES[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"no TFLite tensor type for numpy dtype {np.dtype(dtype)}") from None


def activation_type(activation):
    """TFLite ActivationFunctionType for a fused activation name ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")."""
    try:
        return _ACTIVATIONS[activation.upper()]
    except KeyError:
        raise ValueError(f"unsupported fused activation {activation!r}") from None


def padding_type(padding):
    """TFLite Padding for "SAME" or "VALID"."""
    try:
        return _PADDINGS[padding.upper()]
    except KeyError:
        raise ValueError(f"unsupported padding {padding!r}; TFLite has SAME and VALID") from None


def conv2d_options(stride=(1, 1), padding="SAME", activation="NONE", dilation=(1, 1)):
    """Conv2DOptionsT from (stride_h, stride_w), padding name, activation name and (dilation_h, dilation_w)."""
    return schema.Conv2DOptionsT(padding=padding_type(padding), strideH=int(stride[0]), strideW=int(stride[1]),
                                 fusedActivationFunction=activation_type(activation),
                                 dilationHFactor=int(dilation[0]), dilationWFactor=int(dilation[1]))


class _AlignedBufferT(schema.BufferT):
    """BufferT whose data vector starts on a _BUFFER_ALIGNMENT boundary (the generated Pack aligns to 1 byte)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = np.ascontiguousarray(self.data).tobytes()
            builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


class TFLiteBuilder:
    """Accumulates the tensors, constant buffers and operators of one subgraph and serializes the model.

    Indices returned by `add_tensor` and `add_operator` are the flatbuffer's own, so a caller can wire operators
    directly. Buffer 0 is the empty sentinel the format reserves for tensors without constant data.
    """

    def __init__(self, description="stackcam", subgraph_name="main"):
        self.description = description
        self.subgraph_name = subgraph_name
        self.tensors = []
        self.buffers = [schema.BufferT()]
        self.operators = []
        self.operator_codes = []
        self._opcode_index = {}
        self.inputs = []
        self.outputs = []

    def add_buffer(self, data):
        """Append a constant buffer holding `data` (a numpy array, stored little-endian) and return its index."""
        data = np.asarray(data)
        buf = _AlignedBufferT()
        buf.data = data.astype(data.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8)
        self.buffers.append(buf)
        return len(self.buffers) - 1

    def add_tensor(self, name, shape, dtype, data=None, scale=None, zero_point=None, quantized_dimension=0):
        """Append a tensor and return its index.

        `data` makes it a constant (its shape must match). `scale`/`zero_point` (scalars for per-tensor,
        sequences for per-axis along `quantized_dimension`) attach affine quantization; TFLite stores scales as
        float32 and zero points as int64, and the runtime recomputes every multiplier from those float32 scales.
        """
        shape = [int(d) for d in shape]
        buffer = 0
        if data is not None:
            data = np.asarray(data, dtype=dtype)
            if list(data.shape) != shape:
                raise ValueError(f"tensor {name!r}: data shape {data.shape} does not match {tuple(shape)}")
            buffer = self.add_buffer(data)
        quantization = None
        if scale is not None:
            scales = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zps = np.zeros(scales.shape, np.int64) if zero_point is None else \
                np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
            if zps.shape != scales.shape:
                raise ValueError(f"tensor {name!r}: {zps.size} zero points for {scales.size} scales")
            if scales.size > 1 and scales.size != shape[quantized_dimension]:
                raise ValueError(f"tensor {name!r}: {scales.size} scales for dimension {quantized_dimension} "
                                 f"of size {shape[quantized_dimension]}")
            quantization = schema.QuantizationParametersT(scale=scales, zeroPoint=zps,
                                                          quantizedDimension=int(quantized_dimension))
        self.tensors.append(schema.TensorT(shape=shape, type=_tensor_type(dtype), buffer=buffer, name=name,
                                           quantization=quantization))
        return len(self.tensors) - 1

    def opcode(self, builtin, version=None):
        """Index of the operator code for a BuiltinOperator value, added on first use."""
        if version is None:
            version = INT8_OP_VERSIONS.get(builtin, 1)
        key = (builtin, version)
        if key not in self._opcode_index:
            # Codes below 127 also go in the deprecated int8 field, which older readers take as the only one.
            self.operator_codes.append(schema.OperatorCodeT(
                deprecatedBuiltinCode=min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES),
                builtinCode=builtin, version=version))
            self._opcode_index[key] = len(self.operator_codes) - 1
        return self._opcode_index[key]

    def add_operator(self, builtin, inputs, outputs, options=None, version=None):
        """Append a builtin operator; `options` is the matching *OptionsT object (e.g. Conv2DOptionsT) or None.

        An input index of -1 marks an omitted optional input, as in the format.
        """
        op = schema.OperatorT(opcodeIndex=self.opcode(builtin, version), inputs=[int(i) for i in inputs],
                              outputs=[int(i) for i in outputs])
        if options is not None:
            # The union tag is named after the options table: Conv2DOptionsT -> BuiltinOptions.Conv2DOptions.
            op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__.removesuffix("T"))
            op.builtinOptions = options
        self.operators.append(op)
        return len(self.operators) - 1

    def add_input(self, name, shape, dtype, scale=None, zero_point=None):
        """Append a graph input tensor and return its index."""
        index = self.add_tensor(name, shape, dtype, scale=scale, zero_point=zero_point)
        self.inputs.append(index)
        return index

    def mark_output(self, tensor):
        """Make an existing tensor a graph output."""
        self.outputs.append(int(tensor))

    def model(self):
        """The model as a schema ModelT (object API)."""
        subgraph = schema.SubGraphT(tensors=self.tensors, inputs=list(self.inputs), outputs=list(self.outputs),
                                    operators=self.operators, name=self.subgraph_name)
        return schema.ModelT(version=SCHEMA_VERSION, operatorCodes=self.operator_codes, subgraphs=[subgraph],
                             description=self.description, buffers=self.buffers)

    def build(self):
        """Serialize to .tflite bytes (file identifier "TFL3")."""
        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model().Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


def conv_layer_to_tflite(layer: ConvLayer, input_hw) -> bytes:
    """A .tflite model with one int8 CONV_2D computing `layer` on a [1, H, W, Cin] int8 input.

    Filter OHWI per-channel (quantized dimension 0, zero points 0, scales layer.weight_scales), bias int32 at
    input_scale * weight_scale, output int8 with the layer's output quantization and fused activation.
    """
    if layer.weight_scales is None:
        raise ValueError("conv_layer_to_tflite: the layer has no weight_scales; build it with quantize_conv")
    h, w = (int(v) for v in input_hw)
    out_h, out_w, cout = layer.output_shape(h, w)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"conv_layer_to_tflite: input {h}x{w} is smaller than the {layer.kernel} kernel")
    w_scales = np.asarray(layer.weight_scales, np.float32)
    # Bias scale as the converter writes it: the float32 product of the float32 input and weight scales.
    bias_scales = np.float32(layer.input_scale) * w_scales

    b = TFLiteBuilder(description="stackcam conv_layer_to_tflite")
    x = b.add_input("input", (1, h, w, layer.in_channels), np.int8,
                    scale=layer.input_scale, zero_point=layer.input_zero_point)
    f = b.add_tensor("filter", layer.weights.shape, np.int8, data=layer.weights,
                     scale=w_scales, zero_point=np.zeros(cout, np.int64), quantized_dimension=0)
    bias = b.add_tensor("bias", (cout,), np.int32, data=layer.bias, scale=bias_scales,
                        zero_point=np.zeros(cout, np.int64), quantized_dimension=0)
    y = b.add_tensor("output", (1, out_h, out_w, cout), np.int8,
                     scale=layer.output_scale, zero_point=layer.output_zero_point)
    b.add_operator(schema.BuiltinOperator.CONV_2D, [x, f, bias], [y],
                   conv2d_options(layer.stride, layer.padding, layer.activation))
    b.mark_output(y)
    return b.build()


def read_model(data) -> "schema.ModelT":
    """Parse .tflite bytes into the schema's object API (ModelT); refuses data without the "TFL3" identifier."""
    data = bytes(data)
    if not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ValueError("not a TFLite flatbuffer: file identifier is not 'TFL3'")
    return schema.ModelT.InitFromPackedBuf(data, 0)


def buffer_array(model, tensor, subgraph=0):
    """The constant data of tensor index `tensor` as a numpy array of its type and shape (None if not constant)."""
    t = model.subgraphs[subgraph].tensors[tensor]
    raw = model.buffers[t.buffer].data
    if raw is None or len(raw) == 0:
        return None
    dtype = _NUMPY_TYPES[t.type].newbyteorder("<")
    return np.frombuffer(np.asarray(raw, np.uint8).tobytes(), dtype=dtype).reshape([int(d) for d in t.shape])
