"""Hostile inputs beyond tests/test_cmd_run.py's: an .npy that really holds what its huge header declares (a sparse
file), ONNX nodes of the wrong arity and ONNX weights their data does not fill, whatever field carries the data.
Each is one line (a StackcamError, exit 2), before any large allocation."""

import resource
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

from stackcam.quant.graph import ModelError
from stackcam.quant.importer import load_model


def _limited(gb):
    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (gb << 30, gb << 30))
    return limit


def test_sparse_npy_of_30_gb_is_refused_without_reading_it(tmp_path):
    """The header declares int8[100000, 100000, 3] and the (sparse) file holds all 30 GB of it, so the size check
    passes: the array is mapped, not read, and refused by its shape, under a 4 GB data-size limit (reading
    it was a MemoryError, exit 1, or the machine's memory)."""
    path = tmp_path / "sparse.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|i1", "fortran_order": False,
                                                 "shape": (100000, 100000, 3)})
        f.truncate(f.tell() + 30_000_000_000)
    out = tmp_path / "out.npz"
    r = subprocess.run([sys.executable, "-m", "stackcam.cli", "run", "first-light", "--config", "tiny", "--input",
                        str(path), "-o", str(out)], capture_output=True, text=True, preexec_fn=_limited(4),
                       timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "input has shape [100000, 100000, 3], the model takes int8 [1, 16, 16, 3]" in lines[0]
    assert not out.exists()


def _onnx(nodes, weights=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], list(weights))
    return helper.make_model(graph).SerializeToString()


def _conv_weight(**data):
    return TensorProto(name="w", dims=[4, 3, 1, 1], **{"data_type": TensorProto.FLOAT, **data})


CONV = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])
ONNX_CASES = {
    "Conv with one input": _onnx([helper.make_node("Conv", ["x"], ["y"], kernel_shape=[1, 1])]),
    "Add with one input": _onnx([helper.make_node("Add", ["x"], ["y"])]),
    "Add with three inputs": _onnx([helper.make_node("Add", ["x", "x", "x"], ["y"])]),
    "Relu with no input": _onnx([helper.make_node("Relu", [], ["y"])]),
    "Conv with no output": _onnx([helper.make_node("Conv", ["x", "w"], [], kernel_shape=[1, 1])],
                                 [_conv_weight(raw_data=bytes(48))]),
    "raw_data short": _onnx([CONV], [_conv_weight(raw_data=bytes(20))]),
    "raw_data long": _onnx([CONV], [_conv_weight(raw_data=bytes(52))]),
    "float_data short": _onnx([CONV], [_conv_weight(float_data=[1.0] * 5)]),
    "int32_data short": _onnx([CONV], [_conv_weight(data_type=TensorProto.INT8, int32_data=[1] * 5)]),
    "no data": _onnx([CONV], [_conv_weight()]),
    "declared 30 GB": _onnx([CONV], [TensorProto(name="w", data_type=TensorProto.FLOAT,
                                                 dims=[100000, 100000, 3, 1], raw_data=bytes(20))]),
    "unknown data type": _onnx([CONV], [_conv_weight(data_type=99, raw_data=bytes(48))]),
    # Found by the reliability campaign: a ZeroDivisionError and an onnx ValidationError escaped the importer.
    "Conv with stride 0": _onnx([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1], strides=[0, 0])],
                                [_conv_weight(raw_data=bytes(48))]),
    "external data with no location": _onnx([CONV], [_conv_weight(data_location=TensorProto.EXTERNAL)]),
}


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_onnx_arity_and_short_weights_are_one_line(case):
    with pytest.raises(ModelError) as e:
        load_model(ONNX_CASES[case], name="m.onnx")
    assert "\n" not in str(e.value) and str(e.value).startswith("m.onnx")


@pytest.mark.parametrize("scale,zp,expect", [
    (-1 / 64, 0, "has the quantization scale -0.015625"),
    (float("nan"), 0, "has the quantization scale nan"),
    (float("inf"), 0, "has the quantization scale inf"),
    (1 / 64, 300, "of int8 has the zero point 300"),
    (0.0, 0, "has the quantization scale 0 "),
    (1e-40, 0, r"has the subnormal quantization scale [0-9.]+e-41 \(its calibration range was empty"),
])
def test_tflite_damaged_quantization_is_one_line(scale, zp, expect):
    """Found by the reliability campaign (tools/reliability.py): a mutated scale (NaN, negative) reached
    quantize_multiplier's ValueError, an int8 zero point of 2^24 was compiled into the ROM image."""
    from stackcam.quant.tflite import schema
    from tests.test_quant_ops import ModelBuilder

    b = ModelBuilder(seed=9)
    x = b.input((1, 4, 4, 3), scale=scale, zp=zp)
    y = b.act((1, 4, 4, 3), 0.1, 0)
    b.b.add_operator(schema.BuiltinOperator.ADD, [x, x], [y], schema.AddOptionsT())
    with pytest.raises(ModelError, match=expect) as e:
        load_model(b.output(y), name="q.tflite")
    assert "\n" not in str(e.value) and str(e.value).startswith("q.tflite: tensor 'input_1'")


def test_tflite_zero_stride_and_no_outputs_are_one_line():
    """Found by the reliability campaign: a pool or conv with stride 0 divided by zero in window_padding; a
    subgraph whose output list was lost compiled to a program with nothing to send."""
    from stackcam.quant.tflite import schema
    from tests.test_quant_ops import ModelBuilder

    ops = schema.BuiltinOperator
    b = ModelBuilder(seed=9)
    x = b.input((1, 4, 4, 3))
    y = b.act((1, 2, 2, 3), 0.1, 0)
    pool = schema.Pool2DOptionsT()
    pool.filterHeight, pool.filterWidth, pool.strideH, pool.strideW = 2, 2, 0, 2
    b.b.add_operator(ops.MAX_POOL_2D, [x], [y], pool)
    with pytest.raises(ModelError, match=r"has stride \(0, 2\) \(a corrupt model\?\)"):
        load_model(b.output(y), name="s.tflite")
    b = ModelBuilder(seed=9)
    x = b.input((1, 4, 4, 3))
    y = b.conv(x, 4, k=1, stride=1)
    data = b.output()               # no output marked
    with pytest.raises(ModelError, match="s.tflite: the model has no outputs"):
        load_model(data, name="s.tflite")
    b = ModelBuilder(seed=9)
    x = b.input((1, 4, 4, 3))
    y = b.conv(x, 4, k=1, stride=1)
    b.b.operators[-1].builtinOptions.strideH = 0
    with pytest.raises(ModelError, match=r"has stride \(0, 1\)"):
        load_model(b.output(y), name="s.tflite")
