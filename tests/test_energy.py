"""The energy model (`sim.energy`): its technology table carries a source for every figure and reproduces the
published anchors it is built from; a report's parts add up and follow the activity counts it is given; bad
input is refused in one line."""

import math

import pytest

from stackcam.quant.program import OPCODES
from stackcam.quant.timing import program_activity, program_cycles
from stackcam.rtl.params import preset
from stackcam.sim.energy import COMPONENTS, PUBLISHED, TECHNOLOGIES, EnergyError, energy_report, technology
from tests.dieutil import Model


@pytest.fixture(scope="module")
def light():
    config = preset("tiny")
    return config, Model("zoo:first-light", config).prepared.compiled


def test_every_figure_has_a_source_and_assumptions_say_so():
    for tech in TECHNOLOGIES.values():
        for row in tech.table():
            assert isinstance(row["value"], float) and row["value"] > 0, row
            assert len(row["source"]) > 20, row
        # The unverified figures are labelled as assumptions, the published ones cite a paper or a URL.
        assert tech.sources["dphy_pj_per_bit"].startswith("assumption")
        assert "ISSCC 2014" in tech.sources["mac_int8_pj"] and "doi:" in tech.sources["mac_int8_pj"]
        assert "github.com/horizon-research/CamJ" in tech.sources["pixel_pj"]


def test_table_reproduces_horowitz_at_45nm_and_scales_by_length_and_supply():
    for name, length, vdd in (("22nm", 22, 0.8), ("40nm", 40, 1.1)):
        t = TECHNOLOGIES[name]
        s = length / 45 * (vdd / 0.9) ** 2
        assert t.scale == pytest.approx(s)
        assert t.mac_int8_pj == pytest.approx((0.2 + 0.1) * s)
        # Horowitz's 64-bit accesses: 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ.
        for kb, pj64 in ((8, 10.0), (32, 20.0), (1024, 100.0)):
            assert t.sram_pj_per_byte(kb * 1024) == pytest.approx(pj64 / 8 * s)
        # Between the points the energy grows with the macro, on a straight line in log-log.
        e = [t.sram_pj_per_byte(b) for b in (4096, 16384, 131072, 4 << 20)]
        assert e == sorted(e)
        assert math.log(t.sram_pj_per_byte(16384) / t.sram_pj_per_byte(8192)) == pytest.approx(math.log(2) / 2)


