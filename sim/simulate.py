"""The main job: a real photo through the whole die in Verilator, checked bit-exact, with cycles and bytes."""

import json
from pathlib import Path

import numpy as np

from quant.firstlight import first_light_program, first_light_reference

from .dierun import run_die
from .frame_source import bayer_frame, load_image
from .metadata import bandwidth, frame_bytes

__all__ = ["simulate"]


def _fmt(n):
    return f"{n:,}"


def _ratio(r):
    return f"{r:9.1f}x less than" if r >= 1 else f"{1 / r:9.2f}x more than"


def _rate(bps):
    return f"{bps / 1e6:,.2f} MB/s" if bps >= 1e5 else f"{bps / 1e3:,.2f} kB/s"


def simulate(config, image=None, frames=1, mode="metadata", seed=0, dump_csi2=None, stall=0.0, report=None,
             ls_le=False, out=print, log=print):
    """Run frames of the photo through the die and print the summary. Returns (exit status, summary dict)."""
    rgb = load_image(image)
    raw = bayer_frame(rgb, config.frame_width, config.frame_height)
    program = first_light_program(config, seed=seed)
    layer = program.layer
    x_ref, y_ref = first_light_reference(raw, config, program)
    modes = ["image", "metadata", "tensors"] * -(-max(frames, 3) // 3) if mode == "all" else [mode] * frames
    modes = modes[:max(frames, 3)] if mode == "all" else modes

    out(f"config:        {config.summary()}")
    name = image if image is not None else "skimage.data.astronaut()"
    out(f"image:         {name}: {rgb.shape[1]}x{rgb.shape[0]} RGB -> frame {config.frame_width}x"
        f"{config.frame_height} RAW10 Bayer RGGB, {config.pixels_per_clock} pixel(s)/clock")
    out(f"input tensor:  {x_ref.shape[0]}x{x_ref.shape[1]}x{x_ref.shape[2]} int8 (ISP: crop {config.crop_width}x"
        f"{config.crop_height} at ({config.crop_x},{config.crop_y}), {2 * config.bin_factor}x"
        f"{2 * config.bin_factor} Bayer bins, scale {program.input_scale:g}, zero point {program.input_zero_point})")
    kh, kw = layer.kernel
    macs = layer.macs(config.input_height, config.input_width)
    out(f"network:       CONV_2D {kh}x{kw} stride {layer.stride[0]} {layer.padding} {layer.activation}, "
        f"3 -> {layer.out_channels} channels, {_fmt(macs)} MACs (seeded random weights, seed {seed})")
    out(f"output tensor: {y_ref.shape[0]}x{y_ref.shape[1]}x{y_ref.shape[2]} int8, CSI-2 VC 1 data type 0x30, "
        f"one long packet per row, then an embedded-data line")
    out(f"frames:        {len(modes)} ({', '.join(modes)})")

    run = run_die(config, program, [raw] * len(modes), modes=modes, regs={"csi2_ctrl": int(ls_le)}, stall=stall,
                  log=log)

    status = 0
    n = y_ref.size
    dec = run.decoder
    exact = []
    numbers = [f.number for f in run.frames]
    for i, (want_mode, fr) in enumerate(zip(modes, run.frames + [None] * len(modes))):
        label = "bit-exact:" if len(modes) == 1 else f"bit-exact[{i}]:"
        if fr is None:
            out(f"{label:<15}frame missing")
            exact.append(0)
            status = 1
            continue
        good = 0 if fr.output_tensor is None else int(np.count_nonzero(fr.output_tensor == y_ref))
        exact.append(good)
        extra = ""
        if want_mode == "image":
            ok = fr.image is not None and np.array_equal(fr.image, raw)
            extra = f"; RAW10 image {'identical to' if ok else 'DIFFERS from'} the frame sent"
            status |= 0 if ok else 1
        elif want_mode == "tensors":
            ok = fr.input_tensor is not None and np.array_equal(fr.input_tensor, x_ref)
            got = 0 if fr.input_tensor is None else int(np.count_nonzero(fr.input_tensor == x_ref))
            extra = f"; input tensor {got}/{x_ref.size}"
            status |= 0 if ok else 1
        out(f"{label:<15}{good}/{n} (output tensor vs the quant/ numpy reference; frame {fr.number}, "
            f"mode {fr.mode}{extra})")
        if good != n or fr.mode != want_mode:
            status = 1
    if numbers != list(range(1, len(modes) + 1)):
        out(f"ERROR: frame numbers {numbers}, expected 1..{len(modes)}")
        status = 1
    errs = (dec.ecc_errors, dec.crc_errors, dec.framing_errors)
    out(f"CSI-2 checks:  {len(dec.packets)} packets, ECC errors {errs[0]} (corrected {dec.ecc_corrected}), "
        f"CRC errors {errs[1]}, framing errors {errs[2]}")
    if any(errs):
        status = 1
        for e in dec.errors[:5]:
            out(f"               {e}")

    e2e = run.frame_last_byte[0] - run.first_pixel[0] + 1
    after = run.frame_last_byte[0] - run.last_pixel[0]
    ms = config.cycles_to_ms
    out(f"latency:       first pixel in -> last CSI-2 byte out: {_fmt(e2e)} cycles ({ms(e2e) * 1e3:.1f} us at "
        f"{config.clock_mhz:g} MHz; frame 1, mode {modes[0]})")
    out(f"               last pixel in  -> last CSI-2 byte out: {_fmt(after)} cycles ({ms(after) * 1e3:.1f} us)")
    emb = run.frames[0].embedded if run.frames else None
    if emb:
        out(f"               first pixel in -> output tensor complete: {_fmt(emb['frame_latency'])} cycles "
            f"(die counter, embedded line)")
    conv_cycles, mac_cycles = run.counters["conv_cycles"], run.counters["mac_cycles"]
    util = macs / (config.macs_per_cycle * conv_cycles) if conv_cycles else 0.0
    out(f"NPU counters:  conv layer {_fmt(conv_cycles)} cycles, MAC array busy {_fmt(mac_cycles)} cycles, "
        f"utilization {100 * util:.1f}% of {config.macs_per_cycle} MACs/cycle")

    out(f"CSI-2 bytes per frame by mode, at {config.frame_rate:g} frames/s, against full-resolution RAW10 "
        f"({_fmt(config.raw_frame_bytes)} B/frame) and 4K60 RAW10 video:")
    measured = {}
    for fr in run.frames:
        measured.setdefault(fr.mode, fr.csi2_bytes)
    bw = {}
    for m_name in ("image", "tensors", "metadata"):
        computed = frame_bytes(config, m_name, y_ref.shape, ls_le)
        nbytes = measured.get(m_name, computed)
        how = "measured" if m_name in measured else "from packet sizes"
        if m_name in measured and nbytes != computed:
            how += f", expected {_fmt(computed)}!"
            status = 1
        b = bandwidth(config, nbytes)
        bw[m_name] = dict(b, measured=m_name in measured)
        out(f"  {m_name:<9}{_fmt(nbytes):>12} B/frame  {_rate(b['bytes_per_s']):>13}   "
            f"{_ratio(b['raw_ratio'])} RAW10   {_ratio(b['uhd_4k60_ratio'])} 4K60   ({how})")
    out(f"simulation:    {_fmt(run.cycles)} cycles in {run.sim_wall_s:.1f} s "
        f"({run.cycles / max(run.sim_wall_s, 1e-9) / 1e3:.0f} k cycles/s); Verilog+build {run.build_wall_s:.1f} s")
    if run.counters["frame_errors"] or run.counters["csi2_errors"]:
        out(f"die errors:    frame errors {run.counters['frame_errors']}, CSI-2 payload errors "
            f"{run.counters['csi2_errors']}")
        status = 1

    if dump_csi2:
        Path(dump_csi2).write_bytes(run.csi2_bytes)
        out(f"wrote {len(run.csi2_bytes):,} CSI-2 bytes to {dump_csi2}")
    summary = {
        "config": config.name, "image": name, "modes": modes, "frame": [config.frame_width, config.frame_height],
        "input_tensor": list(x_ref.shape), "output_tensor": list(y_ref.shape),
        "bit_exact": [int(v) for v in exact], "elements": int(n), "frame_numbers": numbers,
        "latency_first_pixel_to_last_byte": int(e2e), "latency_last_pixel_to_last_byte": int(after),
        "clock_mhz": config.clock_mhz, "conv_cycles": conv_cycles, "mac_cycles": mac_cycles, "macs": int(macs),
        "csi2_bytes_total": len(run.csi2_bytes), "bandwidth": bw, "raw_frame_bytes": config.raw_frame_bytes,
        "csi2_errors": {"ecc": errs[0], "crc": errs[1], "framing": errs[2]},
        "sim_cycles": run.cycles, "sim_wall_s": run.sim_wall_s, "status": status,
    }
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")
        out(f"wrote {report}")
    return status, summary
