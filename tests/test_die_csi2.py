"""System tests of the die's CSI-2 output: modes switched between frames, lanes, LS/LE, malformed frames."""

import zlib

import numpy as np
import pytest

from stackcam.rtl.params import preset
from stackcam.rtl.streams import pixel_beat_layout
from stackcam.sim.csi2 import decode
from stackcam.sim.dierun import run_die
from stackcam.sim.frame_source import bayer_frame, beat_field_offsets, load_image, pack_beats
from stackcam.sim.metadata import frame_bytes
from tests.dieutil import FOUR_LANES, TWO_LANES, Model

pytestmark = pytest.mark.xdist_group("verilator")

def _photo(config):
    return bayer_frame(load_image(None), config.frame_width, config.frame_height)


@pytest.mark.parametrize("config,ls_le,stall,vcs", [
    (preset("tiny"), False, 0.0, (0, 1, 2)),
    (TWO_LANES, True, 0.3, (0, 1, 2)),
    (FOUR_LANES, True, 0.5, (3, 2, 0)),
])
def test_modes_switch_between_frames(config, ls_le, stall, vcs):
    model = Model("first-light", config, seed=1)
    rng = np.random.default_rng(2)
    raws = [_photo(config)] + [rng.integers(0, 1024, (config.frame_height, config.frame_width)).astype(np.uint16)
                               for _ in range(3)]
    modes = ["image", "metadata", "tensors", "image"]
    vc_image, vc_output, vc_input = vcs
    regs = {"csi2_ctrl": int(ls_le), "vc_map": vc_image | vc_output << 2 | vc_input << 4}
    run = run_die(config, model.rom, raws, modes=modes, regs=regs, stall=stall, progress=False)
    dec = decode(run.csi2_bytes, strict=False)
    assert (dec.ecc_errors, dec.ecc_corrected, dec.crc_errors, dec.framing_errors) == (0, 0, 0, 0), dec.errors
    assert [f.number for f in run.frames] == [1, 2, 3, 4]
    assert run.counters["frame_errors"] == 0 and run.counters["csi2_errors"] == 0
    for raw, mode, fr in zip(raws, modes, run.frames):
        x, (y,) = model.input_tensor(raw), model.expected(raw)
        assert fr.mode == mode
        assert fr.output_tensor is not None and np.array_equal(fr.output_tensor, y)
        assert fr.embedded["has_tensor"] and not fr.embedded["malformed"]
        assert fr.embedded["model_fingerprint"] == zlib.crc32(model.rom[:-4])
        assert fr.embedded["frame_number"] == fr.number
        if mode == "image":
            assert fr.image is not None and np.array_equal(fr.image, raw)
        else:
            assert fr.image is None
        if mode == "tensors":
            assert fr.input_tensor is not None and np.array_equal(fr.input_tensor, x)
        else:
            assert fr.input_tensor is None
    # Virtual channels as the vc_map register says.
    assert {p.vc for p in dec.packets if p.dt == 0x2B} == {vc_image}
    assert {p.vc for p in dec.packets if p.dt in (0x30, 0x12)} == {vc_output}
    assert {p.vc for p in dec.packets if p.dt == 0x24} == {vc_input}
    # Each channel counts its own frames: the image channel was used by frames 1 and 4.
    assert [f.number for f in dec.frames_on(vc_image)] == [1, 2]
    # LS/LE only when enabled, and then one pair per long line packet of image/tensor data.
    n_ls = sum(1 for p in dec.packets if p.dt == 0x02)
    n_lines = sum(1 for p in dec.packets if p.long and p.dt != 0x12)
    assert n_ls == (n_lines if ls_le else 0)
    # Every frame's bytes on the wire are exactly what its packet structure says.
    for mode, fr in zip(modes, run.frames):
        assert fr.csi2_bytes == frame_bytes(config, mode, [y.shape], ls_le, x.shape[:2])


def _tensor_port_model(config, height, width):
    """The first-light layer for a height x width input, compiled for `config` (fed on the tensor port)."""
    from stackcam.cli.models import PreparedModel
    from stackcam.quant.compiler import compile_graph
    from stackcam.quant.romimage import build_rom
    from stackcam.quant.zoo.firstlight import first_light_graph
    graph = first_light_graph(height, width, seed=6)
    compiled = compile_graph(graph, config)
    return PreparedModel(name="first-light", graph=graph, compiled=compiled, rom=build_rom(compiled))


