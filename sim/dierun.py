"""Host side of a die simulation: the driver's register settings for a model, the Verilator build of the die in
its harness, the plan the testbench follows, and decoding what came out of CSI-2."""

import json
import math
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stackcam.errors import StackcamError
from stackcam.quant.golden import host_outputs
from stackcam.quant.isp import isp_quant_params
from stackcam.quant.romimage import RomError, load_rom
from stackcam.rtl.csi2.framer import DT_EMBEDDED, DT_RAW10, DT_RGB888
from stackcam.rtl.die import rom_beat_layout
from stackcam.rtl.npu.core import BANK_COUNTERS, SRAM_IDS
from stackcam.rtl.npu.io import MAX_OUTPUTS
from stackcam.rtl.regs import MODES, REGISTER_BY_NAME
from stackcam.rtl.streams import tensor_pixel_layout

from .csi2 import CSI2Decoder, merge_lanes
from .frame_source import pack_beats
from .harness import TOP, harness_verilog, player_depths
from .metadata import frame_error, image_from_lines, input_tensor_from_lines, parse_embedded
from .verilator import CocotbBuild

__all__ = ["DieRun", "FrameResult", "HostError", "build_die", "decode_frames", "model_registers", "run_die",
           "run_tensors", "REG_DEFAULTS", "rom_beats", "speed_line", "tensor_beats"]

REG_DEFAULTS = {r.name: r.reset for r in REGISTER_BY_NAME.values() if r.access == "rw"}


class HostError(StackcamError, ValueError):
    """The host cannot set the die up for this model (e.g. too many outputs, a row too long for CSI-2)."""


@dataclass
class FrameResult:
    """What the host got for one frame, from the CSI-2 stream alone."""

    number: int
    mode: str
    outputs: list = field(default_factory=list)     # die output tensors, int8 HWC, in the model's order
    graph_outputs: list | None = None               # after the host tail (the model's outputs)
    embedded: dict | None = None
    error: str | None = None                        # why the die refused this frame's output (one line)
    image: np.ndarray | None = None                 # uint16 RAW10 frame (image mode)
    input_tensor: np.ndarray | None = None          # int8 [H, W, 3] (tensors mode)
    csi2_bytes: int = 0                             # bytes of every packet of this frame, both channels

    @property
    def output_tensor(self):
        return self.outputs[0] if self.outputs else None


@dataclass
class DieRun:
    csi2_bytes: bytes
    decoder: CSI2Decoder
    frames: list
    first_pixel: list             # cycle of each frame's first accepted input beat (pixel or tensor port)
    last_pixel: list              # cycle of each frame's last accepted input beat
    frame_last_byte: list         # cycle of the last CSI-2 beat of each frame (its output FE)
    cycles: int
    counters: dict
    loads: list                   # per ROM image: model_ok, load cycles, npu_status
    descriptor_counters: list     # (cycles, MAC cycles) per descriptor of the last network run
    # per descriptor of the last run: {"act_reads", "act_write_bytes", "weight_reads"} from the die's counters
    descriptor_activity: list = field(default_factory=list)
    # per-bank counters of the last run (`rtl.npu.core.BANK_COUNTERS`: a list per counter, bank 0 first; the
    # loader's weight writes since reset); `bank_activity` gives them in bytes
    bank_counters: dict = field(default_factory=dict)
    sim_wall_s: float = 0.0       # the Verilator run, from process start to results (no build)
    sim_cpu_s: float = 0.0        # CPU seconds (user + system) the simulator process used for it
    load_avg: tuple = ()          # the machine's 1-minute load average when the run started and when it ended
    faults: list = field(default_factory=list)   # per injected fault: the cycle it was injected, frames out then
    build_wall_s: float = 0.0
    # testbench's (what, cycle, wall s, simulator CPU s): start, rom_loaded..., end
    marks: list = field(default_factory=list)

    @property
    def tensors(self):
        return [f.output_tensor for f in self.frames]

    def frames_speed(self):
        """(cycles, wall seconds, simulator CPU seconds or None) of the simulation after the last ROM load: the
        frames alone, without the simulator's start and the model load; None when the testbench gave no marks."""
        loaded = [m for m in self.marks if m[0] in ("start", "rom_loaded")]
        end = [m for m in self.marks if m[0] == "end"]
        if not loaded or not end:
            return None
        first, last = loaded[-1], end[-1]
        cpu = last[3] - first[3] if len(first) > 3 and len(last) > 3 else None
        return last[1] - first[1], last[2] - first[2], cpu

    def speed(self):
        """The simulation speed, for a report: the whole Verilator run (from the simulator's start, ROM load
        included; no build) and the frames alone (after the last ROM load), each by the wall clock and by the CPU
        time the simulator process got, with the machine's load average and core count. On a shared machine the
        wall-clock rate is what this run saw; the CPU-time rate is closer to what an idle machine gives (other jobs
        still share its caches and memory)."""
        out = {"sim_cycles": self.cycles, "sim_wall_s": self.sim_wall_s,
               "sim_cycles_per_s": self.cycles / self.sim_wall_s if self.sim_wall_s else 0.0,
               "sim_cpu_s": self.sim_cpu_s,
               "sim_cycles_per_cpu_s": self.cycles / self.sim_cpu_s if self.sim_cpu_s else None}
        frames = self.frames_speed()
        out.update({"sim_frame_cycles": frames[0] if frames else None,
                    "sim_frame_wall_s": frames[1] if frames else None,
                    "sim_frame_cycles_per_s": frames[0] / frames[1] if frames and frames[1] > 0 else None})
        cpu = frames[2] if frames else None
        out.update({"sim_frame_cpu_s": cpu,
                    "sim_frame_cycles_per_cpu_s": frames[0] / cpu if frames and cpu else None,
                    "sim_load_avg": list(self.load_avg), "sim_cores": os.cpu_count()})
        return out


