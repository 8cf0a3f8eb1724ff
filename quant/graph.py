"""The toolchain's graph IR: tensors with TFLite-style quantization, operators named as TFLite builtins."""

from dataclasses import dataclass, field

import numpy as np

from stackcam.errors import StackcamError

__all__ = ["QuantParams", "Tensor", "Op", "Graph", "ModelError", "SUPPORTED_OPS", "ACTIVATIONS", "unsupported_message"]

# Operators the toolchain imports. Everything else is refused by name (with the layer that uses it).
SUPPORTED_OPS = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD",
    "RESHAPE", "CONCATENATION", "QUANTIZE", "DEQUANTIZE", "SOFTMAX", "LOGISTIC", "RELU", "RELU6",
    # int8 -> int8 elementwise functions (quant.elementwise; the die's LUT)
    "RELU_N1_TO_1", "RELU_0_TO_1", "TANH", "ELU", "GELU", "HARD_SWISH", "LEAKY_RELU", "PRELU", "ABS", "NEG",
    # arithmetic with a second operand (quant.ref; the die's MUL, ADD with negation, MEAN, PRELU units)
    "MUL", "SUB", "MEAN",
    # resampling (quant.ref.resize_*; the die's RESIZE)
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    # data movement (the die's GATHER)
    "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "STRIDED_SLICE", "SLICE",
    # TRANSPOSE_CONV and MediaPipe's Convolution2DTransposeBias (imported as TRANSPOSE_CONV with a bias)
    "TRANSPOSE_CONV",
)
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


class ModelError(StackcamError, ValueError):
    """A model the toolchain cannot take; the message is one line naming the operator/layer/tensor at fault."""


@dataclass(eq=False)
class QuantParams:
    """Affine quantization real = scale * (q - zero_point); per tensor (size 1) or per channel along `axis`."""

    scale: np.ndarray            # float32 [1] or [channels]
    zero_point: np.ndarray       # int64 [1] or [channels]
    axis: int = 0

    @property
    def per_channel(self):
        return self.scale.size > 1

    @classmethod
    def per_tensor(cls, scale, zero_point):
        return cls(np.array([scale], np.float32), np.array([zero_point], np.int64))

    def scalar(self):
        """(scale, zero_point) of a per-tensor quantization, as Python float/int."""
        if self.per_channel:
            raise ModelError("expected per-tensor quantization, got per-channel")
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass(eq=False)
class Tensor:
    """A tensor: activations have `data is None`; constants (weights, bias, shapes) carry their values."""

    name: str
    shape: tuple                 # NHWC for 4-D activations; OHWI for conv filters; 1HWO for depthwise filters
    dtype: str                   # "int8", "uint8", "int16", "int32", "int64", "float32"
    data: np.ndarray | None = None
    quant: QuantParams | None = None

    @property
    def is_const(self):
        return self.data is not None

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(eq=False)
class Op:
    """One operator. `opts` keys by operator (all optional keys have TFLite's defaults):

    CONV_2D / DEPTHWISE_CONV_2D: stride (h, w), padding "SAME"|"VALID", dilation (h, w), activation,
      depth_multiplier (depthwise); after lowering, "pads" (top, bottom, left, right) may replace padding.
    FULLY_CONNECTED: activation, keep_num_dims.  ADD: activation.  CONCATENATION: axis, activation.
    AVERAGE_POOL_2D / MAX_POOL_2D: filter (h, w), stride (h, w), padding, activation; MAX_POOL_2D may get
      "pads" from lowering too.
    LEAKY_RELU: alpha.  GELU: approximate.  PRELU: (alpha is the second input; one value for an elementwise op).
    MUL / SUB: activation (the second input broadcasts like numpy).  MEAN: keep_dims (the axes are the second
      input, a constant).
    RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR: align_corners, half_pixel_centers (the output size is the
      output tensor's H and W; the size input is dropped on import).
    DEPTH_TO_SPACE / SPACE_TO_DEPTH: block_size.  STRIDED_SLICE / SLICE: begin, end, strides (one per axis,
      normalized on import: absolute indices, positive strides, no masks; the constant inputs are dropped).
    TRANSPOSE_CONV: inputs (input, OHWI filter, bias or ""), stride (h, w), pads (top, left) on the output
      (out = in * stride - pad + filter tap; outside the output is dropped), padding (the SAME/VALID it came
      from), activation; the output size is the output tensor's.
    RESHAPE: new_shape.  PAD: (paddings come from the second input), "value" (the raw pad value in the
      tensor's dtype, from a PADV2; absent: the output zero point, 0.0 for float).  SOFTMAX: beta.
    Set by quant.lower: RESHAPE "alias" (the output is the input's bytes: no data moves); CONCATENATION
    "layout_only" (every input already has the output's quantization: each producer can write straight into
    its slice of the output buffer).
    """

    kind: str
    inputs: list                 # tensor names ("" for an absent optional input, e.g. no bias)
    outputs: list
    opts: dict = field(default_factory=dict)
    name: str = ""               # layer name for messages (defaults to the first output's name)

    def label(self):
        return f"{self.kind} '{self.name or (self.outputs[0] if self.outputs else '?')}'"


@dataclass(eq=False)
class Graph:
    """A model: tensors by name, operators in execution (topological) order, graph inputs and outputs."""

    tensors: dict
    ops: list
    inputs: list
    outputs: list
    name: str = "model"
    notes: list = field(default_factory=list)   # one line per rewrite quant.lower made, for reports

    def tensor(self, name):
        try:
            return self.tensors[name]
        except KeyError:
            raise ModelError(f"tensor '{name}' is not defined in the model") from None

    def producers(self):
        return {out: op for op in self.ops for out in op.outputs}

    def consumers(self):
        users = {}
        for op in self.ops:
            for name in op.inputs:
                if name:
                    users.setdefault(name, []).append(op)
        return users

    def is_quantized(self):
        """True when every activation between the edges is int8 (a full-integer model)."""
        return all(self.tensors[o].dtype == "int8" for op in self.ops if op.kind not in ("QUANTIZE", "DEQUANTIZE")
                   for o in op.outputs)


def unsupported_message(items):
    """One line naming every unsupported operator (`items`: "'KIND' in layer 'L' (op N)" each)."""
    if len(items) == 1:
        return f"unsupported operator {items[0]}"
    return f"{len(items)} unsupported operators: " + "; ".join(items)