def test_report_parts_add_up_and_follow_the_counts(light):
    config, compiled = light
    r = energy_report(config, compiled, node="22nm", csi2_bytes=100, output_bytes=10)
    tech = technology("22nm")
    assert sum(r["inference_uj"].values()) == pytest.approx(r["inference_mj"] * 1e3)
    assert set(r["inference_uj"]) == set(COMPONENTS)
    assert r["tops_per_w"] == pytest.approx(2 * r["macs"] / (r["inference_mj"] * 1e9))
    assert r["cycles"] == program_cycles(config, compiled.descriptors)["total"]
    # Weight SRAM: every word read (the engines' and the sequencer's fetches) at the bank's per-byte energy.
    act = program_activity(config, compiled.descriptors)
    words = sum(a["weight_reads"] for a in act["descriptors"]) + act["total"]["fetch_weight_reads"]
    e_byte = tech.sram_pj_per_byte(config.sram_bank_bytes)
    assert (r["inference_uj"]["weight_sram"] + r["inference_uj"]["sequencer"]) * 1e6 == pytest.approx(
        words * config.weight_word_bytes * e_byte)
    # Useful MACs are the network's; the layers' rows add up to the totals.
    assert r["macs"] == sum(layer.macs for layer in compiled.layers if layer.descriptors)
    for k in ("mac", "weight_sram", "act_sram"):
        assert sum(row["energy_uj"][k] for row in r["layers"]) == pytest.approx(r["inference_uj"][k])
    # Doubling the counts given doubles the activity-driven parts.
    doubled = [{k: 2 * v for k, v in a.items()} for a in act["descriptors"]]
    r2 = energy_report(config, compiled, node="22nm", activity=doubled, csi2_bytes=100, output_bytes=10)
    assert r2["inference_uj"]["act_sram"] == pytest.approx(2 * r["inference_uj"]["act_sram"])
    assert r2["activity_source"].startswith("RTL")
    # The link: metadata against RAW10, at the frame rate.
    link = r["link"]
    assert link["raw10_bytes_per_frame"] == config.raw_frame_bytes
    assert link["metadata_bytes_per_lane"] * config.csi2_lanes >= 100
    assert link["saved_mw"] == pytest.approx((config.raw_frame_bytes - 100) * 8 * tech.dphy_pj_per_bit
                                             * config.frame_rate * 1e-9)
    # Engines: busy + idle = the run; the conv engine's cycles are its descriptors'.
    eng = r["engine_cycles"]
    assert eng["conv_busy"] + eng["conv_idle"] == eng["npu"] == r["cycles"]
    assert eng["conv_busy"] + eng["vector_busy"] + eng["sequencer"] == eng["npu"]
    assert eng["mac_array_busy"] == sum(a["mac_cycles"] for a in act["descriptors"])
    # Per bank (the analytic model's placement by address): bytes add up to the whole-SRAM bytes and the banks'
    # energy to the SRAM components.
    banks = r["banks"]
    assert banks["source"].startswith("analytic")
    assert len(banks["act_sram_banks"]) == config.act_banks and len(banks["weight_sram_banks"]) == config.weight_banks
    assert sum(b["read_bytes"] for b in banks["act_sram_banks"]) == r["bytes"]["act_sram_read"]
    assert sum(b["write_bytes"] for b in banks["act_sram_banks"]) == r["bytes"]["act_sram_write"]
    assert sum(b["read_bytes"] for b in banks["weight_sram_banks"]) == r["bytes"]["weight_sram_read"]
    assert banks["act_sram_uj"] == pytest.approx(r["inference_uj"]["act_sram"])
    assert banks["weight_sram_uj"] == pytest.approx(r["inference_uj"]["weight_sram"] + r["inference_uj"]["sequencer"])
    assert all(b["uj"] == pytest.approx(b["read_bytes"] * e_byte * 1e-6) for b in banks["weight_sram_banks"])
    # ... and the layers' bytes per bank add up to the run's (weights: but the sequencer's fetches).
    for key, side, kinds in (("act", "act_sram_banks", ("read_bytes", "write_bytes")),
                             ("weight", "weight_sram_banks", ("read_bytes",))):
        for k in kinds:
            per = [0] * len(banks[side])
            for row in r["layers"]:
                assert row["sram_banks"]["complete"] is True
                for b in row["sram_banks"][key]:
                    per[b["bank"]] += b[k]
            fetches = [0] * len(per)
            if key == "weight":
                fetches[0] = act["total"]["fetch_weight_reads"] * config.weight_word_bytes
            assert [p + f for p, f in zip(per, fetches)] == [b[k] for b in banks[side]], (key, k)
    # A slower node costs more.
    assert energy_report(config, compiled, node="40nm")["inference_mj"] > r["inference_mj"]


def test_published_anchors():
    assert PUBLISHED["imx500_isscc2021"]["mobilenet_v1_mj"] == pytest.approx(0.2289, abs=1e-4)
    assert PUBLISHED["camj_imx500"]["pj_per_mac"] == 0.30