def speed_line(speed):
    """One line on the simulation speed of a report (DieRun.speed's keys): whole run and frame alone, by the wall
    clock and by the simulator's CPU time, and the machine's load average."""
    def rate(cycles, seconds):
        return f"{cycles / seconds / 1e3:.1f} k cycles/s" if cycles and seconds else "?"
    text = (f"{speed['sim_cycles']:,} cycles in {speed['sim_wall_s']:.1f} s, "
            f"{rate(speed['sim_cycles'], speed['sim_wall_s'])} "
            f"({rate(speed['sim_cycles'], speed['sim_cpu_s'])} of simulator CPU time)")
    if speed.get("sim_frame_cycles"):
        text += (f"; the frame alone {speed['sim_frame_cycles']:,} cycles in {speed['sim_frame_wall_s']:.1f} s, "
                 f"{rate(speed['sim_frame_cycles'], speed['sim_frame_wall_s'])} "
                 f"({rate(speed['sim_frame_cycles'], speed['sim_frame_cpu_s'])} of CPU time)")
    if speed.get("sim_load_avg"):
        text += (f"; load average {' -> '.join(f'{v:.2f}' for v in speed['sim_load_avg'])} on "
                 f"{speed['sim_cores']} cores")
    return text


def model_registers(config, io, input_range=(-1.0, 1.0), isp=True, geometry=None):
    """Register values a driver writes for a model: ISP geometry and quantization for the model's input (unless
    `isp` is False: inputs then come on the tensor port), where the input goes in the activation SRAM and where
    the outputs are (from the ROM's model I/O). `geometry` (an IspGeometry of the model's input size) picks
    another region of interest than the centred one. Returns (registers, ISP geometry, ISP quantization)."""
    from stackcam.quant.isp import IspGeometry

    spec = io["input"]
    h, w, c = spec["hwc"]
    if c != 3:
        raise HostError(f"the die takes 3-channel (RGB) network inputs; the model wants {c} channels")
    scale, zp = spec["scale"][0], spec["zero_point"][0]
    outs = io["die_outputs"]
    if len(outs) > MAX_OUTPUTS:
        raise HostError(f"the model has {len(outs)} die outputs; the die sends at most {MAX_OUTPUTS}")
    regs = {
        "in_addr": spec["addr"], "in_layout": (spec.get("ppw") or 0) | (zp & 0xFF) << 8,
        "out_count": len(outs),
        # The tensor size also sizes the RGB888 input-tensor lines of tensors mode.
        "isp_size": w | h << 16,
    }
    quant = None
    if not isp:
        geometry = None
    else:
        try:
            if geometry is None:
                geometry = IspGeometry.for_input(config, w, h)
            elif (geometry.out_width, geometry.out_height) != (w, h):
                raise ValueError(f"the region of interest gives {geometry.out_width}x{geometry.out_height}")
            geometry.check(config)
        except ValueError as e:
            raise HostError(f"the model's {w}x{h} input does not fit the ISP of config {config.name!r}: "
                            f"{e}") from None
        quant = isp_quant_params(config, scale, zp, lo=input_range[0], hi=input_range[1], geometry=geometry)
        regs.update({
            "isp_mult0": quant.mult[0], "isp_mult1": quant.mult[1], "isp_mult2": quant.mult[2],
            "isp_offset": quant.offset & 0xFFFFFFFF,
            "isp_crop": geometry.crop_x | geometry.crop_y << 16,
            "isp_size": geometry.out_width | geometry.out_height << 16, "isp_bin": geometry.bin_factor,
        })
    for k, t in enumerate(outs):
        oh, ow, oc = t["hwc"]
        if ow * oc > config.max_output_line_bytes:
            raise HostError(f"output '{t['name']}' has rows of {ow * oc} bytes; CSI-2 lines hold at most "
                            f"{config.max_output_line_bytes}")
        regs.update({f"out{k}_addr": t["addr"], f"out{k}_hw": oh | ow << 16,
                     f"out{k}_c": oc | math.ceil(oc / config.array_cols) << 16})
    return regs, geometry, quant


