"""Host side of a die simulation: build the die's Verilator model, stream frames through it, decode CSI-2."""

import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtl.csi2.framer import DT_EMBEDDED, DT_RAW10, DT_RGB888
from rtl.die import StackcamDie
from rtl.regs import MODES, REGISTER_BY_NAME
from rtl.verilog import convert

from .csi2 import CSI2Decoder, merge_lanes
from .frame_source import pack_beats
from .metadata import image_from_lines, input_tensor_from_lines, parse_embedded
from .verilator import CocotbBuild

__all__ = ["DieRun", "FrameResult", "build_die", "run_die", "REG_DEFAULTS"]

REG_DEFAULTS = {r.name: r.reset for r in REGISTER_BY_NAME.values() if r.access == "rw"}


@dataclass
class FrameResult:
    """What the host got for one frame, matched across virtual channels by frame number."""

    number: int
    mode: str
    output_tensor: np.ndarray | None = None      # int8 [H, W, C]; None if the frame sent no tensor
    embedded: dict | None = None
    image: np.ndarray | None = None              # uint16 RAW10 frame (image mode)
    input_tensor: np.ndarray | None = None       # int8 [H, W, 3] (tensors mode)
    csi2_bytes: int = 0                          # bytes of every packet of this frame, both channels

TOP = "stackcam_die"


@dataclass
class DieRun:
    """What came out of one simulation: the CSI-2 bytes, the decoded tensors and the cycle stamps."""

    csi2_bytes: bytes
    decoder: CSI2Decoder
    tensors: list                 # per complete frame: int8 output tensor [H, W, C] (or None if malformed)
    frames: list                  # FrameResult per frame
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


def _reg_writes(modes, regs):
    """Register writes before each frame: all registers before the first, then only what changes."""
    rows, current = [], {}
    for n, mode in enumerate(modes):
        want = dict(regs, mode=MODES[mode])
        for name, value in want.items():
            if current.get(name) != value:
                rows.append((n, REGISTER_BY_NAME[name].addr, value))
        current = want
    return np.array(rows, np.int64).reshape(-1, 3)


