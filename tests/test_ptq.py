"""quant.ptq and quant.calib: the TFLite int8 rules, calibration ranges against LiteRT's calibrator, and bit
identity of our quantized models between LiteRT BUILTIN_REF and the golden executor."""

import numpy as np
import pytest

from stackcam.quant.calib import PHOTOS, CalibrationError, calibration_set, prepare_image
from stackcam.quant.executor import run_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.graph import Graph, ModelError, Op, Tensor
from stackcam.quant.litert import run_reference
from stackcam.quant.ptq import (
    activation_params,
    collect_ranges,
    fold_dequantize,
    fuse_activations,
    litert_calibrated_model,
    quantize_bias,
    quantize_graph,
    quantize_weights,
)
from stackcam.quant.ref import quantize_float
from stackcam.quant.tflite import buffer_array, read_model
from stackcam.quant.zoo import mobilenet_v1

f32 = np.float32


@pytest.fixture(scope="module")
def small_mobilenet():
    g = mobilenet_v1(alpha=0.25, resolution=96, classes=2, seed=0)
    return g, calibration_set(g.tensor("input").shape)


def _int8_inputs(q, calib):
    s, z = q.tensor(q.inputs[0]).quant.scalar()
    return [quantize_float(x, s, z) for x in calib]


def _assert_litert_equals_executor(q, inputs):
    model = export_tflite(q)
    for x in inputs:
        ref = run_reference(model, [x])
        ours = run_graph(q, [x])
        for name, a, b in zip(q.outputs, ref, ours):
            assert a.dtype == np.int8 and b.dtype == np.int8
            np.testing.assert_array_equal(a, b, err_msg=f"output {name}")


# --- the TFLite rules ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lo, hi, scale, zp", [
    (-1.0, 1.0, f32(2.0) / f32(255.0), -1),         # zero point -128 + 127.5 rounds away from zero
    (0.0, 6.0, f32(6.0) / f32(255.0), -128),        # a RELU6 output
    (2.0, 5.0, f32(5.0) / f32(255.0), -128),        # the range is widened to include 0
    (-5.0, -2.0, f32(5.0) / f32(255.0), 127),
    (-0.5, 1.5, f32(2.0) / f32(255.0), -64),        # -128 + 63.75 = -64.25 -> -64
])
def test_activation_params_follow_tflite_nudging(lo, hi, scale, zp):
    q = activation_params(lo, hi)
    assert q.scale.dtype == np.float32 and q.scale[0] == scale
    assert q.zero_point[0] == zp


def test_activation_params_all_zero_range_keeps_arithmetic_defined():
    q = activation_params(0.0, 0.0)
    assert q.scale[0] > 0 and q.zero_point[0] == -128


def test_weights_symmetric_per_channel():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 3, 3, 4)).astype(np.float32)
    w[2] *= 10
    q, scales = quantize_weights(w, axis=0)
    assert q.dtype == np.int8 and q.min() >= -127
    np.testing.assert_array_equal(np.abs(q).reshape(5, -1).max(1), 127)
    np.testing.assert_array_equal(scales, (np.abs(w).reshape(5, -1).max(1) / f32(127)).astype(np.float32))
    # Depthwise filters 1HWO: the channel axis is 3.
    qd, sd = quantize_weights(w.transpose(3, 1, 2, 0)[:1], axis=3)
    assert sd.shape == (5,) and np.abs(qd).max() == 127


def test_weights_round_ties_away_from_zero():
    w = np.array([[127.0, 2.5, -2.5, 0.5, -0.5, 1.5]], np.float32)   # max 127 -> scale 1, products exact
    q, scales = quantize_weights(w, axis=0)
    assert scales[0] == 1.0
    np.testing.assert_array_equal(q[0], [127, 3, -3, 1, -1, 2])


def test_bias_at_input_times_weight_scale():
    b = np.array([0.1, -0.25, 3.0], np.float32)
    ws = np.array([0.01, 0.02, 0.005], np.float32)
    q, scales = quantize_bias(b, 0.0078125, ws)
    np.testing.assert_array_equal(scales, (f32(0.0078125) * ws).astype(np.float32))
    assert q.dtype == np.int32
    np.testing.assert_array_equal(q, np.round(b.astype(np.float64) / scales.astype(np.float64)).astype(np.int32))


