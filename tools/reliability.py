"""The standing reliability campaign (`nox -s reliability`): fuzzing of model files, ROM images and input images,
concurrent runs sharing the caches, and on the die's RTL in Verilator a soak of frames (model loads, mode switches,
ROI changes, random back-pressure on every port; every frame bit-exact, no byte lost) and SRAM fault injection
(single-bit flips at random words, bits and times: detected / corrected / masked / silent). Writes
build/reliability/report.json (atomically) and prints a summary.

Every case is reproducible on its own: case K of campaign C draws from numpy's generator seeded (seed, C, K), so
``python tools/reliability.py --seed S --replay C:K`` runs that one case in this process and prints its traceback.

Outcomes of a fuzz case:
  accepted  the input was taken and everything after it agreed (model: the compiled program equals the graph's
            reference executor on a random input; ROM: the image loads identically or, CRCs recomputed, runs)
  refused   a StackcamError: the one-line error a user sees (exit 2)
  bug       any other exception (a traceback for the user, exit 1), or a refusal after the toolchain accepted
            the input (its own compiled image refused by its own golden executor)
  crash     the worker process died (a signal, an abort in native code)
  hang      no answer within the per-case timeout
  wrong     accepted but the result differs (compiled program != graph; a damaged ROM image loaded as another)

Nothing in stackcam imports this file.
"""

import argparse
import io
import json
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from multiprocessing.connection import wait
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # the workers are the parallelism
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from stackcam.sim.files import write_text_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ("model", "rom", "image")
CAMPAIGN_IDS = {"model": 1, "rom": 2, "image": 3}
OUTCOMES = ("accepted", "refused", "bug", "crash", "hang", "wrong")
FAILURES = ("bug", "crash", "hang", "wrong")
CONFIG = "tiny"
# Real models: the zoo networks as the registry caches them (int8 .tflite written by quant.export), compiled for
# the tiny preset; one ONNX model (float, through the ONNX importer only).
ZOO = ("first-light", "zoo:blazeface", "zoo:mobilenet_v1_0.25_96_2")
DEFAULTS = {"model": 40000, "rom": 40000, "image": 30000, "concurrent": 4, "soak": 120, "faults": 1000}
QUICK = {"model": 24, "rom": 24, "image": 24, "concurrent": 2, "soak": 10, "faults": 10}


class Hang(BaseException):
    """Raised by the per-case alarm (a BaseException, so no `except Exception` in the code under test eats it)."""


def case_rng(seed, campaign, index):
    return np.random.default_rng([seed, CAMPAIGN_IDS[campaign], index])


# ---------------------------------------------------------------------------------------------------------------
# Corpora (built once in the parent; the forked workers inherit them)

