"""`stackcam bench`: the benchmark networks through the whole die in the RTL; JSON reports and per-layer charts."""

import sys

from . import UserError
from .models import prepare_model

__all__ = ["register", "cmd_bench"]


def register(sub):
    from stackcam.sim.bench import BENCHMARKS
    p = sub.add_parser("bench", help="run the benchmark networks through the RTL (cycles from its counters)",
                       description="Run each benchmark network through the whole die in Verilator at its preset: "
                       "cycles and MAC utilization from the RTL's counters, the analytic model's prediction, "
                       "a JSON report and a per-layer bar chart per network in the output folder, with the "
                       "simulation speed; and the peer: Arm's Vela (extra stackcam[peer]) on the same exported "
                       "int8 model for the Ethos-U with the closest MAC count (absent when Vela is not "
                       "installed). Exit status 1 when a network's outputs are not bit-exact.")
    p.add_argument("names", nargs="*", metavar="NAME", default=list(BENCHMARKS),
                   help=f"benchmarks (default all: {', '.join(BENCHMARKS)})")
    p.add_argument("-o", "--output", default="build/bench", help="output folder (default build/bench)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args):
    from stackcam.sim.bench import BENCHMARKS, run_benchmark
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        raise UserError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    log = lambda s: print(s, file=sys.stderr, flush=True)       # noqa: E731
    ok = True
    for name in args.names:
        _, good = run_benchmark(name, args.output, lambda m, c: prepare_model(m, c, log=log), log=log)
        ok &= good
    return 0 if ok else 1
