"""The SRAM planner's pixel-packed (superpixel) activation layout: a narrow H x W x C tensor stored as the
channel-tiled H x W/ppw x ppw*C tensor. CONV/DWCONV on packed inputs or outputs become superpixel CONVs, the
elementwise operators run in their output's layout, other readers get GATHERed channel-tiled temporaries.

Each case compiles a small network with packing forced on every tensor that can take it, runs the ROM image in
the golden executor and compares with LiteRT's BUILTIN_REF kernels on the exported int8 model, element for
element; the packed tensors are checked to really be packed (so no case passes by not packing)."""

import numpy as np
import pytest

from stackcam.quant import compiler as comp
from stackcam.quant import golden
from stackcam.quant.compiler import compile_graph, superpixel_conv
from stackcam.quant.export import export_tflite
from stackcam.quant.graph import ModelError, QuantParams
from stackcam.quant.litert import run_reference
from stackcam.quant.ref import conv2d_acc, depthwise_conv2d_acc
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import PRESETS
from tests.dieutil import golden_equals_litert
from tests.test_program import Net

IMX = PRESETS["imx500"]


def _mul(n, a, b, out_q=(0.06, -2)):
    return n.op("MUL", [a, b], [n.act(n.shape(a), *out_q)], activation="NONE")


def _prelu(n, x, out_q=(0.05, 3)):
    c = n.shape(x)[3]
    alpha = n.const(n.rng.integers(-128, 128, (1, 1, c)), "int8", "alpha", QuantParams.per_tensor(0.004, -7))
    return n.op("PRELU", [x, alpha], [n.act(n.shape(x), *out_q)])


def _mean(n, x, out_q=(0.02, 1)):
    axes = n.const(np.array([1, 2]), "int32", "axes")
    return n.op("MEAN", [x, axes], [n.act((1, 1, 1, n.shape(x)[3]), *out_q)], keep_dims=True)


def _maxpool(n, x):
    return n.pool(x, "MAX_POOL_2D", (2, 2), 2)


def check_packed(graph, config=IMX, count=2, seed=0, pack=None):
    """Compile with `pack` (default: every candidate), golden == LiteRT BUILTIN_REF; returns the model."""
    pack = comp._pack_candidates(comp.expand_transpose_convs(graph), config.array_cols) if pack is None else pack
    model = compile_graph(graph, config, pack=pack)
    packed = [n for n, t in model.tensors.items() if t.get("ppw", 1) > 1 and "@" not in n]
    assert packed, "nothing was packed"
    assert model.notes and f"{len(packed)} narrow tensors stored pixel-packed" in model.notes[0]
    golden_equals_litert(graph, config, build_rom(model), count=count, seed=seed)
    return model


# (input channels, [(kind, out channels, kernel, stride)], width): channel counts 1, 2, 4, 8, 16, kernels 1 and
# 3, strides 1 and 2, W a multiple of every ppw on the way (64 // C).
CHAINS = [
    (3, [("conv", 16, 3, 2), ("dw", 0, 3, 1), ("conv", 8, 1, 1), ("dw", 0, 3, 2), ("conv", 4, 3, 1)], 128),
    (8, [("conv", 16, 1, 1), ("dw", 0, 3, 2), ("conv", 2, 3, 1), ("conv", 1, 3, 1)], 128),
    (16, [("dw", 0, 3, 1), ("conv", 1, 1, 1), ("conv", 4, 3, 2), ("dw", 0, 1, 1), ("conv", 16, 3, 1)], 128),
    (4, [("conv", 2, 3, 1), ("dw", 0, 3, 2), ("conv", 8, 3, 2), ("conv", 24, 1, 1), ("conv", 16, 3, 1)], 256),
    (24, [("conv", 16, (1, 3), 1), ("dw", 0, (3, 1), 2), ("conv", 8, 3, 1)], 64),
]


@pytest.mark.parametrize("case", range(len(CHAINS)))
def test_packed_conv_chains_equal_litert(case):
    cin, plan, w = CHAINS[case]
    n = Net((1, 5, w, cin), seed=case)
    x = n.input
    for i, (kind, cout, k, s) in enumerate(plan):
        x = n.conv(x, cout, k=k, stride=s, depthwise=kind == "dw", act="RELU" if i % 2 else "NONE",
                   out_q=(0.04 + 0.01 * i, i - 2))
    check_packed(n.graph(x), seed=case)


