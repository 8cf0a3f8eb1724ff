"""The `stackcam` command line: simulate the die, write its Verilog."""

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]


# Modules that add subcommands: each has `register(subparsers)` adding its parser with `set_defaults(func=...)`;
# `func(args)` returns the exit status and raises UserError (one line, exit 2) for bad input.
COMMAND_MODULES = ["stackcam.quant.cmd_run", "stackcam.quant.cmd_compile", "stackcam.boards.cmd_build"]


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


def _config(name):
    from stackcam.rtl.params import ConfigError, preset
    try:
        return preset(name)
    except ConfigError as e:
        raise UserError(str(e)) from None


def cmd_simulate(args):
    from stackcam.sim.frame_source import ImageError
    from stackcam.sim.simulate import simulate
    config = _config(args.config)
    if args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if not 0.0 <= args.stall < 1.0:
        raise UserError(f"--stall must be in [0, 1), got {args.stall}")
    try:
        status, _ = simulate(config, image=args.image, frames=args.frames, mode=args.mode, model=args.model,
                             seed=args.seed, dump_csi2=args.dump_csi2, stall=args.stall, report=args.report,
                             png=args.png, ls_le=args.ls_le,
                             log=lambda s: print(s, file=sys.stderr))
    except ImageError as e:
        raise UserError(str(e)) from None
    except ValueError as e:
        from stackcam.quant.graph import ModelError

        from stackcam.sim.dierun import HostError
        if isinstance(e, (ModelError, HostError)):
            raise UserError(str(e)) from None
        raise
    return status


def cmd_verilog(args):
    from stackcam.rtl.die import StackcamDie
    from stackcam.rtl.params import PRESETS
    from stackcam.rtl.verilog import convert

    from stackcam.sim.verilator import lint
    names = list(PRESETS) if args.config == "all" else [args.config]
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        config = _config(name)
        t0 = time.time()
        text = convert(StackcamDie(config), name="stackcam_die")
        path = out_dir / f"stackcam_die_{name}.v"
        path.write_text(text)
        msg = f"{path}: {len(text.splitlines()):,} lines in {time.time() - t0:.1f} s"
        if not args.no_lint:
            t1 = time.time()
            lint(path, "stackcam_die")
            msg += f"; Verilator lint passed ({time.time() - t1:.1f} s)"
        print(msg)
    return 0


def build_parser():
    from stackcam.rtl.regs import MODES
    mode_choices = (*MODES, "all")

    p = argparse.ArgumentParser(prog="stackcam", description="stackcam: a cycle-accurate, synthesizable model of "
                                "the logic die of a stacked AI image sensor.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("simulate", help="run a photo through the whole die in Verilator",
                       description="Turn a photo into a RAW10 Bayer frame, stream it through the die in Verilator, "
                       "decode the CSI-2 output and check it bit for bit against the numpy reference.")
    from stackcam.rtl.params import PRESETS

    from stackcam.sim.models import MODEL_HELP
    s.add_argument("--config", default="demo",
                   help=f"configuration preset ({', '.join(PRESETS)}; default demo: BlazeFace's 128x128 input "
                   "from an XGA frame in a minute or two)")
    s.add_argument("--model", default="zoo:blazeface", help=f"network: {MODEL_HELP}")
    s.add_argument("--image", default=None, help="image file (default: skimage.data.astronaut())")
    s.add_argument("--frames", type=int, default=1, help="consecutive frames to send (default 1)")
    s.add_argument("--mode", choices=mode_choices, default="metadata",
                   help="CSI-2 output mode: metadata (output tensor only, default), image (RAW10 image lines + "
                   "metadata), tensors (input + output tensors), all (image, metadata, tensors on consecutive "
                   "frames, switched through the register bank)")
    s.add_argument("--ls-le", action="store_true", help="send LS/LE short packets around every line")
    s.add_argument("--seed", type=int, default=0, help="seed of first-light/zoo random weights (default 0)")
    s.add_argument("--dump-csi2", metavar="FILE", default=None,
                   help="write the CSI-2 packet bytes as a receiver sees them after lane merging")
    s.add_argument("--stall", type=float, default=0.0,
                   help="probability that the CSI-2 PHY is not ready in a cycle (default 0)")
    s.add_argument("--report", metavar="FILE", default="build/simulate/report.json",
                   help="JSON summary (default build/simulate/report.json)")
    s.add_argument("--png", metavar="FILE", default="build/simulate/detection.png",
                   help="the photo with the detected face drawn on it (BlazeFace; default "
                   "build/simulate/detection.png)")
    s.set_defaults(func=cmd_simulate)

    v = sub.add_parser("verilog", help="write the die's Verilog and lint it with Verilator",
                       description="Convert the die to Verilog for a preset (or all) and run Verilator lint.")
    v.add_argument("--config", default="all", help="preset name or 'all' (default all)")
    v.add_argument("-o", "--output", default="build/verilog", help="output folder (default build/verilog)")
    v.add_argument("--no-lint", action="store_true", help="skip Verilator lint")
    v.set_defaults(func=cmd_verilog)

    import importlib
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"stackcam {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stackcam {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("STACKCAM_DEBUG"):
            raise
        msg = str(e).strip().splitlines()
        print(f"stackcam {args.command}: error: {type(e).__name__}: {msg[0] if msg else ''} "
              f"(set STACKCAM_DEBUG=1 for the traceback)", file=sys.stderr)
        for line in msg[1:20]:
            print(f"  {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Run as `python -m sim.cli`, this file is `__main__`; subcommand modules raise `sim.cli.UserError`, so
    # dispatch through the imported module for their errors to be this module's errors.
    from stackcam.cli import main as _main
    sys.exit(_main())
