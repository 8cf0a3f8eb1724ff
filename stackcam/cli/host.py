"""`stackcam host`: send a model and a photo (or a tensor, or a test pattern) to the board over its serial port
(or to the board top in Verilator with --sim) and print what comes back, checked against the golden executor."""

import json
import sys
import time
from pathlib import Path

import numpy as np

from stackcam.errors import EXIT_DIE, DieError

from . import UserError, config_arg
from .models import add_model_arguments, prepare_from_args

__all__ = ["register", "cmd_host"]


def register(sub):
    from stackcam.rtl.regs import MODES
    p = sub.add_parser("host", help="send a model and a photo to the FPGA board (or its simulation) and check the "
                       "answer", description="Send a model and a photo (or a tensor, or test-pattern frames) to "
                       "the board over a serial port and print the result, checked against the golden executor. "
                       "Exit status 1 when an output differs, 3 when the die refuses the frame.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", help="serial port (/dev/ttyUSB0, COM3, or a pyserial URL like socket://host:port)")
    where.add_argument("--sim", action="store_true", help="the board top in Verilator instead of hardware")
    p.add_argument("--baud", type=int, default=3_000_000, help="baud rate (default 3000000, the board's)")
    p.add_argument("--config", default="fpga", help="the die configuration the board was built with (default fpga)")
    add_model_arguments(p, default="zoo:mobilenet_v1_0.25_96_2")
    p.add_argument("--image", default=None, help="photo (default skimage's astronaut)")
    p.add_argument("--tensor", action="store_true", help="send the photo as the model's int8 input tensor "
                   "through the tensor port instead of a RAW frame through the ISP (much less to send)")
    p.add_argument("--pattern", type=int, metavar="KIND", default=None,
                   help="send one test-pattern frame (0 colour bars, 1 ramp) instead of a photo")
    p.add_argument("--mode", choices=list(MODES), default="metadata", help="CSI-2 output mode (default metadata)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer (default 120)")
    p.add_argument("--report", default=None, help="write the result (outputs checked, face found, cycles) as JSON")
    p.set_defaults(func=cmd_host)


def cmd_host(args):
    from stackcam.boards.host import BoardClient, BoardError, SimulatedBoard, run_frame
    from stackcam.quant.isp import isp_reference
    from stackcam.sim.dierun import model_registers
    from stackcam.sim.frame_source import bayer_frame, load_image
    from stackcam.sim.simulate import face_detection, golden_die_outputs
    say = lambda s: print(s, file=sys.stderr, flush=True)       # noqa: E731
    if args.port is None and not args.sim:
        raise UserError("give --port PORT (a board) or --sim (the board top in Verilator)")
    if args.report and not Path(args.report).resolve().parent.is_dir():
        raise UserError(f"--report {args.report}: no such folder")
    config = config_arg(args.config)
    photo = load_image(args.image, fit=(config.frame_width, config.frame_height))
    model = prepare_from_args(args, config, log=say)
    raw = bayer_frame(photo, config.frame_width, config.frame_height)
    # The input tensor the die makes of the photo (the ISP's bit-exact reference): what --tensor sends, and
    # the golden executor's input either way.
    x = geometry = None
    if args.pattern is None:
        _, geometry, quant = model_registers(config, model.io)
        x = isp_reference(raw, config, quant, geometry)

    def run(transport):
        client = BoardClient(transport, timeout=args.timeout)
        info = client.info()
        say(f"board: frame {info['frame_width']}x{info['frame_height']}, {info['pixels_per_clock']} px/clk, "
            f"{info['csi2_lanes']} CSI-2 lanes, {info['fifo_depth']}-byte receive FIFO")
        t0 = time.time()
        client.load_rom(model.rom)
        say(f"model {args.model}: ROM image of {len(model.rom):,} bytes (fingerprint {model.fingerprint:#010x}) "
            f"accepted ({time.time() - t0:.1f} s)")
        t0 = time.time()
        sent = client.sent
        frames = run_frame(client, config, io=model.io, raw=None if args.tensor else raw,
                           tensor=x if args.tensor else None, mode=args.mode,
                           pattern=(1, args.pattern) if args.pattern is not None else None, timeout=args.timeout)
        say(f"{'tensor' if args.tensor else 'frame'} sent and answered in {time.time() - t0:.1f} s "
            f"({client.sent - sent:,} bytes to the board)")
        return frames, {"board": info, "rom_bytes": len(model.rom), "bytes_to_board": client.sent}

    try:
        if args.sim:
            sim = SimulatedBoard(config, log=say)
            with sim as transport:
                frames, link = run(transport)
            link["simulated_cycles"] = sim.cycles
            say(f"simulated {sim.cycles:,} cycles")
        else:
            import serial
            port = serial.serial_for_url(args.port, baudrate=args.baud, timeout=0.05)
            try:
                frames, link = run(port)
            finally:
                port.close()
    except BoardError as e:
        raise DieError(f"the board: {e}") from None
    status = 0
    results = []
    golden = golden_die_outputs(model, config, x)[0] if x is not None else None
    for fr in frames:
        emb = fr.embedded or {}
        rec = {"frame": fr.number, "mode": fr.mode, "npu_cycles": emb.get("npu_cycles", 0),
               "csi2_bytes": fr.csi2_bytes, "outputs": None, "bit_exact": None, "face": None}
        results.append(rec)
        print(f"frame {fr.number}: mode {fr.mode}, NPU {emb.get('npu_cycles', 0):,} cycles "
              f"({config.cycles_to_ms(emb.get('npu_cycles', 0)):.2f} ms at {config.clock_mhz:g} MHz), "
              f"{fr.csi2_bytes:,} CSI-2 bytes")
        if fr.error or not fr.outputs:
            print(f"  frame refused: {fr.error or 'incomplete output tensors'}")
            status = EXIT_DIE
            continue
        rec["outputs"] = [{"name": t["name"], "hwc": list(out.shape)} for t, out in zip(model.io["die_outputs"],
                                                                                   fr.outputs)]
        for t, out in zip(model.io["die_outputs"], fr.outputs):
            print(f"  {t['name']}: {'x'.join(map(str, out.shape))} int8" +
                  (f" = {out.reshape(-1).tolist()}" if out.size <= 16 else ""))
        if golden is not None:
            same = sum(int(np.count_nonzero(a == b)) for a, b in zip(fr.outputs, golden))
            total = sum(g.size for g in golden)
            rec["bit_exact"] = [same, total]
            print(f"  bit-exact with the golden executor: {same}/{total}")
            status |= same != total
        if args.model == "zoo:blazeface" and fr.graph_outputs is not None and geometry is not None:
            face = face_detection(model, fr.graph_outputs, geometry, config, photo.shape)
            if face:
                rec["face"] = {"score": face[0], "box": list(face[1])}
                print(f"  face: score {face[0]:.3f}, box x {face[1][0]:.0f}-{face[1][2]:.0f}, "
                      f"y {face[1][1]:.0f}-{face[1][3]:.0f} (photo pixels)")
            else:
                print("  face: none found")
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"config": config.name, "model": args.model, "model_fingerprint": model.fingerprint,
                       "image": args.image,
                       "input": "tensor" if args.tensor else ("pattern" if args.pattern is not None else "raw"),
                       **link, "frames": results}, f, indent=1)
    return status