def test_huge_bias_widens_the_weight_scale_instead_of_overflowing():
    # A bias that would need more than 2^30 at input_scale * max|w| / 127 (TFLite's AdjustWeightsForBiasScale).
    x = Tensor("x", (1, 1, 1, 2), "float32")
    w = Tensor("w", (1, 1, 1, 2), "float32", np.full((1, 1, 1, 2), 1e-6, np.float32))
    b = Tensor("b", (1,), "float32", np.array([100.0], np.float32))
    y = Tensor("y", (1, 1, 1, 1), "float32")
    g = Graph({t.name: t for t in (x, w, b, y)}, [Op("CONV_2D", ["x", "w", "b"], ["y"], dict(padding="VALID"))],
              ["x"], ["y"])
    q = quantize_graph(g, [np.ones((1, 1, 1, 2), np.float32)])
    assert abs(int(q.tensor("b").data[0])) <= (1 << 30)
    assert q.tensor("w").quant.scale[0] > f32(1e-6) / 127


# --- whole graphs ----------------------------------------------------------------------------------------------------

def test_quantized_graph_is_full_integer(small_mobilenet):
    g, calib = small_mobilenet
    q = quantize_graph(g, calib)
    assert q.is_quantized()
    assert [q.tensor(n).dtype for n in q.inputs + q.outputs] == ["int8", "int8"]
    assert not any(op.kind in ("QUANTIZE", "DEQUANTIZE") for op in q.ops)
    for op in q.ops:
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w, b = q.tensor(op.inputs[1]), q.tensor(op.inputs[2])
            assert w.dtype == "int8" and w.quant.per_channel and not w.quant.zero_point.any()
            assert w.quant.axis == (3 if op.kind == "DEPTHWISE_CONV_2D" else 0)
            assert b.dtype == "int32"
            in_s = q.tensor(op.inputs[0]).quant.scale[0]
            np.testing.assert_array_equal(b.quant.scale, (in_s * w.quant.scale).astype(np.float32))
        if op.kind in ("AVERAGE_POOL_2D", "RESHAPE"):
            qi, qo = q.tensor(op.inputs[0]).quant, q.tensor(op.outputs[0]).quant
            assert qi.scale[0] == qo.scale[0] and qi.zero_point[0] == qo.zero_point[0]
        if op.opts.get("activation") == "RELU6":
            s, z = q.tensor(op.outputs[0]).quant.scalar()
            assert z == -128 and s <= f32(6.0) / f32(255.0)


def test_ranges_and_weights_match_litert_calibrator(small_mobilenet):
    """Our calibration ranges and int8 weights against LiteRT's own calibrator and quantizer (no ADD or
    CONCATENATION in MobileNet, so the two quantizers must agree tensor for tensor)."""
    g, calib = small_mobilenet
    q = quantize_graph(g, calib)
    theirs = read_model(litert_calibrated_model(export_tflite(g), calib))
    sg = theirs.subgraphs[0]
    compared = 0
    for i, t in enumerate(sg.tensors):
        name = t.name.decode()
        if name not in q.tensors:
            continue
        ours = q.tensor(name)
        if ours.is_const and ours.dtype == "int8":
            np.testing.assert_array_equal(ours.data, buffer_array(theirs, i), err_msg=name)
            np.testing.assert_array_equal(ours.quant.scale, np.asarray(t.quantization.scale, np.float32))
        elif not ours.is_const:
            # Same min/max up to float kernels' summation order: scales within a few float32 ulps.
            np.testing.assert_allclose(ours.quant.scale[0], t.quantization.scale[0], rtol=1e-6, err_msg=name)
            assert ours.quant.zero_point[0] == t.quantization.zeroPoint[0], name
        compared += 1
    assert compared >= 2 * 27 + 2


@pytest.mark.parametrize("options", [dict(head="conv"), dict(head="fc"), dict(head="conv", softmax=True)])
@pytest.mark.parametrize("per_channel", [True, False])
def test_mobilenet_litert_equals_executor(small_mobilenet, options, per_channel):
    _, calib = small_mobilenet
    g = mobilenet_v1(alpha=0.25, resolution=96, classes=10, seed=3, **options)
    q = quantize_graph(g, calib, per_channel=per_channel)
    _assert_litert_equals_executor(q, _int8_inputs(q, calib[:3]))


