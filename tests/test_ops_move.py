"""RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR: quant.ref / quant.executor against LiteRT BUILTIN_REF on odd
shapes, non-integer factors, both flags, upsampling and downsampling; import and export round trip."""

import numpy as np
import pytest

from stackcam.quant import ref
from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.graph import ModelError
from stackcam.quant.importer import load_model
from stackcam.quant.litert import run_reference
from stackcam.quant.tflite import TFLiteBuilder, schema

OPS = schema.BuiltinOperator

# (in H, W), (out H, W): up, down, non-integer both ways, odd sizes, 1-pixel edges.
SIZES = [((5, 7), (11, 13)), ((9, 6), (4, 5)), ((3, 3), (8, 5)), ((12, 10), (7, 15)), ((1, 4), (3, 9)),
         ((6, 1), (2, 3)), ((4, 4), (8, 8)), ((8, 8), (4, 4)), ((7, 9), (7, 9)), ((2, 3), (1, 1))]
FLAGS = [(False, False), (True, False), (False, True)]


def resize_model(kind, in_hw, out_hw, channels, align, half, dtype=np.int8, scale=0.037, zp=-5, version=None):
    b = TFLiteBuilder(description="stackcam resize test")
    q = dict(scale=scale, zero_point=zp) if dtype == np.int8 else {}
    x = b.add_input("x", (1, *in_hw, channels), dtype, **q)
    size = b.add_tensor("size", (2,), np.int32, data=np.array(out_hw, np.int32))
    y = b.add_tensor("y", (1, *out_hw, channels), dtype, **q)
    opts = (schema.ResizeBilinearOptionsT if kind == "RESIZE_BILINEAR" else schema.ResizeNearestNeighborOptionsT)(
        alignCorners=align, halfPixelCenters=half)
    b.add_operator(getattr(OPS, kind), [x, size], [y], opts, version=version)
    b.mark_output(y)
    return b.build()


