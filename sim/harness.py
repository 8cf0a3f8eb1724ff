"""Simulation harness around the die: Verilog stream players and a CSI-2 capture, so Python need not touch
every clock cycle. Sim-only (it uses $readmemh/$fwrite); the die itself stays free of such constructs."""

import re

from stackcam.rtl.csi2.packetizer import ppi_beat_layout
from stackcam.rtl.die import StackcamDie, rom_beat_layout
from stackcam.rtl.streams import pixel_beat_layout, tensor_pixel_layout
from stackcam.rtl.verilog import SRAM_MACRO_VERILOG, convert, sram_macro_verilog

__all__ = ["harness_verilog", "player_depths", "public_ports", "TOP"]

TOP = "tb_top"
DIE = "stackcam_die"

# The SRAM macro of a simulation build: the behavioural SRAM of rtl.verilog plus a fault-injection port that
# exists only here (`rtl.verilog.sram_macro_verilog`): in a cycle where the harness's `fault_en` is high and
# `fault_id` names this SRAM (its ID parameter, rtl.npu.core.SRAM_IDS), bit `fault_bit` of word `fault_addr` is
# inverted, as a particle strike would. The ports are reached by hierarchical reference to the harness top, so
# the die's own interface is unchanged.

_PLAYER = """\
// Plays beats from a $readmemh file (+{name}_file, +{name}_count) while index < limit; logs "index cycle" of
// every beat taken with its start (bit FB) or end (bit LB) marker set (+{name}_log). `gap` (0-255) withholds a
// beat with that probability out of 256 (a 16-bit LFSR), modelling a source that is not always ready; once
// `valid` is high it stays high until the beat is taken, as a stream requires.
module sc_player_{name} #(parameter W = 8, parameter DEPTH = 16, parameter FB = 0, parameter LB = 0) (
    input clk, input rst, input [31:0] limit, input [31:0] cycle, input [7:0] gap,
    output valid, output [W-1:0] data, input ready, output [31:0] index
);
    reg [W-1:0] mem [0:DEPTH-1];
    reg [31:0] i;
    reg [31:0] n;
    reg [15:0] lfsr;
    reg hold;
    reg [8*1024-1:0] path;
    integer fd;
    initial begin
        i = 0;
        fd = 0;
        lfsr = 16'h{seed};
        hold = 0;
        if (!$value$plusargs("{name}_count=%d", n)) n = 0;
        if (n > DEPTH) n = DEPTH;
        if (n > 0 && $value$plusargs("{name}_file=%s", path)) $readmemh(path, mem, 0, n - 1);
        if ($value$plusargs("{name}_log=%s", path)) fd = $fopen(path, "w");
    end
    assign valid = (i < limit) && (i < n) && (hold || lfsr[7:0] >= gap);
    assign data = mem[(i < DEPTH) ? i : 0];
    assign index = i;
    always @(posedge clk) begin
        lfsr <= {{lfsr[14:0], lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]}};
        hold <= valid && !ready;
    end
    // The index (and with it `data`) changes only in cycles with a beat offered: its clock runs only then (the
    // enable sampled on the falling edge, a glitch-free gate), so Verilator evaluates the logic reading `data`
    // (the model loader's CRCs, say) only in those cycles, not through a whole frame.
    reg i_en = 1'b1;
    always @(negedge clk) i_en <= valid;
    wire iclk = clk & i_en;
    always @(posedge iclk) begin
        if (valid && ready) begin
            i <= i + 1;
            if (fd != 0 && (data[FB] || data[LB])) $fwrite(fd, "%0d %0d\\n", i, cycle);
        end
    end
endmodule
"""

_CAPTURE = """\
// Captures CSI-2 PPI beats to +csi2_log as "<hex beat> <cycle>"; `stall` (0-255) holds ready low with that
// probability out of 256 (a 16-bit LFSR), modelling a PHY that is not always ready.
module sc_capture #(parameter W = 8) (
    input clk, input rst, input [31:0] cycle, input [7:0] stall, input flush,
    input valid, input [W-1:0] data, output ready, output reg [31:0] count
);
    reg [15:0] lfsr;
    reg [8*1024-1:0] path;
    integer fd;
    initial begin
        lfsr = 16'hACE1;
        count = 0;
        fd = 0;
        if ($value$plusargs("csi2_log=%s", path)) fd = $fopen(path, "w");
    end
    assign ready = lfsr[7:0] >= stall;
    always @(posedge clk) begin
        lfsr <= {lfsr[14:0], lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]};
        if (valid && ready) begin
            count <= count + 1;
            if (fd != 0) $fwrite(fd, "%h %0d\\n", data, cycle);
        end
        if (flush && fd != 0) $fflush(fd);
    end
endmodule
"""

