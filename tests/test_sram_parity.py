"""SRAM fault detection: every byte of the activation and weight SRAMs carries a parity bit, checked on every read.
A bit flipped in simulation (the fault port of the simulation build, sim.harness) is reported in npu_status, in the
frame's embedded line and by every host path (one line, exit 3 from the CLI), never as a silently wrong tensor; a
flip in a word not read afterwards is masked (the output stays bit-exact); the die recovers for the next frame."""

import subprocess
import sys

import numpy as np
import pytest

from stackcam.errors import EXIT_DIE, DieError
from stackcam.quant.romimage import load_rom
from stackcam.rtl.npu.core import NPU_ERRORS, SRAM_PARITY_ERROR
from stackcam.rtl.params import preset
from stackcam.sim.dierun import run_die
from tests.dieutil import Model

pytestmark = pytest.mark.xdist_group("verilator")

CONFIG = preset("tiny")


@pytest.fixture(scope="module")
def model():
    return Model("first-light", CONFIG)


def _inputs(model, n, seed):
    h, w, c = model.io["input"]["hwc"]
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (h, w, c)).astype(np.int8) for _ in range(n)]


def _exact(fr, model, x):
    want = model.expected(x=x)
    return fr.error is None and len(fr.outputs) == len(want) and all(
        np.array_equal(a, b) for a, b in zip(fr.outputs, want))


