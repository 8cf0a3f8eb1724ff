"""TRANSPOSE_CONV (and MediaPipe's Convolution2DTransposeBias): quant.executor against LiteRT BUILTIN_REF on
odd sizes, strides, SAME/VALID, per-channel weights with a bias; the die's lowering (a zero-inserting GATHER and
a CONV with the flipped kernel) in the golden executor against run_graph."""

import numpy as np
import pytest

from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.ref import window_padding
from stackcam.quant.tflite import TFLiteBuilder, schema
from tests.test_program import CONFIGS, check_equal

OPS = schema.BuiltinOperator

CASES = [((5, 7, 3), 4, (3, 3), (2, 2), "SAME"), ((4, 4, 6), 5, (2, 2), (2, 2), "SAME"),
         ((3, 5, 2), 3, (3, 2), (2, 3), "VALID"), ((6, 5, 4), 7, (4, 4), (2, 2), "SAME"),
         ((3, 3, 5), 2, (3, 3), (1, 1), "SAME"), ((2, 3, 3), 4, (5, 3), (3, 2), "VALID")]


def tconv_model(in_hwc, cout, kernel, stride, padding, seed, act="NONE"):
    rng = np.random.default_rng(seed)
    h, w, c = in_hwc
    if padding == "SAME":
        oh, ow = h * stride[0], w * stride[1]
    else:
        oh, ow = (h - 1) * stride[0] + kernel[0], (w - 1) * stride[1] + kernel[1]
    b = TFLiteBuilder(description="stackcam transpose conv test")
    x = b.add_input("x", (1, h, w, c), np.int8, scale=0.031, zero_point=-9)
    ws = rng.uniform(0.004, 0.02, cout).astype(np.float32)
    wt = b.add_tensor("w", (cout, *kernel, c), np.int8, data=rng.integers(-127, 128, (cout, *kernel, c)),
                      scale=ws, zero_point=np.zeros(cout, np.int64), quantized_dimension=0)
    bias = b.add_tensor("b", (cout,), np.int32, data=rng.integers(-3000, 3000, cout),
                        scale=np.float32(0.031) * ws, zero_point=np.zeros(cout, np.int64))
    shape = b.add_tensor("shape", (4,), np.int32, data=np.array([1, oh, ow, cout], np.int32))
    y = b.add_tensor("y", (1, oh, ow, cout), np.int8, scale=0.09, zero_point=4)
    opts = schema.TransposeConvOptionsT(padding=getattr(schema.Padding, padding), strideH=stride[0],
                                        strideW=stride[1])
    b.add_operator(OPS.TRANSPOSE_CONV, [shape, wt, x, bias], [y], opts, version=3)
    b.mark_output(y)
    return b.build()


@pytest.mark.parametrize("case", range(len(CASES)))
def test_transpose_conv_matches_builtin_ref(case):
    in_hwc, cout, kernel, stride, padding = CASES[case]
    model = tconv_model(in_hwc, cout, kernel, stride, padding, seed=case)
    g = load_model(model)
    rng = np.random.default_rng(100 + case)
    for _ in range(2):
        x = rng.integers(-128, 128, (1, *in_hwc)).astype(np.int8)
        want = run_reference(model, [x])[0]
        np.testing.assert_array_equal(run_graph(g, [x])[0], want)
        np.testing.assert_array_equal(run_reference(export_tflite(g), [x])[0], want)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("config", ["tiny", "fpga"])
def test_transpose_conv_on_the_die_program(case, config):
    in_hwc, cout, kernel, stride, padding = CASES[case]
    g = load_model(tconv_model(in_hwc, cout, kernel, stride, padding, seed=case))
    model = check_equal(g, CONFIGS[config], count=2)
    assert [d.op for d in model.descriptors[:2]] == ["GATHER", "CONV"]


def test_mediapipe_custom_op_imports_like_the_builtin():
    """Convolution2DTransposeBias's options (padding, stride_w, stride_h as int32) and MediaPipe's SAME padding
    give the same pads and output as the builtin TRANSPOSE_CONV of that output shape."""
    b = TFLiteBuilder()
    x = b.add_input("x", (1, 5, 6, 3), np.float32)
    rng = np.random.default_rng(0)
    w = b.add_tensor("w", (2, 3, 3, 3), np.float32, data=rng.normal(size=(2, 3, 3, 3)))
    bias = b.add_tensor("b", (2,), np.float32, data=rng.normal(size=2))
    y = b.add_tensor("y", (1, 9, 12, 2), np.float32)         # MediaPipe: 2 * 4 + 3 - 2, 2 * 5 + 3 - 1
    b.operator_codes.append(schema.OperatorCodeT(deprecatedBuiltinCode=OPS.CUSTOM, builtinCode=OPS.CUSTOM,
                                                 customCode="Convolution2DTransposeBias", version=1))
    b.operators.append(schema.OperatorT(opcodeIndex=len(b.operator_codes) - 1, inputs=[x, w, bias], outputs=[y],
                                        customOptions=list(np.array([1, 2, 2], "<i4").tobytes())))
    b.mark_output(y)
    g = load_model(b.build())
    op = g.ops[0]
    assert op.kind == "TRANSPOSE_CONV" and op.opts["stride"] == (2, 2)
    # MediaPipe: padding max(0, 3 - (5 - 1) % 2 - 1) // 2 = 1 rows, max(0, 3 - (6 - 1) % 2 - 1) // 2 = 0 columns;
    # TFLite's SAME for a 9 x 12 output: the same.
    assert op.opts["pads"] == (1, 0) == (window_padding(9, 3, 2, 1, "SAME")[1], window_padding(12, 3, 2, 1, "SAME")[1])
    xv = rng.normal(size=(1, 5, 6, 3)).astype(np.float32)
    want = np.zeros((1, 9, 12, 2), np.float32) + g.tensors[op.inputs[2]].data
    wv = g.tensors[op.inputs[1]].data
    for iy in range(5):
        for ix in range(6):
            for ky in range(3):
                for kx in range(3):
                    oy, ox = iy * 2 - 1 + ky, ix * 2 + kx
                    if 0 <= oy < 9 and 0 <= ox < 12:
                        want[0, oy, ox] += wv[:, ky, kx, :] @ xv[0, iy, ix]
    np.testing.assert_allclose(run_graph(g, [xv])[0], want, rtol=1e-5, atol=1e-5)
