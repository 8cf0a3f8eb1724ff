"""System tests: the whole die generated to Verilog, built with Verilator, driven by cocotb."""

import zlib

import numpy as np
import pytest

from stackcam.rtl.die import EMBEDDED_BYTES
from stackcam.rtl.params import preset
from stackcam.sim.csi2 import decode
from stackcam.sim.dierun import run_die
from tests.dieutil import TWO_LANES, Model, photo_frames

pytestmark = pytest.mark.xdist_group("verilator")


@pytest.mark.parametrize("config,stall", [
    (preset("tiny"), 0.0),
    (preset("tiny"), 0.4),
    (TWO_LANES, 0.3),
])
def test_die_bit_exact_over_frames(config, stall):
    model = Model("first-light", config, seed=3)
    raws = photo_frames(config, 3, seed=5)
    run = run_die(config, model.rom, raws, stall=stall, progress=False)
    assert run.loads[0]["model_ok"] == 1
    assert run.counters["frame_errors"] == 0 and run.counters["csi2_errors"] == 0
    dec = decode(run.csi2_bytes)
    assert (dec.ecc_errors, dec.ecc_corrected, dec.crc_errors, dec.framing_errors) == (0, 0, 0, 0), dec.errors
    assert [f.number for f in run.frames] == [1, 2, 3]
    for raw, fr in zip(raws, run.frames):
        expect = model.expected(raw)
        assert len(fr.outputs) == len(expect)
        for got, want in zip(fr.outputs, expect):
            mismatches = int(np.count_nonzero(got != want))
            assert mismatches == 0, f"{mismatches}/{want.size} output elements differ from the golden executor"
        # The embedded line names the loaded model by its ROM image's CRC-32.
        assert fr.embedded["model_fingerprint"] == zlib.crc32(model.rom[:-4])
        assert fr.embedded["has_tensor"] and not fr.embedded["malformed"]
    # The bytes on the wire (default metadata mode) are exactly FS, one long packet per output row, the
    # 32-byte embedded-data line and FE, per frame.
    oh, ow, oc = expect[0].shape
    assert len(run.csi2_bytes) == 3 * (4 + oh * (4 + ow * oc + 2) + (4 + EMBEDDED_BYTES + 2) + 4)
    # Performance counters are the engine's own: the network ran in the cycles the die reports.
    assert run.counters["npu_cycles"] >= run.counters["mac_cycles"] > 0
    assert len(run.first_pixel) == len(run.last_pixel) == len(run.frame_last_byte) == 3
    assert run.first_pixel[0] < run.last_pixel[0] < run.frame_last_byte[0]


def test_build_cache_finds_a_model_by_its_sources(tmp_path, monkeypatch):
    """A model remembered under a source key is found without its Verilog; a key never remembered, or one
    whose build folder lost its model, is not."""
    from stackcam.sim.verilator import CocotbBuild, cache_root
    monkeypatch.setenv("STACKCAM_BUILD_DIR", str(tmp_path))
    build = CocotbBuild("module t(input a); endmodule\n", "t", name="x")
    assert CocotbBuild.cached("x", "k1", "t") is None
    build.dir.mkdir(parents=True)
    (build.dir / "t.v").write_text(build.verilog_text)
    (build.dir / ".built").write_text("ok\n")
    build.remember("x", "k1")
    found = CocotbBuild.cached("x", "k1", "t")
    assert found is not None and found.dir == build.dir and found.is_built
    assert CocotbBuild.cached("x", "k2", "t") is None
    assert cache_root() == tmp_path / "verilator"
    (build.dir / ".built").unlink()
    assert CocotbBuild.cached("x", "k1", "t") is None


def test_clock_gating_changes_nothing_but_the_clock():
    """Clock gating (`DieConfig.clock_gating`: the NPU's engines, SRAM read ports, per-bank counters and the model
    loader on gated clocks) stops only flip-flops that would not change: the same die without it sends the same
    bytes in the same cycles, with the same counters, through ROM-source and PHY back-pressure."""
    from stackcam.sim.dierun import build_die
    gated = preset("tiny")
    plain = gated.with_(clock_gating=False)
    build, _ = build_die(gated)
    assert all(f"{d}_clk" in build.verilog_text for d in ("npu_conv", "npu_vec", "loader"))
    model = Model("first-light", gated, seed=4)
    raws = photo_frames(gated, 2, seed=6)
    pressure = [{"stall": 0.3, "rom": 0.3}, {"stall": 0.1, "pixels": 0.2}]
    runs = [run_die(cfg, model.rom, raws, progress=False, backpressure=pressure) for cfg in (gated, plain)]
    for name in ("csi2_bytes", "first_pixel", "last_pixel", "frame_last_byte", "cycles", "counters", "loads",
                 "descriptor_counters", "descriptor_activity", "bank_counters"):
        assert getattr(runs[0], name) == getattr(runs[1], name), name
    assert len(runs[0].frames) == 2 and runs[0].loads[0]["model_ok"] == 1
    assert runs[0].bank_counters and any(any(v) for v in runs[0].bank_counters.values())
