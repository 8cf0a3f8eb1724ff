"""cocotb testbench for the whole die: drives RAW10 frames in, collects CSI-2 PPI beats and cycle stamps out.

Inputs come from the .npz named by STACKCAM_TB_STIM (written by `sim.dierun`); results go to the .npz named by
STACKCAM_TB_OUT. Progress (cycles, pixels sent, beats received) is written now and then to STACKCAM_TB_PROGRESS.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


@cocotb.test()
async def run_frames(dut):
    stim = np.load(os.environ["STACKCAM_TB_STIM"])
    beats = [int(v) for v in stim["beats"]]
    frame_ends = set(int(v) for v in stim["frame_ends"])       # index of each frame's last beat
    frames = len(frame_ends)
    stall = float(stim["stall"])
    gap = int(stim["gap"])
    max_cycles = int(stim["max_cycles"])
    rng = random.Random(int(stim["seed"]))
    # Register writes done just before each frame's first beat is offered: rows of (frame, address, value).
    writes = {}
    for frame, addr, value in stim["reg_writes"].reshape(-1, 3).tolist():
        writes.setdefault(int(frame), []).append((int(addr), int(value)))
    frame_starts = [0] + [int(e) + 1 for e in sorted(frame_ends)][:-1]
    start_frame = {start: n for n, start in enumerate(frame_starts)}
    progress_path = os.environ.get("STACKCAM_TB_PROGRESS")

    clk = dut.clk
    cocotb.start_soon(Clock(clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.pixels__valid.value = 0
    dut.csi2__ready.value = 0
    dut.bus__we.value = 0
    dut.bus__re.value = 0
    for _ in range(3):
        await RisingEdge(clk)
    dut.rst.value = 0

    in_valid, in_ready, in_payload = dut.pixels__valid, dut.pixels__ready, dut.pixels__payload
    out_valid, out_ready, out_payload = dut.csi2__valid, dut.csi2__ready, dut.csi2__payload
    frames_sent = dut.frames_sent

    out_beats, out_cycles = [], []
    first_pixel, last_pixel = [], []
    i = 0
    wait_until = 0          # inter-frame gap: next frame not offered before this cycle
    cycle = 0
    done_at = None
    quiet = 0
    while cycle < max_cycles:
        await RisingEdge(clk)
        cycle += 1
        pending = writes.get(start_frame.get(i, -1)) if cycle >= wait_until else None
        writing = bool(pending)
        if writing:
            addr, value = pending.pop(0)
            dut.bus__addr.value = addr
            dut.bus__wdata.value = value
            dut.bus__we.value = 1
        else:
            dut.bus__we.value = 0
        sending = i < len(beats) and cycle >= wait_until and not writing
        in_valid.value = int(sending)
        if sending:
            in_payload.value = beats[i]
        ready = not (stall and rng.random() < stall)
        out_ready.value = int(ready)
        await ReadOnly()
        if sending and int(in_ready.value):
            if i == 0 or (i - 1) in frame_ends:
                first_pixel.append(cycle)
            if i in frame_ends:
                last_pixel.append(cycle)
                wait_until = cycle + 1 + gap
            i += 1
        if ready and int(out_valid.value):
            out_beats.append(int(out_payload.value))
            out_cycles.append(cycle)
        if progress_path and cycle % 20000 == 0:
            with open(progress_path, "w") as f:
                f.write(f"{cycle} {i} {len(beats)} {len(out_beats)}\n")
        # Done once every frame's FE has been queued and the output has stayed idle for a while (the FE
        # packet itself leaves a few cycles after the sequencer counts it).
        if i == len(beats) and int(frames_sent.value) >= frames and not int(out_valid.value):
            quiet += 1
            if quiet >= 16:
                done_at = out_cycles[-1] if out_cycles else cycle
                break
        else:
            quiet = 0

    counters = {name: int(getattr(dut, name).value)
                for name in ("frames_sent", "frame_errors", "csi2_errors", "conv_cycles", "mac_cycles")}
    np.savez(os.environ["STACKCAM_TB_OUT"],
             beats=np.array(out_beats, dtype=np.uint64), beat_cycles=np.array(out_cycles, np.int64),
             first_pixel=np.array(first_pixel, np.int64), last_pixel=np.array(last_pixel, np.int64),
             cycles=cycle, finished=done_at is not None, pixels_sent=i, **counters)
    assert done_at is not None, (f"die did not finish {frames} frame(s) in {max_cycles} cycles "
                                 f"({i}/{len(beats)} beats sent, {counters['frames_sent']} frames out)")