def test_int8_mobilenet_tracks_the_float_model(small_mobilenet):
    g, calib = small_mobilenet
    q = quantize_graph(g, calib)
    so, zo = q.tensor(q.outputs[0]).quant.scalar()
    float_model = export_tflite(g)
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=float_model)
    it.allocate_tensors()
    for x, xi in zip(calib, _int8_inputs(q, calib)):
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        want = it.get_tensor(it.get_output_details()[0]["index"])
        got = (run_graph(q, [xi])[0].astype(np.float32) - zo) * so
        assert np.abs(got - want).max() < 0.1 * np.abs(want).max() + 2 * so


def _concat_graph():
    """input -> two convs (different ranges) -> RESHAPE -> CONCATENATION, plus an ADD and a MAX_POOL branch."""
    rng = np.random.default_rng(7)
    t = {}

    def tensor(name, shape, data=None):
        t[name] = Tensor(name, shape, "float32", None if data is None else np.asarray(data, np.float32))
        return name

    tensor("x", (1, 8, 8, 3))
    ops = [
        Op("CONV_2D", ["x", tensor("w1", (4, 3, 3, 3), rng.normal(size=(4, 3, 3, 3))), tensor("b1", (4,), [0.1] * 4)],
           [tensor("c1", (1, 4, 4, 4))], dict(stride=(2, 2), padding="SAME")),
        Op("CONV_2D", ["x", tensor("w2", (2, 1, 1, 3), 10 * rng.normal(size=(2, 1, 1, 3))), ""],
           [tensor("c2", (1, 8, 8, 2))], dict(stride=(1, 1), padding="VALID")),
        Op("MAX_POOL_2D", ["c2"], [tensor("p2", (1, 4, 4, 2))], dict(filter=(2, 2), stride=(2, 2), padding="VALID")),
        Op("RESHAPE", ["c1"], [tensor("r1", (1, 64))], dict(new_shape=(1, 64))),
        Op("RESHAPE", ["p2"], [tensor("r2", (1, 32))], dict(new_shape=(1, 32))),
        Op("CONCATENATION", ["r1", "r2"], [tensor("cat", (1, 96))], dict(axis=1)),
        Op("ADD", ["c1", "c1"], [tensor("a", (1, 4, 4, 4))], dict(activation="NONE")),
        Op("RELU", ["a"], [tensor("relu", (1, 4, 4, 4))], {}),
    ]
    return Graph(t, ops, ["x"], ["cat", "relu"])


def test_concatenation_inputs_share_the_output_quantization():
    g = _concat_graph()
    calib = [np.random.default_rng(i).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32) for i in range(4)]
    ranges = collect_ranges(g, calib)
    assert ranges["c2"][1] - ranges["c2"][0] > 1.5 * (ranges["c1"][1] - ranges["c1"][0])
    q = quantize_graph(g, calib)
    qc = q.tensor("cat").quant
    for name in ("r1", "r2", "c1", "p2", "c2"):
        assert q.tensor(name).quant.scalar() == qc.scalar(), name
    # RELU fused into the ADD (its only consumer), and LiteRT accepts the concatenation (it refuses mixed scales).
    assert [op.kind for op in q.ops].count("RELU") == 0
    assert q.ops[-1].kind == "ADD" and q.ops[-1].opts["activation"] == "RELU" and q.ops[-1].outputs == ["relu"]
    _assert_litert_equals_executor(q, _int8_inputs(q, calib))


def test_concatenation_of_a_relu6_output_and_a_signed_one():
    """The RELU6 conv's output takes the concatenation's signed range; its clamp still stops at 0."""
    rng = np.random.default_rng(2)
    t = {n: Tensor(n, s, "float32") for n, s in (("x", (1, 4, 4, 2)), ("c1", (1, 4, 4, 3)), ("c2", (1, 4, 4, 2)),
                                                 ("cat", (1, 4, 4, 5)))}
    for n, s in (("w1", (3, 1, 1, 2)), ("w2", (2, 1, 1, 2)), ("b1", (3,)), ("b2", (2,))):
        t[n] = Tensor(n, s, "float32", rng.normal(size=s).astype(np.float32))
    g = Graph(t, [Op("CONV_2D", ["x", "w1", "b1"], ["c1"], dict(padding="VALID", activation="RELU6")),
                  Op("CONV_2D", ["x", "w2", "b2"], ["c2"], dict(padding="VALID")),
                  Op("CONCATENATION", ["c1", "c2"], ["cat"], dict(axis=3))], ["x"], ["cat"])
    calib = [rng.uniform(-1, 1, (1, 4, 4, 2)).astype(np.float32) for _ in range(3)]
    q = quantize_graph(g, calib)
    s, z = q.tensor("cat").quant.scalar()
    assert z > -128 and q.tensor("c1").quant.scalar() == (s, z)
    assert any("CONCATENATION" in note for note in q.notes)
    _assert_litert_equals_executor(q, _int8_inputs(q, calib))
    assert run_graph(q, _int8_inputs(q, calib[:1]))[0][..., :3].min() >= z


