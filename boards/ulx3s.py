"""ULX3S-85F board top: the die with the UART host link, the test-pattern generator, LEDs and CSI-2 pins."""

from amaranth import Cat, ClockDomain, ClockSignal, Const, Instance, Module, Signal
from amaranth.build import Attrs, Pins, Resource, ResourceError, Subsignal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from stackcam.rtl.die import StackcamDie

from .pattern import TestPatternGenerator
from .uart import HostLink, uart_divisor

__all__ = ["StackcamBoard", "ECP5PLL", "ulx3s_platform", "pll_parameters", "PPI_PINS", "BOARD_BAUD"]

BOARD_BAUD = 3_000_000           # the ULX3S's FT231X tops out at 3 Mbaud; 50 MHz / 17 is 2% off, within 8N1 margin
# GPIO header pins (connector gpio 0) for the CSI-2 PPI beats, in order: data bits (lane 0 bit 0 first), strobe,
# valid, first, last.
PPI_PINS = tuple(f"{n}{s}" for n in range(28) for s in "+-")


def pll_parameters(f_in_mhz, f_out_mhz):
    """EHXPLLL dividers (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, achieved MHz) for f_out from f_in with the feedback from
    CLKOP: the VCO (f_out * CLKOP_DIV) in 400-800 MHz and the phase detector (f_in / CLKI_DIV) at least 3.125 MHz,
    as Lattice's ecppll searches. Raises ValueError when nothing is within 0.5% of f_out."""
    best = None
    for clki in range(1, 129):
        pfd = f_in_mhz / clki
        if pfd < 3.125:
            break
        for fb in range(1, 81):
            out = pfd * fb
            for op in range(1, 129):
                vco = out * op
                if 400 <= vco <= 800:
                    # Closest frequency first, then the VCO nearest the middle of its range.
                    key = (abs(out - f_out_mhz), abs(vco - 600))
                    if best is None or key < best[0]:
                        best = (key, clki, fb, op, out)
    if best is None or best[0][0] > 0.005 * f_out_mhz:
        raise ValueError(f"the ECP5 PLL cannot make {f_out_mhz} MHz from {f_in_mhz} MHz")
    return best[1:]


