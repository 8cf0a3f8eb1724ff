"""`nox -s fuzz`: random networks through both quantizers and the die's toolchain, against LiteRT's reference kernels.

Each case is a seeded random float network (2 to 9 operators from what the die runs: CONV_2D and
DEPTHWISE_CONV_2D of kernel 1-5, stride 1-2, SAME or VALID, with and without fused activations; residual
ADD/SUB/MUL (a CONV of x added to x: the die's RESADD on two-port presets), BlazeFace's stride-2 block (a
stride-2 depthwise and pointwise CONV added to the 2x2 max pool of their input: POOL2), pools, channel and spatial PAD,
CONCATENATION, RESIZE, standalone RELU/RELU6/LEAKY_RELU/HARD_SWISH/LOGISTIC/TANH, and a MEAN or RESHAPE +
FULLY_CONNECTED head). The float model is quantized to int8 twice: by LiteRT's own calibrator and quantizer
(`quant.ptq.litert_calibrated_model`) and by our PTQ. Each int8 .tflite is compiled for every preset asked for
exactly as `stackcam run` does (`stackcam.cli.models.prepare_model`), the golden executor runs the ROM image, and its
outputs must equal LiteRT BUILTIN_REF running that .tflite, element for element, on a calibration-like input and on
random int8 bytes. With ``--rtl N`` the first N compiled cases per preset with an RGB input (the die's) also run on
the RTL (Verilator, `stackcam run --engine rtl`), whose outputs must be the same.

Outcomes per (case, quantizer, preset): ``exact``; ``refused`` (the toolchain's one-line ModelError: an operator
or shape the die does not take, or too big); ``WRONG`` (a mismatch) and ``BUG`` (any other exception): those two
fail the campaign, and the int8 .tflite and the input are kept in the output folder to reproduce. A quantizer
that cannot take the float model (LiteRT's refuses some) skips that quantizer for the case (``no-quant``).

Prints a summary and writes build/fuzz/report.json (atomically). Exit status 1 on any WRONG or BUG. Nothing in
stackcam imports this file.
"""

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from stackcam.sim.files import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("tiny", "demo", "imx500")


