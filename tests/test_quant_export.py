"""quant.export: what TFLite cannot say directly (explicit pads, requantizing concat) exported with ops it has,
so LiteRT runs the very same model; exported graphs import back equal."""

import numpy as np
import pytest

from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.graph import Graph, ModelError, Op, QuantParams, Tensor
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.lower import lower
from tests.test_quant_import import graphs_equal
from tests.test_quant_ops import ModelBuilder


def int8_tensor(name, shape, scale, zp, data=None):
    return Tensor(name, shape, "int8", data, QuantParams.per_tensor(scale, zp))


def test_explicit_pads_export_as_same_or_pad_plus_valid():
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    t = {"x": int8_tensor("x", (1, 9, 8, 3), 0.02, 3),
         "w": Tensor("w", w.shape, "int8", w, QuantParams(np.full(4, 0.01, np.float32), np.zeros(4, np.int64))),
         "b": Tensor("b", (4,), "int32", rng.integers(-500, 500, 4).astype(np.int32),
                     QuantParams(np.full(4, np.float32(0.02) * np.float32(0.01)), np.zeros(4, np.int64))),
         "same": int8_tensor("same", (1, 5, 4, 4), 0.05, -2),
         "odd": int8_tensor("odd", (1, 5, 4, 4), 0.05, -2)}
    ops = [Op("CONV_2D", ["x", "w", "b"], ["same"], dict(stride=(2, 2), pads=(1, 1, 0, 1)), name="same"),
           Op("CONV_2D", ["x", "w", "b"], ["odd"], dict(stride=(2, 2), pads=(2, 0, 1, 0)), name="odd")]
    g = Graph(t, ops, ["x"], ["same", "odd"])
    model = export_tflite(g)
    back = load_model(model)
    assert [op.kind for op in back.ops] == ["CONV_2D", "PAD", "CONV_2D"]
    assert back.ops[0].opts["padding"] == "SAME" and back.ops[2].opts["padding"] == "VALID"
    x = rng.integers(-128, 128, (1, 9, 8, 3)).astype(np.int8)
    for got, want in zip(run_graph(g, [x]), run_reference(model, [x])):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(run_graph(lower(back), [x]), run_graph(g, [x])):   # and lowering folds the PAD back
        np.testing.assert_array_equal(got, want)


def test_max_pool_explicit_pads_export_as_padv2_and_import_back():
    t = {"x": int8_tensor("x", (1, 7, 7, 2), 0.02, 3), "y": int8_tensor("y", (1, 4, 4, 2), 0.02, 3)}
    g = Graph(t, [Op("MAX_POOL_2D", ["x"], ["y"], dict(filter=(3, 3), stride=(2, 2), pads=(1, 2, 2, 1)))],
              ["x"], ["y"])
    model = export_tflite(g)
    back = load_model(model)
    assert [op.kind for op in back.ops] == ["PAD", "MAX_POOL_2D"] and back.ops[0].opts["value"] == -128
    x = np.random.default_rng(1).integers(-128, 128, (1, 7, 7, 2)).astype(np.int8)
    np.testing.assert_array_equal(run_graph(g, [x])[0], run_reference(model, [x])[0])
    np.testing.assert_array_equal(run_graph(back, [x])[0], run_graph(g, [x])[0])
    low = lower(back)
    assert [op.kind for op in low.ops] == ["MAX_POOL_2D"] and low.ops[0].opts["pads"] == (1, 2, 2, 1)


def test_average_pool_with_odd_explicit_pads_is_refused():
    t = {"x": int8_tensor("x", (1, 6, 6, 2), 0.02, 3), "y": int8_tensor("y", (1, 6, 6, 2), 0.02, 3)}
    g = Graph(t, [Op("AVERAGE_POOL_2D", ["x"], ["y"], dict(filter=(3, 3), stride=(1, 1), pads=(2, 0, 1, 1)),
                     name="ap")], ["x"], ["y"])
    with pytest.raises(ModelError, match="AVERAGE_POOL_2D 'ap': explicit padding"):
        export_tflite(g)


def test_requantizing_concat_exports_quantize_ops():
    m = ModelBuilder(seed=3)
    x = m.input((1, 4, 4, 3), scale=0.03, zp=5)
    a = m.conv(x, 2, k=1, out_q=(0.04, 1))
    b = m.conv(x, 3, k=1, out_q=(0.06, -3))
    c = m.concat([a, b], axis=3, out_q=(0.06, -3))
    g = load_model(m.output(c))
    back = load_model(export_tflite(g))
    assert [op.kind for op in back.ops] == ["CONV_2D", "CONV_2D", "QUANTIZE", "CONCATENATION"]


def test_float_graph_exports_and_runs_in_litert():
    m = ModelBuilder(seed=4, dtype=np.float32)
    x = m.input((1, 8, 8, 3))
    y = m.conv(x, 5, k=3, stride=2, act="RELU6")
    z = m.pool(y, "MAX_POOL_2D", (2, 2), 2, "VALID")
    g = load_model(m.output(z))
    model = export_tflite(g)
    graphs_equal(g, load_model(model))
    inputs = m.random_inputs()
    np.testing.assert_allclose(run_reference(model, inputs)[0], run_graph(g, inputs)[0], rtol=1e-5, atol=1e-6)
