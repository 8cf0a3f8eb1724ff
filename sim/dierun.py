"""Host side of a die simulation: build the die's Verilator model, stream frames through it, decode CSI-2."""

import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtl.die import DT_OUTPUT_TENSOR, VC_OUTPUT_TENSOR, StackcamDie
from rtl.verilog import convert

from .csi2 import CSI2Decoder, merge_lanes
from .frame_source import pack_beats
from .verilator import CocotbBuild

__all__ = ["DieRun", "build_die", "run_die"]

TOP = "stackcam_die"


@dataclass
class DieRun:
    """What came out of one simulation: the CSI-2 bytes, the decoded tensors and the cycle stamps."""

    csi2_bytes: bytes
    decoder: CSI2Decoder
    tensors: list                 # per complete frame: int8 output tensor [H, W, C] (or None if malformed)
    first_pixel: list             # cycle of each frame's first accepted pixel beat
    last_pixel: list              # cycle of each frame's last accepted pixel beat
    frame_last_byte: list         # cycle of the last CSI-2 beat of each frame (its FE)
    cycles: int
    counters: dict = field(default_factory=dict)
    sim_wall_s: float = 0.0
    build_wall_s: float = 0.0


def build_die(config, program, log=None):
    """Generate the die's Verilog and build (or find cached) its Verilator model."""
    die = StackcamDie(config, program)
    t0 = time.time()
    text = convert(die, name=TOP)
    build = CocotbBuild(text, TOP, name=f"die-{config.name}")
    if not build.is_built and log:
        log(f"building the Verilator model of the die ({config.name}, {len(text.splitlines())} lines of Verilog; "
            f"cached after the first time)...")
    build.build()
    return die, build, time.time() - t0


def run_die(config, program, raws, *, stall=0.0, gap=0, seed=1, log=None, progress=True, max_cycles=None):
    """Stream RAW10 frames (list of uint16 [H, W]) through the die in Verilator and decode what it sends."""
    die, build, build_s = build_die(config, program, log)
    beats = [pack_beats(raw, config.pixels_per_clock) for raw in raws]
    frame_ends = np.cumsum([len(b) for b in beats]) - 1
    all_beats = np.concatenate(beats).astype(np.uint64)
    oh, ow, oc = die.conv_shape
    if max_cycles is None:
        per_frame = len(beats[0]) + oh * ow * -(-oc // config.array_rows) * 9 * 4 + 4 * oh * ow * oc + 10_000
        max_cycles = int(per_frame * len(raws) * (1 + 4 * stall) + gap * len(raws))
    with tempfile.TemporaryDirectory(prefix="stackcam-") as tmp:
        tmp = Path(tmp)
        stim, out, prog_path = tmp / "stim.npz", tmp / "out.npz", tmp / "progress"
        np.savez(stim, beats=all_beats, frame_ends=frame_ends, stall=stall, gap=gap, seed=seed,
                 max_cycles=max_cycles)
        env = {"STACKCAM_TB_STIM": str(stim), "STACKCAM_TB_OUT": str(out), "STACKCAM_TB_PROGRESS": str(prog_path),
               "COCOTB_RESOLVE_X": "ZEROS"}
        result = {}

        def target():
            try:
                result["res"] = build.run("sim.tb_die", extra_env=env, test_dir=tmp, log_file=tmp / "sim.log")
            except Exception as e:          # reported below, in the caller's thread
                result["err"] = e

        t0 = time.time()
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        shown = False
        while thread.is_alive():
            thread.join(0.5)
            if progress and prog_path.exists():
                try:
                    cyc, sent, total, nout = (int(v) for v in prog_path.read_text().split())
                except ValueError:
                    continue
                rate = cyc / max(time.time() - t0, 1e-9)
                sys.stderr.write(f"\r  simulating: {cyc:>10,} cycles  pixels {100 * sent / total:5.1f}%  "
                                 f"CSI-2 beats {nout:,}  ({rate / 1e3:.0f} k cycles/s)   ")
                sys.stderr.flush()
                shown = True
        if shown:
            sys.stderr.write("\n")
        wall = time.time() - t0
        if "err" in result:
            raise result["err"]
        if not out.exists():
            log_text = (tmp / "sim.log").read_text()[-3000:] if (tmp / "sim.log").exists() else ""
            raise RuntimeError(f"die simulation produced no results:\n{log_text}")
        r = np.load(out)
        if not bool(r["finished"]):
            raise RuntimeError(f"die simulation did not finish: {int(r['pixels_sent'])}/{len(all_beats)} beats "
                               f"sent, {int(r['frames_sent'])} frame(s) out in {int(r['cycles'])} cycles")
        out_beats = [int(v) for v in r["beats"]]
        beat_cycles = r["beat_cycles"].tolist()
        counters = {k: int(r[k]) for k in ("frames_sent", "frame_errors", "csi2_errors", "conv_cycles",
                                           "mac_cycles")}
        cycles = int(r["cycles"])
        first_pixel, last_pixel = r["first_pixel"].tolist(), r["last_pixel"].tolist()

    lanes = config.csi2_lanes
    data = merge_lanes(out_beats, lanes)
    dec = CSI2Decoder()
    dec.feed(data)
    dec.finish()
    # Cycle of the last beat of each FE packet on the output-tensor VC.
    fe_cycles = _fe_beat_cycles(out_beats, beat_cycles, lanes)
    tensors = []
    for payload in dec.frame_bytes(VC_OUTPUT_TENSOR, DT_OUTPUT_TENSOR):
        arr = np.frombuffer(payload, np.int8)
        tensors.append(arr.reshape(oh, ow, oc).copy() if arr.size == oh * ow * oc else None)
    return DieRun(csi2_bytes=data, decoder=dec, tensors=tensors, first_pixel=first_pixel, last_pixel=last_pixel,
                  frame_last_byte=fe_cycles, cycles=cycles, counters=counters, sim_wall_s=wall, build_wall_s=build_s)


def _fe_beat_cycles(beats, cycles, lanes):
    from .csi2 import unpack_beat
    out = []
    packet_start = None
    for beat, cyc in zip(beats, cycles):
        data, strobe, first, last = unpack_beat(beat, lanes)
        if first:
            packet_start = data[0]
        if last and packet_start is not None and (packet_start & 0x3F) == 0x01:
            out.append(cyc)
    return out