def test_packed_elementwise_block_equals_litert():
    """ADD (both packed and one converted), PRELU per channel, a LUT (HARD_SWISH), MUL by a 1x1xC broadcast
    (repeated along C), MEAN and MAXPOOL reading packed tensors (channel-tiled temporaries)."""
    n = Net((1, 4, 64, 8), seed=11)
    a = n.conv(n.input, 16, k=3, out_q=(0.05, -1))
    b = n.conv(a, 0, k=3, depthwise=True, out_q=(0.06, 2))
    c = n.add(a, b, out_q=(0.08, 1))
    d = _prelu(n, c)
    e = n.unary(d, "HARD_SWISH", (0.04, -20))
    s = n.conv(_mean(n, e), 16, k=1, out_q=(0.05, 0))
    s = n.unary(s, "LOGISTIC", (1 / 256, -128))
    f = _mul(n, e, s)
    g = n.conv(_maxpool(n, f), 4, k=1, out_q=(0.07, 3))
    h = n.add(f, a, out_q=(0.09, -4))
    model = check_packed(n.graph(g, h), seed=3)
    ops = [d.op for d in model.descriptors]
    assert "GATHER" in ops and "PRELU" in ops and "MUL" in ops and "LUT" in ops


def test_packed_transpose_conv_output_equals_litert():
    """The zero-inserting GATHER writes a packed tensor (columns split by their residue) and the CONV reads it:
    selfie segmentation's last layer, small."""
    n = Net((1, 3, 32, 16), seed=5)
    y = n.tconv(n.input, 1, k=2, stride=2, pads=(0, 0), out_q=(0.08, 5))
    check_packed(n.graph(y), seed=5)


