"""MEAN, MUL, SUB and PRELU (int8): the golden graph executor against LiteRT's BUILTIN_REF kernels on odd shapes,
scales and zero points (broadcasts, keep_dims, negative alphas), and the exported model again in LiteRT."""

import numpy as np
import pytest

from stackcam.quant.tflite import activation_type, schema
from tests.test_quant_ops import ModelBuilder, compare

OPS = schema.BuiltinOperator


def mean_model(shape, axes, keep_dims, in_q, out_q, seed=0):
    m = ModelBuilder(seed=seed)
    x = m.input(shape, *in_q)
    a = m.b.add_tensor("axes", (len(axes),), np.int32, data=np.array(axes, np.int32))
    rank = len(shape)
    red = {ax % rank for ax in axes}
    out = tuple(1 if i in red else d for i, d in enumerate(shape)) if keep_dims else \
        tuple(d for i, d in enumerate(shape) if i not in red)
    y = m.act(out, *out_q)
    m.b.add_operator(OPS.MEAN, [x, a], [y], schema.ReducerOptionsT(keepDims=keep_dims))
    return m.output(y), m.random_inputs()


@pytest.mark.parametrize("shape,axes,keep,in_q,out_q", [
    ((1, 7, 5, 9), [1, 2], True, (0.05, 3), (0.05, 3)),            # same quantization
    ((1, 7, 5, 9), [1, 2], False, (0.05, 3), (0.011, -20)),        # rescale down, keep_dims false
    ((1, 16, 16, 96), [2, 1], True, (0.031, -128), (0.0123, 5)),   # 256 elements, axes reversed
    ((1, 9, 16, 5), [1, 2], True, (0.004, 100), (0.3, -128)),      # rescale up
    ((1, 3, 1, 4), [-3, -2], False, (0.2, 0), (0.07, 7)),          # negative axes, 3 elements
    ((1, 13, 11, 3), [1, 2], True, (1 / 64, -3), (1 / 64, -3)),    # 143 elements: not a power of two
    ((1, 36, 64, 16), [1, 2], True, (0.02, -7), (0.0031, 11)),     # 2304 elements
    ((1, 6, 5, 4), [2], True, (0.05, 1), (0.06, -2)),              # one axis (executor only)
])
def test_mean_equals_litert(shape, axes, keep, in_q, out_q):
    model, inputs = mean_model(shape, axes, keep, in_q, out_q, seed=len(shape) + shape[1])
    compare(model, inputs)


def binary_model(kind, sa, sb, qa, qb, qo, act="NONE", seed=0):
    m = ModelBuilder(seed=seed)
    a = m.input(sa, *qa)
    b = m.input(sb, *qb)
    y = m.act(np.broadcast_shapes(sa, sb), *qo)
    opts = {"MUL": schema.MulOptionsT, "SUB": schema.SubOptionsT, "ADD": schema.AddOptionsT}[kind](
        fusedActivationFunction=activation_type(act))
    m.b.add_operator(getattr(OPS, kind), [a, b], [y], opts)
    return m.output(y), m.random_inputs()


SHAPES = [((1, 5, 7, 9), (1, 5, 7, 9)), ((1, 6, 5, 11), (1, 1, 1, 11)), ((1, 3, 4, 5), (1, 1, 1, 1)),
          ((1, 1, 1, 6), (1, 4, 3, 6)), ((1, 4, 3, 7), (1,))]
QS = [((0.05, 3), (0.02, -7), (0.07, 4)), ((0.0039, -128), (0.11, 0), (0.0021, 10)),
      ((0.3, 100), (0.25, -100), (0.9, -3))]


@pytest.mark.parametrize("kind", ["MUL", "SUB", "ADD"])
@pytest.mark.parametrize("q", range(len(QS)))
@pytest.mark.parametrize("shapes", range(len(SHAPES)))
def test_binary_equals_litert(kind, shapes, q):
    sa, sb = SHAPES[shapes]
    qa, qb, qo = QS[q]
    model, inputs = binary_model(kind, sa, sb, qa, qb, qo, act="RELU" if (shapes + q) % 3 == 1 else "NONE",
                                 seed=shapes * 10 + q)
    compare(model, inputs)


def prelu_model(shape, alpha_shape, alpha, qx, qa, qo, seed=0):
    m = ModelBuilder(seed=seed)
    x = m.input(shape, *qx)
    a = m.b.add_tensor("alpha", alpha_shape, np.int8, data=np.asarray(alpha, np.int8).reshape(alpha_shape),
                       scale=qa[0], zero_point=qa[1])
    y = m.act(shape, *qo)
    m.b.add_operator(OPS.PRELU, [x, a], [y], None)
    return m.output(y), m.random_inputs()


@pytest.mark.parametrize("shape,qx,qa,qo", [
    ((1, 5, 7, 9), (0.05, 3), (0.01, 0), (0.04, -5)),
    ((1, 4, 3, 37), (0.0039, -128), (0.02, 17), (0.003, 20)),
    ((1, 6, 6, 16), (0.3, 100), (0.004, -3), (0.2, -100)),
    ((1, 3, 3, 128), (0.021, 0), (0.0078, -128), (0.013, 9)),
])
def test_prelu_per_channel_equals_litert(shape, qx, qa, qo):
    c = shape[-1]
    rng = np.random.default_rng(c)
    alpha = rng.integers(-128, 128, c)                # negative alphas included
    model, inputs = prelu_model(shape, (1, 1, c), alpha, qx, qa, qo, seed=c)
    compare(model, inputs)


# --- ONNX and post-training quantization ---------------------------------------------------------------------------

