"""Elementwise int8 -> int8 operators (quant.elementwise): exhaustive over all 256 inputs against LiteRT's
BUILTIN_REF kernels on odd scales and zero points, and on the die as a LUT descriptor."""

import numpy as np
import pytest

from stackcam.quant.compiler import LUT_OPS
from stackcam.quant.executor import run_graph
from stackcam.quant.graph import ModelError
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.tflite import schema
from tests.test_quant_ops import ModelBuilder, compare

ALL = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)

# (input scale, input zero point, output scale, output zero point): odd values, both rescale directions, zero
# points at the ends of the range.
QUANTS = [(1 / 64, -3, 0.05, 3), (0.0371, 17, 0.0123, -40), (0.11, -128, 0.02, 127), (0.0023, 100, 0.0457, -128),
          (0.3, 0, 0.3, 0), (0.07, 5, 1 / 128, 0)]


def single_op(kind, q, options=None, alpha=None, seed=0):
    """A one-operator int8 model over 256 values."""
    si, zi, so, zo = q
    m = ModelBuilder(seed=seed)
    x = m.input((1, 256), scale=si, zp=zi)
    ins = [x]
    if alpha is not None:                        # PRELU: one int8 alpha (value, scale, zero point)
        a, sa, za = alpha
        ins.append(m.b.add_tensor("alpha", (1,), np.int8, data=np.array([a], np.int8), scale=sa, zero_point=za))
    y = m.act((1, 256), so, zo)
    m.b.add_operator(getattr(schema.BuiltinOperator, kind), ins, [y], options)
    return m.output(y)