_TOP = """\
module {top} (
    input clk, input rst,
    input [31:0] pixels_limit, input [31:0] tensor_limit, input [31:0] rom_limit,
    input [7:0] stall, input flush, input [7:0] pixels_gap, input [7:0] tensor_gap, input [7:0] rom_gap,
    input fault_en, input [7:0] fault_id, input [31:0] fault_addr, input [15:0] fault_bit,
    input [7:0] bus__addr, input [31:0] bus__wdata, input bus__we, input bus__re, output [31:0] bus__rdata,
    output [31:0] cycle, output [31:0] pixels_index, output [31:0] tensor_index, output [31:0] rom_index,
    output [31:0] csi2_count,
    output [31:0] frames_sent, output [15:0] frame_errors, output [15:0] csi2_errors,
    output [31:0] npu_cycles, output [31:0] mac_cycles, output model_ok, output loading
);
    // The reset the die and the cycle counter see: `rst` registered (the testbench deasserts it one edge earlier
    // than the die sees it). A top-level input feeds Verilator's input-combinational region, evaluated at every
    // eval() call, i.e. at both clock edges; since every register's next-state logic reads the reset, the whole
    // die would be evaluated twice per cycle. From a register it is evaluated once, at the rising edge.
    reg rst_q = 1'b1;
    always @(posedge clk) rst_q <= rst;
    reg [31:0] cyc;
    assign cycle = cyc;
    always @(posedge clk) cyc <= rst_q ? 32'd0 : cyc + 32'd1;
    wire px_valid, px_ready, t_valid, t_ready, r_valid, r_ready, c_valid, c_ready;
    wire [{pw}-1:0] px_data;
    wire [{tw}-1:0] t_data;
    wire [{rw}-1:0] r_data;
    wire [{cw}-1:0] c_data;
    sc_player_pixels #(.W({pw}), .DEPTH({pd}), .FB({pfb}), .LB({plb})) pixels (
        .clk(clk), .rst(rst), .limit(pixels_limit), .cycle(cyc), .gap(pixels_gap),
        .valid(px_valid), .data(px_data), .ready(px_ready), .index(pixels_index));
    sc_player_tensor #(.W({tw}), .DEPTH({td}), .FB({tfb}), .LB({tlb})) tensor (
        .clk(clk), .rst(rst), .limit(tensor_limit), .cycle(cyc), .gap(tensor_gap),
        .valid(t_valid), .data(t_data), .ready(t_ready), .index(tensor_index));
    sc_player_rom #(.W({rw}), .DEPTH({rd}), .FB({rfb}), .LB({rlb})) rom (
        .clk(clk), .rst(rst), .limit(rom_limit), .cycle(cyc), .gap(rom_gap),
        .valid(r_valid), .data(r_data), .ready(r_ready), .index(rom_index));
    sc_capture #(.W({cw})) capture (.clk(clk), .rst(rst), .cycle(cyc), .stall(stall), .flush(flush),
        .valid(c_valid), .data(c_data), .ready(c_ready), .count(csi2_count));
    {die} die (
        .clk(clk), .rst(rst_q),
        .pixels__valid(px_valid), .pixels__payload(px_data), .pixels__ready(px_ready),
        .tensor__valid(t_valid), .tensor__payload(t_data), .tensor__ready(t_ready),
        .rom__valid(r_valid), .rom__payload(r_data), .rom__ready(r_ready),
        .csi2__valid(c_valid), .csi2__payload(c_data), .csi2__ready(c_ready),
        .bus__addr(bus__addr), .bus__wdata(bus__wdata), .bus__we(bus__we), .bus__re(bus__re),
        .bus__rdata(bus__rdata),
        .frames_sent(frames_sent), .frame_errors(frame_errors), .csi2_errors(csi2_errors),
        .npu_cycles(npu_cycles), .mac_cycles(mac_cycles), .model_ok(model_ok), .loading(loading)
    );
endmodule
"""


def player_depths(config):
    """Beats each player can hold: several frames of the pixel stream (bounded to keep the model's memory
    reasonable), tensors, and a ROM image as large as the weight SRAM."""
    frame_beats = config.frame_width * config.frame_height // config.pixels_per_clock
    # Small frames: up to 128 of them (a soak); large ones: up to 8, within 2^24 beats.
    frames = max(2, min(8, (1 << 24) // frame_beats), min(128, (1 << 19) // frame_beats))
    # The tensor port feeds any model's input (not limited by the ISP): room for four 224 x 224 tensors.
    tensor = max(config.input_width * config.input_height, 224 * 224) * 4
    rom = -(-(config.weight_words * config.weight_word_bytes + 64 * 1024) // config.rom_beat_bytes)
    return frame_beats * frames, tensor, rom


def harness_verilog(config, die_text=None):
    """Verilog text of the die plus the harness (top module `tb_top`). `die_text` replaces the die's Verilog
    (module `stackcam_die` with the same ports, e.g. a gate-level netlist and its cell models); the fault
    injection port then reaches nothing."""
    if die_text is None:
        die_text = convert(StackcamDie(config), name=DIE)
    if SRAM_MACRO_VERILOG in die_text:
        die_text = die_text.replace(SRAM_MACRO_VERILOG, sram_macro_verilog(fault_top=TOP))
    pd, td, rd = player_depths(config)
    text = [die_text]
    for name, seed in (("pixels", "BEEF"), ("tensor", "1D2C"), ("rom", "7A31")):
        text.append(_PLAYER.format(name=name, seed=seed))
    text.append(_CAPTURE)
    pl, tl, rl = pixel_beat_layout(config.pixels_per_clock), tensor_pixel_layout(3), rom_beat_layout(config)
    top = _TOP.format(top=TOP, die=DIE, pw=pl.size, tw=tl.size, rw=rl.size,
                      cw=ppi_beat_layout(config.csi2_lanes).size, pd=pd, td=td, rd=rd,
                      pfb=pl["frame_first"].offset, plb=pl["frame_last"].offset,
                      tfb=tl["first"].offset, tlb=tl["last"].offset,
                      rfb=rl["first"].offset, rlb=rl["last"].offset)
    text.append(public_ports(top))
    return "\n".join(text)


def public_ports(text):
    """Mark every port in the module header visible to cocotb (VPI). Only these are: the model is built without
    --public-flat-rw, so Verilator may optimize everything inside the die (see sim.verilator)."""
    head, sep, body = text.partition(");")
    head = re.sub(r"((?:input|output)\s*(?:\[[^\]]*\])?\s*\w+)", r"\1 /*verilator public_flat_rw*/", head)
    return head + sep + body
