"""DEPTH_TO_SPACE, SPACE_TO_DEPTH, STRIDED_SLICE and SLICE: quant.executor against LiteRT BUILTIN_REF (import,
export round trip), and the die's GATHER descriptor in the golden program executor against run_graph."""

import numpy as np
import pytest

from stackcam.quant.compiler import compile_graph
from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.graph import ModelError, Op
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.tflite import TFLiteBuilder, schema
from tests.test_program import CONFIGS, Net, check_equal

OPS = schema.BuiltinOperator


def one_op_model(kind, in_shape, out_shape, opts, consts=(), version=None):
    b = TFLiteBuilder(description="stackcam gather test")
    x = b.add_input("x", in_shape, np.int8, scale=0.043, zero_point=7)
    ins = [x] + [b.add_tensor(f"c{i}", np.shape(v), np.int32, data=np.array(v, np.int32)) for i, v in enumerate(consts)]
    y = b.add_tensor("y", out_shape, np.int8, scale=0.043, zero_point=7)
    b.add_operator(getattr(OPS, kind), ins, [y], opts, version=version)
    b.mark_output(y)
    return b.build()


CASES = [
    ("DEPTH_TO_SPACE", (1, 3, 5, 12), (1, 6, 10, 3), schema.DepthToSpaceOptionsT(blockSize=2), (), 1),
    ("DEPTH_TO_SPACE", (1, 2, 3, 45), (1, 6, 9, 5), schema.DepthToSpaceOptionsT(blockSize=3), (), 1),
    ("SPACE_TO_DEPTH", (1, 6, 4, 5), (1, 3, 2, 20), schema.SpaceToDepthOptionsT(blockSize=2), (), None),
    ("STRIDED_SLICE", (1, 4, 4, 64), (1, 4, 4, 32), schema.StridedSliceOptionsT(),
     ([0, 0, 0, 0], [1, 4, 4, 32], [1, 1, 1, 1]), None),                      # hand_recrop's channel slice
    ("STRIDED_SLICE", (1, 9, 8, 7), (1, 3, 3, 4), schema.StridedSliceOptionsT(beginMask=1, endMask=8),
     ([0, 1, -7, 3], [1, 8, 8, 0], [1, 3, 3, 1]), None),
    ("STRIDED_SLICE", (1, 5, 6, 3), (1, 2, 6, 2), schema.StridedSliceOptionsT(beginMask=4, endMask=6),
     ([0, -2, 4, 1], [1, 99, 0, 3], [1, 1, 1, 1]), None),
    ("SLICE", (1, 7, 6, 10), (1, 3, 6, 5), schema.SliceOptionsT(), ([0, 2, 0, 4], [1, 3, -1, 5]), None),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_builtin_ref_and_exports(case):
    kind, ishape, oshape, opts, consts, version = CASES[case]
    model = one_op_model(kind, ishape, oshape, opts, consts, version)
    rng = np.random.default_rng(case)
    x = rng.integers(-128, 128, ishape).astype(np.int8)
    want = run_reference(model, [x])[0]
    g = load_model(model)
    np.testing.assert_array_equal(run_graph(g, [x])[0], want)
    np.testing.assert_array_equal(run_reference(export_tflite(g), [x])[0], want)


def test_import_refusals():
    with pytest.raises(ModelError, match="negative|positive strides"):
        load_model(one_op_model("STRIDED_SLICE", (1, 4, 4, 3), (1, 4, 4, 3), schema.StridedSliceOptionsT(),
                                ([0, 3, 0, 0], [1, -5, 4, 3], [1, -1, 1, 1])))
    with pytest.raises(ModelError, match="shrink"):
        load_model(one_op_model("STRIDED_SLICE", (1, 4, 4, 3), (1, 4, 3), schema.StridedSliceOptionsT(shrinkAxisMask=2),
                                ([0, 1, 0, 0], [1, 2, 4, 3], [1, 1, 1, 1])))
    with pytest.raises(ModelError, match="does not make"):
        load_model(one_op_model("DEPTH_TO_SPACE", (1, 3, 5, 12), (1, 6, 10, 4),
                                schema.DepthToSpaceOptionsT(blockSize=2), version=1))


def gather_net(channels=24):
    """conv -> DEPTH_TO_SPACE (channel blocks not lane aligned), SPACE_TO_DEPTH, strided and channel slices."""
    n = Net((1, 4, 6, 3), seed=51)
    a = n.conv(n.input, channels, k=3, out_q=(0.05, 3))
    s, z = n.q(a)
    outs = []

    def add(kind, out_shape, **opts):
        t = n.act(out_shape, s, z, kind.lower())
        n.ops.append(Op(kind, [a], [t], opts))
        outs.append(n.conv(t, 3, k=1, out_q=(0.1, 0)))

    add("DEPTH_TO_SPACE", (1, 8, 12, channels // 4), block_size=2)
    add("SPACE_TO_DEPTH", (1, 2, 3, channels * 4), block_size=2)
    add("STRIDED_SLICE", (1, 2, 3, channels - 5), begin=(0, 1, 0, 5), end=(1, 4, 6, channels), strides=(1, 2, 2, 1))
    add("SLICE", (1, 3, 2, 7), begin=(0, 1, 3, 2), end=(1, 4, 5, 9), strides=(1, 1, 1, 1))
    return n.graph(*outs)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("channels", [24, 12])
def test_gather_compiled_golden_equals_run_graph(config, channels):
    model = check_equal(gather_net(channels), CONFIGS[config], count=2)
    assert [layer.op for layer in model.layers].count("GATHER") == 4


def test_gather_refusals():
    n = Net((1, 4, 4, 3), seed=1)
    a = n.conv(n.input, 8, k=1, out_q=(0.05, 3))
    t = n.act((1, 4, 4, 4), 0.05, 3, "sliced")
    n.ops.append(Op("STRIDED_SLICE", [a], [t], dict(begin=(0, 0, 0, 0), end=(1, 4, 4, 8), strides=(1, 1, 1, 2))))
    with pytest.raises(ModelError, match="C \\(step 1\\)"):
        compile_graph(n.graph(n.conv(t, 3, k=1, out_q=(0.1, 0))), CONFIGS["tiny"])


@pytest.mark.parametrize("kind", ["SPLIT", "SPLIT_V"])
def test_split_imports_as_slices_and_matches_builtin_ref(kind):
    """SPLIT / SPLIT_V: one STRIDED_SLICE per output, equal to BUILTIN_REF; on the die, GATHERs."""
    b = TFLiteBuilder()
    x = b.add_input("x", (1, 4, 6, 10), np.int8, scale=0.05, zero_point=-3)
    axis = b.add_tensor("axis", (1,), np.int32, data=np.array([3 if kind == "SPLIT" else -2], np.int32))
    shapes = [(1, 4, 6, 5)] * 2 if kind == "SPLIT" else [(1, 4, 1, 10), (1, 4, 3, 10), (1, 4, 2, 10)]
    outs = [b.add_tensor(f"y{i}", s, np.int8, scale=0.05, zero_point=-3) for i, s in enumerate(shapes)]
    if kind == "SPLIT":
        b.add_operator(OPS.SPLIT, [axis, x], outs, schema.SplitOptionsT(numSplits=2), version=2)
    else:
        sizes = b.add_tensor("sizes", (3,), np.int32, data=np.array([1, 3, 2], np.int32))
        b.add_operator(OPS.SPLIT_V, [x, sizes, axis], outs, schema.SplitVOptionsT(numSplits=3), version=2)
    for o in outs:
        b.mark_output(o)
    model = b.build()
    g = load_model(model)
    assert [op.kind for op in g.ops] == ["STRIDED_SLICE"] * len(shapes)
    xv = np.random.default_rng(2).integers(-128, 128, (1, 4, 6, 10)).astype(np.int8)
    for got, want in zip(run_graph(g, [xv]), run_reference(model, [xv])):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(run_reference(export_tflite(g), [xv]), run_reference(model, [xv])):
        np.testing.assert_array_equal(got, want)


def test_onnx_split_matches_onnxruntime():
    pytest.importorskip("onnx")
    from onnx import helper

    from tests.test_quant_import import compare_onnx, onnx_model, w
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
             helper.make_node("Split", ["c1"], ["s0", "s1", "s2"], axis=1, split=[2, 3, 1]),
             helper.make_node("Split", ["c1"], ["h0", "h1"], axis=3)]
    data = onnx_model(nodes, {"w1": w(6, 3, 1, 1), "b1": w(6)}, [1, 3, 5, 4], ["s0", "s1", "s2", "h0", "h1"], opset=11)
    g = compare_onnx(data, (1, 3, 5, 4), [True] * 5)
    assert [op.kind for op in g.ops].count("STRIDED_SLICE") == 5