SIMPLE = ["TANH", "HARD_SWISH", "ABS", "NEG", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1"]


@pytest.mark.parametrize("q", QUANTS, ids=[f"q{i}" for i in range(len(QUANTS))])
@pytest.mark.parametrize("kind", SIMPLE)
def test_elementwise_exhaustive_equals_litert(kind, q):
    if kind == "HARD_SWISH" and q[0] / 128 / q[2] >= 0.5:
        pytest.skip("LiteRT refuses an int8 HARD_SWISH whose output multiplier needs a left shift")
    compare(single_op(kind, q), [ALL])


@pytest.mark.parametrize("alpha", [0.1, 0.01, 0.3333, 1.7, -0.25, -1.5])
@pytest.mark.parametrize("q", QUANTS[:4], ids=[f"q{i}" for i in range(4)])
def test_leaky_relu_exhaustive_equals_litert(q, alpha):
    compare(single_op("LEAKY_RELU", q, schema.LeakyReluOptionsT(alpha=alpha)), [ALL])


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("q", QUANTS, ids=[f"q{i}" for i in range(len(QUANTS))])
def test_gelu_exhaustive_equals_litert(q, approximate):
    compare(single_op("GELU", q, schema.GeluOptionsT(approximate=approximate)), [ALL])


@pytest.mark.parametrize("alpha", [(-50, 0.01, 0), (77, 0.004, -3), (-128, 0.02, 10), (3, 0.5, 0)])
@pytest.mark.parametrize("q", QUANTS[:4], ids=[f"q{i}" for i in range(4)])
def test_prelu_one_alpha_exhaustive_equals_litert(q, alpha):
    """PRELU with a single alpha (negative ones included) is an elementwise function."""
    compare(single_op("PRELU", q, alpha=alpha), [ALL])


@pytest.mark.parametrize("q", QUANTS, ids=[f"q{i}" for i in range(len(QUANTS))])
def test_elu_exhaustive_equals_litert(q):
    """LiteRT 2.3.0 registers ELU only in its default resolver (not BUILTIN_REF): EluPrepare fills the same
    float32 table for every kernel type, so the default kernels without delegates (no XNNPACK) are the
    reference here."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    model = single_op("ELU", q)
    it = Interpreter(model_content=model,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], ALL)
    it.invoke()
    want = it.get_tensor(it.get_output_details()[0]["index"])
    np.testing.assert_array_equal(run_graph(load_model(model), [ALL])[0], want)


@pytest.mark.parametrize("kind", ["TANH", "HARD_SWISH", "LEAKY_RELU", "RELU", "ABS"])
def test_random_scale_sweep(kind):
    """300 random scale/zero-point pairs per operator (scales 1e-4 .. 10), every int8 input."""
    rng = np.random.default_rng(sorted(SIMPLE + ["LEAKY_RELU"]).index(kind))
    bad, tried = [], 0
    while tried < 300:
        si, so = (float(np.float32(10 ** rng.uniform(-4, 1))) for _ in range(2))
        q = (si, int(rng.integers(-128, 128)), so, int(rng.integers(-128, 128)))
        if kind == "HARD_SWISH" and si / 128 / so >= 0.5:
            continue
        options = schema.LeakyReluOptionsT(alpha=float(rng.uniform(-1, 1))) if kind == "LEAKY_RELU" else None
        model = single_op(kind, q, options)
        want = run_reference(model, [ALL])[0]
        got = run_graph(load_model(model), [ALL])[0]
        if np.any(got != want):
            bad.append((q, int(np.count_nonzero(got != want))))
        tried += 1
    assert bad == []


def test_hard_swish_output_left_shift_is_refused_like_litert():
    model = single_op("HARD_SWISH", (0.5, 0, 0.001, 0))
    with pytest.raises(RuntimeError):
        run_reference(model, [ALL])
    with pytest.raises(ModelError, match="HARD_SWISH 'act_2'.*left shift"):
        run_graph(load_model(model), [ALL])


def test_every_elementwise_kind_is_a_die_lut():
    for kind in ("TANH", "ELU", "GELU", "HARD_SWISH", "LEAKY_RELU", "PRELU", "ABS", "NEG", "RELU_N1_TO_1",
                 "RELU_0_TO_1", "LOGISTIC", "RELU", "RELU6", "QUANTIZE"):
        assert kind in LUT_OPS


@pytest.mark.parametrize("config", ["tiny", "imx500"])
def test_chain_on_the_die_equals_litert(tmp_path, config):
    """Conv, then TANH, HARD_SWISH, LEAKY_RELU, PRELU (one alpha), GELU, ABS and RELU_0_TO_1, each a LUT
    descriptor on the die: the compiled program equals LiteRT BUILTIN_REF on every element."""
    from stackcam.cli.run import run_model
    m = ModelBuilder(seed=41)
    x = m.input((1, 9, 7, 5), scale=1 / 64, zp=-3)
    c = m.conv(x, 6, k=3, out_q=(0.043, 7))
    t = m.unary(c, "TANH", (1 / 128, 0))
    h = m.unary(t, "HARD_SWISH", (0.0071, -90))
    lr = m.unary(h, "LEAKY_RELU", (0.0052, -20), schema.LeakyReluOptionsT(alpha=0.13))
    alpha = m.b.add_tensor("alpha", (1,), np.int8, data=np.array([-77], np.int8), scale=0.01, zero_point=3)
    p = m.act((1, 9, 7, 6), 0.006, 11)
    m.b.add_operator(schema.BuiltinOperator.PRELU, [lr, alpha], [p])
    g = m.unary(p, "GELU", (0.004, -30), schema.GeluOptionsT(approximate=False))
    a = m.unary(g, "ABS", (0.003, -128))
    r = m.unary(a, "RELU_0_TO_1", (0.0045, -128))
    model = m.output(r)
    (tmp_path / "ew.tflite").write_bytes(model)
    xs = np.random.default_rng(3).integers(-128, 128, (4, 9, 7, 5)).astype(np.int8)
    out = run_model(tmp_path / "ew.tflite", xs, config=config)["output_0"]
    for i in range(xs.shape[0]):
        np.testing.assert_array_equal(out[i:i + 1], run_reference(model, [xs[i:i + 1]])[0])


def test_onnx_activations_float_then_int8_bit_exact():
    """ONNX Tanh, HardSwish, LeakyRelu, Sigmoid, Abs and Neg (Elu maps to ELU, which BUILTIN_REF lacks): the
    float import agrees with onnxruntime, and
    the int8 graph our PTQ makes runs bit-exact with LiteRT BUILTIN_REF on its exported .tflite."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    from stackcam.quant.export import export_tflite
    from stackcam.quant.ptq import quantize_graph
    from tests.test_quant_import import onnx_model, w
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["c1"], ["t"]),
        helper.make_node("Conv", ["t", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("HardSwish", ["c2"], ["h"]),
        helper.make_node("LeakyRelu", ["h"], ["l"], alpha=0.07),
        helper.make_node("Abs", ["l"], ["a"]),
        helper.make_node("Neg", ["a"], ["n"]),
        helper.make_node("Sigmoid", ["n"], ["y"]),
    ]
    inits = {"w1": w(6, 3, 3, 3), "b1": w(6, s=0.1), "w2": w(6, 6, 1, 1, s=0.8), "b2": w(6, s=0.3)}
    data = onnx_model(nodes, inits, [1, 3, 7, 9], ["y"], opset=14)
    x = np.random.default_rng(3).normal(0, 1, (1, 3, 7, 9)).astype(np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    g = load_model(data, name="act.onnx")
    assert [op.kind for op in g.ops] == ["CONV_2D", "TANH", "CONV_2D", "HARD_SWISH", "LEAKY_RELU", "ABS", "NEG",
                                         "LOGISTIC"]
    got = run_graph(g, [x.transpose(0, 2, 3, 1)])[0]
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=1e-4, atol=1e-5)

    rng = np.random.default_rng(4)
    calib = [rng.normal(0, 1, (1, 7, 9, 3)).astype(np.float32) for _ in range(8)]
    q = quantize_graph(g, calib)
    assert q.tensor(q.ops[1].outputs[0]).quant.scalar() == (1 / 128, 0)       # TANH's fixed output quantization
    model = export_tflite(q)
    for _ in range(3):
        xi = rng.integers(-128, 128, (1, 7, 9, 3)).astype(np.int8)
        np.testing.assert_array_equal(run_graph(q, [xi])[0], run_reference(model, [xi])[0])
