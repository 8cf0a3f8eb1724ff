"""Pieces shared by the conv engine's components (`rtl/npu/conv_*.py`): the engine's dimensions, the layouts that
join the components, and mux-tree helpers."""

from amaranth import Cat, Const, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out
from amaranth.utils import bits_for, ceil_log2

from stackcam.quant.timing import (
    LINE_KERNEL_ROWS,
    dw_drain_groups,
    dw_line_capable,
    dw_line_depth,
    dw_line_sets,
    dw_split_capable,
    pair_capable,
)

from .ports import addr_bits

__all__ = ["ConvDims", "param_record_layout", "geometry_layout", "issue_layout", "tile_layout", "mux_tree", "words",
           "shift_bytes", "lane", "read_request_signature", "feed_layout", "line_layout", "pool_rows_layout"]

# One channel's requantization parameters as the parameter buffer holds them: the 16-byte record of
# quant.program without its zero padding. `rescale` is the Q31 multiplier and shift (TFLite shifts lie in
# -31..30, so 6 bits hold them) or, for a CONV with the FCSCALE flag (FULLY_CONNECTED), the float64 scale's bits.
param_record_layout = data.StructLayout({
    "bias": signed(32),
    "rescale": data.UnionLayout({
        "q31": data.StructLayout({"multiplier": signed(32), "shift": signed(6)}),
        "scale": unsigned(64),
    }),
})


