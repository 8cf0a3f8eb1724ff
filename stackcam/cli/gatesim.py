"""`stackcam gatesim`: the die's ECP5 netlist (the FPGA build's synthesis) against the RTL, in Verilator."""

import sys

from . import config_arg, presets_help
from .models import MODEL_HELP, prepare_model

__all__ = ["register", "cmd_gatesim"]

DEFAULT_MODEL = "zoo:mobilenet_v1_0.25_96_2"


def register(sub):
    p = sub.add_parser(
        "gatesim", help="simulate the die's synthesized ECP5 netlist against the RTL (same CSI-2 bytes?)",
        description="Gate-level check of the FPGA flow: synthesize the die with the board build's Yosys recipe "
        "(synth_ecp5, cached in build/gatesim/), build the netlist with the ECP5 cell models in Verilator, run one "
        "frame of a network through it and through the RTL, and compare the CSI-2 bytes, the cycle of every "
        "CSI-2 frame end and the die's counters; the outputs must also equal the golden executor's. Prints both "
        "cycle counts; report in build/gatesim/report-CONFIG.json. Exit status 0 when all agree, 1 when not.")
    p.add_argument("--config", default="fpga", help=presets_help("fpga"))
    p.add_argument("--board", default="ulx3s", help="board whose synthesis recipe is used (default ulx3s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"{MODEL_HELP} (default {DEFAULT_MODEL}, the person "
                   "detector)")
    p.add_argument("--input", choices=("frame", "tensor"), default="frame",
                   help="what the die takes: a whole RAW10 frame through the ISP (default; about 7 minutes of "
                   "netlist simulation at the fpga preset), or the network's input tensor on the tensor port")
    p.add_argument("--mode", choices=("tensors", "metadata", "image"), default="tensors",
                   help="the die's CSI-2 mode: tensors (default: the input tensor's RGB888 lines and the outputs), "
                   "metadata (the outputs only), image (the RAW10 frame and the outputs; with --input frame)")
    p.add_argument("--photo", default=None, help="photo the frame is made of (default the astronaut)")
    p.set_defaults(func=cmd_gatesim)


def cmd_gatesim(args):
    import numpy as np

    from stackcam.boards.gatesim import run_gatesim, summary_lines
    from stackcam.quant.isp import isp_reference
    from stackcam.sim.dierun import model_registers
    from stackcam.sim.frame_source import bayer_frame, load_image
    from stackcam.sim.simulate import golden_die_outputs

    config = config_arg(args.config)
    log = lambda s: print(s, file=sys.stderr, flush=True)       # noqa: E731
    model = prepare_model(args.model, config, log=log)
    raw = bayer_frame(load_image(args.photo), config.frame_width, config.frame_height)
    _, geometry, quant = model_registers(config, model.io)
    x = isp_reference(raw, config, quant, geometry)
    kw = {"tensors": [x]} if args.input == "tensor" else {"raws": [raw]}
    report, rtl, gates = run_gatesim(config, model.rom, board=args.board, mode=args.mode, log=log, **kw)
    golden = golden_die_outputs(model, config, x)[0]
    got = rtl.frames[0].outputs if rtl.frames else []
    golden_ok = len(got) == len(golden) and all(g is not None and np.array_equal(g, e) for g, e in zip(got, golden))
    if args.mode == "tensors":      # the input tensor the die sent back: the ISP's (or the tensor port's) output
        golden_ok = golden_ok and rtl.frames[0].input_tensor is not None and np.array_equal(
            rtl.frames[0].input_tensor, x)
    print(f"{args.model} on config {config.name}, one {args.input} input, CSI-2 mode {args.mode}")
    for line in summary_lines(report):
        print(line)
    print(f"RTL outputs {'equal' if golden_ok else 'DIFFER from'} the golden executor's"
          + (" (and its input tensor the ISP reference's)" if args.mode == "tensors" else ""))
    if not report["equal"] or not golden_ok:
        what = report["differences"][0] if report["differences"] else "the RTL's outputs differ from the golden's"
        print(f"stackcam gatesim: error: {what}", file=sys.stderr)
        return 1
    return 0
