"""The main job: a real photo through the whole die in Verilator, checked bit-exact, with cycles and bytes."""

import json
import zlib
from pathlib import Path

import numpy as np

from stackcam.quant.golden import execute_trace
from stackcam.quant.isp import isp_reference
from stackcam.quant.program import read_tensor

from .dierun import model_registers, run_die, speed_line
from .frame_source import bayer_frame, load_image
from .metadata import bandwidth, frame_bytes

__all__ = ["simulate", "layer_rows", "golden_die_outputs", "face_detection"]


def _fmt(n):
    return f"{n:,}"


def _ratio(r):
    return f"{r:9.1f}x less than" if r >= 1 else f"{1 / r:9.2f}x more than"


def _rate(bps):
    return f"{bps / 1e6:,.2f} MB/s" if bps >= 1e5 else f"{bps / 1e3:,.2f} kB/s"


def golden_die_outputs(model, config, x):
    """The golden program executor's die outputs (int8 HWC, in the model's order) and graph outputs for input x."""
    outputs, sram = execute_trace(model.rom, config, x)
    die = [read_tensor(sram, t["addr"], *t["hwc"]) for t in model.io["die_outputs"]]
    return die, outputs


def layer_rows(model, config, descriptor_counters):
    """Per-layer (index, name, op, MACs, cycles, MAC cycles, utilization) from the die's descriptor counters."""
    cycles = {}
    macs_busy = {}
    for d, (c, mc) in zip(model.compiled.descriptors, descriptor_counters):
        cycles[d.layer] = cycles.get(d.layer, 0) + c
        macs_busy[d.layer] = macs_busy.get(d.layer, 0) + mc
    rows = []
    for layer in model.compiled.layers:
        c = cycles.get(layer.index, 0)
        util = layer.macs / (config.macs_per_cycle * c) if c else 0.0
        rows.append({"index": layer.index, "name": layer.name, "op": layer.kind, "die_op": layer.op,
                     "macs": int(layer.macs), "cycles": int(c), "mac_cycles": int(macs_busy.get(layer.index, 0)),
                     "utilization": util})
    return rows


def face_detection(model, graph_outputs, geometry, config, photo_shape):
    """Best BlazeFace detection, box mapped back to the photo's pixels (the ISP crop of the stretched frame)."""
    from stackcam.quant.detect import detect_faces
    from stackcam.quant.zoo.blazeface import _output_pair
    r, c, quant = _output_pair(model.graph, graph_outputs)
    found = detect_faces(r, c, (128, 128), min_score=None, quant=quant)
    if not found:
        return None
    best = found[0]
    ph, pw = photo_shape[:2]
    sx = pw / config.frame_width
    sy = ph / config.frame_height
    x0, y0, x1, y1 = best.box
    box = ((geometry.crop_x + x0 / 128 * geometry.crop_width) * sx,
           (geometry.crop_y + y0 / 128 * geometry.crop_height) * sy,
           (geometry.crop_x + x1 / 128 * geometry.crop_width) * sx,
           (geometry.crop_y + y1 / 128 * geometry.crop_height) * sy)
    return float(best.score), tuple(float(v) for v in box)


