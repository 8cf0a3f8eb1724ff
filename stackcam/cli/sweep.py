"""`stackcam sweep`: a grid of die configurations x networks, analytic cycles, energy and area per point, the RTL
on a sample of points, on Ray (local, or a cluster with --address); sweep.csv, sweep.json and pareto.png."""

import functools
import sys
import time

from . import UserError

__all__ = ["register", "cmd_sweep", "evaluate"]


def register(sub):
    from stackcam.sim.sweep import GRIDS
    p = sub.add_parser("sweep", help="sweep die configurations x networks: cycles, energy, area (on Ray)",
                       description="Evaluate every point of a grid of die configurations (MAC array, SRAM banks "
                       "and size, clock, im2col pixels) x networks with the analytic cycle, energy and area "
                       "models, and run the RTL on the grid's sample points to confirm the analytic counts "
                       "exactly. Points run as Ray tasks on a local instance (--workers CPUs, loopback address) "
                       "or on a cluster (--address); --serial runs them in this process. A failed point is "
                       "reported and retried (--retries), then kept as a 'failed' row. Writes sweep.csv, "
                       "sweep.json and pareto.png. Exit status 1 if a point failed or an RTL check differs.")
    p.add_argument("--grid", default="default",
                   help=f"grid name ({', '.join(GRIDS)}) or a JSON file of grid families (default: default)")
    p.add_argument("--network", action="append", metavar="MODEL",
                   help="run these networks instead of the grid's (repeatable)")
    p.add_argument("--node", default="22nm", help="technology node of the energy and area models (22nm, 40nm)")
    p.add_argument("-o", "--output", default="build/sweep", help="output folder (default build/sweep)")
    p.add_argument("--address", help="Ray cluster address (host:port); default a local Ray instance")
    p.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    p.add_argument("--serial", action="store_true", help="run the points in this process, without Ray")
    p.add_argument("--retries", type=int, default=2, help="retries of a failed point (default 2)")
    p.add_argument("--no-rtl", action="store_true", help="skip the RTL runs of the sample points")
    p.set_defaults(func=cmd_sweep)


def evaluate(point, node, rtl):
    """One point (runs in a Ray worker or here)."""
    from stackcam.sim.sweep import Point, evaluate_point

    from .models import prepare_model
    if not rtl and point.rtl:
        point = Point(**{**point.__dict__, "rtl": False})
    return evaluate_point(point, lambda m, c: prepare_model(m, c), node=node)


def cmd_sweep(args):
    from stackcam.sim.energy import TECHNOLOGIES
    from stackcam.sim.sweep import grid_points, run_points, write_outputs
    if args.node not in TECHNOLOGIES:
        raise UserError(f"unknown technology node {args.node!r}; known: {', '.join(TECHNOLOGIES)}")
    if args.workers < 1 or args.retries < 0:
        raise UserError("--workers must be at least 1 and --retries at least 0")
    if args.serial and args.address:
        raise UserError("--serial and --address exclude each other")
    points = grid_points(args.grid, args.network)
    log = lambda s: print(s, file=sys.stderr, flush=True)       # noqa: E731
    rtl = [p for p in points if p.rtl and not args.no_rtl]
    where = "this process" if args.serial else (f"Ray at {args.address}" if args.address else
                                                  f"a local Ray instance ({args.workers} CPUs, 127.0.0.1)")
    log(f"sweep: {len(points)} points ({len(rtl)} with an RTL check) on {where}")
    t0 = time.time()
    rows = run_points(points, functools.partial(evaluate, node=args.node, rtl=not args.no_rtl),
                      backend="serial" if args.serial else "ray", address=args.address, workers=args.workers,
                      retries=args.retries, log=log)
    wall = time.time() - t0
    failed = [r for r in rows if r["status"] == "failed"]
    differ = [r for r in rows if r.get("rtl_checked") and r.get("status") == "ok" and not args.no_rtl
              and r.get("rtl_equal") is not True]
    meta = {"grid": args.grid, "node": args.node, "points": len(rows), "wall_s": wall,
            "ok": sum(r["status"] == "ok" for r in rows),
            "does_not_fit": sum(r["status"] == "does-not-fit" for r in rows), "failed": len(failed),
            "rtl_checked": sum(bool(r.get("rtl_checked")) and not args.no_rtl for r in rows),
            "rtl_equal": sum(r.get("rtl_equal") is True for r in rows), "backend": where}
    write_outputs(rows, args.output, meta, log=log)
    for r in rows:
        if r.get("rtl_detail"):
            d = r["rtl_detail"]
            log(f"sweep: RTL check of point {r['id']} ({r['network']}, {r['array_rows']}x{r['array_cols']}, "
                f"im2col {r['im2col_pixels']}): {d['descriptors']} descriptors, {d['npu_cycles']:,} cycles "
                f"(model {d['model_cycles']:,}); cycles {'equal' if d['cycles_equal'] else 'DIFFER'}, activity "
                f"counters {'equal' if d['activity_equal'] else 'DIFFER'}, per-bank counters "
                f"{'equal' if d.get('banks_equal') else 'DIFFER'} ({d['wall_s']:.0f} s)")
    log(f"sweep: {meta['ok']} ok, {meta['does_not_fit']} do not fit, {len(failed)} failed; "
        f"{meta['rtl_equal']}/{meta['rtl_checked']} RTL checks equal; {wall:.0f} s")
    return 1 if failed or differ else 0
