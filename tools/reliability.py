"""The standing reliability campaign (`nox -s reliability`): fuzzing of model files, ROM images and input images,
and concurrent runs sharing the caches. Writes build/reliability/report.json (atomically) and prints a summary.

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

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ("model", "rom", "image")
CAMPAIGN_IDS = {"model": 1, "rom": 2, "image": 3}
OUTCOMES = ("accepted", "refused", "bug", "crash", "hang", "wrong")
FAILURES = ("bug", "crash", "hang", "wrong")
CONFIG = "tiny"
# Real models: the zoo networks as the registry caches them (int8 .tflite written by quant.export), compiled for
# the tiny preset; one ONNX model (float, through the ONNX importer only).
ZOO = ("first-light", "zoo:blazeface", "zoo:mobilenet_v1_0.25_96_2")
DEFAULTS = {"model": 40000, "rom": 40000, "image": 30000, "concurrent": 4}      # about 7 minutes on 2 cores
QUICK = {"model": 24, "rom": 24, "image": 24, "concurrent": 2}


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

def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary_table(report):
    rows = [("campaign", "cases", *OUTCOMES, "wall s")]
    for name, c in report["campaigns"].items():
        if name == "concurrency":
            continue
        rows.append((name, f"{c['cases']:,}", *(f"{c['outcomes'][o]:,}" for o in OUTCOMES), f"{c['wall_s']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
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
    fuzzed = [c for c in report["campaigns"].values() if "cases" in c]
    totals = {o: sum(c["outcomes"][o] for c in fuzzed) for o in OUTCOMES}
    totals["cases"] = sum(c["cases"] for c in fuzzed)
    totals["concurrency_failed"] = report["campaigns"].get("concurrency", {}).get("outcomes", {}).get("failed", 0)
    report["totals"] = totals
    report["ok"] = not any(totals[o] for o in FAILURES) and not totals["concurrency_failed"]
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