def _se_onnx():
    """A squeeze-excite block in ONNX: ReduceMean over H, W -> Conv -> Sigmoid -> Mul; PRelu per channel and
    with one slope; Sub of a per-channel mean; GlobalAveragePool."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(4)

    def arr(*shape, s=0.3):
        return rng.normal(0, s, shape).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c1", "slope"], ["p1"]),
        helper.make_node("ReduceMean", ["p1"], ["m1"], axes=[2, 3], keepdims=1),
        helper.make_node("Conv", ["m1", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["s2"]),
        helper.make_node("Mul", ["p1", "s2"], ["se"]),
        helper.make_node("ReduceMean", ["se"], ["m2"], axes=[2, 3], keepdims=1),
        helper.make_node("Sub", ["se", "m2"], ["centred"]),
        helper.make_node("PRelu", ["centred", "slope1"], ["p2"]),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["gap"]),
    ]
    inits = {"w1": arr(12, 3, 3, 3), "b1": arr(12, s=0.1), "slope": arr(12, 1, 1, s=0.4),
             "w2": arr(12, 12, 1, 1), "b2": arr(12, s=0.1), "slope1": np.array([0.25], np.float32),
             "w3": arr(5, 12, 1, 1), "b3": arr(5, s=0.1)}
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 10])],
                              [helper.make_tensor_value_info("c3", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("gap", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_onnx_mul_sub_prelu_reducemean_match_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from stackcam.quant.executor import run_graph
    from stackcam.quant.importer import load_model
    data = _se_onnx()
    x = np.random.default_rng(3).normal(0, 1, (1, 3, 9, 10)).astype(np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    g = load_model(data, name="se.onnx")
    assert {"MUL", "SUB", "PRELU", "MEAN"} <= {op.kind for op in g.ops}
    got = run_graph(g, [x.transpose(0, 2, 3, 1)])
    for gt, w in zip(got, want):
        np.testing.assert_allclose(gt.transpose(0, 3, 1, 2), w, rtol=1e-4, atol=1e-5)


def test_ptq_of_onnx_se_block_compiles_and_golden_equals_litert():
    """Our post-training quantization of the ONNX block (PRELU alphas quantized like LiteRT's quantizer: one
    symmetric scale), compiled for the die: the golden program executor equals BUILTIN_REF on the export."""
    pytest.importorskip("onnx")
    from stackcam.quant import golden
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.export import export_tflite
    from stackcam.quant.importer import load_model
    from stackcam.quant.litert import run_reference
    from stackcam.quant.lower import lower
    from stackcam.quant.ptq import quantize_graph
    from stackcam.quant.romimage import build_rom
    from stackcam.rtl.params import PRESETS
    g = load_model(_se_onnx(), name="se.onnx")
    rng = np.random.default_rng(8)
    q = quantize_graph(g, [rng.normal(0, 1, (1, 9, 10, 3)).astype(np.float32) for _ in range(4)])
    alpha = [q.tensors[op.inputs[1]] for op in q.ops if op.kind == "PRELU"]
    assert all(a.dtype == "int8" and int(a.quant.zero_point[0]) == 0 and np.abs(a.data).max() == 127
               for a in alpha)
    low = lower(q)
    config = PRESETS["tiny"]
    rom = build_rom(compile_graph(low, config))
    exported = export_tflite(low)
    for _ in range(3):
        x = rng.integers(-128, 128, (1, 9, 10, 3)).astype(np.int8)
        want = run_reference(exported, [x])
        got = golden.execute(rom, config, x[0])
        for a, b in zip(got, want):
            np.testing.assert_array_equal(np.asarray(a).reshape(b.shape), b)


@pytest.mark.parametrize("kind,const_first", [("MUL", False), ("MUL", True), ("ADD", False), ("ADD", True),
                                              ("SUB", False)])
def test_constant_operand_quantized_like_litert_and_a_lut_on_the_die(kind, const_first):
    """x op c with one constant c (MUL by a constant, a bias): PTQ quantizes c as LiteRT's quantizer does
    (symmetric, one scale; checked against it), the compiler makes the operator a table, and the golden
    program executor equals BUILTIN_REF on the export."""
    from stackcam.quant import golden
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.export import export_tflite
    from stackcam.quant.graph import Graph, Op, Tensor
    from stackcam.quant.importer import load_model
    from stackcam.quant.litert import run_reference
    from stackcam.quant.ptq import litert_calibrated_model, quantize_graph
    from stackcam.quant.romimage import build_rom
    from stackcam.rtl.params import PRESETS
    shape = (1, 4, 5, 3)
    t = {"x": Tensor("x", shape, "float32"), "c": Tensor("c", (1,), "float32", data=np.array([-0.37], np.float32)),
         "y": Tensor("y", shape, "float32")}
    ins = ["c", "x"] if const_first else ["x", "c"]
    g = Graph(t, [Op(kind, ins, ["y"], dict(activation="NONE"), name="op")], ["x"], ["y"], name="k")
    rng = np.random.default_rng(2)
    calib = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(4)]
    q = quantize_graph(g, calib)
    theirs = load_model(litert_calibrated_model(export_tflite(g), calib)).tensor("c")
    ours = q.tensor("c")
    assert ours.data.tolist() == theirs.data.tolist() and ours.quant.scale[0] == theirs.quant.scale[0]
    config = PRESETS["tiny"]
    model = compile_graph(q, config)
    assert [d.op for d in model.descriptors] == ["LUT", "END"]
    rom = build_rom(model)
    for _ in range(2):
        x = rng.integers(-128, 128, shape).astype(np.int8)
        np.testing.assert_array_equal(golden.execute(rom, config, x[0])[0].reshape(shape),
                                      run_reference(export_tflite(q), [x])[0])
