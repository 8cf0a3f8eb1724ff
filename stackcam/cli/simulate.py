"""`stackcam simulate`: the main job, a photo through the whole die in Verilator, checked bit for bit."""

import sys
from pathlib import Path

from stackcam.errors import StackcamError

from . import config_arg, presets_help
from .models import add_model_arguments, prepare_from_args

__all__ = ["register", "cmd_simulate"]


def register(sub):
    from stackcam.rtl.regs import MODES
    s = sub.add_parser("simulate", help="run a photo through the whole die in Verilator",
                       description="Turn a photo into a RAW10 Bayer frame, stream it through the die in Verilator, "
                       "decode the CSI-2 output and check it bit for bit against the numpy reference.")
    s.add_argument("--config", default="demo",
                   help=presets_help("demo: BlazeFace's 128x128 input from an XGA frame in a minute or two"))
    add_model_arguments(s, default="zoo:blazeface")
    s.add_argument("--image", default=None, help="image file (default: skimage.data.astronaut())")
    s.add_argument("--frames", type=int, default=1, help="consecutive frames to send (default 1)")
    s.add_argument("--mode", choices=(*MODES, "all"), default="metadata",
                   help="CSI-2 output mode: metadata (output tensor only, default), image (RAW10 image lines + "
                   "metadata), tensors (input + output tensors), all (image, metadata, tensors on consecutive "
                   "frames, switched through the register bank)")
    s.add_argument("--ls-le", action="store_true", help="send LS/LE short packets around every line")
    s.add_argument("--dump-csi2", metavar="FILE", default=None,
                   help="write the CSI-2 packet bytes as a receiver sees them after lane merging")
    s.add_argument("--stall", type=float, default=0.0,
                   help="probability that the CSI-2 PHY is not ready in a cycle, in [0, 1) in steps of 1/256 "
                   "(at most 255/256; default 0)")
    s.add_argument("--report", metavar="FILE", default="build/simulate/report.json",
                   help="JSON summary (default build/simulate/report.json)")
    s.add_argument("--png", metavar="FILE", default="build/simulate/detection.png",
                   help="the photo with the detected face drawn on it (BlazeFace; default "
                   "build/simulate/detection.png)")
    s.set_defaults(func=cmd_simulate)


def cmd_simulate(args):
    from stackcam.sim.frame_source import load_image
    from stackcam.sim.simulate import simulate
    config = config_arg(args.config)
    if args.frames < 1:
        raise StackcamError(f"--frames must be at least 1, got {args.frames}")
    if not 0.0 <= args.stall < 1.0:
        raise StackcamError(f"--stall must be in [0, 1), got {args.stall}")
    from stackcam.sim.harness import player_depths
    depth = player_depths(config)[0]
    frames = max(args.frames, 3) if args.mode == "all" else args.frames
    beats = frames * config.frame_width * config.frame_height // config.pixels_per_clock
    if beats > depth:
        most = depth * config.pixels_per_clock // (config.frame_width * config.frame_height)
        raise StackcamError(f"--frames {args.frames}: {beats:,} pixel beats exceed the simulation harness's "
                            f"{depth:,} for config {config.name!r} (at most {most} frames per run)")
    if args.dump_csi2 is not None and not Path(args.dump_csi2).resolve().parent.is_dir():
        raise StackcamError(f"--dump-csi2 {args.dump_csi2}: no such folder")
    # A bad photo is refused before the model is prepared (a huge one from its header, before decoding).
    load_image(args.image, fit=(config.frame_width, config.frame_height))
    log = lambda s: print(s, file=sys.stderr)       # noqa: E731
    prepared = prepare_from_args(args, config, log=log)
    status, _ = simulate(config, prepared, image=args.image, frames=args.frames, mode=args.mode,
                         dump_csi2=args.dump_csi2, stall=args.stall, report=args.report, png=args.png,
                         ls_le=args.ls_le, log=log)
    return status
