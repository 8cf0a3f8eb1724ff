"""ONNX ConvTranspose, Resize, DepthToSpace, SpaceToDepth, Slice (and Concat): imported graphs agree with
onnxruntime in float; quantized by our PTQ, the golden program executor equals run_graph and LiteRT BUILTIN_REF
on the exported int8 model equals run_graph."""

import numpy as np
import pytest

from stackcam.quant import golden
from stackcam.quant.compiler import compile_graph
from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.graph import ModelError
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.ptq import quantize_graph
from stackcam.quant.romimage import build_rom
from tests.test_program import CONFIGS
from tests.test_quant_import import compare_onnx, onnx_model, w

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402


def const(name, values, dtype=np.int64):
    return lambda rng: np.array(values, dtype)


def resize_node(x, y, mode, coord, nearest=None, scales="sc"):
    attrs = dict(mode=mode, coordinate_transformation_mode=coord)
    if nearest:
        attrs["nearest_mode"] = nearest
    return helper.make_node("Resize", [x, "", scales], [y], **attrs)


def move_model():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),                  # 8 x 5 x 7
        resize_node("c1", "r1", "linear", "half_pixel"),                                          # 8 x 10 x 14
        helper.make_node("ConvTranspose", ["r1", "wt", "bt"], ["t1"], strides=[2, 2], pads=[1, 0, 0, 1]),
        helper.make_node("DepthToSpace", ["c1"], ["d1"], blocksize=2, mode="DCR"),                # 2 x 10 x 14
        helper.make_node("SpaceToDepth", ["r1"], ["s1"], blocksize=2),                            # 32 x 5 x 7
        helper.make_node("Slice", ["t1", "st", "en", "ax", "sp"], ["sl"]),
        resize_node("c1", "r2", "nearest", "asymmetric", "floor", scales="sc3"),
        resize_node("c1", "r3", "linear", "align_corners", scales="sc3"),
        helper.make_node("Concat", ["d1", "r1"], ["cat"], axis=1),
    ]
    inits = {"w1": w(8, 3, 3, 3), "b1": w(8), "wt": w(8, 6, 3, 3), "bt": w(6),
             "sc": const("sc", [1, 1, 2, 2], np.float32), "sc3": const("sc3", [1, 1, 1.5, 2.5], np.float32),
             "st": const("st", [1, 2, 0]), "en": const("en", [5, 100, 9]), "ax": const("ax", [1, 2, 3]),
             "sp": const("sp", [1, 3, 2])}
    return onnx_model(nodes, inits, [1, 3, 5, 7], ["sl", "s1", "r2", "r3", "cat"])


def test_onnx_move_ops_match_onnxruntime():
    compare_onnx(move_model(), (1, 3, 5, 7), [True] * 5)


def test_onnx_move_ops_quantized_exact():
    g = load_model(move_model(), name="move.onnx")
    rng = np.random.default_rng(0)
    calib = [rng.normal(0, 1, (1, 5, 7, 3)).astype(np.float32) for _ in range(4)]
    q = quantize_graph(g, calib)
    model = compile_graph(q, CONFIGS["fpga"])
    assert {"RESIZE", "GATHER", "CONV"} <= {d.op for d in model.descriptors}      # Concat: the host tail
    rom = build_rom(model)
    exported = export_tflite(q)
    for _ in range(2):
        x = rng.integers(-128, 128, (1, 5, 7, 3)).astype(np.int8)
        want = run_graph(q, [x])
        for a, b in zip(run_reference(exported, [x]), want):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(golden.execute(rom, CONFIGS["fpga"], x[0]), want):
            np.testing.assert_array_equal(np.asarray(a).reshape(b.shape), b)


def test_onnx_resize_without_tflite_form_is_refused():
    nodes = [resize_node("x", "y", "linear", "tf_crop_and_resize")]
    data = onnx_model(nodes, {"sc": const("sc", [1, 1, 2, 2], np.float32)}, [1, 3, 4, 4], ["y"])
    with pytest.raises(ModelError, match="no TFLite form"):
        load_model(data, name="m.onnx")