class ConvDims:
    """The conv engine's sizes for a configuration: array, address widths, im2col and depthwise parameters."""

    def __init__(self, config, im2col_words=None, im2col_pixels=None, dw_sets=None, dw_taps=None):
        dw_taps = dw_taps or config.dw_taps
        self.config = config
        self.R, self.C = config.array_rows, config.array_cols
        self.NG = self.C // self.R                      # lane groups (R-channel tiles) per output word
        self.WB = self.R * self.C                       # weight word bytes
        self.param_depth = -(-config.max_channels // self.C)
        self.GM = im2col_words or -(-config.im2col_bytes // self.C)
        self.G = im2col_pixels or config.im2col_pixels
        self.NS = min(self.R, dw_sets or config.dw_sets)
        self.TM = dw_taps
        self.TW = -(-self.TM // self.R)                 # depthwise block words that hold TM taps
        self.AB = addr_bits(config.act_words)
        self.WAB = addr_bits(config.weight_words)
        self.CB = bits_for(self.C)                      # holds 0..C
        self.SGN = 16 + self.CB + 3                     # signed byte/pixel coordinates
        self.DIVW = self.AB + self.CB + 2               # dividends of the PACKED setup (byte positions)
        self.sub_w = max(1, ceil_log2(self.NG))         # lane group index
        # Depthwise line walk: XG MAC-array rows per accumulator set (kernel rows of a column at once, each row
        # its own activation vector) and a line buffer of LBD padded columns; without it XG = 1.
        self.LINE = dw_line_capable(config, dw_sets)
        self.XG = LINE_KERNEL_ROWS if self.LINE else 1
        self.LBD = dw_line_depth(config) if self.LINE else 0
        self.NSL = dw_line_sets(config, dw_sets) if self.LINE else 0
        # The line walk's split schedule (two line sets, `quant.timing.dw_line_split`): set 1's rows take their
        # own XG activation vectors (set 0 may keep the previous column's), so the MAC array has XV vectors.
        self.LSPLIT = dw_split_capable(config, dw_sets)
        self.XV = 2 * self.XG if self.LSPLIT else self.XG
        # Lane groups a DWCONV output drains in (one cycle each): with the line walk the requantizer is `cols`
        # lanes wide, so a whole output word in one cycle.
        self.NGD = dw_drain_groups(config, dw_sets)
        # PAIR CONVs (two oc tiles per issue, one per half of the lanes): an array of cols = 2 * rows.
        self.PAIR = pair_capable(config)


def geometry_layout(dims):
    """What `ConvSetup` computes for the run (constant from its `done` to the engine's `done`)."""
    AB, CB, DIVW = dims.AB, dims.CB, dims.DIVW
    return data.StructLayout({
        "row_stride": unsigned(AB),      # act words between input rows: in_w * in_ct
        "row_step": unsigned(AB),        # ... between output rows: stride_h * row_stride
        "col_step": unsigned(AB),        # ... between output columns: stride_w * in_ct
        "pix0": unsigned(AB),            # word of tap (0, 0), channel tile 0, of output pixel (0, 0) (mod 2^AB)
        "out_row_words": unsigned(AB),   # output words per output row: out_w * out_ct
        "last_col": unsigned(18),        # depthwise walk: last padded input column of a row
        # PACKED geometry, in bytes of the packed input ("position" = pixel * in_c).
        "in_row_b": unsigned(DIVW),      # bytes of one input row
        "rowbytes": unsigned(16),        # bytes of one window row: kernel_w * in_c
        "wby": unsigned(CB),             # used bytes of a packed word: in_ppw * in_c
        "step_b": unsigned(DIVW),        # window move per output column
        "pl_b": unsigned(16),            # pad_left * in_c
        # divmod(value, wby) of the group's move, an input row and an output row's move.
        "qs": unsigned(AB), "rs": unsigned(CB),
        "qr": unsigned(AB), "rr": unsigned(CB),
        "qrs": unsigned(AB), "rrs": unsigned(CB),
        "origin_w": unsigned(AB), "origin_b": unsigned(CB),   # first window origin, (word, byte)
        # Byte offsets j * step_b of a group's pixels 1 .. G in its window row (pixel 0's is 0).
        "offs": data.ArrayLayout(unsigned(20), dims.G),
    })


def issue_layout(dims):
    """One issue (S0) of the direct loop or the depthwise walk, as stage S1 registers it."""
    return data.StructLayout({
        "valid": 1,                      # a word is issued (the SRAM reads are on the ports)
        "last": 1,                       # the tile's (an output's) last tap
        "first": 1,                      # the tile's first tap (clears the MAC array's accumulators)
        "inside": 1,                     # the tap is inside the input (else x = 0)
        "final": 1,                      # the descriptor's last tile
        "rest": 1,                       # CONV: the pixel's last oc tile (fills the lanes above it)
        "pw": unsigned(16),              # parameter-buffer word of the tile
        "sub": unsigned(dims.sub_w),     # CONV: lane group of the tile in the output word
        "oaddr": unsigned(dims.AB),      # output word
        "cset": unsigned(max(1, ceil_log2(max(2, dims.NS)))),   # DWCONV: accumulator set that closes
        "trow": unsigned(max(1, ceil_log2(max(2, dims.R)))),     # tap row within the weight word (tap mode)
        "sen": unsigned(dims.NS),        # DWCONV: accumulator sets that take the tap
        "sclr": unsigned(dims.NS),       # ... and start a new output with it
        "to2": 1,                        # CONV, PAIR: the row sums go to the pair's second tile (acc2)
        "split": 1,                      # CONV, PAIR: the merged word: lower half of a row to acc, upper to acc2
    })


def tile_layout(dims):
    """A tile's sums complete (S4): what the back end needs besides the sums."""
    return data.StructLayout({
        "done": 1, "final": 1, "rest": 1, "pw": unsigned(16), "sub": unsigned(dims.sub_w),
        "oaddr": unsigned(dims.AB),
    })


def lane(value, i, width=8):
    return value.word_select(i, width)


# Variable selections and shifts are built as explicit mux trees: a variable-offset `word_select` or shift of a
# wide value is one cell whose every output bit depends on every input bit, which makes Amaranth's netlist
# checks quadratic in the width (minutes for the imx500 weight word); a tree is also what the gates are.

def mux_tree(options, sel):
    """options[sel] (the last option for sel past the end) as a binary tree of Mux on the bits of `sel`."""
    options = list(options)
    level = 0
    while len(options) > 1:
        bit = sel[level]
        options = [Mux(bit, options[i + 1], options[i]) if i + 1 < len(options) else options[i]
                   for i in range(0, len(options), 2)]
        level += 1
    return options[0]


def words(value, width):
    return [value[i:i + width] for i in range(0, len(value), width)]


def shift_bytes(value, amount, left):
    """`value` shifted by `amount` bytes (zeros in), the width kept: a log2-stage barrel shifter."""
    width = len(value)
    for i in range(len(amount)):
        step = 8 << i
        if step >= width:
            value = Mux(amount[i], Const(0, width), value)
            continue
        moved = Cat(Const(0, step), value[:width - step]) if left else Cat(value[step:], Const(0, step))
        value = Mux(amount[i], moved, value)
    return value


def read_request_signature(addr_width):
    """A read request to an SRAM (`rtl.npu.ports` read port without its data): word `addr` when `en`."""
    return wiring.Signature({"addr": Out(addr_width), "en": Out(1)})


def feed_layout(dims):
    """Which im2col buffer word the direct issue feeds: set, pixel in the group, word in the pixel's buffer."""
    return data.StructLayout({"set": 1, "pixel": unsigned(max(1, ceil_log2(max(2, dims.G)))), "word": unsigned(16)})


def line_layout(dims):
    """The line walk's control for the datapath's line buffer (S0, registered by S1 with the issue): this cycle
    reads kernel row `ky` of column `col` (`read`), or is the column's MAC issue too (`issue`); kernel rows below
    `ky0` come from the line buffer (its entry `e0` for row 0, entry 1 for row 1); `ins` says which of the
    ``XG`` kernel rows are inside the input; `kh` the kernel's rows (which two the buffer keeps); `keep`: the
    issue writes the buffer (not when the row's next pass walks the column again). The split schedule
    (`quant.timing.dw_line_split`): `hold` (with `issue`: set 0's vectors keep the previous column's words, set
    1's take the new column's), `rep` (an issue of the last column again, no read: set 0's vectors take set 1's
    words)."""
    return data.StructLayout({
        "read": 1, "issue": 1, "keep": 1, "hold": 1, "rep": 1, "ky": unsigned(2), "ky0": unsigned(2), "e0": 1,
        "kh": unsigned(2),
        "col": unsigned(max(1, ceil_log2(max(2, dims.LBD)))), "ins": unsigned(dims.XG),
    })


def pool_rows_layout(dims):
    """The line walk's column at S1 for `ConvPool2`: `issue` (a line issue: the column's MAC issue), its padded
    column `col`, and its kernel rows 0 and 1 (`row0`, `row1`: raw SRAM bytes, as read or from the line buffer)."""
    return data.StructLayout({
        "issue": 1, "col": unsigned(max(1, ceil_log2(max(2, dims.LBD)))), "row0": unsigned(8 * dims.C),
        "row1": unsigned(8 * dims.C),
    })
