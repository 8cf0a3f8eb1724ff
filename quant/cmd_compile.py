"""`stackcam compile`: a model (int8, or float with calibration images) to a weight ROM image, manifest and hex."""

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["register", "cmd_compile", "load_for_compile", "ZOO_PREFIX", "layer_table", "totals_text",
           "OUTPUT_FILES"]

ZOO_PREFIX = "zoo:"
OUTPUT_FILES = ("model.rom", "model.json", "weights.hex")


def register(sub):
    p = sub.add_parser(
        "compile", help="compile a network into a weight ROM image for a configuration",
        description="Compile an int8 .tflite (or a float .tflite/.onnx with calibration images) for a die "
        "configuration: writes model.rom (the weight ROM image), model.json (manifest) and weights.hex "
        "($readmemh of the weight SRAM), and prints each layer and the SRAM it needs. MODEL may also be "
        "zoo:mobilenet_v1_<alpha>_<resolution> (float MobileNet V1 with seeded weights, 1000 classes) or "
        "zoo:blazeface (the float BlazeFace short-range model).")
    p.add_argument("model", metavar="MODEL", help="model file (.tflite or .onnx) or a zoo: name")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--calib", metavar="DIR", default=None,
                     help="directory of calibration images (needed for a float model)")
    cal.add_argument("--calib-photos", action="store_true",
                     help="calibrate a float model on the photos that ship with scikit-image")
    p.add_argument("--config", default="tiny", help="configuration preset (tiny, fpga, imx500; default tiny)")
    p.add_argument("-o", "--output", metavar="OUTDIR", required=True, help="output folder")
    p.set_defaults(func=cmd_compile)


def _zoo(name):
    from stackcam.quant.graph import ModelError
    spec = name[len(ZOO_PREFIX):]
    if spec.startswith("mobilenet_v1"):
        from stackcam.quant.zoo import mobilenet_v1
        parts = spec.split("_")[2:]
        try:
            alpha = float(parts[0]) if parts else 1.0
            resolution = int(parts[1]) if len(parts) > 1 else 224
        except ValueError:
            raise ModelError(f"{name}: write zoo:mobilenet_v1_<alpha>_<resolution>, e.g. "
                             f"zoo:mobilenet_v1_1.0_224") from None
        return mobilenet_v1(alpha, resolution, 1000, seed=0)
    if spec == "blazeface":
        from stackcam.quant.zoo.blazeface import blazeface_float_graph
        return blazeface_float_graph()
    raise ModelError(f"{name}: unknown zoo model; choose zoo:mobilenet_v1_<alpha>_<resolution> or zoo:blazeface")


def load_for_compile(model, calib=None, calib_photos=False):
    """The lowered full-int8 Graph of MODEL (path or zoo name), quantized on calibration images when float."""
    from stackcam.quant import lower as lowering
    from stackcam.quant.graph import ModelError
    from stackcam.quant.importer import load_model

    if str(model).startswith(ZOO_PREFIX):
        graph = _zoo(str(model))
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{model}: no such model file")
        graph = load_model(path)
    if not graph.is_quantized():
        if calib is None and not calib_photos:
            raise ModelError(f"{model} is a float model: give --calib DIR or --calib-photos to quantize it")
        from stackcam.quant.calib import calibration_set
        from stackcam.quant.ptq import quantize_graph
        if len(graph.inputs) != 1:
            raise ModelError(f"{model}: calibration takes models with one image input, this one has "
                             f"{len(graph.inputs)}")
        samples = calibration_set(graph.tensor(graph.inputs[0]).shape, source=calib)
        if not samples:
            raise ModelError(f"{calib}: no calibration images found")
        graph = quantize_graph(graph, samples)
    graph = lowering.lower(graph)
    # The host quantizes the input and dequantizes the outputs: the die takes the int8 core.
    int8_core = getattr(lowering, "int8_core", None)
    return int8_core(graph) if int8_core is not None else graph


def _shape(shape):
    return "x".join(str(int(d)) for d in shape)


