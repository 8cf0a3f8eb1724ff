"""Test-pattern pixel die for the board: RAW10 RGGB Bayer frames at P pixels per clock, with line/frame markers."""

import numpy as np
from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from stackcam.rtl.streams import pixel_beat_stream

__all__ = ["TestPatternGenerator", "pattern_frame", "PATTERN_BARS", "PATTERN_RAMP", "BAR_COLOURS", "BAR_HIGH",
           "BAR_LOW"]

PATTERN_BARS = 0      # eight vertical colour bars (white, yellow, cyan, green, magenta, red, blue, black)
PATTERN_RAMP = 1      # diagonal ramp (x + y + frame) mod 1024: every 10-bit value, moving one step per frame
# (R, G, B) on/off of each bar, left to right, and the 10-bit levels of "on" and "off" (video-style 64..940).
BAR_COLOURS = ((1, 1, 1), (1, 1, 0), (0, 1, 1), (0, 1, 0), (1, 0, 1), (1, 0, 0), (0, 0, 1), (0, 0, 0))
BAR_HIGH = 940
BAR_LOW = 64


def pattern_frame(kind, width, height, frame=0):
    """The reference RAW10 frame (uint16 [height, width], RGGB) of pattern `kind`; `frame` is the frame's index
    within its run (only the ramp depends on it). Bar b covers columns x with x * 8 // width == b."""
    y, x = np.mgrid[0:height, 0:width]
    if kind == PATTERN_RAMP:
        return ((x + y + frame) % 1024).astype(np.uint16)
    if kind != PATTERN_BARS:
        raise ValueError(f"unknown test pattern {kind!r}")
    bar = x * 8 // width
    colours = np.array(BAR_COLOURS)[bar]                      # [H, W, 3] on/off per channel
    channel = np.where((y % 2 == 0) & (x % 2 == 0), 0, np.where((y % 2 == 1) & (x % 2 == 1), 2, 1))
    on = np.take_along_axis(colours, channel[..., None], axis=-1)[..., 0]
    return np.where(on == 1, BAR_HIGH, BAR_LOW).astype(np.uint16)


class TestPatternGenerator(wiring.Component):
    """Plays `frames` test-pattern frames of `width` x `height` RAW10 Bayer pixels, `pixels_per_clock` per beat.

    A `start` pulse while idle latches `frames` (0 sends nothing) and `kind` (PATTERN_BARS or PATTERN_RAMP);
    the frames then go out back to back in raster order, one beat per cycle while `out.ready` is high, with
    `line_first`/`line_last` on each line's first/last beat and `frame_first`/`frame_last` on each frame's
    first/last beat (as `rtl.streams.pixel_beat_layout` requires). Pixel values equal `pattern_frame(kind, width,
    height, k)` for the k-th frame of the run. `busy` is high from the `start` cycle until the last beat has
    been taken; a `start` while busy is ignored. Back-pressure: `valid` stays high and the payload stays put
    until `ready`; no other latency.
    """

    __test__ = False             # not a pytest class, despite its name

    def __init__(self, width, height, pixels_per_clock):
        if width % pixels_per_clock or width % 2 or height % 2:
            raise ValueError(f"test pattern {width}x{height}: width must be a multiple of pixels_per_clock "
                             f"{pixels_per_clock} and both sides even (whole RGGB quads)")
        self.width, self.height, self.pixels_per_clock = width, height, pixels_per_clock
        super().__init__({
            "out": Out(pixel_beat_stream(pixels_per_clock)),
            "start": In(1),
            "frames": In(8),
            "kind": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P, W, H = self.pixels_per_clock, self.width, self.height
        beats = W // P
        running = Signal()
        left = Signal(8)
        kind = Signal()
        frame = Signal(8)           # index within the run
        bx = Signal(range(beats))
        y = Signal(range(H))
        # Whether bx and y are at their first and last values, registered with them (the markers feed the die's
        # frame-start logic directly).
        bx_first, y_first = Signal(init=1), Signal(init=1)
        bx_last, y_last = Signal(init=beats == 1), Signal(init=H == 1)
        m.d.comb += self.busy.eq(running | self.start)

        with m.If(~running & self.start & (self.frames != 0)):
            m.d.sync += [running.eq(1), left.eq(self.frames), kind.eq(self.kind), frame.eq(0), bx.eq(0), y.eq(0),
                         bx_first.eq(1), bx_last.eq(beats == 1), y_first.eq(1), y_last.eq(H == 1)]

        out = self.out
        m.d.comb += [
            out.valid.eq(running),
            out.payload.line_first.eq(bx_first),
            out.payload.line_last.eq(bx_last),
            out.payload.frame_first.eq(bx_first & y_first),
            out.payload.frame_last.eq(bx_last & y_last),
        ]
        # Bar b covers columns bounds[b] <= x < bounds[b + 1]: the first x with x * 8 // W == b is ceil(b * W / 8).
        bounds = [-(-b * W // 8) for b in range(9)]
        for i in range(P):
            x = Signal(range(W), name=f"x{i}")
            m.d.comb += x.eq(bx * P + i)
            # Each channel's on/off: the bars where it is on, as intervals of x (a few compares and an OR, not a
            # sum of threshold compares and a case: the pixels feed the die's first pipeline stages directly).
            on_rgb = [Cat(*[(x >= bounds[b]) & (x < bounds[b + 1]) for b, colour in enumerate(BAR_COLOURS)
                            if colour[c]]).any() for c in range(3)]
            # Channel of this site: R on (even y, even x), B on (odd y, odd x), else G; P is even or 1, so the
            # parity of x is the parity of i when P > 1.
            x_odd, y_odd = x[0], y[0]
            on = Mux(~x_odd & ~y_odd, on_rgb[0], Mux(x_odd & y_odd, on_rgb[2], on_rgb[1]))
            bars = Mux(on, BAR_HIGH, BAR_LOW)
            ramp = (x + y + frame)[:10]
            m.d.comb += out.payload.pixels[i].eq(Mux(kind, ramp, bars))

        with m.If(out.valid & out.ready):
            with m.If(bx_last):
                m.d.sync += [bx.eq(0), bx_first.eq(1), bx_last.eq(beats == 1)]
                with m.If(y_last):
                    m.d.sync += [y.eq(0), y_first.eq(1), y_last.eq(H == 1), frame.eq(frame + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.d.sync += running.eq(0)
                with m.Else():
                    m.d.sync += [y.eq(y + 1), y_first.eq(0), y_last.eq(y == H - 2)]
            with m.Else():
                m.d.sync += [bx.eq(bx + 1), bx_first.eq(0), bx_last.eq(bx == beats - 2)]
        return m