def _draw(photo, box, path):
    """The photo with `box` (x0, y0, x1, y1 in its pixels) drawn as a 3-pixel red frame, saved as PNG."""
    from skimage.io import imsave
    img = np.array(photo, copy=True)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    for t in range(3):
        top, bottom = min(h - 1, max(0, int(y0) - t)), min(h - 1, max(0, int(y1) + t))
        left, right = min(w - 1, max(0, int(x0) - t)), min(w - 1, max(0, int(x1) + t))
        img[[top, bottom], left:right + 1] = (255, 32, 32)
        img[top:bottom + 1, [left, right]] = (255, 32, 32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    imsave(str(path), img, check_contrast=False)


def simulate(config, prepared, image=None, frames=1, mode="metadata", dump_csi2=None, stall=0.0, report=None,
             png=None, ls_le=False, out=print, log=print):
    """Run frames of the photo through the die with the model `prepared` (name, graph, compiled, rom: the
    command line's PreparedModel) and print the summary. Returns (exit status, summary dict)."""
    model = prepared.name
    rgb = load_image(image, fit=(config.frame_width, config.frame_height))     # a huge photo decoded reduced
    raw = bayer_frame(rgb, config.frame_width, config.frame_height)
    io = prepared.io
    regs, geometry, quant = model_registers(config, io)
    x_ref = isp_reference(raw, config, quant, geometry)
    die_ref, graph_ref = golden_die_outputs(prepared, config, x_ref)
    modes = (["image", "metadata", "tensors"] * -(-max(frames, 3) // 3))[:max(frames, 3)] if mode == "all" \
        else [mode] * frames
    cm = prepared.compiled
    macs = cm.macs

    out(f"config:        {config.summary()}")
    out(f"model:         {model}: {len(cm.layers)} layers, {_fmt(macs)} MACs, {_fmt(cm.weight_count)} weights, "
        f"ROM image {_fmt(len(prepared.rom))} bytes, fingerprint {zlib.crc32(prepared.rom[:-4]):#010x}")
    name = image if image is not None else "skimage.data.astronaut()"
    out(f"image:         {name}: {rgb.shape[1]}x{rgb.shape[0]} RGB -> frame {config.frame_width}x"
        f"{config.frame_height} RAW10 Bayer RGGB, {config.pixels_per_clock} pixel(s)/clock")
    s, zp = io["input"]["scale"][0], io["input"]["zero_point"][0]
    out(f"input tensor:  {'x'.join(map(str, x_ref.shape))} int8 (ISP: crop {geometry.crop_width}x"
        f"{geometry.crop_height} at ({geometry.crop_x},{geometry.crop_y}), {2 * geometry.bin_factor}x"
        f"{2 * geometry.bin_factor} Bayer bins, scale {s:g}, zero point {zp}; "
        f"{io['input'].get('layout', 'tiled')} in SRAM)")
    outs = ", ".join(f"{t['name']} {'x'.join(map(str, t['hwc']))}" for t in io["die_outputs"])
    out(f"die outputs:   {outs} (CSI-2 VC 1, data types 0x30..), then an embedded-data line")
    out(f"frames:        {len(modes)} ({', '.join(modes)})")

    run = run_die(config, prepared.rom, [raw] * len(modes), modes=modes, regs={"csi2_ctrl": int(ls_le)},
                  stall=stall, log=log)

    status = 0
    n = sum(t.size for t in die_ref)
    dec = run.decoder
    exact = []
    load = run.loads[0] if run.loads else {}
    out(f"model load:    {'accepted' if load.get('model_ok') else 'REFUSED'} in {_fmt(load.get('load_cycles', 0))} "
        f"cycles ({config.cycles_to_ms(load.get('load_cycles', 0)):.3f} ms at {config.clock_mhz:g} MHz)")
    if not load.get("model_ok"):
        status = 1
    for i, (want_mode, fr) in enumerate(zip(modes, run.frames + [None] * len(modes))):
        label = "bit-exact:" if len(modes) == 1 else f"bit-exact[{i}]:"
        if fr is None or fr.error or not fr.outputs:
            why = "never arrived" if fr is None else f"refused: {fr.error or 'incomplete output tensors'}"
            out(f"{label:<15}0/{n} (frame {i + 1} {why})")
            exact.append(0)
            status = 1
            continue
        good = sum(int(np.count_nonzero(a == b)) for a, b in zip(fr.outputs, die_ref) if a is not None)
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
        out(f"{label:<15}{good}/{n} (die outputs vs the golden program executor; frame {fr.number}, "
            f"mode {fr.mode}{extra})")
        if good != n or fr.mode != want_mode:
            status = 1
    face = None
    if run.frames and run.frames[0].graph_outputs is not None and model == "zoo:blazeface":
        face = face_detection(prepared, run.frames[0].graph_outputs, geometry, config, rgb.shape)
        if face:
            out(f"face:          score {face[0]:.3f}, box x {face[1][0]:.0f}-{face[1][2]:.0f}, "
                f"y {face[1][1]:.0f}-{face[1][3]:.0f} (photo pixels; from the die's CSI-2 output, host tail and "
                f"decoding)")
    errs = (dec.ecc_errors, dec.crc_errors, dec.framing_errors)
    out(f"CSI-2 checks:  {len(dec.packets)} packets, ECC errors {errs[0]} (corrected {dec.ecc_corrected}), "
        f"CRC errors {errs[1]}, framing errors {errs[2]}")
    if any(errs):
        status = 1
        for e in dec.errors[:5]:
            out(f"               {e}")

    ms = config.cycles_to_ms
    e2e = after = 0
    if run.frame_last_byte and run.first_pixel and run.last_pixel:
        e2e = run.frame_last_byte[0] - run.first_pixel[0] + 1
        after = run.frame_last_byte[0] - run.last_pixel[0]
    npu = run.counters["npu_cycles"]
    out(f"latency:       first pixel in -> last CSI-2 byte out: {_fmt(e2e)} cycles ({ms(e2e):.3f} ms at "
        f"{config.clock_mhz:g} MHz; frame 1, mode {modes[0]})")
    out(f"               last pixel in  -> last CSI-2 byte out: {_fmt(after)} cycles ({ms(after):.3f} ms)")
    util = macs / (config.macs_per_cycle * npu) if npu else 0.0
    out(f"network:       {_fmt(npu)} cycles ({ms(npu):.3f} ms), MAC array busy {_fmt(run.counters['mac_cycles'])} "
        f"cycles, utilization {100 * util:.1f}% of {config.macs_per_cycle} MACs/cycle")
    rows = layer_rows(prepared, config, run.descriptor_counters)
    out(f"  {'#':>3} {'layer':<34} {'op':<18} {'MACs':>12} {'cycles':>10} {'util':>6}")
    for r in rows:
        out(f"  {r['index']:>3} {r['name'][-34:]:<34} {r['op']:<18} {_fmt(r['macs']):>12} {_fmt(r['cycles']):>10} "
            f"{100 * r['utilization']:5.1f}%")

    out(f"CSI-2 bytes per frame by mode, at {config.frame_rate:g} frames/s, against full-resolution RAW10 "
        f"({_fmt(config.raw_frame_bytes)} B/frame) and 4K60 RAW10 video:")
    measured = {}
    for fr in run.frames:
        measured.setdefault(fr.mode, fr.csi2_bytes)
    bw = {}
    shapes = [t["hwc"] for t in io["die_outputs"]]
    for m_name in ("image", "tensors", "metadata"):
        computed = frame_bytes(config, m_name, shapes, ls_le, (geometry.out_height, geometry.out_width))
        nbytes = measured.get(m_name, computed)
        how = "measured" if m_name in measured else "from packet sizes"
        if m_name in measured and nbytes != computed:
            how += f", expected {_fmt(computed)}!"
            status = 1
        b = bandwidth(config, nbytes)
        bw[m_name] = dict(b, measured=m_name in measured)
        out(f"  {m_name:<9}{_fmt(nbytes):>12} B/frame  {_rate(b['bytes_per_s']):>13}   "
            f"{_ratio(b['raw_ratio'])} RAW10   {_ratio(b['uhd_4k60_ratio'])} 4K60   ({how})")
    out(f"simulation:    {speed_line(run.speed())}; Verilog+build {run.build_wall_s:.1f} s")
    if run.counters["frame_errors"] or run.counters["csi2_errors"]:
        out(f"die errors:    frame errors {run.counters['frame_errors']}, CSI-2 payload errors "
            f"{run.counters['csi2_errors']}")
        status = 1

    if dump_csi2:
        Path(dump_csi2).write_bytes(run.csi2_bytes)
        out(f"wrote {len(run.csi2_bytes):,} CSI-2 bytes to {dump_csi2}")
    summary = {
        "config": config.name, "model": model, "model_fingerprint": zlib.crc32(prepared.rom[:-4]),
        "image": name, "modes": modes,
        "frame": [config.frame_width, config.frame_height], "input_tensor": list(x_ref.shape),
        "die_outputs": [t["hwc"] for t in io["die_outputs"]], "bit_exact": [int(v) for v in exact],
        "elements": int(n), "frame_numbers": [f.number for f in run.frames],
        "face": {"score": face[0], "box": face[1]} if face else None,
        "latency_first_pixel_to_last_byte": int(e2e), "latency_last_pixel_to_last_byte": int(after),
        "latency_ms": ms(e2e), "clock_mhz": config.clock_mhz, "npu_cycles": npu, "npu_ms": ms(npu),
        "macs": int(macs), "utilization": util, "load_cycles": load.get("load_cycles", 0), "layers": rows,
        "csi2_bytes_total": len(run.csi2_bytes), "bandwidth": bw, "raw_frame_bytes": config.raw_frame_bytes,
        "csi2_errors": {"ecc": errs[0], "crc": errs[1], "framing": errs[2]},
        **run.speed(), "status": status,
    }
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")
        out(f"wrote {report}")
    if png and face:
        _draw(rgb, face[1], png)
        out(f"wrote {png}")
    return status, summary
