"""quant.ref.conv2d_int8 against LiteRT's BUILTIN_REF CONV_2D, element for element, on .tflite from quant.tflite."""

import dataclasses
import sys

import numpy as np
import pytest

from stackcam.quant.arith import activation_range, quantize_multiplier
from stackcam.quant.layer import quantize_conv, random_conv_layer
from stackcam.quant.litert import run_reference
from stackcam.quant.ref import conv2d_accumulators, conv2d_int8
from stackcam.quant.tflite import (
    FILE_IDENTIFIER,
    SCHEMA_VERSION,
    TFLiteBuilder,
    buffer_array,
    conv2d_options,
    conv_layer_to_tflite,
    read_model,
    schema,
)

# Totals over the module, printed at the end: how much was compared, and how many outputs would have come out
# differently under TFLite's other build flavour (TFLITE_SINGLE_ROUNDING), i.e. how much the suite discriminates.
TALLY = {"models": 0, "outputs": 0, "mismatches": 0, "single_rounding_differs": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_tally(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:                    # e.g. an xdist worker: nothing to print to
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(
            f"\nquant vs LiteRT BUILTIN_REF: {TALLY['models']} CONV_2D models, {TALLY['outputs']} int8 outputs, "
            f"{TALLY['mismatches']} mismatches; {TALLY['single_rounding_differs']} outputs would differ under "
            f"single rounding")


def single_rounding(acc, multiplier, shift):
    """TFLite's TFLITE_SINGLE_ROUNDING MultiplyByQuantizedMultiplier: one rounding, ties toward +infinity."""
    total = 31 - np.asarray(shift, np.int64)
    prod = acc.astype(object) * np.asarray(multiplier, np.int64).astype(object)
    return ((prod + (1 << (total - 1)).astype(object)) >> total.astype(object)).astype(np.int64)


def file_requant_params(model):
    """Per-channel (multiplier, shift) and clamp recomputed from the float32 scales stored in the file,
    the way LiteRT's PopulateConvolutionQuantizationParams and CalculateActivationRangeQuantized do."""
    g = model.subgraphs[0]
    op = g.operators[0]
    x, f, y = (g.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    in_s, out_s = float(x.quantization.scale[0]), float(y.quantization.scale[0])
    mults, shifts = zip(*(quantize_multiplier(in_s * float(ws) / out_s) for ws in f.quantization.scale))
    names = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    act = activation_range(names[op.builtinOptions.fusedActivationFunction], out_s,
                           int(y.quantization.zeroPoint[0]))
    return np.array(mults), np.array(shifts), act


def compare(layer, x):
    """Run `layer` on int8 HWC `x` in LiteRT BUILTIN_REF and in quant.ref; assert every output is equal."""
    model_bytes = conv_layer_to_tflite(layer, x.shape[:2])
    mults, shifts, act = file_requant_params(read_model(model_bytes))
    # quantize_conv must already hold what LiteRT derives from the file, or the comparison proves nothing.
    assert mults.tolist() == layer.multiplier.tolist() and shifts.tolist() == layer.shift.tolist()
    assert act == (layer.act_min, layer.act_max)

    got = run_reference(model_bytes, [x[None]])[0][0]
    want = conv2d_int8(x, layer)
    assert got.dtype == np.int8 and got.shape == want.shape
    bad = np.argwhere(got != want)
    acc = conv2d_accumulators(x, layer)
    alt = np.clip(single_rounding(acc, layer.multiplier, layer.shift) + layer.output_zero_point,
                  layer.act_min, layer.act_max)
    TALLY["models"] += 1
    TALLY["outputs"] += want.size
    TALLY["mismatches"] += len(bad)
    TALLY["single_rounding_differs"] += int((alt != want).sum())
    assert len(bad) == 0, (f"{len(bad)}/{want.size} outputs differ from LiteRT BUILTIN_REF; first at (y, x, c) = "
                           f"{tuple(bad[0])}: LiteRT {got[tuple(bad[0])]}, quant.ref {want[tuple(bad[0])]}")
    return got


def random_input(rng, h, w, c):
    return rng.integers(-128, 128, size=(h, w, c), dtype=np.int8)


# The die's first-light layer: 3x3 stride 2 SAME with ReLU6 on the RGB input, at both input quantizations the
# ISP can produce, on even and odd sizes (odd sizes put SAME's extra padding row/column at the bottom/right).
@pytest.mark.parametrize("hw", [(16, 16), (17, 15), (33, 31)])
@pytest.mark.parametrize("input_quant", [(1 / 128, 0), (2 / 255, -1)], ids=["s1_128_zp0", "s2_255_zpm1"])
@pytest.mark.parametrize("cout", [8, 16])
def test_first_light_layer(cout, input_quant, hw):
    rng = np.random.default_rng([cout, *hw, input_quant[1] + 1])
    layer = random_conv_layer(rng, 3, cout, kernel=(3, 3), stride=(2, 2), padding="SAME", activation="RELU6",
                              input_scale=input_quant[0], input_zero_point=input_quant[1])
    compare(layer, random_input(rng, *hw, 3))


# Full-size first layers of the reference workloads: MobileNet V1 1.0 at 224x224 (32 channels) and the
# person-detection MobileNet V1 0.25 at 96x96 (8 channels), on a smooth ramp with noise instead of pure noise.
@pytest.mark.parametrize("size, cout", [(224, 32), (96, 8)])
def test_first_light_full_size(size, cout):
    rng = np.random.default_rng(size)
    layer = random_conv_layer(rng, 3, cout, input_scale=2 / 255, input_zero_point=-1)
    ramp = np.add.outer(np.arange(size), np.arange(size))[:, :, None] * (255 / (2 * size)) - 128
    x = np.clip(ramp + rng.normal(0, 20, size=(size, size, 3)), -128, 127).astype(np.int8)
    compare(layer, x)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin, cout", [(8, 8), (16, 24), (3, 32)])
def test_pointwise(cin, cout, stride, padding):
    rng = np.random.default_rng([cin, cout, stride, len(padding)])
    layer = random_conv_layer(rng, cin, cout, kernel=(1, 1), stride=(stride, stride), padding=padding,
                              activation="RELU6", input_scale=6 / 255, input_zero_point=-128)
    compare(layer, random_input(rng, 15, 17, cin))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [(5, 5), (3, 3), (1, 3), (5, 2)])
def test_kernels_strides_padding(kernel, stride, padding):
    rng = np.random.default_rng([*kernel, stride, len(padding)])
    layer = random_conv_layer(rng, 4, 8, kernel=kernel, stride=(stride, stride), padding=padding,
                              activation="NONE", input_scale=0.02, input_zero_point=5)
    compare(layer, random_input(rng, 17, 15, 4))


def test_asymmetric_stride():
    rng = np.random.default_rng(11)
    layer = random_conv_layer(rng, 3, 8, kernel=(3, 3), stride=(1, 2), padding="SAME", activation="RELU")
    compare(layer, random_input(rng, 13, 18, 3))


@pytest.mark.parametrize("output_quant", [(4 / 255, 0), (0.05, -128), (0.01, 37), (0.2, 127)])
@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_activations(activation, output_quant):
    rng = np.random.default_rng([len(activation), output_quant[1] + 128])
    layer = random_conv_layer(rng, 6, 12, kernel=(3, 3), stride=(1, 1), padding="SAME", activation=activation,
                              input_scale=0.03, input_zero_point=-7, output_scale=output_quant[0],
                              output_zero_point=output_quant[1])
    compare(layer, random_input(rng, 12, 11, 6))


def test_random_layers():
    """Seeded random layers over kernels, strides, paddings, activations, zero points and scales wide enough
    to reach both the left-shift (multiplier > 1) and deep right-shift paths of the requantization."""
    rng = np.random.default_rng(2024)
    shifts = set()
    for _ in range(200):
        k = (int(rng.choice([1, 3, 5])), int(rng.choice([1, 3, 5])))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        padding = str(rng.choice(["SAME", "VALID"]))
        activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
        cin, cout = (int(v) for v in rng.integers(1, 20, size=2))
        layer = random_conv_layer(rng, cin, cout, kernel=k, stride=stride, padding=padding, activation=activation,
                                  input_scale=float(10 ** rng.uniform(-3, -1)),
                                  input_zero_point=int(rng.integers(-128, 128)),
                                  output_scale=float(10 ** rng.uniform(-5, 0)),
                                  output_zero_point=int(rng.integers(-128, 128)))
        shifts.update(layer.shift.tolist())
        h, w = (int(v) for v in rng.integers(max(k), 26, size=2))
        compare(layer, random_input(rng, h, w, cin))
    assert max(shifts) > 0 and min(shifts) < -10, f"shift coverage {sorted(shifts)}"


EXTREMES = {
    "all_min": lambda h, w, c: np.full((h, w, c), -128, np.int8),
    "all_max": lambda h, w, c: np.full((h, w, c), 127, np.int8),
    "checker": lambda h, w, c: np.where((np.indices((h, w, c)).sum(axis=0) % 2) == 0, 127, -128).astype(np.int8),
}


@pytest.mark.parametrize("fill", list(EXTREMES))
@pytest.mark.parametrize("case", ["first_light_s1_128", "first_light_s2_255", "5x5_valid", "1x1_wide"])
def test_extreme_inputs(case, fill):
    rng = np.random.default_rng(len(case) * 7 + len(fill))
    if case == "first_light_s1_128":
        layer = random_conv_layer(rng, 3, 16, input_scale=1 / 128, input_zero_point=0)
    elif case == "first_light_s2_255":
        layer = random_conv_layer(rng, 3, 16, input_scale=2 / 255, input_zero_point=-1)
    elif case == "5x5_valid":
        layer = random_conv_layer(rng, 8, 8, kernel=(5, 5), stride=(1, 1), padding="VALID", activation="NONE",
                                  input_zero_point=-128)
    else:
        layer = random_conv_layer(rng, 64, 16, kernel=(1, 1), stride=(1, 1), activation="RELU",
                                  input_zero_point=100, output_scale=0.5, output_zero_point=0)
    kh, kw = layer.kernel
    compare(layer, EXTREMES[fill](9 + kh, 10 + kw, layer.in_channels))


@pytest.mark.parametrize("sign", [1, -1])
def test_largest_accumulators(sign):
    """Weights all +-127 against -128/127 inputs: |acc| up to 5*5*64*127*128 + bias (about 2^24.6), with an
    output scale that keeps the outputs off the clamps."""
    rng = np.random.default_rng(5)
    layer = random_conv_layer(rng, 64, 8, kernel=(5, 5), stride=(1, 1), padding="SAME", activation="NONE",
                              input_scale=1 / 128, input_zero_point=0, output_scale=40.0, output_zero_point=0)
    weights = np.where(rng.random(layer.weights.shape) < 0.5, -127, 127).astype(np.int8)
    weights[:4] = 127 * sign
    layer = dataclasses.replace(layer, weights=weights)
    # Left columns all -128, right all 127: interior windows of the uniform-weight channels see one sign only.
    x = np.full((7, 12, 64), -128, np.int8)
    x[:, 6:] = 127
    got = compare(layer, x)
    assert np.abs(conv2d_accumulators(x, layer)).max() > 20_000_000
    assert len(np.unique(got)) > 2


def test_rounding_ties_with_power_of_two_scales():
    """Scales whose ratios are 1, 1/2, 1/4, 1/8, 3/4 and 3/8 make SaturatingRoundingDoublingHighMul hit exact
    ties. LiteRT must agree with gemmlowp's rules (SRDHM ties toward +infinity, then RoundingDivideByPOT ties
    away from zero, two roundings); the test also checks that other plausible rules would have failed."""
    ratios = np.array([1.0, 0.5, 0.25, 0.125, 0.75, 0.375], np.float32)
    w = (ratios * 127 / 128)[:, None, None, None]            # per-channel weight scale ratio / 128, exact
    layer = quantize_conv(w, None, 2 ** -7, 0, 2 ** -14, 0, stride=(1, 1), padding="VALID")
    assert layer.multiplier.tolist() == [1 << 30] * 4 + [3 << 29] * 2
    assert layer.shift.tolist() == [1, 0, -1, -2, 0, -1]
    # Unit weights make every accumulator x + bias; the scales (all the multiplier depends on) stay in the file.
    layer = dataclasses.replace(layer, weights=np.ones((6, 1, 1, 1), np.int8),
                                bias=np.array([0, 1, -2, 3, -1, 2], np.int32))
    x = np.arange(-128, 128, dtype=np.int8).reshape(16, 16, 1)
    got = compare(layer, x)

    acc = conv2d_accumulators(x, layer)
    exact = acc * ratios.astype(np.float64)
    away = np.clip(np.sign(exact) * np.floor(np.abs(exact) + 0.5), -128, 127)
    assert (got != single_rounding(acc, layer.multiplier, layer.shift).clip(-128, 127)).sum() > 0
    assert (got != away).sum() > 0                             # one rounding, ties away from zero
    # A SRDHM with ties away from zero (the old docstring) would send odd negative accumulators at 1/2 down.
    half = got[..., 1].ravel()
    acc_half = acc[..., 1].ravel()
    assert half[acc_half == -1][0] == 0 and half[acc_half == -3][0] == -1 and half[acc_half == 3][0] == 2
    # Double rounding: 3/8 of 3 = 0.375 comes out as 1 (1.5 -> 2, then 2/4 = 0.5 -> 1), but -3 gives 0.
    eighth = got[..., 3].ravel()
    acc_eighth = acc[..., 3].ravel()
    assert eighth[acc_eighth == 3][0] == 1 and eighth[acc_eighth == -3][0] == 0


@pytest.mark.parametrize("activation, output_scale", [("RELU6", 2.4), ("RELU_N1_TO_1", 0.4)])
def test_clamp_computed_in_float32(activation, output_scale):
    """6 / 2.4f and 1 / 0.4f are just below a half in double but exactly 2.5 in float32, where LiteRT divides."""
    layer = quantize_conv(np.ones((1, 1, 1, 1), np.float32), None, 1.0, 0, output_scale, 0, padding="VALID",
                          activation=activation)
    assert layer.act_max == 3
    x = np.arange(-128, 128, dtype=np.int8).reshape(16, 16, 1)
    got = compare(layer, x)
    assert got.max() == 3


def test_model_structure():
    rng = np.random.default_rng(3)
    layer = random_conv_layer(rng, 3, 8, input_scale=2 / 255, input_zero_point=-1)
    data = conv_layer_to_tflite(layer, (17, 15))
    assert data[4:8] == FILE_IDENTIFIER
    model = read_model(data)
    assert model.version == SCHEMA_VERSION
    (code,) = model.operatorCodes
    assert code.builtinCode == schema.BuiltinOperator.CONV_2D and code.version == 3
    g = model.subgraphs[0]
    op = g.operators[0]
    assert op.builtinOptionsType == schema.BuiltinOptions.Conv2DOptions
    assert (op.builtinOptions.strideH, op.builtinOptions.strideW) == (2, 2)
    assert op.builtinOptions.padding == schema.Padding.SAME
    assert op.builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU6
    x, f, b = (g.tensors[i] for i in op.inputs)
    y = g.tensors[op.outputs[0]]
    assert list(g.inputs) == [op.inputs[0]] and list(g.outputs) == [op.outputs[0]]
    assert [t.type for t in (x, f, b, y)] == [schema.TensorType.INT8, schema.TensorType.INT8,
                                             schema.TensorType.INT32, schema.TensorType.INT8]
    assert x.shape.tolist() == [1, 17, 15, 3] and y.shape.tolist() == [1, 9, 8, 8]
    assert np.array_equal(buffer_array(model, op.inputs[1]), layer.weights)
    assert np.array_equal(buffer_array(model, op.inputs[2]), layer.bias)
    assert buffer_array(model, op.inputs[0]) is None
    assert f.quantization.quantizedDimension == 0 and not f.quantization.zeroPoint.any()
    assert f.quantization.scale.tolist() == layer.weight_scales.tolist()
    assert b.quantization.scale.tolist() == (np.float32(layer.input_scale) * layer.weight_scales).tolist()
    assert x.quantization.zeroPoint.tolist() == [-1] and y.quantization.zeroPoint.tolist() == [-128]
    # Constant data aligned to 16 bytes, as the TFLite converter writes it.
    assert data.find(layer.bias.astype("<i4").tobytes()) % 16 == 0


def test_read_model_rejects_other_data():
    with pytest.raises(ValueError, match="TFL3"):
        read_model(b"\x10\x00\x00\x00ABCD" + bytes(16))


def test_run_reference_rejects_wrong_input():
    layer = random_conv_layer(np.random.default_rng(0), 3, 8)
    data = conv_layer_to_tflite(layer, (8, 8))
    with pytest.raises(ValueError, match="int8"):
        run_reference(data, [np.zeros((1, 8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="1 inputs"):
        run_reference(data, [])


def test_missing_litert_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        run_reference(b"", [])


def test_builder_chains_operators():
    """The builder wires a graph, not just one op: CONV_2D into MAX_POOL_2D 2x2 through an intermediate tensor."""
    rng = np.random.default_rng(9)
    layer = random_conv_layer(rng, 3, 8, input_scale=1 / 128)
    b = TFLiteBuilder()
    x = b.add_input("input", (1, 16, 16, 3), np.int8, scale=layer.input_scale, zero_point=layer.input_zero_point)
    f = b.add_tensor("filter", layer.weights.shape, np.int8, data=layer.weights, scale=layer.weight_scales,
                     zero_point=np.zeros(8, np.int64))
    bias = b.add_tensor("bias", (8,), np.int32, data=layer.bias,
                        scale=np.float32(layer.input_scale) * layer.weight_scales)
    q = dict(scale=layer.output_scale, zero_point=layer.output_zero_point)
    y = b.add_tensor("conv", (1, 8, 8, 8), np.int8, **q)
    z = b.add_tensor("pool", (1, 4, 4, 8), np.int8, **q)
    b.add_operator(schema.BuiltinOperator.CONV_2D, [x, f, bias], [y], conv2d_options((2, 2), "SAME", "RELU6"))
    b.add_operator(schema.BuiltinOperator.MAX_POOL_2D, [y], [z], schema.Pool2DOptionsT(
        padding=schema.Padding.VALID, strideW=2, strideH=2, filterWidth=2, filterHeight=2))
    b.mark_output(z)
    inp = random_input(rng, 16, 16, 3)
    got = run_reference(b.build(), [inp[None]])[0][0]
    want = conv2d_int8(inp, layer).reshape(4, 2, 4, 2, 8).max(axis=(1, 3))
    assert np.array_equal(got, want)
