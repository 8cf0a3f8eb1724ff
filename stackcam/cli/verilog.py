"""`stackcam verilog`: the die's Verilog for a preset (or all), linted with Verilator."""

import time
from pathlib import Path

from . import config_arg

__all__ = ["register", "cmd_verilog"]


def register(sub):
    v = sub.add_parser("verilog", help="write the die's Verilog and lint it with Verilator",
                       description="Convert the die to Verilog for a preset (or all) and run Verilator lint.")
    v.add_argument("--config", default="all", help="preset name or 'all' (default all)")
    v.add_argument("-o", "--output", default="build/verilog", help="output folder (default build/verilog)")
    v.add_argument("--no-lint", action="store_true", help="skip Verilator lint")
    v.set_defaults(func=cmd_verilog)


def cmd_verilog(args):
    from stackcam.rtl.die import StackcamDie
    from stackcam.rtl.params import PRESETS
    from stackcam.rtl.verilog import convert
    from stackcam.sim.verilator import lint
    configs = [config_arg(name) for name in (PRESETS if args.config == "all" else [args.config])]
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    for config in configs:
        t0 = time.time()
        text = convert(StackcamDie(config), name="stackcam_die")
        path = out_dir / f"stackcam_die_{config.name}.v"
        path.write_text(text)
        msg = f"{path}: {len(text.splitlines()):,} lines in {time.time() - t0:.1f} s"
        if not args.no_lint:
            t1 = time.time()
            lint(path, "stackcam_die")
            msg += f"; Verilator lint passed ({time.time() - t1:.1f} s)"
        print(msg)
    return 0