def test_fuse_activations_is_exact_in_float():
    g = _concat_graph()
    fused = fuse_activations(g)
    assert len(fused.ops) == len(g.ops) - 1 and "a" not in fused.tensors
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
    for a, b in zip(run_graph(g, [x]), run_graph(fused, [x])):
        np.testing.assert_array_equal(a, b)


def test_fold_dequantize_of_float16_weights():
    g = _concat_graph()
    w16 = g.tensors.pop("w1").data.astype(np.float16)
    g.tensors["w1_f16"] = Tensor("w1_f16", w16.shape, "float16", w16)
    g.tensors["w1"] = Tensor("w1", w16.shape, "float32")
    g.ops.insert(0, Op("DEQUANTIZE", ["w1_f16"], ["w1"]))
    folded = fold_dequantize(g)
    assert all(op.kind != "DEQUANTIZE" for op in folded.ops) and "w1_f16" not in folded.tensors
    np.testing.assert_array_equal(folded.tensor("w1").data, w16.astype(np.float32))
    q = quantize_graph(g, [np.zeros((1, 8, 8, 3), np.float32)])
    assert q.tensor("w1").dtype == "int8"


# --- errors ----------------------------------------------------------------------------------------------------------

def test_refuses_missing_calibration_data(small_mobilenet):
    g, _ = small_mobilenet
    with pytest.raises(ModelError, match="needs calibration data"):
        quantize_graph(g, [])


def test_refuses_wrong_calibration_shape(small_mobilenet):
    g, _ = small_mobilenet
    with pytest.raises(ModelError, match=r"calibration input for 'input' has shape \[1, 64, 64, 3\]"):
        quantize_graph(g, [np.zeros((1, 64, 64, 3), np.float32)])


def test_refuses_an_already_quantized_model(small_mobilenet):
    g, calib = small_mobilenet
    q = quantize_graph(g, calib)
    with pytest.raises(ModelError, match="needs a float32 model"):
        quantize_graph(q, calib)


# --- calibration images ----------------------------------------------------------------------------------------------

def test_photo_calibration_set_is_normalized():
    calib = calibration_set((1, 32, 48, 3))
    assert len(calib) == len(PHOTOS)
    for x in calib:
        assert x.shape == (1, 32, 48, 3) and x.dtype == np.float32
        assert -1.0 <= x.min() and x.max() <= 1.0
    gray = calibration_set((1, 16, 16, 1), names=("camera", "astronaut"))
    assert gray[1].shape == (1, 16, 16, 1)
    assert prepare_image(np.full((4, 4), 255, np.uint8), 2, 2).max() == 1.0
    assert prepare_image(np.zeros((4, 4, 3), np.uint8), 2, 2, normalize="[0,1]").min() == 0.0


def test_directory_calibration(tmp_path):
    import skimage.data
    from skimage.io import imsave

    imsave(tmp_path / "b_gray.png", skimage.data.camera()[::8, ::8])
    imsave(tmp_path / "a_rgba.png", np.dstack([skimage.data.chelsea()[::4, ::4],
                                               np.full((75, 113), 255, np.uint8)]))
    (tmp_path / "notes.txt").write_text("not an image, and not an image suffix: ignored")
    calib = calibration_set((1, 20, 20, 3), source=tmp_path)
    assert len(calib) == 2 and all(x.shape == (1, 20, 20, 3) for x in calib)


def test_directory_calibration_errors(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        calibration_set((1, 8, 8, 3), source=tmp_path / "missing")
    with pytest.raises(CalibrationError, match="holds no image files"):
        calibration_set((1, 8, 8, 3), source=tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(CalibrationError, match="cannot read calibration image '.*broken.png'") as info:
        calibration_set((1, 8, 8, 3), source=tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(CalibrationError, match="unknown calibration photo"):
        calibration_set((1, 8, 8, 3), names=("moon_landing",))
