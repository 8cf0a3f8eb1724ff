"""quant.importer: .tflite (int8, float32, float16 weights) and ONNX into the Graph IR; one-line errors."""

import numpy as np
import pytest

from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.graph import ModelError
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.tflite import TFLiteBuilder, conv2d_options, schema
from tests.test_quant_ops import ModelBuilder, mobilenet_like

OPS = schema.BuiltinOperator


def graphs_equal(a, b):
    assert a.inputs == b.inputs and a.outputs == b.outputs
    assert [(op.kind, op.inputs, op.outputs, op.opts) for op in a.ops] == \
        [(op.kind, op.inputs, op.outputs, op.opts) for op in b.ops]
    for name, t in a.tensors.items():
        u = b.tensors[name]
        assert (t.shape, t.dtype) == (u.shape, u.dtype), name
        assert (t.data is None) == (u.data is None), name
        if t.data is not None:
            np.testing.assert_array_equal(t.data, u.data)
        assert (t.quant is None) == (u.quant is None), name
        if t.quant is not None:
            np.testing.assert_array_equal(t.quant.scale, u.quant.scale)
            np.testing.assert_array_equal(t.quant.zero_point, u.quant.zero_point)
            assert t.quant.axis == u.quant.axis


def test_int8_import_export_import_roundtrip():
    m = mobilenet_like(seed=2)
    model = m.output(len(m.b.tensors) - 1)
    g1 = load_model(model)
    g2 = load_model(export_tflite(g1))
    graphs_equal(g1, g2)
    assert g1.is_quantized()
    assert [op.kind for op in g1.ops][:3] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    x = [np.random.default_rng(0).integers(-128, 128, (1, 17, 17, 3)).astype(np.int8)]
    np.testing.assert_array_equal(run_reference(export_tflite(g2), x)[0], run_reference(model, x)[0])


def test_load_from_path(tmp_path):
    m = mobilenet_like(seed=3)
    path = tmp_path / "net.tflite"
    path.write_bytes(m.output(len(m.b.tensors) - 1))
    g = load_model(path)
    assert g.name == "net" and len(g.inputs) == 1


def float16_model():
    """A float model whose conv weights are float16 behind DEQUANTIZE, like mediapipe's BlazeFace."""
    rng = np.random.default_rng(5)
    b = TFLiteBuilder()
    x = b.add_input("image", (1, 8, 8, 3), np.float32)
    w16 = b.add_tensor("w16", (4, 3, 3, 3), np.float16, data=rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float16))
    b16 = b.add_tensor("b16", (4,), np.float16, data=rng.normal(0, 0.1, 4).astype(np.float16))
    w = b.add_tensor("w", (4, 3, 3, 3), np.float32)
    bias = b.add_tensor("b", (4,), np.float32)
    b.add_operator(OPS.DEQUANTIZE, [w16], [w], version=3)
    b.add_operator(OPS.DEQUANTIZE, [b16], [bias], version=3)
    y = b.add_tensor("conv", (1, 4, 4, 4), np.float32)
    b.add_operator(OPS.CONV_2D, [x, w, bias], [y], conv2d_options((2, 2), "SAME", "RELU"), version=1)
    z = b.add_tensor("pool", (1, 2, 2, 4), np.float32)
    b.add_operator(OPS.MAX_POOL_2D, [y], [z], schema.Pool2DOptionsT(padding=schema.Padding.VALID, strideH=2,
                   strideW=2, filterHeight=2, filterWidth=2), version=1)
    b.mark_output(z)
    return b.build()