class _Builder:
    """A random float Graph, built one operator at a time on a list of (tensor, (H, W, C)) activations."""

    def __init__(self, rng, name):
        from stackcam.quant.graph import Tensor
        self.Tensor = Tensor
        self.rng = rng
        self.name = name
        self.tensors, self.ops = {}, []
        self.n = 0

    def act(self, shape):
        self.n += 1
        name = f"t{self.n}"
        self.tensors[name] = self.Tensor(name, tuple(int(v) for v in shape), "float32")
        return name

    def const(self, data, dtype=np.float32):
        self.n += 1
        name = f"c{self.n}"
        data = np.asarray(data, dtype)
        self.tensors[name] = self.Tensor(name, tuple(data.shape), np.dtype(dtype).name, data)
        return name

    def op(self, kind, inputs, shape, **opts):
        from stackcam.quant.graph import Op
        out = self.act(shape)
        self.ops.append(Op(kind, list(inputs), [out], opts, f"{kind.lower()}_{len(self.ops)}"))
        return out

    def shape(self, t):
        return self.tensors[t].shape

    def window_out(self, h, k, s, padding):
        return -(-h // s) if padding == "SAME" else (h - k) // s + 1

    def conv(self, x, cout, k, s, padding, act, depthwise=False):
        _, h, w, c = self.shape(x)
        oh, ow = self.window_out(h, k, s, padding), self.window_out(w, k, s, padding)
        if depthwise:
            cout = c
            wt = self.rng.normal(0, np.sqrt(2 / (k * k)), (1, k, k, c))
        else:
            wt = self.rng.normal(0, np.sqrt(2 / (k * k * c)), (cout, k, k, c))
        b = self.rng.normal(0, 0.1, cout)
        kind = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
        opts = dict(stride=(s, s), padding=padding, activation=act)
        if depthwise:
            opts["depth_multiplier"] = 1
        return self.op(kind, [x, self.const(wt), self.const(b)], (1, oh, ow, cout), **opts)


def random_graph(seed):
    """A seeded random float Graph (one input, one or two outputs)."""
    from stackcam.quant.graph import Graph

    rng = np.random.default_rng(seed)
    b = _Builder(rng, f"fuzz{seed}")
    h, w = int(rng.integers(5, 25)), int(rng.integers(5, 25))
    c = 3 if rng.random() < 0.5 else int(rng.choice([1, 2, 4, 7, 8, 12, 16, 20]))
    x = b.act((1, h, w, c))
    inp = x
    outputs = []
    acts = ("NONE", "RELU", "RELU6")
    for _ in range(int(rng.integers(2, 9))):
        _, h, w, c = b.shape(x)
        kind = rng.choice(["conv", "conv", "dw", "residual", "pool", "pad", "concat", "resize", "unary", "branch",
                           "s2block"])
        if kind == "conv" or h < 3 or w < 3:
            k = int(rng.choice([1, 1, 3, 3, 5])) if min(h, w) >= 5 else 1
            s = int(rng.choice([1, 1, 2]))
            x = b.conv(x, int(rng.choice([1, 4, 8, 13, 16, 24, 33, 48])), k, s, str(rng.choice(["SAME", "VALID"])),
                       str(rng.choice(acts)))
        elif kind == "dw":
            k = int(rng.choice([3, 3, 5])) if min(h, w) >= 5 else 3
            x = b.conv(x, 0, k, int(rng.choice([1, 1, 2])), str(rng.choice(["SAME", "VALID"])),
                       str(rng.choice(acts)), depthwise=True)
        elif kind == "residual":
            # x op f(x): f a 1x1 or 3x3 SAME conv to x's channels (the die fuses an ADD into that CONV: RESADD).
            y = b.conv(x, c, int(rng.choice([1, 3])), 1, "SAME", str(rng.choice(acts)))
            op = str(rng.choice(["ADD", "ADD", "ADD", "SUB", "MUL"]))
            ins = [x, y] if rng.random() < 0.5 else [y, x]
            x = b.op(op, ins, (1, h, w, c), activation=str(rng.choice(acts)))
        elif kind == "s2block" and h % 2 == 0 and w % 2 == 0 and h >= 4 and w >= 4:
            # BlazeFace's stride-2 block: a stride-2 depthwise and pointwise CONV beside the 2x2 max pool of the
            # same input, added (the die runs the pool in the depthwise (POOL2), the ADD in the CONV (RESADD)).
            y = b.conv(x, 0, 3, 2, "SAME", str(rng.choice(acts)), depthwise=True)
            y = b.conv(y, c, 1, 1, "SAME", "NONE")
            p = b.op("MAX_POOL_2D", [x], (1, h // 2, w // 2, c), filter=(2, 2), stride=(2, 2), padding="VALID",
                     activation="NONE")
            x = b.op("ADD", [y, p], (1, h // 2, w // 2, c), activation=str(rng.choice(acts)))
        elif kind == "pool":
            f, s, padding = [(2, 2, "VALID"), (3, 1, "SAME"), (3, 2, "SAME"), (2, 1, "VALID")][int(rng.integers(4))]
            if padding == "VALID" and min(h, w) < f:
                continue
            pk = str(rng.choice(["MAX_POOL_2D", "AVERAGE_POOL_2D"]))
            x = b.op(pk, [x], (1, b.window_out(h, f, s, padding), b.window_out(w, f, s, padding), c),
                     filter=(f, f), stride=(s, s), padding=padding, activation="NONE")
        elif kind == "pad":
            p = rng.integers(0, 3, (4, 2))
            p[0] = 0
            if rng.random() < 0.5:
                p[1:3] = 0                       # a channel PAD (BlazeFace's residual)
            else:
                p[3] = 0
            x = b.op("PAD", [x, b.const(p, np.int32)], (1, h + p[1].sum(), w + p[2].sum(), c + p[3].sum()))
        elif kind == "concat":
            y = b.conv(x, int(rng.choice([3, 8, 16])), 1, 1, "SAME", "RELU")
            x = b.op("CONCATENATION", [x, y], (1, h, w, c + b.shape(y)[3]), axis=3, activation="NONE")
        elif kind == "resize":
            if h * w > 200:
                continue
            rk = str(rng.choice(["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"]))
            half = bool(rng.random() < 0.5)
            x = b.op(rk, [x], (1, 2 * h, 2 * w, c), align_corners=False, half_pixel_centers=half)
        elif kind == "unary":
            u = str(rng.choice(["RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH", "LOGISTIC", "TANH"]))
            opts = dict(alpha=float(rng.choice([0.1, 0.2, 0.3]))) if u == "LEAKY_RELU" else {}
            x = b.op(u, [x], (1, h, w, c), **opts)
        elif kind == "branch" and not outputs:
            outputs.append(b.conv(x, int(rng.choice([2, 6, 16])), 1, 1, "SAME", "NONE"))
    _, h, w, c = b.shape(x)
    head = rng.choice(["none", "mean", "fc"])
    if head == "mean":
        x = b.op("MEAN", [x, b.const([1, 2], np.int32)], (1, c), keep_dims=False)
    elif head == "fc" and h * w * c <= 4096:
        flat = b.op("RESHAPE", [x], (1, h * w * c))
        units = int(rng.choice([2, 10, 37]))
        x = b.op("FULLY_CONNECTED", [flat, b.const(rng.normal(0, np.sqrt(1 / (h * w * c)), (units, h * w * c))),
                                     b.const(rng.normal(0, 0.1, units))], (1, units), activation="NONE")
    outputs.append(x)
    return Graph(tensors=b.tensors, ops=b.ops, inputs=[inp], outputs=outputs, name=b.name)


def _calibration(graph, seed, count=4):
    shape = graph.tensor(graph.inputs[0]).shape
    rng = np.random.default_rng(10_000 + seed)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(count)]


def quantized_models(graph, calib):
    """{quantizer: int8 .tflite bytes or the reason it has none}."""
    from stackcam.quant.export import export_tflite
    from stackcam.quant.graph import ModelError
    from stackcam.quant.ptq import litert_calibrated_model, quantize_graph

    out = {}
    float_model = export_tflite(graph)
    try:
        out["litert"] = litert_calibrated_model(float_model, calib)
    except Exception as e:  # noqa: BLE001 -- LiteRT's quantizer refusing a float model is its business
        out["litert"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:
        out["ours"] = export_tflite(quantize_graph(graph, calib))
    except ModelError as e:
        out["ours"] = str(e)
    return out


def _inputs(model, calib, seed):
    from stackcam.quant.tflite import read_model

    sg = read_model(model).subgraphs[0]
    t = sg.tensors[sg.inputs[0]]
    shape = tuple(int(v) for v in t.shape)
    s, z = float(t.quantization.scale[0]), int(t.quantization.zeroPoint[0])
    x = np.clip(np.round(calib[0] / s) + z, -128, 127).astype(np.int8).reshape(shape)
    r = np.random.default_rng(20_000 + seed).integers(-128, 128, shape).astype(np.int8)
    return [x, r]


def check(model, config, xs, path, rtl):
    """(outcome, detail) of one int8 model on one preset: golden (and RTL) against LiteRT BUILTIN_REF."""
    from stackcam.cli.models import prepare_model
    from stackcam.errors import StackcamError
    from stackcam.quant.golden import execute
    from stackcam.quant.litert import run_reference

    try:
        prepared = prepare_model(str(path), config)
    except StackcamError as e:
        return "refused", str(e)
    io = prepared.compiled.io
    refs = [run_reference(model, [x]) for x in xs]
    bad = total = 0
    for x, ref in zip(xs, refs):
        got = execute(prepared.rom, config, x.reshape(io["input"]["hwc"]))
        if len(got) != len(ref):
            return "WRONG", f"golden gives {len(got)} outputs, LiteRT {len(ref)}"
        for g, r in zip(got, ref):
            g = np.asarray(g)
            if g.size != r.size:
                return "WRONG", f"golden output of {g.size} elements, LiteRT {r.size}"
            bad += int(np.count_nonzero(g.reshape(r.shape) != r))
            total += r.size
    if bad:
        return "WRONG", f"golden: {bad} of {total} output elements differ from LiteRT BUILTIN_REF"
    detail = f"{total} elements, {prepared.compiled.macs:,} MACs, {len(prepared.compiled.descriptors)} descriptors"
    if rtl:
        inp = path.with_suffix(f".{config.name}.in.npy")
        out = path.with_suffix(f".{config.name}.rtl.npz")
        np.save(inp, np.stack([x.reshape(x.shape[1:]) for x in xs]))
        r = subprocess.run([sys.executable, "-m", "stackcam.cli", "run", str(path), "--input", str(inp), "--engine",
                            "rtl", "--config", config.name, "-o", str(out)], capture_output=True, text=True)
        if r.returncode:
            return "BUG", f"stackcam run --engine rtl exited {r.returncode}: {r.stderr.strip()[-300:]}"
        got = np.load(out)
        for k in range(len(refs[0])):
            want = np.concatenate([ref[k] for ref in refs])
            g = got[f"output_{k}"]
            if g.size != want.size or np.count_nonzero(g.reshape(want.shape) != want):
                return "WRONG", f"RTL output {k} differs from LiteRT BUILTIN_REF"
        inp.unlink()
        out.unlink()
        detail += ", RTL equal"
    return "exact", detail


def run_case(seed, configs, workdir, rtl_left):
    """The rows of one case."""
    from stackcam.quant.graph import ModelError

    rows = []
    try:
        graph = random_graph(seed)
        calib = _calibration(graph, seed)
        models = quantized_models(graph, calib)
    except ModelError as e:
        return [dict(seed=seed, quantizer="-", config="-", outcome="no-quant", detail=str(e))]
    ops = [op.kind for op in graph.ops]
    for quantizer, model in models.items():
        if isinstance(model, str):
            rows.append(dict(seed=seed, quantizer=quantizer, config="-", outcome="no-quant", detail=model, ops=ops))
            continue
        path = Path(workdir) / f"case{seed}_{quantizer}.tflite"
        path.write_bytes(model)
        xs = _inputs(model, calib, seed)
        for config in configs:
            t0 = time.monotonic()
            rtl = rtl_left.get(config.name, 0) > 0 and graph.tensor(graph.inputs[0]).shape[3] == 3   # the die: RGB
            try:
                outcome, detail = check(model, config, xs, path, rtl)
            except Exception as e:  # noqa: BLE001 -- anything else is a bug of the toolchain, reported by case
                outcome, detail = "BUG", f"{type(e).__name__}: {e} | {traceback.format_exc().splitlines()[-3].strip()}"
            if outcome == "exact" and rtl:
                rtl_left[config.name] -= 1
            rows.append(dict(seed=seed, quantizer=quantizer, config=config.name, outcome=outcome, detail=detail,
                             ops=ops, seconds=round(time.monotonic() - t0, 2)))
        if all(r["outcome"] in ("exact", "refused") for r in rows if r["quantizer"] == quantizer):
            path.unlink()                  # kept only to reproduce a WRONG or BUG
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="tools/fuzz.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=200, help="random networks (default 200)")
    p.add_argument("--seed", type=int, default=0, help="first case's seed (default 0)")
    p.add_argument("--config", nargs="+", default=list(PRESETS), help=f"presets (default {' '.join(PRESETS)})")
    p.add_argument("--rtl", type=int, default=0, metavar="N",
                   help="also run the first N compiled cases per preset on the RTL (Verilator; default 0)")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "build" / "fuzz", help="report folder")
    args = p.parse_args(argv)
    if args.cases < 1 or args.rtl < 0:
        p.error("--cases must be at least 1 and --rtl at least 0")

    from stackcam.cli import config_arg
    from stackcam.errors import StackcamError

    try:
        configs = [config_arg(c) for c in args.config]
    except StackcamError as e:
        p.error(str(e))
    args.output.mkdir(parents=True, exist_ok=True)
    rtl_left = {c.name: args.rtl for c in configs}
    rows, t0 = [], time.monotonic()
    for k, seed in enumerate(range(args.seed, args.seed + args.cases)):
        case = run_case(seed, configs, args.output, rtl_left)
        rows += case
        marks = " ".join(f"{r['quantizer']}/{r['config']}:{r['outcome']}" for r in case)
        print(f"[{k + 1}/{args.cases}] seed {seed}: {marks}", flush=True)
        for r in case:
            if r["outcome"] in ("WRONG", "BUG"):
                print(f"    {r['outcome']} seed {seed} {r['quantizer']} {r['config']}: {r['detail']}", flush=True)
    counts = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    refusals = {}
    for r in rows:
        if r["outcome"] == "refused":
            key = r["detail"].split(":")[-1].strip()[:90]
            refusals[key] = refusals.get(key, 0) + 1
    summary = dict(cases=args.cases, first_seed=args.seed, presets=[c.name for c in configs], outcomes=counts,
                   rtl_runs=sum(1 for r in rows if "RTL equal" in r.get("detail", "")),
                   seconds=round(time.monotonic() - t0, 1))
    write_text_atomic(args.output / "report.json", json.dumps(dict(summary=summary, rows=rows), indent=1) + "\n")
    print(f"\n{args.cases} random networks x {len(configs)} presets x 2 quantizers: "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f"; {summary['rtl_runs']} also on the RTL ({summary['seconds']} s); wrote {args.output / 'report.json'}")
    for why, n in sorted(refusals.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  refused x{n}: {why}")
    return 1 if counts.get("WRONG") or counts.get("BUG") else 0


if __name__ == "__main__":
    sys.exit(main())
