"""ONNX QDQ models (onnxruntime's quantize_static, QDQ format) keep their own quantization through the importer
(quant.onnx_qdq): the int8 weights are the model's integers, the activations its scales and zero points (uint8
ones shifted to int8), and what the toolchain makes of them is bit-exact three ways: LiteRT BUILTIN_REF on the
exported .tflite == the graph executor == the golden executor running the compiled ROM image."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from stackcam.quant import lower as lowering
from stackcam.quant.compiler import compile_graph
from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.golden import execute
from stackcam.quant.graph import ModelError
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import preset
from tests.test_quant_import import onnx_model, w

IN_SHAPE = [1, 3, 17, 15]


def float_cnn():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw", "db"], ["c2"], kernel_shape=[3, 3], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["m2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["m2", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c3", "m2"], ["a3"]),
        helper.make_node("GlobalAveragePool", ["a3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
        helper.make_node("Sigmoid", ["logits"], ["y"]),
    ]
    inits = {"w1": w(8, 3, 3, 3), "b1": w(8), "dw": w(8, 1, 3, 3), "db": w(8), "zero": np.array(0, np.float32),
             "six": np.array(6, np.float32), "w3": w(8, 8, 1, 1), "b3": w(8), "fw": w(5, 8), "fb": w(5)}
    return onnx_model(nodes, inits, IN_SHAPE, ["y", "a3"])


class _Reader(CalibrationDataReader):
    def __init__(self, n=8):
        rng = np.random.default_rng(0)
        self.items = iter([{"x": rng.normal(0, 1, IN_SHAPE).astype(np.float32)} for _ in range(n)])

    def get_next(self):
        return next(self.items, None)


def qdq(tmp_path, activation=QuantType.QInt8, weight=QuantType.QInt8, per_channel=True):
    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    src.write_bytes(float_cnn())
    quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, activation_type=activation,
                    weight_type=weight, per_channel=per_channel)
    return dst.read_bytes()


@pytest.mark.parametrize("activation,per_channel", [(QuantType.QInt8, True), (QuantType.QUInt8, False)],
                         ids=["int8-per-channel", "uint8-per-tensor"])
def test_qdq_keeps_the_model_quantization_and_is_bit_exact(tmp_path, activation, per_channel):
    data = qdq(tmp_path, activation, per_channel=per_channel)
    model = onnx.load_from_string(data)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    g = load_model(data, name="qdq.onnx")
    assert g.is_quantized()

    # The weights are the model's own integers (OHWI / 1HWO / [units, K] back to ONNX's layouts).
    int8_inits = [v for v in inits.values() if v.dtype == np.int8]
    convs = [op for op in g.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(convs) == 4
    for op in convs:
        wt = g.tensor(op.inputs[1]).data
        onnx_layout = {"CONV_2D": lambda a: a.transpose(0, 3, 1, 2),
                       "DEPTHWISE_CONV_2D": lambda a: a.transpose(3, 0, 1, 2),
                       "FULLY_CONNECTED": lambda a: a}[op.kind](wt)
        assert any(v.shape == onnx_layout.shape and np.array_equal(v, onnx_layout) for v in int8_inits), op.name
        bias = g.tensor(op.inputs[2]).data
        assert any(v.dtype == np.int32 and np.array_equal(v, bias) for v in inits.values()), op.name
    # The input's quantization is the QuantizeLinear's (uint8 zero points 128 lower).
    q_in = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    scale, zp = inits[q_in.input[1]], inits[q_in.input[2]]
    q = g.tensor(g.inputs[0]).quant
    assert q.scale[0] == np.float32(scale) and q.zero_point[0] == int(zp) - (128 if zp.dtype == np.uint8 else 0)

    core = lowering.int8_core(lowering.lower(g))
    tflite = export_tflite(core)
    config = preset("tiny")
    rom = build_rom(compile_graph(core, config))
    rng = np.random.default_rng(7)
    shape = core.tensor(core.inputs[0]).shape
    for _ in range(4):
        x = rng.integers(-128, 128, shape).astype(np.int8)
        ref = run_reference(tflite, [x])
        for got in (run_graph(core, [x]), execute(rom, config, x[0])):
            assert len(got) == len(ref) == 2
            for a, b in zip(ref, got):
                np.testing.assert_array_equal(np.asarray(b).reshape(a.shape), a)


def test_qdq_refusals(tmp_path):
    with pytest.raises(ModelError) as e:
        load_model(qdq(tmp_path, QuantType.QUInt8, QuantType.QUInt8), name="qdq.onnx")
    assert "non-zero zero point (asymmetric weights)" in str(e.value) and "\n" not in str(e.value)

    # A QDQ model with one activation left float (its QuantizeLinear/DequantizeLinear pair removed).
    model = onnx.load_from_string(qdq(tmp_path))
    nodes = list(model.graph.node)
    add = next(n for n in nodes if n.op_type == "Add")
    q = next(n for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] == add.output[0])
    dq = next(n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    add.output[0] = dq.output[0]
    model.graph.node.remove(q)
    model.graph.node.remove(dq)
    with pytest.raises(ModelError) as e:
        load_model(model.SerializeToString(), name="qdq.onnx")
    assert f"tensor '{dq.output[0]}' (ADD" in str(e.value) and "is not quantized" in str(e.value)
