"""Run a .tflite model on LiteRT's reference kernels (BUILTIN_REF): the trusted bit-exact reference."""

import numpy as np

__all__ = ["run_reference", "reference_interpreter"]


def _interpreter_api():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise ImportError("the bit-exact reference needs LiteRT: pip install ai-edge-litert "
                          "(TensorFlow is not required)") from exc
    return Interpreter, OpResolverType


def reference_interpreter(model_bytes):
    """A LiteRT Interpreter on BUILTIN_REF kernels with tensors allocated.

    Not AUTO/BUILTIN: those use optimized kernels and the XNNPACK delegate, which round differently.
    """
    Interpreter, OpResolverType = _interpreter_api()
    interpreter = Interpreter(model_content=bytes(model_bytes),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter


def run_reference(model_bytes, inputs):
    """Run the model once on BUILTIN_REF kernels; returns its outputs (copies) in graph output order.

    `inputs` are numpy arrays in graph input order; each must already have the input's dtype and shape
    (no silent casting, since a wrong dtype here would hide a quantization bug).
    """
    interpreter = reference_interpreter(model_bytes)
    details = interpreter.get_input_details()
    if len(inputs) != len(details):
        raise ValueError(f"run_reference: model has {len(details)} inputs, got {len(inputs)}")
    for d, x in zip(details, inputs):
        x = np.asarray(x)
        if x.dtype != d["dtype"] or tuple(x.shape) != tuple(d["shape"]):
            raise ValueError(f"run_reference: input {d['name']!r} wants {np.dtype(d['dtype'])}{tuple(d['shape'])}, "
                             f"got {x.dtype}{tuple(x.shape)}")
        interpreter.set_tensor(d["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]
