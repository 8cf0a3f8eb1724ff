"""sim.peer: Arm's Vela on the toolchain's exported int8 model, its figures read from Vela's own CSV files; the
benchmark's JSON report with the peer column and the simulation speed, on a small network through the die."""

import csv
import json

import pytest

from stackcam.cli.models import prepare_model
from stackcam.quant.export import export_tflite
from stackcam.rtl.params import preset
from stackcam.sim import peer as peer_mod
from stackcam.sim.peer import ETHOS_U, PeerError, ethos_config, run_vela
from tests.test_quant_ops import ModelBuilder


def test_closest_ethos_configuration():
    assert {m: ethos_config(m) for m in (16, 64, 128, 256, 512, 2048, 4096)} == {
        16: "ethos-u55-32", 64: "ethos-u55-64", 128: "ethos-u85-128", 256: "ethos-u85-256", 512: "ethos-u85-512",
        2048: "ethos-u85-2048", 4096: "ethos-u85-2048"}
    assert ETHOS_U[ethos_config(preset("imx500").macs_per_cycle)] == preset("imx500").macs_per_cycle == 2048


def _small_model(path):
    """conv 3x3 s2 -> depthwise 3x3 -> pointwise conv -> average pool: an int8 .tflite file."""
    m = ModelBuilder(seed=11)
    x = m.input((1, 16, 16, 3), scale=1 / 64, zp=-3)
    y = m.conv(x, 16, k=3, stride=2, act="RELU6", out_q=(0.03, -128))
    y = m.conv(y, 0, k=3, depthwise=True, act="RELU6", out_q=(0.03, -128))
    y = m.conv(y, 32, k=1, act="RELU6", out_q=(0.04, -128))
    y = m.pool(y, "AVERAGE_POOL_2D", (8, 8), 8)
    path.write_bytes(m.output(y))
    return path


@pytest.mark.skipif(peer_mod.vela_version() is None, reason="ethos-u-vela (extra stackcam[peer]) not installed")
def test_vela_figures_equal_its_own_csv(tmp_path):
    config = preset("demo")                         # 8x16 = 128 MACs: an Ethos-U85-128
    prepared = prepare_model(str(_small_model(tmp_path / "small.tflite")), config)
    out = tmp_path / "vela"
    got = run_vela(export_tflite(prepared.graph), config.macs_per_cycle, config.clock_mhz, keep=out)
    assert got["accelerator"] == "ethos-u85-128" and got["macs_per_cycle"] == 128 and got["cpu_operators"] == 0

    (summary,) = out.glob("*_summary_*.csv")
    (per_layer,) = out.glob("*_per-layer.csv")
    s = next(csv.DictReader(open(summary, newline="")))
    assert s["accelerator_configuration"] == "Ethos_U85_128" and float(s["core_clock"]) == 200e6
    assert got["cycles"] == int(s["cycles_npu"]) and got["cycles_total"] == int(s["cycles_total"])
    assert got["macs"] == int(s["nn_macs"])
    assert got["utilization"] == int(s["nn_macs"]) / (128 * int(s["cycles_npu"]))
    rows = list(csv.DictReader(open(per_layer, newline="")))
    assert [(r["cycles"], r["macs"]) for r in got["layers"]] == [(int(r["NPU"]), int(r["MAC Count"])) for r in rows]
    assert got["cycles"] == sum(int(r["NPU"]) for r in rows) > 0       # Vela's summary is its layers' sum
    dw = [r for r in rows if r["NNG Operator"] == "DepthwiseConv2D"]
    assert len(dw) == 1 and got["depthwise"]["cycles"] == int(dw[0]["NPU"]) > 0
    assert got["depthwise"]["macs"] == int(dw[0]["MAC Count"])
    # The same model: Vela counts the MACs of each convolution as our compiler does.
    ours = {layer.name: layer.macs for layer in prepared.compiled.layers if layer.macs}
    theirs = {r["name"]: r["macs"] for r in got["layers"] if r["op"] in ("Conv2D", "DepthwiseConv2D") and r["macs"]}
    assert theirs == ours and len(ours) == 3


