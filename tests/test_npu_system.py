"""NPU system tests: whole networks on the die in Verilator, bit-exact with the golden program executor and
LiteRT's reference kernels; a corrupt ROM image refused by the loader; `stackcam run --engine rtl`."""

import subprocess
import sys
import zlib

import numpy as np
import pytest

from stackcam.quant.export import export_tflite
from stackcam.quant.golden import execute
from stackcam.quant.litert import run_reference
from stackcam.rtl.params import preset
from stackcam.sim.csi2 import decode
from stackcam.sim.dierun import run_die
from tests.dieutil import Model, photo_frames

pytestmark = pytest.mark.xdist_group("verilator")


def _inputs(model, n, seed):
    rng = np.random.default_rng(seed)
    h, w, c = model.io["input"]["hwc"]
    return [rng.integers(-128, 128, (h, w, c)).astype(np.int8) for _ in range(n)]


@pytest.mark.parametrize("name,config,stall", [
    ("zoo:mobilenet_v1_0.25_96_2", "tiny", 0.3),
    ("zoo:mobilenet_v1_0.25_96_2", "fpga", 0.5),
])
def test_network_on_the_die_is_bit_exact(name, config, stall):
    config = preset(config)
    model = Model(name, config)
    xs = _inputs(model, 2, seed=11)
    run = run_die(config, model.rom, tensors=xs, stall=stall, progress=False)
    assert run.loads[0]["model_ok"] == 1
    dec = decode(run.csi2_bytes)
    assert (dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 0), dec.errors
    assert len(run.frames) == 2
    tflite = export_tflite(model.prepared.graph)
    for x, fr in zip(xs, run.frames):
        # Die outputs == the golden program executor's, element for element.
        for got, want in zip(fr.outputs, model.expected(x=x)):
            assert got is not None and int(np.count_nonzero(got != want)) == 0
        # Model outputs (after the host tail) == the program executor == LiteRT BUILTIN_REF.
        golden = execute(model.rom, config, x)
        litert = run_reference(tflite, [x[None]])
        for got, g, ref in zip(fr.graph_outputs, golden, litert):
            assert np.array_equal(np.asarray(got).reshape(ref.shape), ref)
            assert np.array_equal(np.asarray(g).reshape(ref.shape), ref)
    # The per-descriptor counters add up to the run (sequencer fetch/decode aside) and report MAC activity.
    counters = np.array(run.descriptor_counters)
    assert counters[:, 0].sum() <= run.counters["npu_cycles"]
    assert counters[:, 1].sum() == run.counters["mac_cycles"] > 0


