"""`nox -s models`: the published image models of the mediapipe wheel through the toolchain.

For every .tflite under mediapipe/modules/ in the mediapipe==0.10.14 wheel (downloaded from PyPI once, kept in
build/cache/wheels or $STACKCAM_CACHE/wheels): the operators it uses; whether it compiles for the preset (imx500 by
default; the float models are quantized by our PTQ on the scikit-image photos, inputs normalized to [-1, 1]); the
SRAM it needs; whether the golden executor running the compiled ROM image equals LiteRT's BUILTIN_REF kernels
running the int8 model our toolchain exported (`compile --export-tflite`), element for element, on photos; and how
well the int8 result agrees with the float model (LiteRT's default kernels, on the same photos), as the cosine
similarity and the relative RMS error of the dequantized outputs (the table's figure: the worst cosine over the
outputs of at least 8 elements and the photos; every output's figures are in the JSON). A refused model is listed
with its one-line error.

Prints a table and writes build/models/report.json (atomically). Exits 1 when a compiled model is not bit-exact or
the toolchain fails with something other than its one-line refusal (a bug); refusals are reported, not failures.

Nothing in stackcam imports this file.
"""

import argparse
import hashlib
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from stackcam.sim.files import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
MIN_AGREEMENT_ELEMENTS = 8      # outputs this large count in the float-agreement figure (all are in the JSON)


def find_wheel():
    """The mediapipe wheel in the cache, downloaded from PyPI (no dependencies) the first time."""
    from stackcam.errors import StackcamError
    from stackcam.quant.zoo.blazeface import fetch_wheel

    try:
        return fetch_wheel()
    except StackcamError as e:
        raise SystemExit(f"models: {e}") from None


def image_models(wheel):
    """{model name: .tflite bytes} of every model under mediapipe/modules/ in the wheel, by name."""
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith("mediapipe/modules/") and n.endswith(".tflite"))
        return {Path(n).stem: z.read(n) for n in names}


def operators(data):
    """Sorted operator names of a .tflite (custom operators as CUSTOM:<code>), with their counts."""
    from stackcam.quant.importer import BUILTIN_NAMES
    from stackcam.quant.tflite import read_model

    model = read_model(data)
    counts = {}
    for sg in model.subgraphs:
        for op in sg.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
                name = f"CUSTOM:{custom}"
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _quantize_input(x, io_input):
    scale, zp = float(io_input["scale"][0]), int(io_input["zero_point"][0])
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)


def _dequantize(y, spec):
    y = np.asarray(y)
    if y.dtype != np.int8 or not spec.get("scale"):
        return y.astype(np.float64)
    scale = np.asarray(spec["scale"], np.float64)
    zp = np.asarray(spec["zero_point"], np.float64)
    if scale.size > 1:                  # per-axis output quantization: along its axis
        axis = spec.get("axis", y.ndim - 1)
        shape = [1] * y.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (y.astype(np.float64) - zp) * scale