def test_bad_input_is_refused(light):
    config, compiled = light
    with pytest.raises(EnergyError, match="unknown technology node '7nm'"):
        energy_report(config, compiled, node="7nm")
    n = sum(1 for d in compiled.descriptors if d.opcode != OPCODES["END"])
    with pytest.raises(EnergyError, match=f"{n + 1} descriptor counts for a program of {n} descriptors"):
        energy_report(config, compiled, activity=[{}] * (n + 1))
    with pytest.raises(EnergyError, match="descriptor 0's counts lack a non-negative integer 'mac_cycles'"):
        energy_report(config, compiled, activity=[{}] * n)
    banks = {k: [0] * config.act_banks for k in ("act_reads", "act_write_bytes")} | {"weight_reads": [0, 1]}
    with pytest.raises(EnergyError, match=f"'weight_reads' must be {config.weight_banks} non-negative integers"):
        energy_report(config, compiled, banks=banks)


@pytest.mark.xdist_group("verilator")
def test_bench_energy_section_on_the_die(tmp_path):
    """The benchmark's energy keys from a real die run (tiny, tensor port): the die's counters equal the model's,
    so the energy from them equals the analytic report; the chart is written and the keys are JSON."""
    import json

    import numpy as np

    from stackcam.quant.romimage import NOT_LOADED, load_rom
    from stackcam.sim.bench import energy_section
    from stackcam.sim.dierun import run_die
    config = preset("tiny")
    model = Model("zoo:mobilenet_v1_0.25_96_2", config)
    h, w, c = model.io["input"]["hwc"]
    x = np.random.default_rng(3).integers(-128, 128, (h, w, c)).astype(np.int8)
    run = run_die(config, model.rom, tensors=[x], progress=False)
    out = energy_section("mn", config, model.prepared, run, tmp_path, log=lambda s: None)
    assert out["activity"]["rtl_equals_model"] is True
    e = out["energy"]
    assert e["activity_source"].startswith("RTL") and e["cycles"] == run.counters["npu_cycles"]
    shapes = [t["hwc"] for t in model.io["die_outputs"]]
    model_e = energy_report(config, model.prepared.compiled, gates=out["area"]["gates"],
                            output_bytes=sum(a * b * d for a, b, d in shapes), csi2_bytes=run.frames[0].csi2_bytes)
    assert e["inference_uj"] == pytest.approx(model_e["inference_uj"])
    assert e["link"]["metadata_bytes_per_frame"] == run.frames[0].csi2_bytes > 0
    assert e["loader"]["rom_bytes"] == len(model.rom)
    assert (tmp_path / "mn_energy.png").stat().st_size > 1000
    # Per bank: the die's counters, equal to the analytic model's, in bytes; the chart is written.
    act = out["activity"]
    assert act["banks_rtl_equals_model"] is True and act["banks_unmodelled_descriptors"] == []
    assert e["banks"]["source"].startswith("RTL")
    assert [b["read_bytes"] for b in act["act_sram_banks"]] == [v * config.array_cols
                                                                for v in run.bank_counters["act_reads"]]
    assert sum(b["read_bytes"] for b in act["act_sram_banks"]) == e["bytes"]["act_sram_read"]
    assert sum(b["write_bytes"] for b in act["act_sram_banks"]) == e["bytes"]["act_sram_write"]
    assert sum(b["read_bytes"] for b in act["weight_sram_banks"]) == e["bytes"]["weight_sram_read"]
    assert sum(b["load_bytes"] for b in act["weight_sram_banks"]) == \
        sum(s["words"] for s in load_rom(model.rom, config).sections.values()
            if s["load_word"] != NOT_LOADED) * config.weight_word_bytes
    assert sum(b["read_bytes"] > 0 for b in act["weight_sram_banks"]) >= 2      # spread over banks
    # The frame's input writes and output reads: the model I/O's tensors, whole words.
    assert sum(b["input_write_bytes"] for b in act["act_sram_banks"]) == model.io["input"]["words"] * config.array_cols
    assert sum(b["output_read_bytes"] for b in act["act_sram_banks"]) == \
        sum(t["words"] for t in model.io["die_outputs"]) * config.array_cols
    assert (tmp_path / "mn_banks.png").stat().st_size > 1000
    json.dumps(out)