def layer_table(model):
    """The per-layer table as text lines."""
    rows = [("#", "layer", "operator", "die", "input", "output", "MACs", "weight B", "act B")]
    for layer in model.layers:
        rows.append((str(layer.index), layer.name[-32:], layer.kind, layer.op,
                     " + ".join(_shape(s) for s in layer.inputs), _shape(layer.output), f"{layer.macs:,}",
                     f"{layer.weight_bytes:,}", f"{layer.act_bytes:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {0, 6, 7, 8}
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _bank_text(use, bank_bytes):
    """'0-33 full, 34: 95,232 B, 35-43 empty' from per-bank bytes."""
    def label(v):
        return "full" if v == bank_bytes else "empty" if v == 0 else f"{v:,} B"
    parts, i = [], 0
    while i < len(use):
        j = i
        while j + 1 < len(use) and label(use[j + 1]) == label(use[i]) and label(use[i]) in ("full", "empty"):
            j += 1
        parts.append(f"{i}-{j} {label(use[i])}" if j > i else f"{i}: {label(use[i])}")
        i = j + 1
    return ", ".join(parts)


def totals_text(model):
    """Totals against the configuration's SRAM, with per-bank use, as text lines."""
    from stackcam.quant.compiler import bank_use
    cfg = model.config
    bank = cfg.sram_bank_bytes
    w_have, a_have = cfg.weight_banks * bank, cfg.act_banks * bank
    w_use = bank_use(model.weight_bytes, bank, cfg.weight_banks)
    a_use = bank_use(model.act_bytes, bank, cfg.act_banks)
    lines = [
        f"MACs: {model.macs:,} ({model.macs / 1e6:.1f} M); weights: {model.weight_count:,} values "
        f"({model.weight_count / 1e6:.2f} M); {len(model.descriptors)} descriptors",
        f"weight SRAM: {model.weight_bytes:,} B of {w_have:,} B ({100 * model.weight_bytes / w_have:.1f}%), "
        f"{sum(1 for u in w_use if u)} of {cfg.weight_banks} banks of {bank:,} B: {_bank_text(w_use, bank)}",
        f"activation SRAM: {model.act_bytes:,} B of {a_have:,} B at the peak ({100 * model.act_bytes / a_have:.1f}%), "
        f"{sum(1 for u in a_use if u)} of {cfg.act_banks} banks of {bank:,} B: {_bank_text(a_use, bank)}",
        f"MAC-array cycles (rough estimate, {cfg.macs_per_cycle} MACs/cycle): "
        f"{sum(layer.cycles for layer in model.layers):,}",
    ]
    io = model.io
    inp = io["input"]
    lines.append(f"input: {inp['name']} {_shape(inp['shape'])} int8 (scale {inp['scale'][0]:g}, zero point "
                 f"{inp['zero_point'][0]}), {inp['layout']} at activation word {inp['addr']}")
    for t in io["die_outputs"]:
        lines.append(f"die output: {t['name']} {_shape(t['shape'])} at activation word {t['addr']}")
    for op in io["host"]["ops"]:
        lines.append(f"host: {op['kind']} '{op['name']}' {', '.join(op['inputs'][:1])} -> {op['outputs'][0]}")
    return lines


def cmd_compile(args):
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.graph import ModelError
    from stackcam.quant.romimage import build_rom, manifest_json, readmemh
    from stackcam.cli import UserError, _config

    config = _config(args.config)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    try:
        graph = load_for_compile(args.model, args.calib, args.calib_photos)
        model = compile_graph(graph, config)
    except ModelError as e:
        raise UserError(str(e).splitlines()[0]) from None
    rom = build_rom(model)
    files = {"model.rom": rom, "model.json": manifest_json(model, rom).encode(),
             "weights.hex": readmemh(model).encode()}

    # Everything is written to a temporary folder beside OUTDIR and moved in only when complete, so a failure
    # (or an interrupt) never leaves a partial output.
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)             # mkdtemp makes it private; the result is an ordinary folder
    except OSError as e:
        raise UserError(f"{out}: cannot create the output folder: {e.strerror or e}") from None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.is_dir():
            for name in files:
                os.replace(tmp / name, out / name)
        else:
            os.replace(tmp, out)
    except OSError as e:
        raise UserError(f"{out}: cannot write the output: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{model.name} for config '{config.name}' ({config.summary()})")
    for line in layer_table(model):
        print(line)
    for line in totals_text(model):
        print(line)
    print(f"wrote {out / 'model.rom'} ({len(rom):,} B), {out / 'model.json'}, {out / 'weights.hex'}")
    return 0