def _float_outputs(data, x):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    d = interp.get_input_details()[0]
    if tuple(d["shape"]) != tuple(x.shape):
        interp.resize_tensor_input(d["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(d["index"], x.astype(np.float32))
    interp.invoke()
    return [(o["name"], interp.get_tensor(o["index"]).copy()) for o in interp.get_output_details()]


def _agreement(ours, theirs):
    """(cosine similarity, RMS error / RMS of the float output) of two float arrays."""
    a, b = np.asarray(ours, np.float64).ravel(), np.asarray(theirs, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(a @ b / (na * nb)) if na and nb else float(na == nb)
    rms = float(np.sqrt(np.mean(b * b)))
    rel = float(np.sqrt(np.mean((a - b) ** 2)) / rms) if rms else float(np.sqrt(np.mean(a * a)))
    return cos, rel


def check_model(name, data, config, photos, workdir):
    """The row of one model (a dict)."""
    from stackcam.cli.models import prepare_model
    from stackcam.errors import StackcamError
    from stackcam.quant.calib import PHOTOS, photo_set
    from stackcam.quant.export import export_tflite
    from stackcam.quant.golden import execute
    from stackcam.quant.litert import run_reference
    from stackcam.quant.timing import program_cycles

    row = {"model": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
           "operators": operators(data), "compiles": False, "error": None}
    path = Path(workdir) / f"{name}.tflite"
    path.write_bytes(data)
    t0 = time.monotonic()
    try:
        prepared = prepare_model(str(path), config, calib_photos=True)
    except StackcamError as e:
        row["error"] = str(e)
        row["outcome"] = "refused"
        row["compile_s"] = round(time.monotonic() - t0, 1)
        return row
    compiled = prepared.compiled
    row.update(compiles=True, compile_s=round(time.monotonic() - t0, 1), calibration=prepared.calibration,
               weight_sram_bytes=compiled.weight_bytes, act_sram_bytes=compiled.act_bytes,
               sram_bytes=compiled.weight_bytes + compiled.act_bytes, macs=compiled.macs,
               npu_cycles=program_cycles(config, compiled.descriptors)["total"], descriptors=len(compiled.descriptors),
               packed_tensors=sorted(n for n, t in compiled.tensors.items() if t.get("ppw") and "@" not in n),
               notes=list(compiled.notes),
               host_ops=[op["kind"] for op in compiled.io["host"]["ops"]])
    exported = export_tflite(prepared.graph)
    io = compiled.io
    shape = tuple(io["input"]["shape"])
    _, h, w, c = shape
    images = photo_set(h, w, c, names=PHOTOS[:photos])
    exact, mismatched, total = True, 0, 0
    cosines, rels, per_output = [], [], {}
    for x in images:
        q = _quantize_input(x, io["input"])
        golden = execute(prepared.rom, config, q.reshape(io["input"]["hwc"]))
        ref = run_reference(exported, [q.reshape(shape)])
        if len(golden) != len(ref):
            raise AssertionError(f"{name}: golden gives {len(golden)} outputs, LiteRT {len(ref)}")
        for g, r in zip(golden, ref):
            g = np.asarray(g).reshape(r.shape)
            bad = int(np.count_nonzero(g != r))
            mismatched += bad
            total += r.size
            exact &= bad == 0
        floats = _float_outputs(data, x)
        for spec, g, (_, f) in zip(io["outputs"], golden, floats):
            if np.asarray(g).size != f.size:
                continue                # an output the die's graph shaped differently: no agreement figure
            cos, rel = _agreement(_dequantize(np.asarray(g).reshape(f.shape), spec), f)
            per_output.setdefault(spec["name"], []).append({"cosine": cos, "rel_rms": rel, "elements": f.size})
            if f.size >= MIN_AGREEMENT_ELEMENTS:    # a cosine of a score or two says little
                cosines.append(cos)
                rels.append(rel)
    row.update(bit_exact=bool(exact), photos=len(images), output_elements=total, mismatched=mismatched,
               float_cosine=min(cosines) if cosines else None, float_rel_rms=max(rels) if rels else None,
               float_per_output=per_output,
               outcome="bit-exact" if exact else "WRONG")
    return row


def _table(rows):
    head = ("model", "ops", "compiles", "SRAM KiB", "bit-exact", "cos(float)", "error where refused")
    lines = [head]
    for r in rows:
        ops = sum(r["operators"].values())
        if r["compiles"]:
            packed = len(r.get("packed_tensors", []))
            lines.append((r["model"], str(ops), f"yes ({packed} packed)" if packed else "yes",
                          f"{r['sram_bytes'] / 1024:,.0f}",
                          "yes" if r["bit_exact"] else f"NO ({r['mismatched']})",
                          "-" if r["float_cosine"] is None else f"{r['float_cosine']:.4f}", ""))
        else:
            err = r["error"] or ""
            lines.append((r["model"], str(ops), "no" if r["outcome"] == "refused" else "BUG", "-", "-", "-",
                          err if len(err) <= 110 else err[:107] + "..."))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = []
    for k, line in enumerate(lines):
        out.append("  ".join(v.ljust(wd) for v, wd in zip(line, widths)) + "  " + line[-1])
        if k == 0:
            out.append("-" * len(out[0]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="tools/models.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="imx500", help="the die preset to compile for (default imx500)")
    p.add_argument("--photos", type=int, default=3, help="photos per model for the comparisons (default 3)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these models (names without .tflite)")
    p.add_argument("--wheel", type=Path, default=None, help="a mediapipe wheel to read (default: downloaded)")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "build" / "models", help="report folder")
    args = p.parse_args(argv)

    from stackcam.cli import config_arg
    from stackcam.errors import StackcamError

    try:
        config = config_arg(args.config)
    except StackcamError as e:
        raise SystemExit(f"models: {e}") from None
    wheel = args.wheel or find_wheel()
    models = image_models(wheel)
    if args.only:
        unknown = sorted(set(args.only) - set(models))
        if unknown:
            raise SystemExit(f"models: not in the wheel: {', '.join(unknown)} (it has {', '.join(models)})")
        models = {k: v for k, v in models.items() if k in args.only}
    print(f"{len(models)} image models from {wheel.name}, compiled for '{config.name}', "
          f"{args.photos} photos each", flush=True)
    rows = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stackcam-models-") as work:
        for k, (name, data) in enumerate(models.items(), 1):
            t0 = time.monotonic()
            try:
                row = check_model(name, data, config, args.photos, work)
            except Exception as e:          # a bug in the toolchain: reported, and the run fails
                first = str(e).splitlines()[0] if str(e) else ""
                row = {"model": name, "operators": operators(data), "compiles": False, "outcome": "bug",
                       "error": f"{type(e).__name__}: {first}"}
            row["seconds"] = round(time.monotonic() - t0, 1)
            rows.append(row)
            print(f"[{k}/{len(models)}] {name}: {row['outcome']} ({row['seconds']} s)", flush=True)
    summary = {
        "models": len(rows),
        "compiled": sum(r["compiles"] for r in rows),
        "bit_exact": sum(bool(r.get("bit_exact")) for r in rows),
        "refused": sum(r["outcome"] == "refused" for r in rows),
        "wrong": sum(r["outcome"] == "WRONG" for r in rows),
        "bugs": sum(r["outcome"] == "bug" for r in rows),
        "seconds": round(time.monotonic() - start, 1),
    }
    report = {"wheel": wheel.name, "config": config.name, "photos": args.photos, "summary": summary, "models": rows}
    out = args.output / "report.json"
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    print()
    for line in _table(rows):
        print(line)
    print(f"\n{summary['compiled']} of {summary['models']} compile for '{config.name}', {summary['bit_exact']} "
          f"bit-exact with LiteRT BUILTIN_REF, {summary['refused']} refused, {summary['wrong']} wrong, "
          f"{summary['bugs']} bugs ({summary['seconds']} s); wrote {out}")
    return 1 if summary["wrong"] or summary["bugs"] else 0


if __name__ == "__main__":
    sys.exit(main())