def test_superpixel_conv_arithmetic_is_the_conv():
    """superpixel_conv's weights on the superpixel view give the original accumulators (numpy, many shapes)."""
    rng = np.random.default_rng(0)
    for pi, po, ci, co, k, s, pl, w, dw in [(1, 4, 5, 16, 3, 1, 1, 16, False), (4, 4, 16, 16, 3, 2, 0, 32, True),
                                            (4, 64, 16, 1, 2, 1, 1, 128, False), (2, 1, 32, 7, 3, 2, 1, 16, False),
                                            (2, 8, 32, 8, 1, 1, 0, 16, False), (16, 16, 4, 4, 3, 1, 1, 32, True)]:
        if dw:
            co = ci
            wts = rng.integers(-127, 128, (1, k, k, ci)).astype(np.int8)
        else:
            wts = rng.integers(-127, 128, (co, k, k, ci)).astype(np.int8)
        x = rng.integers(-128, 128, (1, 3, w, ci)).astype(np.int8)
        ow = (w + 2 * pl - k) // s + 1
        ow -= ow % po
        pads = (1, 1, pl, max(0, (ow - 1) * s + k - w - pl))
        geo = dict(stride=(1, s), dilation=(1, 1), pads=pads)
        acc = depthwise_conv2d_acc(x, wts, 1, input_offset=5, **geo) if dw else \
            conv2d_acc(x, wts, input_offset=5, **geo)
        acc = acc[:, :, :ow]
        zero = np.zeros(co, np.int64)
        ws, _, _, _, kw, sw, pls, prs = superpixel_conv(wts, zero, zero, zero, dw, pi, po, k, s, pl, w, ow)
        xs = x.reshape(1, 3, w // pi, pi * ci)
        got = conv2d_acc(xs, ws, input_offset=5, stride=(1, sw), dilation=(1, 1), pads=(1, 1, pls, prs))
        np.testing.assert_array_equal(got.reshape(acc.shape), acc)


def test_planner_leaves_fitting_models_alone_and_packs_what_does_not_fit():
    n = Net((1, 8, 128, 3), seed=2)
    a = n.conv(n.input, 8, k=3, out_q=(0.05, 0))
    b = n.conv(a, 0, k=3, depthwise=True, out_q=(0.05, 1))
    c = n.conv(b, 8, k=1, out_q=(0.05, 2))
    y = n.add(c, a)
    graph = n.graph(y)
    fits = compile_graph(graph, IMX)
    assert fits.notes == [] and not any("ppw" in t for t in fits.tensors.values())
    # 8 x 128 pixels of 8 channels: 1,024 words tiled, 128 packed; a (the stem's output, never packed), b and c
    # live at once need 192 KiB tiled, 80 KiB with b and c packed: 96 KiB of activation SRAM is enough.
    small = IMX.with_(name="small", sram_banks=44 + 24, sram_bank_bytes=4 * 1024, weight_banks=44)
    model = compile_graph(graph, small)
    assert model.notes and "pixel-packed" in model.notes[0]
    rom = build_rom(model)
    x = np.random.default_rng(0).integers(-128, 128, (1, 8, 128, 3)).astype(np.int8)
    np.testing.assert_array_equal(golden.execute(rom, small, x[0])[0], run_reference(export_tflite(graph), [x])[0])
    tiny_sram = IMX.with_(name="smaller", sram_banks=44 + 16, sram_bank_bytes=4 * 1024, weight_banks=44)
    with pytest.raises(ModelError) as e:
        compile_graph(graph, tiny_sram)
    assert "\n" not in str(e.value) and "does not fit" in str(e.value)


def test_packed_arith_net_equals_litert():
    """MUL, SUB and ADD with every broadcast (swapped operands, 1x1x1, 1x1xC repeated along C), MEAN and PRELU
    (tests/test_program.py's arithmetic net) with its 8-channel tensors packed 8 pixels to a word."""
    from tests.test_program import net_arith

    model = check_packed(net_arith(c=8, hw=(5, 16)))
    assert {d.op for d in model.descriptors} >= {"MUL", "MEAN", "PRELU", "ADD", "GATHER"}


@pytest.mark.parametrize("kind,mode", [("RESIZE_BILINEAR", {}), ("RESIZE_BILINEAR", {"half_pixel_centers": True}),
                                       ("RESIZE_BILINEAR", {"align_corners": True}),
                                       ("RESIZE_NEAREST_NEIGHBOR", {"half_pixel_centers": True})])
@pytest.mark.parametrize("packed_input", [False, True])
def test_packed_resize_equals_litert(kind, mode, packed_input, monkeypatch):
    """RESIZE into a packed output, from a packed or a channel-tiled input, in bands of output rows (a small
    band size forces several bands, some input rows read by two of them)."""
    monkeypatch.setattr(comp, "_RESIZE_BAND_WORDS", 40)
    n = Net((1, 6, 32, 3), seed=4)
    a = n.conv(n.input, 8, k=3, out_q=(0.05, -3))
    b = n.conv(a, 0, k=3, depthwise=True, out_q=(0.06, 2))          # packable (the stem's output is not)
    r = n.resize(b if packed_input else a, kind, (11, 64), **mode)
    y = n.conv(r, 4, k=3, out_q=(0.07, 1))
    graph = n.graph(y)
    pack = {r, y} | ({b} if packed_input else set())
    model = check_packed(graph, pack=pack)
    assert model.tensors[r]["ppw"] == 8 and model.tensors[y]["ppw"] == 16
    assert model.tensors[b].get("ppw") == (8 if packed_input else None)
    assert sum(d.op == "RESIZE" for d in model.descriptors) > 8


def test_compile_report_says_what_was_packed():
    from stackcam.quant.report import totals_text

    n = Net((1, 4, 64, 3), seed=8)
    a = n.conv(n.input, 8, k=3, out_q=(0.05, 0))
    y = n.conv(a, 1, k=3, out_q=(0.05, 1))
    model = compile_graph(n.graph(y), IMX, pack={y})
    lines = totals_text(model)
    assert sum("pixel-packed" in line for line in lines) == 2      # the planner's note, the die output's layout
    assert any(line.startswith("die output:") and "64 pixels per word" in line for line in lines)
    assert model.io["die_outputs"][0]["ppw"] == 64 and model.io["die_outputs"][0]["hwc"] == [4, 1, 64]


@pytest.mark.parametrize("member", ["holistic_landmark/hand_recrop", "selfie_segmentation/selfie_segmentation"])
def test_published_models_fit_imx500_packed_and_equal_builtin_ref(member, tmp_path):
    """Two mediapipe 0.10.14 models whose activations only fit imx500 packed (tools/models.py runs all 14)."""
    import zipfile

    from stackcam.cli.models import prepare_model
    from tests.mediapipe_wheel import mediapipe_wheel

    path = tmp_path / f"{member.split('/')[1]}.tflite"
    with zipfile.ZipFile(mediapipe_wheel()) as z:
        path.write_bytes(z.read(f"mediapipe/modules/{member}.tflite"))
    prepared = prepare_model(str(path), IMX, calib_photos=True)
    assert prepared.compiled.notes and "pixel-packed" in prepared.compiled.notes[0]
    exported = export_tflite(prepared.graph)
    shape = prepared.graph.tensors[prepared.graph.inputs[0]].shape
    x = np.random.default_rng(9).integers(-128, 128, shape).astype(np.int8)
    want = run_reference(exported, [x])
    got = golden.execute(prepared.rom, IMX, x[0])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert int(np.count_nonzero(np.asarray(g).reshape(w.shape) != w)) == 0
