"""FULLY_CONNECTED on the die: FCRequantUnit (LiteRT's reference float64 rescale in integers) against
quant.ref.requantize_acc_double in amaranth.sim, element for element."""

import math
from fractions import Fraction

import numpy as np
import pytest

from stackcam.quant.arith import INT32_MAX, INT32_MIN
from stackcam.rtl.requant_fc import FCRequantUnit
from tests.simutil import run_sim


def _bits(x):
    return int(np.asarray(x, "<f8").view("<u8"))


def fc_cases(rng, n):
    """(acc, bias, scale, zp, act_min, act_max), each [n]: random, exact ties, extremes, odd scales."""
    acc = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    bias = rng.integers(-(1 << 20), 1 << 20, n)
    scale = np.exp(rng.uniform(np.log(1e-11), np.log(1e-2), n))       # real FC scales: 1e-6 .. 1e-3
    zp = rng.integers(-128, 128, n)
    amin = rng.integers(-128, 0, n)
    amax = rng.integers(0, 128, n)
    amin[: n // 4], amax[: n // 4] = -128, 127
    k = 0

    def block(size):
        nonlocal k
        s = slice(k, k + size)
        k += size
        return s

    # Accumulators of a real FC layer: v within int8 reach.
    s = block(n // 8)
    scale[s] = np.exp(rng.uniform(np.log(1e-6), np.log(1e-3), s.stop - s.start))
    acc[s] = (rng.uniform(-300, 300, s.stop - s.start) / scale[s]).astype(np.int64)
    # Exact ties: v = m + 1/2 with a power-of-two scale, and odd multiples of 1/2 by 2^-1 .. 2^-20.
    s = block(n // 8)
    e = rng.integers(1, 21, s.stop - s.start)
    half = rng.integers(-200, 200, s.stop - s.start) * 2 + 1              # odd
    acc[s], bias[s], scale[s] = half << (e - 1), 0, 2.0 ** -e.astype(np.float64)
    # Double-rounding ties: |a| * M just below (or above) a half by less than the 53-bit rounding step, so the
    # double product is exactly m + 1/2 (and LiteRT rounds away) though the exact product is not.
    s = block(n // 8)
    a = rng.integers(1 << 20, 1 << 31, s.stop - s.start) | 1
    acc[s], bias[s], scale[s] = a * rng.choice([-1, 1], s.stop - s.start), 0, (rng.integers(0, 120, a.size) + 0.5) / a
    # Products just below 1/2 whose double is 1/2 (rounds to 1): the significand's carry out of 53 bits.
    s = block(8)
    found = []
    while len(found) < 8:
        a = int(rng.integers(3, 1 << 31)) | 1
        for sc in (0.5 / a, np.nextafter(0.5 / a, 0.0)):
            if a * sc == 0.5 and Fraction(a) * Fraction(sc) < Fraction(1, 2):
                found.append((a * (-1) ** len(found), sc))
                break
    acc[s], bias[s], scale[s] = [a for a, _ in found], 0, [sc for _, sc in found]
    # Extremes of the accumulator.
    s = block(16)
    acc[s] = [INT32_MIN, INT32_MAX, INT32_MIN + 1, -1, 1, 0, INT32_MIN, INT32_MAX] * 2
    bias[s] = 0
    bias[s.start + 8: s.stop] = [-1, 1, 0, 0, 0, 0, INT32_MAX, INT32_MIN]     # bias wraps the int32 sum
    scale[s] = np.exp(rng.uniform(np.log(1e-12), np.log(1e-6), 16))
    # Scales: zero, subnormal, smallest normal, large, huge, infinite, negative; 2^-n boundaries.
    special = [0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 0.25, 0.5, 1.0, 3.0, 127.5, 1e6, 1e300,
               1.7976931348623157e308, np.inf, -np.inf, -1e-4, -0.5, 2.0 ** -31, 2.0 ** -32, 2.0 ** -41,
               2.0 ** -42, 2.0 ** -43, 2.0 ** -52, 2.0 ** -53, 2.0 ** -54, 1.0 - 2.0 ** -53]
    s = block(len(special) * 4)
    scale[s] = np.repeat(special, 4)
    acc[s] = np.tile([0, 1, -3, INT32_MIN], len(special))
    acc[s][np.repeat(np.isinf(special), 4) & (acc[s] == 0)] = 7                  # 0 * inf is NaN: undefined
    bias[s] = 0
    # Small accumulators on 2^-k scales: every rounding position of stage 5.
    s = block(n // 8)
    acc[s] = rng.integers(-5000, 5000, s.stop - s.start)
    scale[s] = 2.0 ** -rng.integers(0, 14, s.stop - s.start) * rng.choice([1.0, 1.5, 0.75], s.stop - s.start)
    return acc, bias, scale, zp, amin, amax


@pytest.mark.parametrize("deep", [False, True], ids=["5 stages", "deep: 9 stages"])
def test_fc_requant_unit_matches_ref(deep):
    lanes = 3
    rng = np.random.default_rng(11)
    n = 600
    acc, bias, scale, zp, amin, amax = (v.reshape(-1, lanes) for v in fc_cases(rng, n * lanes))
    with np.errstate(invalid="ignore", over="ignore"):
        expect = FCRequantUnit.model(acc, bias, scale, zp, amin, amax)
    dut = FCRequantUnit(lanes, tag_width=10, deep=deep)
    assert dut.latency == (9 if deep else 5)
    got = {}

    async def tb(ctx):
        for i in range(n + dut.latency + 1):
            if i < n:
                ctx.set(dut.valid, 1)
                ctx.set(dut.tag, i)
                ctx.set(dut.acc, [int(v) for v in acc[i]])
                ctx.set(dut.params, [{"bias": int(bias[i, k]), "scale": _bits(scale[i, k]),
                                      "zero_point": int(zp[i, k]), "act_min": int(amin[i, k]),
                                      "act_max": int(amax[i, k])} for k in range(lanes)])
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            if ctx.get(dut.out_valid):
                assert ctx.get(dut.out_tag) == i + 1 - dut.latency
                got[ctx.get(dut.out_tag)] = [int(v) for v in ctx.get(dut.out)]

    run_sim(dut, tb, deadline_cycles=n + 50)
    assert sorted(got) == list(range(n))
    bad = [(i, k, int(acc[i, k]), int(bias[i, k]), float(scale[i, k]), got[i][k], int(expect[i, k]))
           for i in range(n) for k in range(lanes) if got[i][k] != expect[i, k]]
    assert not bad, f"{len(bad)} of {n * lanes} differ (row, lane, acc, bias, scale, die, ref): {bad[:5]}"


def test_fc_cases_hit_ties():
    """The stimulus reaches the cases that tell LiteRT's rule from the others: exact ties of the double product,
    most of them where the exact product is not a tie (one rounding to 53 bits made it one)."""
    acc, bias, scale, *_ = fc_cases(np.random.default_rng(11), 1800)
    a = (acc + bias + (1 << 31)) % (1 << 32) - (1 << 31)
    ties = double_rounded = 0
    for ai, sc in zip(a.tolist(), scale.tolist()):
        v = ai * sc
        if math.isfinite(v) and abs(v) < 300 and Fraction(v).denominator == 2:
            ties += 1
            double_rounded += (Fraction(ai) * Fraction(sc)).denominator != 2
    assert ties > 300 and double_rounded > 150, (ties, double_rounded)


# --- the whole die in Verilator ----------------------------------------------------------------------------------

def _fc_graph():
    """FULLY_CONNECTED per tensor and per channel on a feature vector (wide enough that the Q31 rule would get some
    ties wrong), one on a flattened 4x4x6 conv output (an H x W VALID CONV) and a chained one with a RELU."""
    from tests.test_program import Net
    n = Net((1, 4, 4, 3), seed=23, zp=-2)
    flat = n.reshape(n.input, (1, 48))
    a = n.fc(flat, 250, per_channel=False, out_q=(0.02, 3))
    b = n.fc(flat, 250, per_channel=True, out_q=(0.02, -4))
    c = n.conv(n.input, 6, k=1, act="RELU", out_q=(0.05, -128))
    d = n.fc(n.reshape(c, (1, 96)), 40, per_channel=True, out_q=(0.3, 5))
    e = n.fc(d, 9, act="RELU", per_channel=False, out_q=(0.2, -128))
    return n, n.graph(a, b, e)


@pytest.mark.parametrize("config", ["tiny", "fpga"])
def test_die_runs_fully_connected_bit_exact(config):
    """The die (Verilator, inputs on the tensor port) equals the golden executor on every output of a graph of
    FULLY_CONNECTED layers, on inputs where the Q31 rule would differ; and every descriptor's cycles equal the
    analytic model (quant.timing through sim.cyclemodel), as tests/test_cyclemodel.py holds the zoo to."""
    from stackcam.quant import golden
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.executor import fully_connected_params
    from stackcam.quant.program import FCSCALE, OPCODES
    from stackcam.quant.ref import fully_connected_acc, requantize_acc
    from stackcam.quant.romimage import build_rom
    from stackcam.rtl.params import preset
    from stackcam.sim.cyclemodel import predict_cycles
    from stackcam.sim.dierun import run_die

    config = preset(config)
    n, graph = _fc_graph()
    compiled = compile_graph(graph, config)
    assert sum(bool(d.flags & FCSCALE) for d in compiled.descriptors) == 4
    rom = build_rom(compiled)
    xs = n.inputs(6)
    run = run_die(config, rom, tensors=[x[0] for x in xs], progress=False)
    assert run.loads[0]["model_ok"] == 1 and len(run.frames) == len(xs)
    q31_wrong = 0
    for x, frame in zip(xs, run.frames):
        assert frame.error is None
        want = golden.execute(rom, config, x[0])
        assert len(frame.graph_outputs) == len(want) == 3
        for got, ref in zip(frame.graph_outputs, want):
            assert np.array_equal(np.asarray(got).reshape(ref.shape), ref)
        for op, ref in zip(graph.ops[1:3], want[:2]):          # what the Q31 rule would have given
            p = fully_connected_params(graph, op)
            acc = fully_connected_acc(x.reshape(1, -1), graph.tensors[op.inputs[1]].data, p["input_offset"],
                                      p["weights_offset"])
            q31 = requantize_acc(acc, graph.tensors[op.inputs[2]].data, p["multiplier"], p["shift"],
                                 p["output_zero_point"], p["act_min"], p["act_max"])
            q31_wrong += int(np.count_nonzero(q31.reshape(ref.shape) != ref))
    assert q31_wrong > 0
    predicted = predict_cycles(compiled, config)
    descs = [d for d in compiled.descriptors if d.opcode != OPCODES["END"]]
    counters = [cyc for cyc, _ in run.descriptor_counters][:len(descs)]
    assert counters == predicted["descriptors"]
    assert run.counters["npu_cycles"] == predicted["total"]


@pytest.mark.parametrize("config", ["tiny", "demo"])
def test_stackcam_run_rtl_litert_quantized_classifier(config, tmp_path):
    """A classifier quantized by LiteRT's own converter (MobileNet V1 0.25 at 32x32, 100 classes, head RESHAPE +
    FULLY_CONNECTED, per-channel): `stackcam run --engine rtl` exits 0 and its logits equal LiteRT BUILTIN_REF
    element for element, on photos and random bytes; on tiny (the depthwise column walk) and on demo (its line
    walk, in strips of two sets)."""
    import subprocess
    import sys

    from stackcam.quant.calib import calibration_set
    from stackcam.quant.export import export_tflite
    from stackcam.quant.litert import run_reference
    from stackcam.quant.ptq import litert_calibrated_model
    from stackcam.quant.ref import quantize_float
    from stackcam.quant.tflite import read_model, schema
    from stackcam.quant.zoo import mobilenet_v1

    g = mobilenet_v1(alpha=0.25, resolution=32, classes=100, seed=2, head="fc")
    calib = calibration_set((1, 32, 32, 3))
    model = litert_calibrated_model(export_tflite(g), calib)
    m = read_model(model)
    sg = m.subgraphs[0]
    last = m.operatorCodes[sg.operators[-1].opcodeIndex]
    assert max(last.builtinCode, last.deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED
    path = tmp_path / "classifier_int8.tflite"
    path.write_bytes(model)
    q = sg.tensors[sg.inputs[0]].quantization
    s, z = float(q.scale[0]), int(q.zeroPoint[0])
    xs = np.stack([quantize_float(x, s, z)[0] for x in calib[:2]]
                  + [np.random.default_rng(9).integers(-128, 128, (32, 32, 3)).astype(np.int8)])
    np.save(tmp_path / "x.npy", xs)
    out = tmp_path / "out.npz"
    r = subprocess.run([sys.executable, "-m", "stackcam.cli", "run", str(path), "--input", str(tmp_path / "x.npy"),
                        "--engine", "rtl", "--config", config, "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = np.load(out)["output_0"]
    want = np.concatenate([run_reference(model, [x[None]])[0] for x in xs])
    assert got.dtype == want.dtype == np.int8 and got.shape == want.shape == (3, 100)
    assert np.array_equal(got, want), np.argwhere(got != want)[:8]
    assert len(np.unique(got)) > 20            # logits, not a saturated or constant output
    # The die's NPU cycle counter, printed for the last input, equals the analytic model's figure.
    import re
    measured = re.search(r"die: NPU ([\d,]+) cycles for the last input", r.stderr)
    model_cycles = re.search(r"([\d,]+) NPU cycles per input by the analytic model", r.stdout)
    assert measured and model_cycles, (r.stdout, r.stderr[-500:])
    assert measured.group(1) == model_cycles.group(1)