def test_flips_are_detected_or_masked_and_the_die_recovers(model):
    io = model.io
    spec = io["input"]
    last_input_word = spec["addr"] + spec["words"] - 1
    out = io["die_outputs"][0]
    oh, ow, oc = out["hwc"]
    last_output_word = out["addr"] + oh * ow * -(-oc // CONFIG.array_cols) - 1
    npu = run_die(CONFIG, model.rom, tensors=_inputs(model, 1, 0), progress=False).counters["npu_cycles"]
    xs = _inputs(model, 7, 1)
    faults = [
        # frame 0: clean
        {"frame": 1, "sram": "act", "addr": last_input_word, "bit": 3, "delay": 0},         # a data bit of the input
        {"frame": 2, "sram": "act", "addr": last_input_word, "bit": 8, "delay": 0},         # lane 0's parity bit
        # frame 3: clean (the input is rewritten: the die recovers)
        {"frame": 4, "sram": "act", "addr": CONFIG.act_words - 1, "bit": 5, "delay": 0},    # a word never read
        # after the run, before the output reader reaches the last output word
        {"frame": 5, "sram": "act", "addr": last_output_word, "bit": 1, "delay": npu + 40},
        # frame 6: clean
    ]
    run = run_die(CONFIG, model.rom, tensors=xs, faults=faults, progress=False)
    assert len(run.faults) == len(faults) and len(run.frames) == len(xs)
    fr = run.frames
    for k in (0, 3, 4, 6):
        assert _exact(fr[k], model, xs[k]), (k, fr[k].error)
        assert not fr[k].embedded["sram_fault"] and fr[k].embedded["npu_error"] == 0
    for k in (1, 2):            # detected during the run: the network stops, no tensor is sent
        emb = fr[k].embedded
        assert emb["npu_failed"] and emb["sram_fault"] and not emb["has_tensor"]
        assert emb["npu_error"] == SRAM_PARITY_ERROR and fr[k].outputs == [] and fr[k].graph_outputs is None
        assert fr[k].error.endswith(f"{NPU_ERRORS[SRAM_PARITY_ERROR]} (NPU error 5)"), fr[k].error
        assert "\n" not in fr[k].error
    # detected while the output was read out: the tensors went out, the embedded line disowns them
    emb = fr[5].embedded
    assert emb["sram_fault"] and emb["has_tensor"] and emb["npu_error"] == 0 and not emb["npu_failed"]
    assert fr[5].error.startswith("an SRAM parity error was detected while the output tensors were read out")
    assert fr[5].graph_outputs is None
    assert run.counters["sram_errors"] >= 3
    assert run.counters["npu_status"] >> 10 & 1 == 0            # the last frame was clean


def test_weight_flip_is_detected_and_a_reload_repairs_it(model):
    """A flipped filter word is detected in every frame that reads it, until the model is loaded again; a flipped
    descriptor word stops the run before the descriptor is decoded."""
    image = load_rom(model.rom, CONFIG)
    descriptor_words = image.descriptors * 128 // CONFIG.weight_word_bytes
    words = int(image.weight_sram().shape[0])
    assert words > descriptor_words
    xs = _inputs(model, 4, 2)
    schedule = [("rom", model.rom), ("frame", 0), ("frame", 1), ("rom", model.rom), ("frame", 2), ("frame", 3)]
    faults = [{"frame": 0, "sram": "weight", "addr": words - 1, "bit": 7, "delay": 0},
              {"frame": 2, "sram": "weight", "addr": 0, "bit": 2, "delay": 0}]
    run = run_die(CONFIG, None, tensors=xs, schedule=schedule, faults=faults, progress=False)
    f0, f1, f2, f3 = run.frames
    # word 0 is the first descriptor, fetched before the flip lands (frame 2 masked) and read again in frame 3
    for fr in (f0, f1, f3):
        assert fr.embedded["npu_error"] == SRAM_PARITY_ERROR and fr.outputs == [], fr.error
    assert "(reading the descriptor)" in f3.error and f3.embedded["error_descriptor"] == 0
    assert _exact(f2, model, xs[2])


def test_run_rtl_and_the_cli_refuse_the_frame(model, tmp_path):
    from stackcam.cli.run import run_rtl
    spec = model.io["input"]
    word = spec["addr"] + spec["words"] - 1
    fault = {"frame": 0, "sram": "act", "addr": word, "bit": 0, "delay": 0}
    x = _inputs(model, 1, 3)[0][None]
    with pytest.raises(DieError, match=r"^input 0: the die refused the frame: the network stopped at descriptor 0, "
                                       r"layer 0 .*SRAM parity error"):
        run_rtl(model.rom, CONFIG, [x], faults=[fault])
    np.save(tmp_path / "in.npy", x)
    out = tmp_path / "out.npz"
    cmd = [sys.executable, "-m", "stackcam.cli", "run", "first-light", "--input", str(tmp_path / "in.npy"),
           "--engine", "rtl", "--config", "tiny", "-o", str(out)]
    r = subprocess.run(cmd + ["--inject-fault", f"act:{word}:0"], capture_output=True, text=True)
    assert r.returncode == EXIT_DIE, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("stackcam run: error: input 0: the die refused the frame: ") and "SRAM parity" in err
    assert not out.exists()
    for bad in ("act:1", "rom:1:1", f"act:{CONFIG.act_words}:0", "act:1:36", "act:1:1@x"):
        r = subprocess.run(cmd + ["--inject-fault", bad], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--inject-fault" in r.stderr, (bad, r.stderr)


def test_random_single_bit_flips_are_never_silent(model):
    """A short campaign (tools/reliability.py runs the long one): flips at random words of what the model uses,
    random bits (parity bits included) and random times in the frame; each frame is detected or bit-exact."""
    rng = np.random.default_rng(14)
    n = 16
    image = load_rom(model.rom, CONFIG)
    used = {"act": image.act_words, "weight": int(image.weight_sram().shape[0])}
    width = {"act": 9 * CONFIG.array_cols, "weight": 9 * CONFIG.weight_word_bytes}
    xs = _inputs(model, n, 4)
    faults = []
    for k in range(n):
        sram = ("act", "weight")[k % 2]
        faults.append({"frame": k, "sram": sram, "addr": int(rng.integers(used[sram])),
                       "bit": int(rng.integers(width[sram])), "delay": int(rng.integers(1500))})
    schedule = [item for k in range(n) for item in (("rom", model.rom), ("frame", k))]
    run = run_die(CONFIG, None, tensors=xs, schedule=schedule, faults=faults, progress=False)
    detected = masked = 0
    for k, fr in enumerate(run.frames):
        if fr.error is not None:
            assert fr.embedded["sram_fault"] or fr.embedded["npu_error"] == SRAM_PARITY_ERROR, fr.error
            detected += 1
        else:
            assert _exact(fr, model, xs[k]), f"fault {faults[k]}: a wrong output with no flag"
            masked += 1
    assert detected + masked == n and detected > 0