def test_float16_weights_fold_into_float32_constants():
    model = float16_model()
    g = load_model(model)
    assert [op.kind for op in g.ops] == ["CONV_2D", "MAX_POOL_2D"]
    assert g.tensor("w").dtype == "float32" and g.tensor("w").data.dtype == np.float32
    assert not g.is_quantized()
    x = np.random.default_rng(1).normal(0, 1, (1, 8, 8, 3)).astype(np.float32)
    want = run_reference(model, [x])[0]
    got = run_graph(g, [x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    again = run_reference(export_tflite(g), [x])[0]               # the folded float model runs in LiteRT too
    np.testing.assert_allclose(again, want, rtol=1e-5, atol=1e-5)


def test_float_graph_execution_matches_litert():
    m = ModelBuilder(seed=6, dtype=np.float32)
    x = m.input((1, 9, 9, 3))
    y = m.conv(x, 6, k=3, stride=2, act="RELU6")
    y = m.conv(y, 0, k=5, depthwise=True, act="RELU")
    p = m.pad(y, [(0, 0), (1, 0), (0, 1), (0, 0)])
    a = m.pool(p, "AVERAGE_POOL_2D", (2, 2), 1, "VALID")
    c = m.concat([a, a], axis=3)
    s = m.unary(m.reshape(c, (1, 5 * 5 * 12)), "SOFTMAX", (None, None), schema.SoftmaxOptionsT(beta=1.0))
    model = m.output(s)
    g = load_model(model)
    inputs = m.random_inputs()
    np.testing.assert_allclose(run_graph(g, inputs)[0], run_reference(model, inputs)[0], rtol=1e-5, atol=1e-6)


# --- errors -------------------------------------------------------------------------------------------------------

def model_with_sin():
    m = ModelBuilder(seed=7)
    x = m.input((1, 4, 4, 3))
    y = m.conv(x, 4, k=1)
    h = m.act((1, 4, 4, 4), 0.05, 2, base="xyz")
    m.b.add_operator(OPS.SIN, [y], [h])
    return m.output(h)


def one_line(e):
    text = str(e.value)
    assert "\n" not in text
    return text


def test_unsupported_operator_names_operator_and_layer():
    with pytest.raises(ModelError) as e:
        load_model(model_with_sin())
    assert one_line(e) == "unsupported operator 'SIN' in layer 'xyz_5' (op 1)"


def test_truncated_tflite(tmp_path):
    m = mobilenet_like(seed=8)
    data = m.output(len(m.b.tensors) - 1)
    for cut in (len(data) // 2, 7 * len(data) // 8, len(data) - 100, 16):
        path = tmp_path / "cut.tflite"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelError) as e:
            load_model(path)
        assert "cut.tflite" in one_line(e) and "truncated" in one_line(e)


@pytest.mark.parametrize("content", [b"hello, this is a text file\n", b"", b"\x00" * 64, b"TFL3"])
def test_not_a_model(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(ModelError) as e:
        load_model(path)
    assert "notes.txt" in one_line(e)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError) as e:
        load_model(tmp_path / "nope.tflite")
    assert "nope.tflite" in one_line(e)


def _relu_model(signature):
    b = TFLiteBuilder()
    x = b.add_input("images", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    b.tensors[x].shapeSignature = signature
    y = b.add_tensor("out", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    b.tensors[y].shapeSignature = signature
    b.add_operator(OPS.RELU, [x], [y])
    b.mark_output(y)
    return b.build()


def test_dynamic_batch_is_taken_as_one():
    """A dynamic batch (shape_signature [-1, H, W, C], what Keras/TF exports write) runs at batch 1, with the
    same outputs as LiteRT on the file, and the import says so once."""
    from stackcam.quant.executor import run_graph
    from stackcam.quant.litert import run_reference
    data = _relu_model([-1, 4, 4, 3])
    g = load_model(data)
    assert g.tensor("images").shape == (1, 4, 4, 3) and g.tensor("out").shape == (1, 4, 4, 3)
    assert g.notes == ["dynamic batch dimension taken as 1 (2 tensors, e.g. 'images' [-1, 4, 4, 3] -> "
                       "[1, 4, 4, 3])"]
    x = np.random.default_rng(3).integers(-128, 128, (1, 4, 4, 3)).astype(np.int8)
    (got,), (want,) = run_graph(g, [x]), run_reference(data, [x])
    assert np.array_equal(np.asarray(got).reshape(want.shape), want)


def test_dynamic_shape_names_the_tensor():
    with pytest.raises(ModelError) as e:
        load_model(_relu_model([1, -1, 4, 3]))
    assert "tensor 'images' has a dynamic shape [1, -1, 4, 3]" in one_line(e)


def test_every_unsupported_operator_is_listed_at_once():
    b = TFLiteBuilder()
    x = b.add_input("x", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    h = b.add_tensor("swish", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    r = b.add_tensor("relu", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    t = b.add_tensor("tanh", (1, 4, 4, 3), np.int8, scale=1 / 128, zero_point=0)
    b.add_operator(OPS.SIN, [x], [h])
    b.add_operator(OPS.RELU, [h], [r])
    b.add_operator(OPS.COS, [r], [t])
    b.mark_output(t)
    with pytest.raises(ModelError) as e:
        load_model(b.build())
    assert one_line(e) == ("2 unsupported operators: 'SIN' in layer 'swish' (op 0); 'COS' in layer "
                           "'tanh' (op 2)")


# --- ONNX ---------------------------------------------------------------------------------------------------------

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def onnx_model(nodes, inits, in_shape, outputs, opset=13):
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array(v if v.dtype != np.float64 else v.astype(np.float32), k)
             for k, v in ((k, v(rng) if callable(v) else v) for k, v in inits.items())]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def compare_onnx(data, in_shape, nhwc_outputs):
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(0, 1, in_shape).astype(np.float32)
    want = sess.run(None, {"x": x})
    g = load_model(data, name="t.onnx")
    got = run_graph(g, [x.transpose(0, 2, 3, 1)])
    for gt, w, nhwc in zip(got, want, nhwc_outputs):
        gt = gt.transpose(0, 3, 1, 2) if nhwc else gt
        np.testing.assert_allclose(gt, w, rtol=1e-4, atol=1e-5)
    return g


def w(*shape, s=0.3):
    return lambda rng: rng.normal(0, s, shape).astype(np.float32)


def test_onnx_small_cnn_matches_onnxruntime():
    nodes = [
        # Asymmetric explicit pads, stride 2, odd input: kept as explicit pads.
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw", "db"], ["c2"], kernel_shape=[5, 5], group=8, pads=[2, 2, 2, 2]),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"]),
        helper.make_node("Pad", ["r2", "pads"], ["p2"], mode="constant"),
        helper.make_node("MaxPool", ["p2"], ["m2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["m2", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c3", "m2"], ["a3"]),
        helper.make_node("AveragePool", ["a3"], ["ap"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["ap", "a3"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=-1),
        helper.make_node("Sigmoid", ["cat"], ["sig"]),
    ]
    inits = {"w1": w(8, 3, 3, 3), "b1": w(8, s=0.1), "dw": w(8, 1, 5, 5), "db": w(8, s=0.1),
             "zero": np.array(0, np.float32), "six": np.array(6, np.float32),
             "pads": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64), "w3": w(8, 8, 1, 1), "b3": w(8, s=0.1),
             "fw": w(5, 16), "fb": w(5, s=0.1)}
    g = compare_onnx(onnx_model(nodes, inits, [1, 3, 11, 13], ["prob", "sig"]), (1, 3, 11, 13), [False, True])
    conv1 = g.ops[0]
    assert conv1.kind == "CONV_2D" and conv1.opts["pads"] == (0, 1, 1, 0)
    assert g.ops[2].kind == "DEPTHWISE_CONV_2D"


def test_onnx_flatten_of_spatial_tensor_into_matmul():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Flatten", ["c1"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fw"], ["mm"]),
        helper.make_node("Add", ["mm", "fb"], ["logits"]),
    ]
    inits = {"w1": w(4, 2, 3, 3), "b1": w(4), "fw": w(4 * 4 * 3, 6), "fb": w(6)}
    g = compare_onnx(onnx_model(nodes, inits, [1, 2, 7, 6], ["logits"]), (1, 2, 7, 6), [False])
    assert [op.kind for op in g.ops] == ["CONV_2D", "RESHAPE", "FULLY_CONNECTED"]


def test_onnx_errors():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[1, 1], name="stem"),
             helper.make_node("Sin", ["c1"], ["y"], name="act7")]
    data = onnx_model(nodes, {"w1": w(4, 3, 1, 1)}, [1, 3, 4, 4], ["y"], opset=14)
    with pytest.raises(ModelError) as e:
        load_model(data, name="m.onnx")
    assert one_line(e) == "unsupported operator 'Sin' in layer 'act7' (op 1)"

    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    data = onnx_model(nodes, {}, ["batch", 3, "h", 4], ["y"])
    with pytest.raises(ModelError) as e:
        load_model(data, name="m.onnx")
    assert "tensor 'x' has a dynamic shape ['batch', 3, 'h', 4]" in one_line(e)
    g = load_model(onnx_model(nodes, {}, ["batch", 3, 4, 4], ["y"]), name="m.onnx")
    assert g.tensor(g.inputs[0]).shape == (1, 4, 4, 3) and "dynamic batch dimension taken as 1" in g.notes[0]

    with pytest.raises(ModelError) as e:
        load_model(data[: len(data) // 2], name="m.onnx")
    assert "m.onnx" in one_line(e)