@pytest.mark.parametrize("height,width,sent_as", [
    (16, 16, "tensors"),        # fits the input line buffer: the input rows go out as RGB888 lines
    (20, 24, "metadata"),       # larger than the configuration's input: the frame goes out as metadata
])
def test_tensor_port_frames_switch_modes(height, width, sent_as):
    """Tensor-port frames back to back (the next frame's first pixel waits at the port while the die is busy),
    with the mode switched between them: each frame's mode is the one written before it, a tensors-mode frame
    whose input is larger than the input line buffer goes out as metadata, every output is bit-exact."""
    from stackcam.sim.simulate import golden_die_outputs
    config = preset("tiny")
    model = _tensor_port_model(config, height, width)
    rng = np.random.default_rng(8)
    xs = [rng.integers(-128, 128, (height, width, 3)).astype(np.int8) for _ in range(4)]
    modes = ["metadata", "tensors", "metadata", "tensors"]
    run = run_die(config, model.rom, tensors=xs, modes=modes, stall=0.3, progress=False)
    dec = decode(run.csi2_bytes)
    assert (dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 0), dec.errors
    assert [f.number for f in run.frames] == [1, 2, 3, 4]
    assert [f.mode for f in run.frames] == ["metadata", sent_as, "metadata", sent_as]
    for x, fr in zip(xs, run.frames):
        (want,), _ = golden_die_outputs(model, config, x)
        assert fr.output_tensor is not None and np.array_equal(fr.output_tensor, want)
        assert fr.embedded["has_tensor"] and not fr.embedded["malformed"]
        if fr.mode == "tensors":
            assert fr.input_tensor is not None and np.array_equal(fr.input_tensor, x)
        else:
            assert fr.input_tensor is None
        assert fr.csi2_bytes == frame_bytes(config, fr.mode, [want.shape], False, x.shape[:2])
    assert run.counters["frame_errors"] == 0 and run.counters["csi2_errors"] == 0


def _markers(p):
    return beat_field_offsets(pixel_beat_layout(p))[1]


def test_malformed_frames_are_counted_and_the_next_frame_is_clean():
    config = preset("tiny")
    model = Model("first-light", config, seed=4)
    raw = _photo(config)
    p = config.pixels_per_clock
    mk = _markers(p)
    bpl = config.frame_width // p
    good = pack_beats(raw, p)
    # Frame 2: a short line inside the crop (line 20 loses its last 10 beats; its new last beat says line_last).
    short = good.reshape(config.frame_height, bpl).tolist()
    short[20] = short[20][:bpl - 10]
    short[20][-1] |= 1 << mk["line_last"]
    short = np.array([b for line in short for b in line], np.int64)
    # Frame 4: the frame stops after 30 lines (no frame_last); frame 5's frame_first arrives instead.
    cut = good[:30 * bpl]
    raws = [raw] * 5
    modes = ["image", "image", "metadata", "metadata", "image"]
    run = run_die(config, model.rom, raws, modes=modes, raw_beats=[None, short, None, cut, None], stall=0.2,
                  progress=False)
    dec = decode(run.csi2_bytes)
    assert (dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 0), dec.errors
    assert [f.number for f in run.frames] == [1, 2, 3, 4, 5]
    (y,) = model.expected(raw)
    flags = [(f.embedded["has_tensor"], f.embedded["malformed"]) for f in run.frames]
    assert flags == [(True, False), (False, True), (True, False), (False, True), (True, False)]
    for n in (0, 2, 4):
        assert np.array_equal(run.frames[n].output_tensor, y)
    assert run.frames[1].output_tensor is None and run.frames[3].output_tensor is None
    # The broken image frame still has every line, padded: the short line's tail is zero.
    img = run.frames[1].image
    assert img.shape == raw.shape
    assert np.array_equal(img[:20], raw[:20]) and np.array_equal(img[21:], raw[21:])
    assert np.array_equal(img[20, :(bpl - 10) * p], raw[20, :(bpl - 10) * p]) and not img[20, (bpl - 10) * p:].any()
    assert np.array_equal(run.frames[4].image, raw)
    assert run.counters["frame_errors"] == 2


@pytest.mark.parametrize("mode", ["metadata", "image"])
def test_simulate_cli_dump_decodes_clean(mode, tmp_path):
    import subprocess
    import sys
    dump = tmp_path / "csi2.bin"
    r = subprocess.run([sys.executable, "-m", "stackcam.cli", "simulate", "--config", "tiny", "--model", "first-light",
                        "--mode", mode, "--frames", "3", "--dump-csi2", str(dump), "--report",
                        str(tmp_path / "report.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    dec = decode(dump.read_bytes())
    assert (dec.ecc_errors, dec.crc_errors, dec.framing_errors) == (0, 0, 0), dec.errors
    assert [f.number for f in dec.frames_on(1)] == [1, 2, 3]
    assert "bit-exact[2]:  512/512" in r.stdout
    assert f"{mode:<9}" in r.stdout and "x less than RAW10" in r.stdout