class ECP5PLL(wiring.Component):
    """An EHXPLLL making `clk_out` (f_out) from `clk_in` (f_in), feedback from CLKOP; `locked` once it is stable.
    Only for the real board (the board top turns it into the `sync` domain): the simulation and the plain
    Verilog use the `sync` domain directly."""

    def __init__(self, f_in_mhz, f_out_mhz):
        self.f_in_mhz, self.f_out_mhz = f_in_mhz, f_out_mhz
        self.clki_div, self.clkfb_div, self.clkop_div, self.achieved_mhz = pll_parameters(f_in_mhz, f_out_mhz)
        super().__init__({"clk_in": In(1), "clk_out": Out(1), "locked": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=self.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=self.clkop_div,
            p_CLKOP_CPHASE=self.clkop_div // 2 - 1 if self.clkop_div > 1 else 0, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=self.clkfb_div,
            a_FREQUENCY_PIN_CLKI=f"{self.f_in_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{self.achieved_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            i_RST=Const(0), i_STDBY=Const(0), i_CLKI=self.clk_in, i_CLKFB=self.clk_out, o_CLKOP=self.clk_out,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1), i_PHASESTEP=Const(1),
            i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
            o_LOCK=self.locked,
        )
        if platform is not None and hasattr(platform, "add_clock_constraint"):
            platform.add_clock_constraint(self.clk_out, self.achieved_mhz * 1e6)
        return m


def ulx3s_platform():
    """The ULX3S-85F platform of amaranth-boards with the CSI-2 PPI pin resource added (see `StackcamBoard`)."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


def _ppi_resource(lanes):
    n = 8 * lanes
    pins = list(PPI_PINS)
    take = lambda k: " ".join(pins.pop(0) for _ in range(k))      # noqa: E731
    return Resource(
        "stackcam_ppi", 0,
        Subsignal("data", Pins(take(n), dir="o", conn=("gpio", 0))),
        Subsignal("strobe", Pins(take(lanes), dir="o", conn=("gpio", 0))),
        Subsignal("valid", Pins(take(1), dir="o", conn=("gpio", 0))),
        Subsignal("first", Pins(take(1), dir="o", conn=("gpio", 0))),
        Subsignal("last", Pins(take(1), dir="o", conn=("gpio", 0))),
        Attrs(IO_TYPE="LVCMOS33", DRIVE="8"),
    )


class StackcamBoard(wiring.Component):
    """The die on a dev board, driven from a host over the UART (`boards.uart` describes the byte protocol).

    Pixel sources: RAW frames, int8 tensors and ROM images sent by the host, and the test-pattern generator
    (`P` command). The die's CSI-2 output goes back to the host over the UART, packet by packet; the die sees
    the UART's rate as PHY back-pressure. The same beats drive the PPI pins as they are transferred: `ppi_data`
    (lane k in bits 8k..8k+7), `ppi_strobe`, `ppi_valid` (a beat this cycle), `ppi_first`, `ppi_last`, all
    registered (one cycle after the transfer). They are plain LVCMOS outputs for a logic analyser or a
    bridge chip: a real CSI-2 link needs a D-PHY (HS/LP signalling) that an ECP5 does not have, e.g. an external
    parallel-to-CSI-2 bridge. LEDs: 0 model loaded and accepted, 1 model loading, 2 an error (malformed frame,
    CSI-2 payload error or a UART link error, sticky), 3 heartbeat (clock running), 4-7 frames sent, low bits.

    Ports are plain signals so that `rtl.verilog.convert` can write the board as Verilog for simulation (the
    `sync` domain is the die clock). Given an amaranth-boards platform (anything with `request`), elaborate()
    instead builds the PLL (`ECP5PLL`, 25 MHz -> config.clock_mhz), requests clk25, the UART, the LEDs and the
    PPI pins on the GPIO header, and drives the ports from them.
    """

    def __init__(self, config, divisor=None, fifo_depth=2048):
        self.config = config
        self.divisor = divisor if divisor is not None else uart_divisor(config.clock_mhz * 1e6, BOARD_BAUD)
        self.fifo_depth = fifo_depth
        lanes = config.csi2_lanes
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "leds": Out(8),
            "ppi_data": Out(8 * lanes),
            "ppi_strobe": Out(lanes),
            "ppi_valid": Out(1),
            "ppi_first": Out(1),
            "ppi_last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.die = die = StackcamDie(cfg)
        m.submodules.link = link = HostLink(cfg, self.divisor, self.fifo_depth)
        m.submodules.pattern = pattern = TestPatternGenerator(cfg.frame_width, cfg.frame_height,
                                                              cfg.pixels_per_clock)

        # Host link <-> die.
        for name in ("tensor", "rom", "bus"):
            wiring.connect(m, getattr(link, name), getattr(die, name))
        wiring.connect(m, die.csi2, link.csi2)
        m.d.comb += [pattern.start.eq(link.pattern_start), pattern.frames.eq(link.pattern_frames),
                     pattern.kind.eq(link.pattern_kind), link.pattern_busy.eq(pattern.busy)]
        # Pixel source: the pattern generator while it runs (the parser waits meanwhile), else the host's frames.
        with m.If(pattern.busy):
            wiring.connect(m, pattern.out, die.pixels)
            m.d.comb += link.pixels.ready.eq(0)
        with m.Else():
            wiring.connect(m, link.pixels, die.pixels)
            m.d.comb += pattern.out.ready.eq(0)
        sent = Signal(16)
        with m.If(pattern.out.valid & pattern.out.ready & pattern.out.payload.frame_last & (sent != 0xFFFF)):
            m.d.sync += sent.eq(sent + 1)
        m.d.comb += link.pattern_sent.eq(sent)

        # PPI pins: the beats the UART path takes, registered.
        beat = die.csi2
        m.d.sync += [self.ppi_valid.eq(beat.valid & beat.ready), self.ppi_data.eq(beat.payload.data),
                     self.ppi_strobe.eq(beat.payload.strobe), self.ppi_first.eq(beat.payload.first),
                     self.ppi_last.eq(beat.payload.last)]

        # LEDs.
        error = Signal()
        with m.If((die.frame_errors != 0) | (die.csi2_errors != 0) | link.errors):
            m.d.sync += error.eq(1)
        # The top bit of a counter of log2(f) - 1 bits: toggles every 0.34 to 0.67 s.
        heartbeat = Signal(max(1, int(cfg.clock_mhz * 1e6).bit_length() - 1))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += self.leds.eq(Cat(die.model_ok, die.loading, error, heartbeat[-1], die.frames_sent[:4]))

        m.d.comb += [link.rx.eq(self.uart_rx), self.uart_tx.eq(link.tx)]

        if platform is not None and hasattr(platform, "request"):
            self._board(m, platform)
        return m

    def _board(self, m, platform):
        cfg = self.config

        def buffer(name, direction, port):
            m.submodules[name] = buf = io.Buffer(direction, port)
            return buf

        clk25 = buffer("clk25_buffer", "i", platform.request("clk25", 0, dir="-"))
        # The die clock from the PLL; the sync domain stays in reset until the PLL locks (released synchronously).
        m.submodules.clocking = pll = ECP5PLL(25.0, cfg.clock_mhz)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [pll.clk_in.eq(clk25.i), ClockSignal("sync").eq(pll.clk_out)]
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="sync")
        uart = platform.request("uart", 0, dir="-")
        rx, tx = buffer("uart_rx_buffer", "i", uart.rx), buffer("uart_tx_buffer", "o", uart.tx)
        m.d.comb += [self.uart_rx.eq(rx.i), tx.o.eq(self.uart_tx)]
        for i in range(8):
            m.d.comb += buffer(f"led{i}_buffer", "o", platform.request("led", i, dir="-")).o.eq(self.leds[i])
        try:
            platform.lookup("stackcam_ppi", 0)
        except ResourceError:
            platform.add_resources([_ppi_resource(cfg.csi2_lanes)])
        ppi = platform.request("stackcam_ppi", 0, dir="-")
        for name in ("data", "strobe", "valid", "first", "last"):
            m.d.comb += buffer(f"ppi_{name}_buffer", "o", getattr(ppi, name)).o.eq(getattr(self, f"ppi_{name}"))