def rom_beats(rom, config):
    """The ROM image as loader-port beats (`config.rom_beat_bytes` bytes, a byte count, first/last markers), as
    Python ints."""
    layout = rom_beat_layout(config)
    beat = config.rom_beat_bytes
    n = math.ceil(len(rom) / beat)
    beats = []
    for i in range(n):
        chunk = rom[i * beat:(i + 1) * beat]
        v = int.from_bytes(chunk, "little")
        v |= len(chunk) << layout["count"].offset
        v |= int(i == 0) << layout["first"].offset
        v |= int(i == n - 1) << layout["last"].offset
        beats.append(v)
    return beats


def tensor_beats(x):
    """An int8 HWC (3-channel) tensor as tensor-port beats, raster order, first/last marked."""
    layout = tensor_pixel_layout(3)
    flat = np.asarray(x, np.int8).reshape(-1, 3).astype(np.uint8).astype(np.int64)
    v = flat[:, 0] | flat[:, 1] << 8 | flat[:, 2] << 16
    v[0] |= 1 << layout["first"].offset
    v[-1] |= 1 << layout["last"].offset
    return v


def _source_key(config):
    """A hash of everything the harness Verilog of `config` and its build come from: the configuration, the
    sources of the RTL, of the toolchain it imports constants from, of the harness and of the Verilator runner,
    and the tool versions. Equal keys give equal models, so a cached model is found without converting the die
    again (tens of seconds for the large presets)."""
    import hashlib

    import amaranth
    import cocotb

    import stackcam.quant as quant
    import stackcam.rtl as rtl

    from .verilator import verilator_root
    h = hashlib.sha256("\0".join([repr(config), amaranth.__version__, cocotb.__version__,
                                   str(verilator_root())]).encode())
    here = Path(__file__).parent
    files = (sorted(Path(rtl.__file__).parent.rglob("*.py")) + sorted(Path(quant.__file__).parent.rglob("*.py"))
             + [here / "harness.py", here / "verilator.py"])
    for f in files:
        h.update(str(f.name).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def build_die(config, log=None):
    """Generate the die's Verilog inside the harness and build (or find cached) its Verilator model."""
    t0 = time.time()
    name = f"die-{config.name}"
    key = _source_key(config)
    build = CocotbBuild.cached(name, key, TOP)
    if build is None:
        text = harness_verilog(config)
        build = CocotbBuild(text, TOP, name=name)
        if not build.is_built and log:
            log(f"building the Verilator model of the die ({config.name}, {len(text.splitlines()):,} lines of "
                f"Verilog; cached after the first time)...")
        build.build()
        build.remember(name, key)
    return build, time.time() - t0


def _write_hex(path, values):
    with open(path, "w") as f:
        for v in values:
            f.write(f"{int(v):x}\n")


def stall_code(stall):
    """The harness's 8-bit stall threshold for a PHY-not-ready probability `stall` in [0, 1): steps of 1/256, at
    most 255/256 (a PHY that is never ready would never finish)."""
    if not 0.0 <= stall < 1.0:
        raise ValueError(f"stall must be in [0, 1), got {stall}")
    return min(255, int(round(stall * 256)))


def run_die(config, rom, raws=(), *, modes=None, regs=None, stall=0.0, log=None, progress=True,
            raw_beats=None, tensors=None, schedule=None, input_range=(-1.0, 1.0), max_cycles=None, poll=None,
            faults=(), frame_regs=None, backpressure=None, build=None):
    """Run frames through the die in Verilator and decode what it sends.

    `rom` is the weight ROM image (bytes) loaded first. Frames are RAW10 frames (`raws`, uint16 [H, W]; or
    `raw_beats` to send malformed ones) through the ISP, or int8 HWC `tensors` on the tensor port. `modes` gives
    each frame's CSI-2 mode, `regs` overrides registers (e.g. {"csi2_ctrl": 1}). `schedule`, if given, is an
    explicit list of ("rom", bytes) and ("frame", index) items (e.g. a corrupt image, a frame, a good image, a
    frame). `stall` is the probability that the CSI-2 PHY is not ready in a cycle.

    `faults` injects SRAM bit flips through the simulation build's fault port (sim.harness): each a dict with
    "frame" (the frame index), "delay" (cycles after the die has taken that frame's last input beat), "sram"
    ("act" or "weight"), "addr" (word) and "bit" (of the stored word, parity bits included: activation words
    have 9-bit lanes, the byte then its parity bit; weight words the bytes, then one parity bit per byte); the
    cycle each was injected comes back in `DieRun.faults`. `frame_regs` (one dict or None per frame) overrides
    registers for that frame after the model's (e.g. another ISP crop: a region of interest). `backpressure` (one
    dict or None per frame) sets, before that frame, the probabilities that the CSI-2 receiver is not ready
    ("stall") and that the pixel, tensor and ROM sources withhold a beat ("pixels", "tensor", "rom"), in [0, 1).
    `build` runs another Verilator model of the same harness (a CocotbBuild of `sim.harness.harness_verilog`
    with another die text, e.g. the gate-level netlist of boards.gatesim) instead of the die's RTL.
    """
    use_tensors = tensors is not None
    n_frames = len(tensors) if use_tensors else len(raws)
    modes = list(modes or ["metadata"] * n_frames)
    if len(modes) != n_frames:
        raise ValueError(f"{len(modes)} modes for {n_frames} frames")
    schedule = list(schedule or ([("rom", rom)] if rom is not None else []) + [("frame", i) for i in
                                                                                   range(n_frames)])
    build, build_s = (build, 0.0) if build is not None else build_die(config, log)

    # Beats of every frame, ROM images in schedule order.
    if use_tensors:
        frame_beats = [tensor_beats(t) for t in tensors]
    else:
        frame_beats = [pack_beats(raw, config.pixels_per_clock) for raw in raws]
        if raw_beats is not None:
            frame_beats = [np.asarray(b, np.int64) if b is not None else frame_beats[n]
                           for n, b in enumerate(raw_beats)]
    ends = np.cumsum([len(b) for b in frame_beats]).tolist()
    all_rom = []
    steps = []
    current = dict(REG_DEFAULTS, **(regs or {}))
    written = {}
    io = None
    ios = []
    for kind, item in schedule:
        if kind == "rom":
            beats = rom_beats(item, config)
            all_rom += beats
            steps.append({"rom": len(all_rom)})
            try:
                io = load_rom(item, config).io
            except RomError:
                pass            # a corrupt image: the die must refuse it; the host keeps the last good I/O map
        else:
            n = item
            want = dict(current, mode=MODES[modes[n]], input_select=int(use_tensors))
            if io is not None:
                want.update(model_registers(config, io, input_range, isp=not use_tensors)[0])
            if frame_regs is not None and frame_regs[n]:
                want.update(frame_regs[n])
            writes = [[REGISTER_BY_NAME[k].addr, v & 0xFFFFFFFF] for k, v in want.items() if written.get(k) != v]
            written.update(want)
            if writes:
                # Normally registers change once the previous frame is out. After a hand-made (possibly
                # malformed) frame, do not wait: such a frame may only end when the next one starts.
                prev_custom = raw_beats is not None and n > 0 and raw_beats[n - 1] is not None
                step = {"regs": writes, "wait": not prev_custom}
                if prev_custom:
                    step["wait_index"] = ends[n - 1]     # ... but only once the die has taken all of it
                steps.append(step)
            if backpressure is not None and backpressure[n] is not None:
                bp = backpressure[n]
                steps.append({"backpressure": {k: stall_code(float(bp.get(k, 0.0)))
                                               for k in ("stall", "pixels", "tensor", "rom")}})
            steps.append({"frame": "tensor" if use_tensors else "pixels", "end": ends[n]})
            ios.append(io)
            for f in faults:
                if f["frame"] == n:
                    steps.append({"fault": {"wait_index": ends[n], "delay": int(f["delay"]),
                                            "id": SRAM_IDS[f["sram"]], "addr": int(f["addr"]), "bit": int(f["bit"])}})
    depth_px, depth_tensor, depth_rom = player_depths(config)
    depth = depth_tensor if use_tensors else depth_px
    if ends and ends[-1] > depth:
        raise HostError(f"{ends[-1]:,} input beats exceed the simulation harness's {depth:,}: send fewer frames "
                        f"per run")
    if len(all_rom) > depth_rom:
        raise HostError(f"ROM images of {len(all_rom):,} beats exceed the simulation harness's {depth_rom:,}")
    if max_cycles is None:
        work = sum(len(b) for b in frame_beats) + len(all_rom)
        rom_bytes = max((len(item) for kind, item in schedule if kind == "rom"), default=0)
        max_cycles = 50 * work + max(200_000, 40 * rom_bytes) * max(1, n_frames) + 100_000
    if poll is None:
        poll = 32 if config.input_width * config.input_height <= 64 * 64 else 512
    plan = {
        "steps": steps, "port": "tensor" if use_tensors else "pixels", "stall": stall_code(stall),
        "max_cycles": int(max_cycles), "poll": poll,
        "reg_npu_status": REGISTER_BY_NAME["npu_status"].addr, "reg_load_cycles": REGISTER_BY_NAME["load_cycles"].addr,
        "reg_counter_sel": REGISTER_BY_NAME["counter_sel"].addr,
        "reg_counter_cycles": REGISTER_BY_NAME["counter_cycles"].addr,
        "reg_counter_macs": REGISTER_BY_NAME["counter_macs"].addr, "max_counters": config.max_descriptors,
        "reg_bank_sel": REGISTER_BY_NAME["bank_sel"].addr, "reg_bank_counter": REGISTER_BY_NAME["bank_counter"].addr,
        "bank_counters": [(k, config.weight_banks if k.startswith("weight") else config.act_banks)
                          for k in BANK_COUNTERS],
        **{f"reg_counter_{k}": REGISTER_BY_NAME[f"counter_{k}"].addr
           for k in ("act_reads", "act_write_bytes", "weight_reads")},
        "regs_to_read": {n: REGISTER_BY_NAME[n].addr for n in ("status", "npu_status", "npu_descriptors",
                                                               "frame_latency", "model_fingerprint", "load_cycles",
                                                               "sram_errors")},
    }

    with tempfile.TemporaryDirectory(prefix="stackcam-") as tmp:
        tmp = Path(tmp)
        port = "tensor" if use_tensors else "pixels"
        _write_hex(tmp / "frames.hex", np.concatenate(frame_beats) if frame_beats else [])
        _write_hex(tmp / "rom.hex", all_rom)
        plusargs = [f"+{port}_file={tmp / 'frames.hex'}", f"+{port}_count={ends[-1] if ends else 0}",
                    f"+{port}_log={tmp / 'frames.log'}", f"+rom_file={tmp / 'rom.hex'}",
                    f"+rom_count={len(all_rom)}", f"+csi2_log={tmp / 'csi2.log'}"]
        (tmp / "plan.json").write_text(json.dumps(plan))
        env = {"STACKCAM_TB_PLAN": str(tmp / "plan.json"), "STACKCAM_TB_OUT": str(tmp / "out.json"),
               "STACKCAM_TB_PROGRESS": str(tmp / "progress"), "COCOTB_RESOLVE_X": "ZEROS"}
        result = {}

        def target():
            try:
                result["res"] = build.run("stackcam.sim.tb_die", extra_env=env, test_dir=tmp, log_file=tmp / "sim.log",
                                          plusargs=plusargs)
            except Exception as e:          # reported below, in the caller's thread
                result["err"] = e

        load0 = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        _progress_loop(thread, tmp / "progress", t0, progress, ends[-1] if ends else 0, len(all_rom))
        wall = time.time() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        load = (load0, os.getloadavg()[0])
        if "err" in result:
            log_text = (tmp / "sim.log").read_text()[-2500:] if (tmp / "sim.log").exists() else ""
            raise RuntimeError(f"die simulation failed: {result['err']}\n{log_text}") from result["err"]
        if not (tmp / "out.json").exists():
            log_text = (tmp / "sim.log").read_text()[-3000:] if (tmp / "sim.log").exists() else ""
            raise RuntimeError(f"die simulation produced no results:\n{log_text}")
        r = json.loads((tmp / "out.json").read_text())
        if not r["finished"]:
            taken = r["tensor_sent"] if use_tensors else r["pixels_sent"]
            raise RuntimeError(f"die simulation did not finish: waiting for {r['timeout']} after {r['cycles']:,} "
                               f"cycles ({r['frames_sent']}/{n_frames} frames out, model_ok={r['model_ok']}, "
                               f"status={r.get('status', 0):#x}, npu_status={r.get('npu_status', 0):#x}, "
                               f"input beats taken {taken:,}/{ends[-1] if ends else 0:,}, "
                               f"frame_errors={r['frame_errors']})")
        beats, beat_cycles = [], []
        if (tmp / "csi2.log").exists():
            for line in (tmp / "csi2.log").read_text().split("\n"):
                if line:
                    b, c = line.split()
                    beats.append(int(b, 16))
                    beat_cycles.append(int(c))
        marks = []
        if (tmp / "frames.log").exists():
            for line in (tmp / "frames.log").read_text().split("\n"):
                if line:
                    i, c = line.split()
                    marks.append((int(i), int(c)))

    starts = {0} | {e for e in ends[:-1]}
    lasts = {e - 1 for e in ends}
    first_pixel = [c for i, c in marks if i in starts]
    last_pixel = [c for i, c in marks if i in lasts]
    lanes = config.csi2_lanes
    data = merge_lanes(beats, lanes)
    dec = CSI2Decoder()
    dec.feed(data)
    dec.finish()
    all_regs = dict(REG_DEFAULTS, **(regs or {}))
    vc_output = (all_regs["vc_map"] >> 2) & 3
    fe_cycles = _fe_beat_cycles(beats, beat_cycles, lanes, vc_output)
    frames = decode_frames(config, dec, ios, all_regs["dt_output"], vc_output)
    counters = {k: r[k] for k in ("frames_sent", "frame_errors", "csi2_errors", "npu_cycles", "mac_cycles",
                                  "model_ok", "npu_status", "npu_descriptors", "frame_latency",
                                  "model_fingerprint", "load_cycles", "sram_errors")}
    return DieRun(csi2_bytes=data, decoder=dec, frames=frames, first_pixel=first_pixel, last_pixel=last_pixel,
                  frame_last_byte=fe_cycles, cycles=r["cycles"], counters=counters, loads=r["loads"],
                  descriptor_counters=r["descriptor_counters"],
                  descriptor_activity=r.get("descriptor_activity", []),
                  bank_counters=r.get("bank_counters", {}), sim_wall_s=wall, sim_cpu_s=cpu, load_avg=load,
                  build_wall_s=build_s,
                  marks=[tuple(m) for m in r.get("marks", ())], faults=r.get("faults", []))


def _progress_loop(thread, path, t0, progress, frame_beats, rom_beats_n):
    tty = sys.stderr.isatty()
    shown = False
    next_line = time.time() + 10
    while thread.is_alive():
        thread.join(0.5)
        if not (progress and path.exists() and (tty or time.time() >= next_line)):
            continue
        next_line = time.time() + 10
        try:
            cyc, px, tn, rom, nout, fs = (int(v) for v in path.read_text().split())
        except ValueError:
            continue
        rate = cyc / max(time.time() - t0, 1e-9)
        sent = max(px, tn)
        msg = (f"  simulating: {cyc:>11,} cycles  ROM {100 * rom / max(rom_beats_n, 1):5.1f}%  input "
               f"{100 * sent / max(frame_beats, 1):5.1f}%  frames out {fs}  CSI-2 beats {nout:,}  "
               f"({rate / 1e3:.0f} k cycles/s)")
        sys.stderr.write(("\r" + msg + "   ") if tty else (msg + "\n"))
        sys.stderr.flush()
        shown = True
    if shown and tty:
        sys.stderr.write("\n")


def decode_frames(config, dec, ios, dt_output, vc_output):
    """FrameResults from the decoded packets: an image or input-tensor frame belongs to the next output frame."""
    inv_modes = {v: k for k, v in MODES.items()}
    results = []
    pending_image = pending_input = None
    for f in sorted(dec.frames, key=lambda f: f.packets[0].offset if f.packets else 0):
        if not f.complete:
            continue
        if f.payloads(DT_RAW10):
            pending_image = image_from_lines(f.payloads(DT_RAW10), config.frame_width)
            continue
        if f.payloads(DT_RGB888):
            # The lines are as wide as the model's input (the isp_size register), not the preset's input.
            io = ios[len(results)] if len(results) < len(ios) else None
            width = io["input"]["hwc"][1] if io is not None else config.input_width
            pending_input = input_tensor_from_lines(f.payloads(DT_RGB888), width)
            continue
        if f.vc != vc_output:
            continue
        emb_lines = f.payloads(DT_EMBEDDED)
        emb = parse_embedded(emb_lines[0]) if emb_lines else None
        mode = inv_modes.get(emb["mode"], "?") if emb else "?"
        r = FrameResult(number=f.number, mode=mode, embedded=emb, image=pending_image, input_tensor=pending_input)
        pending_image = pending_input = None
        io = ios[len(results)] if len(results) < len(ios) else None
        r.error = frame_error(emb, io.get("layers", ()) if io else ())
        if io is not None and r.error is None:
            outs = {}
            for k, t in enumerate(io["die_outputs"]):
                payload = b"".join(f.payloads(dt_output + k))
                h, w, c = t["hwc"]
                arr = np.frombuffer(payload, np.int8)
                outs[t["name"]] = arr.reshape(h, w, c).copy() if arr.size == h * w * c else None
            r.outputs = [outs[t["name"]] for t in io["die_outputs"]]
            if all(o is not None for o in r.outputs):
                r.graph_outputs = host_outputs(io, outs)
        results.append(r)
    _frame_sizes(dec, results, vc_output)
    return results


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


def run_tensors(config, rom, items, log=None, faults=()):
    """Each int8 input tensor of `items` through the die's tensor port, the model of ROM image `rom` on the NPU,
    its outputs back over CSI-2 and the host tail on the host: a list (one per item) of the model's outputs.

    Raises DieError (one line) when the die refuses the image or a frame: nothing stale or partial comes back.
    `faults`: SRAM bit flips to inject (see `run_die`)."""
    from stackcam.errors import DieError
    io = load_rom(rom, config).io
    hwc = tuple(io["input"]["hwc"])
    run = run_die(config, rom, tensors=[np.asarray(x).reshape(hwc) for x in items], log=log,
                  progress=log is not None, faults=faults)
    if not run.loads or not run.loads[0]["model_ok"]:
        status = run.loads[0]["npu_status"] if run.loads else 0
        raise DieError(f"the die refused the ROM image (npu_status {status:#x})")
    results = []
    for n, fr in enumerate(run.frames):
        if fr.error or fr.graph_outputs is None:
            raise DieError(f"input {n}: the die refused the frame: {fr.error or 'incomplete output tensors'}")
        results.append(fr.graph_outputs)
    if len(results) != len(items):
        raise DieError(f"the die sent {len(results)} results for {len(items)} inputs")
    if log is not None:
        npu = run.counters["npu_cycles"]
        log(f"die: NPU {npu:,} cycles for the last input (its counter; {npu / config.clock_mhz / 1e3:.3f} ms at "
            f"{config.clock_mhz:g} MHz), {run.cycles:,} cycles simulated in all")
    return results