def _onnx_model():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32), "w2")
    wf = numpy_helper.from_array(rng.normal(0, 0.3, (4, 8)).astype(np.float32), "wf")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1),
             helper.make_node("Softmax", ["y"], ["p"])]
    graph = helper.make_graph(nodes, "fuzznet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 4])], [w1, b1, w2, wf])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def _images():
    """Seed inputs of the CLI's readers: photos (PNG RGB, RGBA, grayscale, 16-bit, JPEG) and .npy tensors."""
    import skimage.data
    from PIL import Image

    photo = skimage.data.astronaut()[::8, ::8]                 # 64 x 64
    out = {}
    for name, img, fmt in (("rgb.png", Image.fromarray(photo), "PNG"),
                           ("rgba.png", Image.fromarray(photo).convert("RGBA"), "PNG"),
                           ("gray.png", Image.fromarray(photo).convert("L"), "PNG"),
                           ("deep.png", Image.fromarray((photo[..., 0].astype(np.uint16) * 257)), "PNG"),
                           ("photo.jpg", Image.fromarray(photo), "JPEG")):
        buf = io.BytesIO()
        img.save(buf, fmt)
        out[name] = buf.getvalue()
    for name, arr in (("tensor.npy", np.random.default_rng(3).integers(-128, 128, (1, 16, 16, 3), dtype=np.int8)),
                      ("batch.npy", np.zeros((2, 16, 16, 3), np.int8))):
        buf = io.BytesIO()
        np.save(buf, arr)
        out[name] = buf.getvalue()
    return out


class Corpus:
    def __init__(self, log):
        from stackcam.cli.models import model_graph
        from stackcam.quant.compiler import compile_graph
        from stackcam.quant.export import export_tflite
        from stackcam.quant.romimage import build_rom
        from stackcam.rtl.params import PRESETS

        self.config = PRESETS[CONFIG]
        self.models, self.roms = [], []
        for name in ZOO:
            t = time.time()
            graph = model_graph(name, self.config)
            data = export_tflite(graph)
            self.models.append((name.replace("zoo:", "") + ".tflite", data))
            self.roms.append((name, build_rom(compile_graph(graph, self.config))))
            log(f"  corpus: {name}: {len(data):,} B .tflite, {len(self.roms[-1][1]):,} B ROM image "
                f"({time.time() - t:.1f} s)")
        self.models.append(("fuzznet.onnx", _onnx_model()))
        self.images = _images()


CORPUS = None


# ---------------------------------------------------------------------------------------------------------------
# Mutations

INTERESTING_8 = (0x00, 0x01, 0x7F, 0x80, 0xFF)
INTERESTING_32 = (0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000, 0xFFFF, 1 << 24)


def mutate(data, rng, protect=0):
    """1 to 4 byte-level mutations (bit flip, random byte, interesting byte, interesting 32-bit word, a run of
    random bytes, a deleted or duplicated span, truncation), never touching the first `protect` bytes."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        n = len(b)
        if n <= protect + 4:
            break
        kind = int(rng.integers(8))
        pos = int(rng.integers(protect, n))
        if kind == 0:
            b[pos] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            b[pos] = int(rng.integers(256))
        elif kind == 2:
            b[pos] = INTERESTING_8[int(rng.integers(len(INTERESTING_8)))]
        elif kind == 3:
            pos = min(pos - pos % 4, n - 4)
            b[pos:pos + 4] = struct.pack("<I", INTERESTING_32[int(rng.integers(len(INTERESTING_32)))])
        elif kind == 4:
            span = int(rng.integers(2, 17))
            b[pos:pos + span] = rng.integers(0, 256, min(span, n - pos), dtype=np.uint8).tobytes()
        elif kind == 5:
            del b[pos:pos + int(rng.integers(1, 33))]
        elif kind == 6:
            span = bytes(b[pos:pos + int(rng.integers(1, 33))])
            b[pos:pos] = span
        else:
            del b[max(pos, n - int(rng.integers(1, 65))):]
    return bytes(b)


def _recrc(image):
    from stackcam.quant.romimage import ENTRY, HEADER, SECTION_IDS

    image = bytearray(image)
    if len(image) < HEADER.size + ENTRY.size * len(SECTION_IDS) + 4:
        return bytes(image)
    for i in range(len(SECTION_IDS)):
        pos = HEADER.size + i * ENTRY.size
        sid, off, size, _, load, words = ENTRY.unpack_from(image, pos)
        if off + size <= len(image) - 4:
            ENTRY.pack_into(image, pos, sid, off, size, zlib.crc32(bytes(image[off:off + size])), load, words)
    image[-4:] = struct.pack("<I", zlib.crc32(bytes(image[:-4])))
    return bytes(image)


# ---------------------------------------------------------------------------------------------------------------
# Cases: each returns (outcome, detail); a StackcamError escaping one is "refused", any other exception "bug".

def model_case(seed, index):
    from stackcam.errors import StackcamError
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.executor import run_graph
    from stackcam.quant.golden import execute
    from stackcam.quant.importer import load_model
    from stackcam.quant.lower import int8_core, lower
    from stackcam.quant.romimage import build_rom

    rng = case_rng(seed, "model", index)
    name, data = CORPUS.models[index % len(CORPUS.models)]
    bad = mutate(data, rng, protect=8 if name.endswith(".tflite") else 0)
    graph = load_model(bad, name=name)
    if not graph.is_quantized():
        return "accepted", f"{name}: a float model, imported (calibration is not fuzzed)"
    graph = int8_core(lower(graph))
    compiled = compile_graph(graph, CORPUS.config)
    rom = build_rom(compiled)
    shape = graph.tensor(graph.inputs[0]).shape
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    try:
        got = execute(rom, CORPUS.config, x.reshape(shape[1:]) if shape[0] == 1 else x)
        want = run_graph(graph, [x])
    except StackcamError as e:
        return "bug", f"{name}: compiled, then refused by the golden or reference executor: {e}"
    if len(got) != len(want) or any(not np.array_equal(np.asarray(g).reshape(np.shape(w)), w)
                                    for g, w in zip(got, want)):
        return "wrong", f"{name}: the compiled program's outputs differ from the graph's reference executor"
    return "accepted", f"{name}: compiled ({len(compiled.descriptors)} descriptors), outputs equal the graph's"


def rom_case(seed, index):
    from stackcam.errors import StackcamError
    from stackcam.quant.golden import execute
    from stackcam.quant.romimage import RomError, load_rom

    rng = case_rng(seed, "rom", index)
    name, rom = CORPUS.roms[index % len(CORPUS.roms)]
    config = CORPUS.config
    fixed = bool(rng.integers(2))                  # half the cases recompute every CRC after the damage
    bad = mutate(rom, rng)
    if fixed:
        bad = _recrc(bad)
    try:
        img = load_rom(bad, config)
    except RomError as e:
        return "refused", f"{name}: {e}"
    if not fixed:
        ref = load_rom(rom, config)
        same = bad == rom or (img.io == ref.io and np.array_equal(img.weight_sram(), ref.weight_sram()) and
                              img.descriptors == ref.descriptors and img.act_words == ref.act_words)
        return ("accepted", f"{name}: unchanged image loaded") if same else \
            ("wrong", f"{name}: a damaged image (CRCs not recomputed) loaded as a different model")
    x = rng.integers(-128, 128, img.io["input"]["hwc"], dtype=np.int8)
    try:
        execute(bad, config, x)
    except StackcamError as e:
        return "refused", f"{name}: loaded (CRCs recomputed), refused by the golden executor: {e}"
    return "accepted", f"{name}: loaded (CRCs recomputed) and ran"


def image_case(seed, index):
    from stackcam.cli.run import _batch, _load_input
    from stackcam.sim.frame_source import bayer_frame, load_image

    rng = case_rng(seed, "image", index)
    names = sorted(CORPUS.images)
    name = names[index % len(names)]
    bad = mutate(CORPUS.images[name], rng)
    path = Path(WORKDIR) / f"case{index}-{name}"
    path.write_bytes(bad)
    try:
        if name.endswith(".npy"):
            x = _load_input(path)
            items, _ = _batch(x, (1, 16, 16, 3), path)
            if any(i.shape != (1, 16, 16, 3) or i.dtype != np.int8 for i in items):
                return "wrong", f"{name}: read as {[i.shape for i in items]}"
            return "accepted", f"{name}: {x.dtype}{list(x.shape)}"
        img = load_image(path, fit=(CORPUS.config.frame_width, CORPUS.config.frame_height))
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            return "wrong", f"{name}: read as {img.dtype}{img.shape}"
        raw = bayer_frame(img, CORPUS.config.frame_width, CORPUS.config.frame_height)
        if raw.shape != (CORPUS.config.frame_height, CORPUS.config.frame_width) or raw.max() > 1023:
            return "wrong", f"{name}: a RAW10 frame of {raw.shape}"
        return "accepted", f"{name}: {img.shape[1]}x{img.shape[0]}"
    finally:
        path.unlink(missing_ok=True)


CASES = {"model": model_case, "rom": rom_case, "image": image_case}
WORKDIR = None


def run_case(campaign, seed, index):
    """(outcome, detail) of one case, exceptions classified."""
    from stackcam.errors import StackcamError
    try:
        return CASES[campaign](seed, index)
    except Hang:
        raise
    except StackcamError as e:
        text = str(e)
        if "\n" in text:
            return "bug", f"a StackcamError of {text.count(chr(10)) + 1} lines: {text[:200]!r}"
        return "refused", text[:300]
    except RecursionError as e:
        return "bug", f"RecursionError: {e}"
    except Exception as e:     # noqa: BLE001 -- every other exception is what the campaign looks for
        tb = traceback.extract_tb(e.__traceback__)
        where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(tb[-3:]))
        return "bug", f"{type(e).__name__}: {str(e)[:200]} (at {where})"


# ---------------------------------------------------------------------------------------------------------------
# Worker pool: forked processes, one case at a time, each under an alarm; the parent kills a worker that does not
# answer (hang) and notices one that died (crash), and starts another.

def _alarm(signum, frame):
    raise Hang()


def _worker(conn, timeout, memory_gb):
    import resource
    import warnings
    warnings.simplefilter("ignore")          # numpy's overflow warnings on damaged scales: the outcome says it
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_gb:
        limit = int(memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    while True:
        job = conn.recv()
        if job is None:
            return
        campaign, seed, index = job
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            outcome, detail = run_case(campaign, seed, index)
        except Hang:
            outcome, detail = "hang", f"no result in {timeout:g} s"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        conn.send((index, outcome, detail))


class Pool:
    def __init__(self, workers, timeout, memory_gb):
        self.ctx = multiprocessing.get_context("fork")
        self.timeout, self.memory_gb = timeout, memory_gb
        self.slots = [self._start() for _ in range(workers)]

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child, self.timeout, self.memory_gb), daemon=True)
        p.start()
        child.close()
        return {"proc": p, "conn": parent, "job": None, "since": 0.0}

    def run(self, campaign, seed, indices, on_result):
        todo = list(indices)[::-1]
        while todo or any(s["job"] is not None for s in self.slots):
            for s in self.slots:
                if s["job"] is None and todo:
                    s["job"] = todo.pop()
                    s["since"] = time.time()
                    s["conn"].send((campaign, seed, s["job"]))
            busy = [s for s in self.slots if s["job"] is not None]
            ready = wait([s["conn"] for s in busy] + [s["proc"].sentinel for s in busy], timeout=1.0)
            for k, s in enumerate(self.slots):
                if s["job"] is None:
                    continue
                if s["conn"] in ready:
                    try:
                        index, outcome, detail = s["conn"].recv()
                    except (EOFError, OSError):
                        index, outcome, detail = s["job"], "crash", self._death(s)
                        self.slots[k] = self._restart(s)
                    else:
                        s["job"] = None
                    on_result(index, outcome, detail)
                elif s["proc"].sentinel in ready or not s["proc"].is_alive():
                    on_result(s["job"], "crash", self._death(s))
                    self.slots[k] = self._restart(s)
                elif time.time() - s["since"] > self.timeout + 30:
                    on_result(s["job"], "hang", f"the worker did not answer in {self.timeout + 30:g} s (killed)")
                    s["proc"].kill()
                    self.slots[k] = self._restart(s)

    def _death(self, s):
        s["proc"].join(5)
        code = s["proc"].exitcode
        return f"the worker died ({'signal ' + signal.Signals(-code).name if code and code < 0 else code})"

    def _restart(self, s):
        s["conn"].close()
        if s["proc"].is_alive():
            s["proc"].kill()
        s["proc"].join(5)
        return self._start()

    def close(self):
        for s in self.slots:
            try:
                s["conn"].send(None)
            except OSError:
                pass
        for s in self.slots:
            s["proc"].join(5)
            if s["proc"].is_alive():
                s["proc"].kill()


def fuzz(pool, campaign, seed, cases, log):
    counts = dict.fromkeys(OUTCOMES, 0)
    failures, samples = [], {}
    t = time.time()
    done = [0]

    def on_result(index, outcome, detail):
        counts[outcome] += 1
        done[0] += 1
        samples.setdefault(outcome, detail)
        if outcome in FAILURES:
            failures.append({"case": index, "outcome": outcome, "detail": detail,
                             "replay": f"python tools/reliability.py --seed {seed} --replay {campaign}:{index}"})
            log(f"  {campaign} case {index}: {outcome.upper()}: {detail}")
            log(f"    replay: python tools/reliability.py --seed {seed} --replay {campaign}:{index}")
        if done[0] % 500 == 0:
            log(f"  {campaign}: {done[0]}/{cases} cases ({time.time() - t:.0f} s)")

    pool.run(campaign, seed, range(cases), on_result)
    return {"cases": cases, "outcomes": counts, "failures": failures[:50], "failure_count": len(failures),
            "first_detail": samples, "wall_s": round(time.time() - t, 1)}


# ---------------------------------------------------------------------------------------------------------------
# Concurrency: N processes compile the same zoo network on one cold cache at once (each into its own folder, then
# all into the same folder): every one succeeds, the outputs are byte-identical, the cache holds one entry.

def concurrency(processes, log, model="zoo:mobilenet_v1_0.25_96_2"):
    t = time.time()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="stackcam-reliability-") as tmp:
        tmp = Path(tmp)
        for shared_output in (False, True):
            cache = tmp / f"cache-{int(shared_output)}"
            env = {**os.environ, "STACKCAM_CACHE": str(cache)}
            outs = [tmp / ("shared" if shared_output else f"out{i}") / "rom" for i in range(processes)]
            cmd = [sys.executable, "-m", "stackcam.cli", "compile", model, "--config", CONFIG]
            procs = [subprocess.Popen(cmd + ["-o", str(o)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for o in outs]
            results = [(p.wait(timeout=900), p.stderr.read()) for p in procs]
            for p in procs:
                p.stdout.close()
                p.stderr.close()
            errors = [f"exit {rc}: {err.strip()[-300:]}" for rc, err in results if rc != 0]
            files = {}
            for o in dict.fromkeys(outs):
                for name in ("model.rom", "model.json", "weights.hex"):
                    f = o / name
                    files.setdefault(name, set()).add(f.read_bytes() if f.is_file() else None)
            identical = all(len(v) == 1 and None not in v for v in files.values())
            entries = sorted(p.name for p in (cache / "models").iterdir()) if (cache / "models").is_dir() else []
            leftovers = [p.name for p in outs[0].parent.iterdir() if p.name.startswith(".")]
            leftovers += [e for e in entries if e.startswith(".")]
            ok = not errors and identical and len([e for e in entries if not e.startswith(".")]) == 1 and \
                not leftovers
            rounds.append({"processes": processes, "output": "one shared folder" if shared_output else
                           "a folder each", "errors": errors, "identical": identical, "cache_entries": entries,
                           "leftovers": leftovers, "ok": ok})
            log(f"  concurrency ({'same output folder' if shared_output else 'own folders'}): {processes} x "
                f"`stackcam compile {model}` on a cold cache: {'ok' if ok else 'FAILED'}"
                + (f" {errors or ''} identical={identical} cache={entries} leftovers={leftovers}" if not ok else ""))
    return {"runs": processes * len(rounds), "rounds": rounds, "model": model,
            "outcomes": {"ok": sum(r["ok"] for r in rounds), "failed": sum(not r["ok"] for r in rounds)},
            "wall_s": round(time.time() - t, 1)}


# ---------------------------------------------------------------------------------------------------------------
# The die's RTL in Verilator: a soak (frames with model loads, mode switches, ROI changes, random back-pressure on
# every port between frames, every frame checked bit for bit against the golden executor, no byte lost) and SRAM
# fault injection (single-bit flips at random words, bits and times, through the simulation build's fault port).
#
# A fault frame's outcome: "detected" (the die flagged it: npu_error 5 or the embedded line's SRAM-fault flag, and
# every host path refuses the frame), "masked" (no flag and the output bit-exact: the word was not read after the
# flip, or rewritten first), "silent" (no flag and a wrong output). Parity corrects nothing ("corrected" is 0).

FAULT_OUTCOMES = ("detected", "corrected", "masked", "silent")


class RtlModels:
    """The models the RTL campaigns load: first-light with two seeds (one CONV) and fuzznet (the ONNX model of the
    corpus quantized on photos: CONV, DWCONV, ADD, average pool, FULLY_CONNECTED), compiled for `CONFIG`."""

    def __init__(self, log):
        from stackcam.cli.models import prepare_model
        from stackcam.quant.romimage import load_rom
        from stackcam.rtl.params import PRESETS

        self.config = PRESETS[CONFIG]
        self.models = []
        with tempfile.TemporaryDirectory(prefix="stackcam-rtl-") as tmp:
            onnx = Path(tmp) / "fuzznet.onnx"
            onnx.write_bytes(_onnx_model())
            for name, source, kw in (("first-light/0", "first-light", {"seed": 0}),
                                     ("first-light/1", "first-light", {"seed": 1}),
                                     ("fuzznet", str(onnx), {"calib_photos": True})):
                prepared = prepare_model(source, self.config, **kw)
                image = load_rom(prepared.rom, self.config)
                self.models.append({"name": name, "prepared": prepared, "rom": prepared.rom, "io": prepared.io,
                                    "act_words": image.act_words,
                                    "weight_words": int(image.weight_sram().shape[0])})
        log("  RTL models: " + ", ".join(f"{m['name']} ({len(m['prepared'].compiled.descriptors)} descriptors, "
                                        f"ROM {len(m['rom']):,} B)" for m in self.models))


def measure_windows(models):
    """Each model's fault window: cycles from a frame's last input beat (tensor port) to its last CSI-2 byte, in
    a fault-free run (which must be bit-exact)."""
    from stackcam.sim.dierun import run_die
    from stackcam.sim.simulate import golden_die_outputs

    rng = np.random.default_rng(0)
    ms = models.models
    xs = [rng.integers(-128, 128, tuple(m["io"]["input"]["hwc"]), dtype=np.int8) for m in ms]
    schedule = [item for k, m in enumerate(ms) for item in (("rom", m["rom"]), ("frame", k))]
    run = run_die(models.config, None, tensors=xs, schedule=schedule, progress=False)
    for k, m in enumerate(ms):
        fr = run.frames[k]
        want = golden_die_outputs(m["prepared"], models.config, xs[k])[0]
        if fr.error or not all(np.array_equal(a, b) for a, b in zip(fr.outputs, want)):
            raise RuntimeError(f"{m['name']}: a fault-free frame is not bit-exact ({fr.error})")
        m["window"] = int(run.frame_last_byte[k] - run.last_pixel[k])


def random_fault(rng, config, model, frame, window):
    """One single-bit flip: an SRAM, a word (nine in ten inside what the model uses, the rest anywhere), a bit of
    the stored word (parity bits included) and a delay after the frame's last input beat in [0, window)."""
    sram = "act" if rng.random() < 0.5 else "weight"
    used, depth, width = ((model["act_words"], config.act_words, 9 * config.array_cols) if sram == "act" else
                          (model["weight_words"], config.weight_words, 9 * config.weight_word_bytes))
    addr = int(rng.integers(used)) if rng.random() < 0.9 else int(rng.integers(depth))
    return {"frame": frame, "sram": sram, "addr": addr, "bit": int(rng.integers(width)),
            "delay": int(rng.integers(window))}


def classify_fault(fr, want):
    """detected / masked / silent for a frame with a fault (see above); `want` is the golden die outputs."""
    if fr is None:
        return "silent", "the frame never arrived"
    if fr.error is not None:
        flagged = fr.embedded is not None and (fr.embedded["sram_fault"] or fr.embedded["npu_error"] == 5)
        return ("detected", fr.error) if flagged else ("silent", f"refused for another reason: {fr.error}")
    same = len(fr.outputs) == len(want) and all(o is not None and np.array_equal(o, w)
                                                for o, w in zip(fr.outputs, want))
    return ("masked", "no flag, output bit-exact") if same else ("silent", "no flag and a wrong output")


def _fault_tally():
    return {"injected": 0, **dict.fromkeys(FAULT_OUTCOMES, 0), "by_sram": {s: dict.fromkeys(FAULT_OUTCOMES, 0)
                                                                          for s in ("act", "weight")}}


def _tally(tally, fault, outcome):
    tally["injected"] += 1
    tally[outcome] += 1
    tally["by_sram"][fault["sram"]][outcome] += 1


def fault_campaign(models, seed, n_faults, log, batch=100):
    """`n_faults` frames on the tensor port, each with one random single-bit flip, the model (chosen at random)
    reloaded before every frame so that a flipped weight never outlives its frame, with random back-pressure on the
    tensor, ROM and CSI-2 ports."""
    from stackcam.sim.dierun import run_die
    from stackcam.sim.simulate import golden_die_outputs

    config = models.config
    t = time.time()
    tally = _fault_tally()
    silent, frames_done, sim_cycles = [], 0, 0
    for b0 in range(0, n_faults, batch):
        rng = np.random.default_rng([seed, 5, b0])
        n = min(batch, n_faults - b0)
        picks = [models.models[int(rng.integers(len(models.models)))] for _ in range(n)]
        xs = [rng.integers(-128, 128, tuple(m["io"]["input"]["hwc"]), dtype=np.int8) for m in picks]
        faults = [random_fault(rng, config, m, k, m["window"]) for k, m in enumerate(picks)]
        schedule = [item for k, m in enumerate(picks) for item in (("rom", m["rom"]), ("frame", k))]
        bp = [{"stall": float(rng.choice([0.0, 0.5])), "tensor": float(rng.choice([0.0, 0.25, 0.75])),
               "rom": float(rng.choice([0.0, 0.25, 0.75]))} for _ in range(n)]
        run = run_die(config, None, tensors=xs, schedule=schedule, faults=faults, backpressure=bp, progress=False)
        sim_cycles += run.cycles
        for k, (m, x, f) in enumerate(zip(picks, xs, faults)):
            fr = run.frames[k] if k < len(run.frames) else None
            outcome, detail = classify_fault(fr, golden_die_outputs(m["prepared"], config, x)[0])
            _tally(tally, f, outcome)
            if outcome == "silent":
                silent.append({"model": m["name"], "fault": f, "detail": detail, "batch": b0})
                log(f"  fault {b0 + k}: SILENT ({m['name']}, {f}): {detail}")
        frames_done += n
        log(f"  faults: {frames_done}/{n_faults} ({time.time() - t:.0f} s): {tally['detected']} detected, "
            f"{tally['masked']} masked, {tally['silent']} silent")
    replay = (f"python tools/reliability.py --seed {seed} --model-cases 0 --rom-cases 0 --image-cases 0 "
              f"--concurrent 0 --soak-frames 0 --faults {n_faults}")
    if silent:
        log(f"    replay: {replay}")
    return {**tally, "replay": replay, "frames": frames_done, "silent_cases": silent[:50], "sim_cycles": sim_cycles,
            "windows": {m["name"]: m["window"] for m in models.models}, "wall_s": round(time.time() - t, 1)}


def _roi(rng, config, w, h):
    """A random region of interest giving a w x h network input: a bin factor and a crop origin that the ISP
    takes (IspGeometry.check)."""
    from stackcam.quant.isp import IspGeometry

    align = max(2, config.pixels_per_clock)
    ks = [k for k in range(1, 8) if (2 * k) % config.pixels_per_clock == 0
          and 2 * k * w <= config.frame_width and 2 * k * h <= config.frame_height]
    k = ks[int(rng.integers(len(ks)))]
    x = int(rng.integers((config.frame_width - 2 * k * w) // align + 1)) * align
    y = int(rng.integers((config.frame_height - 2 * k * h) // 2 + 1)) * 2
    return IspGeometry(crop_x=x, crop_y=y, bin_factor=k, out_width=w, out_height=h).check(config)


def _raw_pool(config, rng):
    """RAW10 frames: three photos of scikit-image and two of noise."""
    import skimage.data

    from stackcam.sim.frame_source import bayer_frame
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    raws = [bayer_frame(p, config.frame_width, config.frame_height) for p in photos]
    raws += [rng.integers(0, 1024, (config.frame_height, config.frame_width)).astype(np.uint16) for _ in range(2)]
    return raws


def soak(models, seed, n_frames, log, fault_every=10):
    """`n_frames` RAW frames through the whole die (ISP, NPU, CSI-2) in one simulation. Before frames: a model
    load (sometimes; always after a weight fault), the CSI-2 mode (image, metadata, tensors), a region of
    interest, LS/LE packets on or off, and the back-pressure of every port (CSI-2 receiver not ready, pixel and
    ROM sources withholding beats) drawn at random. Every frame without a fault must be bit-exact with the
    golden executor (and its RAW10 image or input tensor identical), with the exact byte count its packets give
    and no ECC, CRC or framing error; every `fault_every`-th frame gets a single-bit SRAM flip, classified."""
    from stackcam.quant.isp import isp_reference
    from stackcam.rtl.regs import MODES
    from stackcam.sim.dierun import model_registers, run_die
    from stackcam.sim.metadata import frame_bytes
    from stackcam.sim.simulate import golden_die_outputs

    config = models.config
    t = time.time()
    rng = np.random.default_rng([seed, 6])
    raws_pool = _raw_pool(config, rng)
    schedule, raws, modes, frame_regs, bp, faults, plan = [], [], [], [], [], [], []
    current = None
    loads = 0
    for n in range(n_frames):
        reload = current is None or rng.random() < 0.15 or (faults and faults[-1]["frame"] == n - 1
                                                              and faults[-1]["sram"] == "weight")
        if reload:
            current = models.models[int(rng.integers(len(models.models)))]
            schedule.append(("rom", current["rom"]))
            loads += 1
        h, w, _ = current["io"]["input"]["hwc"]
        geometry = _roi(rng, config, w, h)
        regs, geometry, quant = model_registers(config, current["io"], geometry=geometry)
        ls_le = int(rng.integers(2))
        mode = list(MODES)[int(rng.integers(len(MODES)))]
        raw = raws_pool[int(rng.integers(len(raws_pool)))]
        raws.append(raw)
        modes.append(mode)
        frame_regs.append({**regs, "csi2_ctrl": ls_le})
        bp.append({"stall": float(rng.choice([0.0, 0.1, 0.5, 0.9])),
                   "pixels": float(rng.choice([0.0, 0.25, 0.75])), "rom": float(rng.choice([0.0, 0.25, 0.75]))})
        fault = None
        if fault_every and n % fault_every == fault_every - 1:
            fault = random_fault(rng, config, current, n, current["window"])
            faults.append(fault)
        x = isp_reference(raw, config, quant, geometry)
        plan.append({"model": current, "x": x, "raw": raw, "mode": mode, "ls_le": ls_le, "fault": fault,
                     "geometry": geometry})
        schedule.append(("frame", n))
    run = run_die(config, None, raws, modes=modes, schedule=schedule, frame_regs=frame_regs, backpressure=bp,
                  faults=faults, progress=False)
    dec = run.decoder
    tally = _fault_tally()
    exact, failures, silent = 0, [], []
    counted_bytes = 0
    for n, p in enumerate(plan):
        fr = run.frames[n] if n < len(run.frames) else None
        want = golden_die_outputs(p["model"]["prepared"], config, p["x"])[0]
        if p["fault"] is not None:
            outcome, detail = classify_fault(fr, want)
            _tally(tally, p["fault"], outcome)
            if outcome == "silent":
                silent.append({"frame": n, "fault": p["fault"], "detail": detail})
            if fr is not None:
                counted_bytes += fr.csi2_bytes
            continue
        problems = []
        if fr is None:
            problems.append("never arrived")
        else:
            counted_bytes += fr.csi2_bytes
            if fr.error:
                problems.append(f"refused: {fr.error}")
            elif len(fr.outputs) != len(want) or not all(o is not None and np.array_equal(o, w_)
                                                         for o, w_ in zip(fr.outputs, want)):
                problems.append("output differs from the golden executor")
            if fr.mode != p["mode"]:
                problems.append(f"mode {fr.mode}, wanted {p['mode']}")
            if p["mode"] == "image" and (fr.image is None or not np.array_equal(fr.image, p["raw"])):
                problems.append("RAW10 image differs from the frame sent")
            if p["mode"] == "tensors" and (fr.input_tensor is None or not np.array_equal(fr.input_tensor, p["x"])):
                problems.append("input tensor differs from the ISP reference")
            g = p["geometry"]
            shapes = [o["hwc"] for o in p["model"]["io"]["die_outputs"]]
            expect = frame_bytes(config, p["mode"], shapes, bool(p["ls_le"]), (g.out_height, g.out_width))
            if fr.csi2_bytes != expect:
                problems.append(f"{fr.csi2_bytes} CSI-2 bytes, its packets give {expect}")
        if problems:
            failures.append({"frame": n, "model": p["model"]["name"], "mode": p["mode"], "problems": problems})
        else:
            exact += 1
    clean = n_frames - len(faults)
    errors = {"ecc": dec.ecc_errors, "crc": dec.crc_errors, "framing": dec.framing_errors,
              "die_frame_errors": run.counters["frame_errors"], "die_csi2_errors": run.counters["csi2_errors"]}
    lost = len(run.csi2_bytes) - counted_bytes
    ok = (exact == clean and not any(errors.values()) and lost == 0 and len(run.frames) == n_frames
          and tally["silent"] == 0)
    for f in failures[:5]:
        log(f"  soak frame {f['frame']} ({f['model']}, {f['mode']}): {'; '.join(f['problems'])}")
    for f in silent[:5]:
        log(f"  soak frame {f['frame']}: SILENT fault {f['fault']}: {f['detail']}")
    replay = (f"python tools/reliability.py --seed {seed} --model-cases 0 --rom-cases 0 --image-cases 0 "
              f"--concurrent 0 --faults 0 --soak-frames {n_frames}")
    if not ok:
        log(f"  soak FAILED ({exact}/{clean} fault-free frames bit-exact, errors {errors}, {lost} bytes "
            f"unaccounted); replay: {replay}")
    return {"frames": n_frames, "replay": replay, "frames_received": len(run.frames), "clean_frames": clean,
            "bit_exact": exact,
            "model_loads": loads, "modes": {m: modes.count(m) for m in MODES}, "csi2_bytes": len(run.csi2_bytes),
            "bytes_unaccounted": lost, "csi2_errors": errors, "faults": tally, "silent_cases": silent,
            "failures": failures[:20], "sim_cycles": run.cycles, "sim_wall_s": round(run.sim_wall_s, 1),
            "ok": ok, "wall_s": round(time.time() - t, 1)}


# ---------------------------------------------------------------------------------------------------------------

def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path, data):
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def summary_table(report):
    rows = [("campaign", "cases", *OUTCOMES, "wall s")]
    for name, c in report["campaigns"].items():
        if name not in CAMPAIGNS:
            continue
        rows.append((name, f"{c['cases']:,}", *(f"{c['outcomes'][o]:,}" for o in OUTCOMES), f"{c['wall_s']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    c = report["campaigns"].get("soak")
    if c:
        f = c["faults"]
        lines.append(f"soak: {c['frames']} frames through the RTL ({c['model_loads']} model loads, modes "
                     f"{', '.join(f'{k} {v}' for k, v in c['modes'].items())}): {c['bit_exact']}/{c['clean_frames']} "
                     f"fault-free frames bit-exact, {c['bytes_unaccounted']} CSI-2 bytes unaccounted, "
                     f"{f['injected']} faults ({f['detected']} detected, {f['masked']} masked, {f['silent']} silent) "
                     f"({c['wall_s']:.0f} s)")
    c = report["campaigns"].get("faults")
    if c:
        lines.append(f"SRAM faults: {c['injected']} single-bit flips: {c['detected']} detected, {c['corrected']} "
                     f"corrected, {c['masked']} masked (not read after the flip, or rewritten first), "
                     f"{c['silent']} silent ({c['wall_s']:.0f} s)")
    c = report["campaigns"].get("concurrency")
    if c:
        lines.append(f"concurrency: {c['runs']} compiles of {c['model']} on cold caches, {len(c['rounds'])} rounds "
                     f"of {c['rounds'][0]['processes']} at once: {c['outcomes']['ok']} ok, {c['outcomes']['failed']} "
                     f"failed ({c['wall_s']:.0f} s)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=14, help="master seed (default 14); printed, and in the report")
    p.add_argument("--model-cases", type=int, default=None, help=f"model-file cases (default {DEFAULTS['model']})")
    p.add_argument("--rom-cases", type=int, default=None, help=f"ROM image cases (default {DEFAULTS['rom']})")
    p.add_argument("--image-cases", type=int, default=None, help=f"image cases (default {DEFAULTS['image']})")
    p.add_argument("--concurrent", type=int, default=None,
                   help=f"processes compiling at once on a cold cache (default {DEFAULTS['concurrent']}; 0: skip)")
    p.add_argument("--soak-frames", type=int, default=None,
                   help=f"frames of the RTL soak (default {DEFAULTS['soak']}; 0: skip)")
    p.add_argument("--faults", type=int, default=None,
                   help=f"SRAM fault-injection frames on the RTL (default {DEFAULTS['faults']}; 0: skip)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every case count (e.g. 10 for a long run)")
    p.add_argument("--quick", action="store_true", help="tiny counts (the test suite's smoke run)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    p.add_argument("--memory-gb", type=float, default=4.0, help="data-size limit of each worker (0: none)")
    p.add_argument("--out", default=str(ROOT / "build" / "reliability"), help="report folder")
    p.add_argument("--replay", metavar="CAMPAIGN:CASE", help="run one case here and print its traceback")
    args = p.parse_args(argv)
    log = lambda s: print(s, flush=True)      # noqa: E731

    base = QUICK if args.quick else DEFAULTS
    counts = {c: int(round((getattr(args, f"{c}_cases") if getattr(args, f"{c}_cases") is not None else base[c])
                           * args.scale)) for c in CAMPAIGNS}
    processes = args.concurrent if args.concurrent is not None else base["concurrent"]
    soak_frames = args.soak_frames if args.soak_frames is not None else base["soak"]
    n_faults = args.faults if args.faults is not None else base["faults"]

    global CORPUS, WORKDIR
    t0 = time.time()
    log(f"reliability campaign: seed {args.seed} (replay a case: python tools/reliability.py --seed {args.seed} "
        f"--replay CAMPAIGN:CASE)")
    CORPUS = Corpus(log)
    with tempfile.TemporaryDirectory(prefix="stackcam-fuzz-") as workdir:
        WORKDIR = workdir
        if args.replay:
            campaign, _, index = args.replay.partition(":")
            if campaign not in CASES or not index.isdigit():
                p.error(f"--replay {args.replay}: write CAMPAIGN:CASE with CAMPAIGN one of {', '.join(CASES)}")
            print(f"{campaign} case {index} (seed {args.seed}):", flush=True)
            try:
                outcome, detail = CASES[campaign](args.seed, int(index))
            except Exception:       # noqa: BLE001
                traceback.print_exc()
                outcome, detail = run_case(campaign, args.seed, int(index))
            print(f"{outcome}: {detail}")
            return 0 if outcome not in FAILURES else 1
        report = {"version": 1, "seed": args.seed, "commit": _git_commit(), "config": CONFIG,
                  "workers": args.workers, "timeout_s": args.timeout, "memory_gb": args.memory_gb,
                  "corpus": {"models": [n for n, _ in CORPUS.models], "roms": [n for n, _ in CORPUS.roms],
                             "images": sorted(CORPUS.images)},
                  "campaigns": {}}
        pool = Pool(args.workers, args.timeout, args.memory_gb)
        try:
            for campaign in CAMPAIGNS:
                log(f"{campaign} fuzzing: {counts[campaign]:,} cases")
                report["campaigns"][campaign] = fuzz(pool, campaign, args.seed, counts[campaign], log)
        finally:
            pool.close()
    if processes:
        log(f"concurrency: {processes} processes")
        report["campaigns"]["concurrency"] = concurrency(processes, log)
    if soak_frames or n_faults:
        log(f"RTL ({CONFIG}): building or finding the Verilator model of the die")
        models = RtlModels(log)
        measure_windows(models)
        if soak_frames:
            log(f"soak: {soak_frames} frames")
            report["campaigns"]["soak"] = soak(models, args.seed, soak_frames, log)
        if n_faults:
            log(f"SRAM fault injection: {n_faults} frames, one single-bit flip each")
            report["campaigns"]["faults"] = fault_campaign(models, args.seed, n_faults, log)
    fuzzed = [c for c in report["campaigns"].values() if "cases" in c]
    totals = {o: sum(c["outcomes"][o] for c in fuzzed) for o in OUTCOMES}
    totals["cases"] = sum(c["cases"] for c in fuzzed)
    totals["concurrency_failed"] = report["campaigns"].get("concurrency", {}).get("outcomes", {}).get("failed", 0)
    soaked = report["campaigns"].get("soak")
    totals["soak_failed"] = 0 if soaked is None or soaked["ok"] else 1
    tallies = [soaked["faults"]] if soaked else []
    tallies += [report["campaigns"]["faults"]] if "faults" in report["campaigns"] else []
    for key in ("injected", "detected", "corrected", "masked", "silent"):
        totals[f"faults_{key}"] = sum(t[key] for t in tallies)
    report["totals"] = totals
    report["ok"] = (not any(totals[o] for o in FAILURES) and not totals["concurrency_failed"]
                    and not totals["soak_failed"] and not totals["faults_silent"])
    report["wall_s"] = round(time.time() - t0, 1)
    out = Path(args.out) / "report.json"
    write_json_atomic(out, report)
    log("")
    log(summary_table(report))
    log(f"\n{totals['cases']:,} fuzz cases, {sum(totals[o] for o in FAILURES)} failures "
        f"({', '.join(f'{totals[o]} {o}' for o in FAILURES)}); seed {args.seed}; {report['wall_s']:.0f} s; "
        f"report {out}")
    if not report["ok"]:
        log("FAILED: replay a case with the command printed beside it")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