@pytest.mark.skipif(peer_mod.vela_version() is None, reason="ethos-u-vela (extra stackcam[peer]) not installed")
def test_vela_failure_is_one_line(tmp_path):
    with pytest.raises(PeerError, match=r"^Vela failed \(exit status \d+\): [^\n]+$"):
        run_vela(b"not a flatbuffer", 2048, 200.0)


def test_vela_absent_gives_an_absent_column(tmp_path, monkeypatch):
    from stackcam.sim.bench import _peer
    monkeypatch.setattr(peer_mod, "vela_version", lambda: None)
    with pytest.raises(PeerError, match="not installed"):
        run_vela(b"", 2048, 200.0)
    lines = []
    got = _peer("x", None, preset("imx500"), tmp_path, 1000, 10**6, lines.append)
    assert set(got) == {"absent"} and len(lines) == 1 and "not installed" in lines[0]


@pytest.mark.xdist_group("verilator")
def test_bench_report_has_peer_and_simulation_speed(tmp_path):
    from stackcam.sim.bench import run_benchmark
    lines = []
    report, exact = run_benchmark("first-light", tmp_path, lambda m, c: prepare_model(m, c), log=lines.append,
                                  model="first-light", config="tiny")
    assert exact
    saved = json.loads((tmp_path / "first-light.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert (tmp_path / "first-light.png").stat().st_size > 0
    # Simulation speed: the whole run and the frame after the ROM load, both measured, the frame inside the run.
    assert 0 < saved["sim_frame_cycles"] < saved["sim_cycles"]
    assert 0 < saved["sim_frame_wall_s"] < saved["sim_wall_s"]
    assert saved["sim_frame_cycles_per_s"] == saved["sim_frame_cycles"] / saved["sim_frame_wall_s"]
    assert saved["sim_cycles_per_s"] == saved["sim_cycles"] / saved["sim_wall_s"]
    # ... and by the simulator's CPU time (what it got of a shared machine), with the machine's load meanwhile.
    assert 0 < saved["sim_frame_cpu_s"] < saved["sim_cpu_s"]
    assert saved["sim_cycles_per_cpu_s"] == saved["sim_cycles"] / saved["sim_cpu_s"]
    assert saved["sim_frame_cycles_per_cpu_s"] == saved["sim_frame_cycles"] / saved["sim_frame_cpu_s"]
    assert len(saved["sim_load_avg"]) == 2 and min(saved["sim_load_avg"]) >= 0 and saved["sim_cores"] >= 1
    assert any(line.startswith("  simulation: ") and "of simulator CPU time" in line and "load average" in line
               for line in lines)
    peer = saved["peer"]
    if peer_mod.vela_version() is None:
        assert set(peer) == {"absent"}
        return
    # tiny has 4x4 = 16 MACs: the closest Ethos-U is the 32-MAC Ethos-U55.
    assert peer["accelerator"] == "ethos-u55-32" and peer["macs_per_cycle"] == 32 and not peer["same_mac_count"]
    assert peer["clock_mhz"] == preset("tiny").clock_mhz and peer["cycles"] > 0
    assert peer["ratio"] == saved["cycles"] / peer["cycles"]
    assert peer["utilization"] == saved["macs"] / (32 * peer["cycles"])
    again = run_vela((tmp_path / "first-light.tflite").read_bytes(), 16, preset("tiny").clock_mhz)
    assert again["cycles"] == peer["cycles"] and again["layers"] == peer["layers"]
    assert [r["peer_cycles"] for r in saved["layers"]] == [sum(r["cycles"] for r in peer["layers"])]
    assert peer["cycles_outside_our_layers"] == {}
    assert any(line.startswith("  peer: Arm Vela") for line in lines)