def run_die(config, program, raws, *, modes=None, regs=None, stall=0.0, gap=0, seed=1, log=None, progress=True,
            max_cycles=None, raw_beats=None):
    """Stream RAW10 frames (list of uint16 [H, W]) through the die in Verilator and decode what it sends.

    `modes` gives each frame's CSI-2 mode ("image", "metadata", "tensors"; default metadata), written to the
    register bank before the frame; `regs` overrides other read-write registers (e.g. {"csi2_ctrl": 1} for
    LS/LE). `raw_beats` replaces the packed beats of a frame (a list of int arrays, for malformed frames).
    """
    modes = list(modes or ["metadata"] * len(raws))
    if len(modes) != len(raws):
        raise ValueError(f"{len(modes)} modes for {len(raws)} frames")
    regs = dict(REG_DEFAULTS, **(regs or {}))
    die, build, build_s = build_die(config, program, log)
    beats = [pack_beats(raw, config.pixels_per_clock) for raw in raws]
    if raw_beats is not None:
        beats = [np.asarray(b, np.int64) if b is not None else beats[n] for n, b in enumerate(raw_beats)]
    frame_ends = np.cumsum([len(b) for b in beats]) - 1
    all_beats = np.concatenate(beats).astype(np.uint64)
    oh, ow, oc = die.conv_shape
    if max_cycles is None:
        per_frame = (len(beats[0]) + oh * ow * -(-oc // config.array_rows) * 9 * 4 + 4 * oh * ow * oc + 10_000
                     + 3 * config.raw_frame_bytes + 4 * config.input_width * config.input_height * 3)
        max_cycles = int(per_frame * len(raws) * (1 + 4 * stall) + gap * len(raws))
    with tempfile.TemporaryDirectory(prefix="stackcam-") as tmp:
        tmp = Path(tmp)
        stim, out, prog_path = tmp / "stim.npz", tmp / "out.npz", tmp / "progress"
        np.savez(stim, beats=all_beats, frame_ends=frame_ends, stall=stall, gap=gap, seed=seed,
                 max_cycles=max_cycles, reg_writes=_reg_writes(modes, regs))
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
        tty = sys.stderr.isatty()
        next_line = time.time() + 10
        while thread.is_alive():
            thread.join(0.5)
            if progress and prog_path.exists() and (tty or time.time() >= next_line):
                next_line = time.time() + 10
                try:
                    cyc, sent, total, nout = (int(v) for v in prog_path.read_text().split())
                except ValueError:
                    continue
                rate = cyc / max(time.time() - t0, 1e-9)
                sys.stderr.write(f"{chr(13) if tty else ''}  simulating: {cyc:>10,} cycles  pixels "
                                 f"{100 * sent / total:5.1f}%  CSI-2 beats {nout:,}  ({rate / 1e3:.0f} k cycles/s)"
                                 f"{'   ' if tty else chr(10)}")
                sys.stderr.flush()
                shown = True
        if shown and tty:
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
    vc_output = (regs["vc_map"] >> 2) & 3
    dt_output = regs["dt_output"]
    fe_cycles = _fe_beat_cycles(out_beats, beat_cycles, lanes, vc_output)
    results = []
    inv_modes = {v: k for k, v in MODES.items()}
    # Frames in the order they were sent; an image or input-tensor frame belongs to the output frame after it.
    pending_image = pending_input = None
    for f in sorted(dec.frames, key=lambda f: f.packets[0].offset if f.packets else 0):
        if not f.complete:
            continue
        if f.payloads(DT_RAW10):
            pending_image = image_from_lines(f.payloads(DT_RAW10), config.frame_width)
            continue
        if f.payloads(DT_RGB888):
            pending_input = input_tensor_from_lines(f.payloads(DT_RGB888), config.input_width)
            continue
        if f.vc != vc_output:
            continue
        emb_lines = f.payloads(DT_EMBEDDED)
        emb = parse_embedded(emb_lines[0]) if emb_lines else None
        mode = inv_modes.get(emb["mode"], "?") if emb else "?"
        r = FrameResult(number=f.number, mode=mode, embedded=emb, image=pending_image, input_tensor=pending_input)
        pending_image = pending_input = None
        payload = b"".join(f.payloads(dt_output))
        if payload:
            arr = np.frombuffer(payload, np.int8)
            r.output_tensor = arr.reshape(oh, ow, oc).copy() if arr.size == oh * ow * oc else None
        results.append(r)
    _frame_sizes(dec, results, vc_output)
    tensors = [r.output_tensor for r in results]
    return DieRun(csi2_bytes=data, decoder=dec, tensors=tensors, frames=results, first_pixel=first_pixel,
                  last_pixel=last_pixel, frame_last_byte=fe_cycles, cycles=cycles, counters=counters,
                  sim_wall_s=wall, build_wall_s=build_s)


def _frame_sizes(dec, results, vc_output):
    """Bytes on the wire per frame: every packet since the previous output frame's FE up to this one's FE."""
    total = 0
    it = iter(results)
    for p in dec.packets:
        total += len(p.encode())
        if p.vc == vc_output and p.dt == 0x01:
            r = next(it, None)
            if r is None:
                return
            r.csi2_bytes = total
            total = 0


def _fe_beat_cycles(beats, cycles, lanes, vc):
    """Cycle of the last beat of each FE packet on virtual channel `vc` (a frame's last CSI-2 byte)."""
    from .csi2 import unpack_beat
    out = []
    packet_start = None
    for beat, cyc in zip(beats, cycles):
        data, strobe, first, last = unpack_beat(beat, lanes)
        if first:
            packet_start = data[0]
        if last and packet_start == (vc << 6 | 0x01):
            out.append(cyc)
    return out