@pytest.mark.parametrize("kind", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
@pytest.mark.parametrize("align,half", FLAGS)
def test_resize_int8_matches_builtin_ref(kind, align, half):
    rng = np.random.default_rng(hash((kind, align, half)) % 2**32)
    total = 0
    for n, (in_hw, out_hw) in enumerate(SIZES):
        if align and min(in_hw) == 1:
            continue
        c = [1, 3, 5, 17][n % 4]
        model = resize_model(kind, in_hw, out_hw, c, align, half)
        x = rng.integers(-128, 128, (1, *in_hw, c)).astype(np.int8)
        if n % 3 == 0:
            x[0, :, :, 0] = 127 if n % 2 else -128          # extremes: the rounding and the int8 ends
        want = run_reference(model, [x])[0]
        g = load_model(model)
        got = run_graph(g, [x])[0]
        np.testing.assert_array_equal(got, want, err_msg=f"{kind} {in_hw}->{out_hw} align={align} half={half}")
        direct = ref.resize_int8(x, kind, out_hw, align, half)
        np.testing.assert_array_equal(direct, want)
        total += want.size
    assert total > 1000


def test_resize_bilinear_rounding_ties_half_away_from_zero():
    """Inputs whose interpolation lands on exact halves: BUILTIN_REF rounds them away from zero, both signs."""
    x = np.array([[-3, -2], [2, 3]], np.int8).reshape(1, 2, 2, 1)
    model = resize_model("RESIZE_BILINEAR", (2, 2), (4, 4), 1, False, False)
    want = run_reference(model, [x])[0]
    np.testing.assert_array_equal(ref.resize_int8(x, "RESIZE_BILINEAR", (4, 4)), want)
    assert -1 in want or 1 in want          # -3/2 -> -2 (tie, away), (-2+2)/2 = 0 ...: the halves occur


@pytest.mark.parametrize("kind", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize_float_close_to_litert(kind):
    rng = np.random.default_rng(3)
    for align, half in FLAGS:
        model = resize_model(kind, (5, 6), (9, 4), 3, align, half, dtype=np.float32)
        x = rng.normal(size=(1, 5, 6, 3)).astype(np.float32)
        want = run_reference(model, [x])[0]
        got = run_graph(load_model(model), [x])[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize_export_round_trip(kind):
    """The exporter writes the operator back (a size tensor, the flags) and BUILTIN_REF agrees with run_graph."""
    rng = np.random.default_rng(4)
    for align, half in FLAGS:
        g = load_model(resize_model(kind, (6, 5), (13, 7), 4, align, half))
        x = rng.integers(-128, 128, (1, 6, 5, 4)).astype(np.int8)
        np.testing.assert_array_equal(run_reference(export_tflite(g), [x])[0], run_graph(g, [x])[0])


def test_resize_import_refusals():
    b = TFLiteBuilder()
    x = b.add_input("x", (1, 4, 4, 2), np.int8, scale=0.1, zero_point=0)
    size = b.add_tensor("size", (2,), np.int32, data=np.array([9, 9], np.int32))
    y = b.add_tensor("y", (1, 8, 8, 2), np.int8, scale=0.1, zero_point=0)
    b.add_operator(OPS.RESIZE_BILINEAR, [x, size], [y], schema.ResizeBilinearOptionsT())
    b.mark_output(y)
    with pytest.raises(ModelError, match="does not make"):
        load_model(b.build())
    with pytest.raises(ModelError, match="both set"):
        load_model(resize_model("RESIZE_BILINEAR", (4, 4), (8, 8), 1, True, True))


# --- compiled: the RESIZE descriptor in the golden program executor -------------------------------------------

def resize_net(seed=21, channels=6):
    """conv -> every resize variant (up, down, non-integer, both kinds and flags) -> conv, on the die."""
    from stackcam.quant.graph import Op
    from tests.test_program import Net

    n = Net((1, 5, 7, 3), seed=seed)
    a = n.conv(n.input, channels, k=3, out_q=(0.05, 3))
    outs = []
    for kind, out_hw, align, half in [("RESIZE_BILINEAR", (11, 13), False, False),
                                      ("RESIZE_BILINEAR", (10, 14), False, True),
                                      ("RESIZE_BILINEAR", (3, 4), True, False),
                                      ("RESIZE_BILINEAR", (2, 9), False, True),
                                      ("RESIZE_NEAREST_NEIGHBOR", (9, 5), False, False),
                                      ("RESIZE_NEAREST_NEIGHBOR", (4, 15), True, False),
                                      ("RESIZE_NEAREST_NEIGHBOR", (13, 3), False, True)]:
        s, z = n.q(a)
        r = n.act((1, *out_hw, channels), s, z, "resized")
        n.ops.append(Op(kind, [a], [r], {"align_corners": align, "half_pixel_centers": half}))
        outs.append(n.conv(r, 3, k=1, out_q=(0.1, 0)))
    return n.graph(*outs)


@pytest.mark.parametrize("config", ["tiny", "narrow", "fpga"])
def test_resize_compiled_golden_equals_run_graph(config):
    from tests.test_program import CONFIGS, check_equal

    cfg = CONFIGS[config]
    model = check_equal(resize_net(), cfg, count=2)
    assert [layer.op for layer in model.layers].count("RESIZE") == 7


def test_resize_refusals():
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.graph import Op
    from tests.test_program import CONFIGS, Net

    n = Net((1, 4, 4, 3), seed=1)
    a = n.conv(n.input, 4, k=1, out_q=(0.05, 3))
    r = n.act((1, 8, 8, 4), 0.06, 3, "resized")
    n.ops.append(Op("RESIZE_BILINEAR", [a], [r], {}))
    with pytest.raises(ModelError, match="quantization differ"):
        compile_graph(n.graph(n.conv(r, 3, k=1, out_q=(0.1, 0))), CONFIGS["tiny"])