def test_corrupt_rom_is_refused_and_the_next_good_one_works():
    config = preset("tiny")
    model = Model("first-light", config, seed=2)
    bad = bytearray(model.rom)
    bad[len(bad) // 2] ^= 0x10            # one flipped bit in a weight section
    raws = photo_frames(config, 2, seed=3)
    schedule = [("rom", bytes(bad)), ("frame", 0), ("rom", model.rom), ("frame", 1)]
    run = run_die(config, None, raws, schedule=schedule, progress=False)
    assert [load["model_ok"] for load in run.loads] == [0, 1]
    loader_error = (run.loads[0]["npu_status"] >> 4) & 0xF
    assert loader_error == 6, f"expected a section CRC error (6), status {run.loads[0]['npu_status']:#x}"
    first, second = run.frames
    assert not first.outputs and not first.embedded["has_tensor"] and first.embedded["flags"] & 4
    assert first.embedded["model_fingerprint"] == 0
    (want,) = model.expected(raws[1])
    assert np.array_equal(second.outputs[0], want)
    assert second.embedded["model_fingerprint"] == zlib.crc32(model.rom[:-4])
    dec = decode(run.csi2_bytes)
    assert (dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 0), dec.errors


def test_stackcam_run_engine_rtl(tmp_path):
    config = preset("tiny")
    model = Model("first-light", config, seed=5)
    path = tmp_path / "first_light.tflite"
    path.write_bytes(export_tflite(model.prepared.graph))
    xs = np.stack(_inputs(model, 2, seed=7))
    np.save(tmp_path / "in.npy", xs)
    outs = {}
    for engine in ("ref", "rtl"):
        r = subprocess.run([sys.executable, "-m", "stackcam.cli", "run", str(path), "--input", str(tmp_path / "in.npy"),
                            "--engine", engine, "--config", "tiny", "-o", str(tmp_path / f"{engine}.npz")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs[engine] = np.load(tmp_path / f"{engine}.npz")["output_0"]
    litert = np.concatenate([run_reference(path.read_bytes(), [x[None]])[0] for x in xs])
    assert outs["rtl"].shape == litert.shape and np.array_equal(outs["rtl"], litert)
    assert np.array_equal(outs["ref"], litert)


@pytest.mark.parametrize("name,config", [
    ("zoo:blazeface", "tiny"), ("zoo:blazeface", "demo"),
    ("zoo:mobilenet_v1_0.25_96_2", "tiny"), ("zoo:mobilenet_v1_0.25_96_2", "demo"),
])
def test_stackcam_run_engine_rtl_networks(name, config, tmp_path):
    """BlazeFace and the MobileNet V1 0.25 96 person detector (int8 by our PTQ) through `stackcam run --engine
    rtl` on the astronaut photo: every output element equals LiteRT's reference kernels and the `ref` engine
    (the golden program executor)."""
    from skimage.data import astronaut
    from skimage.transform import resize
    model = Model(name, preset(config))
    path = tmp_path / "model.tflite"
    path.write_bytes(export_tflite(model.prepared.graph))
    h, w, _ = model.io["input"]["hwc"]
    scale, zp = model.io["input"]["scale"][0], model.io["input"]["zero_point"][0]
    rgb = resize(astronaut()[40:296, 96:352] / 255.0, (h, w), anti_aliasing=True) * 2.0 - 1.0
    x = np.clip(np.round(rgb / scale) + zp, -128, 127).astype(np.int8)[None]
    np.save(tmp_path / "in.npy", x)
    outs = {}
    for engine in ("ref", "rtl"):
        r = subprocess.run([sys.executable, "-m", "stackcam.cli", "run", str(path), "--input", str(tmp_path / "in.npy"),
                            "--engine", engine, "--config", config, "-o", str(tmp_path / f"{engine}.npz")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs[engine] = np.load(tmp_path / f"{engine}.npz")
    litert = run_reference(path.read_bytes(), [x])
    assert len(litert) == len(outs["rtl"].files) == len(model.prepared.graph.outputs)
    for k, ref in enumerate(litert):
        for engine in ("rtl", "ref"):
            got = outs[engine][f"output_{k}"]
            assert got.shape == ref.shape and int(np.count_nonzero(got != ref)) == 0, (engine, k)
    if name == "zoo:blazeface":
        # The die's outputs decode to the face (the crop puts it in the middle of the input).
        from stackcam.quant.detect import detect_faces
        from stackcam.quant.zoo.blazeface import _output_pair
        reg, cls, quant = _output_pair(model.prepared.graph, [outs["rtl"][f"output_{k}"] for k in range(2)])
        faces = detect_faces(reg, cls, (128, 128), quant=quant)
        assert faces and faces[0].score > 0.5
        x0, y0, x1, y1 = faces[0].box
        assert 20 < (x0 + x1) / 2 < 108 and 20 < (y0 + y1) / 2 < 108


def test_main_job_finds_the_astronauts_face(tmp_path):
    """`stackcam simulate` with its defaults (BlazeFace on the demo preset, the astronaut through the ISP): every
    die output bit-exact, clean CSI-2, and the face it reports matches float BlazeFace on LiteRT."""
    import json

    from stackcam.quant.calib import photo
    from stackcam.quant.detect import iou
    from stackcam.quant.zoo import blazeface as bf
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "stackcam.cli", "simulate", "--report", str(report), "--png",
                        str(tmp_path / "detection.png")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert rep["config"] == "demo" and rep["model"] == "zoo:blazeface"
    assert rep["bit_exact"] == [rep["elements"]] and rep["elements"] == 15232
    assert rep["csi2_errors"] == {"ecc": 0, "crc": 0, "framing": 0}
    assert f"bit-exact:     {rep['elements']}/{rep['elements']}" in r.stdout
    best_float = bf.find_faces(bf.blazeface_float_graph(), photo("astronaut"), min_score=None)[0]
    assert rep["face"]["score"] > 0.5 and abs(rep["face"]["score"] - best_float.score) < 0.1
    assert iou(tuple(rep["face"]["box"]), best_float.box) > 0.5
    assert (tmp_path / "detection.png").stat().st_size > 0
    # The latency adds up: the network's cycles fit between the last pixel and the last CSI-2 byte.
    assert 0 < rep["npu_cycles"] < rep["latency_last_pixel_to_last_byte"] < rep["latency_first_pixel_to_last_byte"]
