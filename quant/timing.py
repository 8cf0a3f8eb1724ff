"""The NPU's cycle formulas, in pure Python: one function per hardware component and one per descriptor.

This is the only place the die's NPU timing is written down outside the RTL. The compiler writes these figures
into the manifest (`npu_cycles` of each layer and in total), `sim.cyclemodel.predict_cycles` and the benchmark use them,
and the RTL imports its fixed latencies from here. The tests hold every formula to the RTL's own counters, to
the cycle: each component in amaranth.sim (tests/test_conv_components.py), each CONV/DWCONV descriptor of the
engine tests (tests/test_npu_conv.py), and every descriptor of the zoo networks on the die in Verilator
(tests/test_cyclemodel.py).

`config` is anything with a DieConfig's attributes (`array_rows`, `array_cols`, `act_words`,
`weight_word_bytes`, `im2col_pixels`); `desc` anything with a `quant.program.Descriptor`'s fields. Counts are
"from `start` to `done`, both included", as `sim.npu_harness.run_engine` and the die's per-descriptor counters
count them.
"""

from math import gcd

from .program import DESCRIPTOR_BYTES, DUAL2, FILL, OPCODES, PACKED, PAIR, PARAM_RECORD_BYTES, POOL2, RESADD, ZPAD2

__all__ = [
    "MAC_LATENCY", "REQUANT_LATENCY", "CONV_LATENCY", "ADD_RESCALE_STAGES", "DEEP_MAC_LATENCY", "DEEP_REQUANT_LATENCY",
    "DEEP_ADD_RESCALE_STAGES", "mac_latency", "requant_latency", "conv_latency", "add_rescale_stages",
    "vector_input_stages",
    "vector_drain_cycles",
    "DIRECT_SETUP_STEPS", "PACKED_SETUP_STEPS", "PACKED_DIVISIONS", "VECTOR_SETUP_CYCLES", "VECTOR_DRAIN_CYCLES",
    "RESIZE_PIXEL_CYCLES", "RESIZE_DATAPATH_LATENCY", "LUT_ROW_BYTES", "addr_bits", "divider_width",
    "lut_row_bytes", "param_load_layout", "gather_steps", "setup_cycles", "param_load_cycles",
    "direct_issue_cycles", "issue_tiles", "tap_issues", "pair_capable", "dw_tap_issue_cycles",
    "dw_walk_close_cycles", "LINE_KERNEL_ROWS", "dw_line_sets",
    "dw_line_capable", "dw_walk_passes", "dw_pool2_fits",
    "dw_line_depth", "dw_drain_groups", "dw_line_mode", "dw_split_capable", "dw_line_split",
    "dw_line_passes", "dw_line_close_cycles",
    "dw_line_rows", "im2col_read_words",
    "add_sum_latency", "add_latency", "resadd_latency", "resadd_read_tiles",
    "im2col_read_stages",
    "im2col_groups", "im2col_feed_cycles", "conv_cycles", "vector_cycles", "descriptor_cycles",
    "sequencer_overhead", "program_cycles", "add_read_words", "ACTIVITY_KEYS", "descriptor_activity",
    "program_activity",
]

# --- fixed latencies (the RTL takes them from here) -------------------------------------------------------------
# Two sets: the default and, for a configuration with `deep_pipeline` (an FPGA's clock), deeper arithmetic
# pipelines. The functions below pick by the configuration; the constants are the default set's.

MAC_LATENCY = 2            # rtl.mac_array.MACArray: an input is in `acc` (and `products`) this many cycles later
REQUANT_LATENCY = 5        # rtl.requant.RequantUnit and FCRequantUnit: valid in -> out_valid
ADD_RESCALE_STAGES = 4     # rtl.npu.vector_add: stages of ADD's input rescaler
DEEP_MAC_LATENCY = 3       # ... with deep_pipeline: the row sums registered before the accumulator
DEEP_REQUANT_LATENCY = 9   # ... one carry chain or one 18 x 18 multiplier per stage
DEEP_ADD_RESCALE_STAGES = 8
# Conv engine: issue (S0) of a tile's last tap to the cycle its write is on the port (S10): S1 SRAM data, S2 MAC
# array input, S2 + MAC_LATENCY the sums (and the parameter-buffer read), then the requantizer.
CONV_LATENCY = 2 + MAC_LATENCY + 1 + REQUANT_LATENCY


def _deep(config):
    return bool(getattr(config, "deep_pipeline", False))


def mac_latency(config):
    """`MACArray`'s latency in `config` (MAC_LATENCY, or DEEP_MAC_LATENCY with `deep_pipeline`)."""
    return DEEP_MAC_LATENCY if _deep(config) else MAC_LATENCY


def requant_latency(config):
    """The requantizers' latency in `config` (REQUANT_LATENCY, or DEEP_REQUANT_LATENCY with `deep_pipeline`)."""
    return DEEP_REQUANT_LATENCY if _deep(config) else REQUANT_LATENCY


def add_rescale_stages(config):
    """Stages of ADD's input rescaler in `config`."""
    return DEEP_ADD_RESCALE_STAGES if _deep(config) else ADD_RESCALE_STAGES


def vector_input_stages(config):
    """Registers the activation SRAM's data (and the controls that go with it) pass before ADD's rescaler, the
    pools' running max / sum and MUL's and PRELU's lane multipliers: 0, or 1 with `deep_pipeline` (the block RAM's
    output then ends at a register instead of running on into the rescaler's first stage, the pools' divider or the
    multipliers)."""
    return 1 if _deep(config) else 0


def add_sum_latency(config):
    """Cycles from the read of an ADD word's last input to its sums (`rtl.npu.vector_add.VectorAddDatapath`): the
    SRAM (1), the input register with `deep_pipeline` (`vector_input_stages`), the rescalers
    (`add_rescale_stages`), the sum (1)."""
    return 1 + vector_input_stages(config) + add_rescale_stages(config) + 1


def add_latency(config):
    """Cycles from the read of an ADD word's last input to the word on the writer: `add_sum_latency`, the
    accumulator register (1) and the requantizer (`requant_latency`)."""
    return add_sum_latency(config) + 1 + requant_latency(config)


def resadd_latency(config):
    """Cycles a CONV with RESADD (a fused residual ADD) adds from a tile's write on the back end to the fused
    word's write (`rtl.npu.conv_resadd.ConvResidualAdd`): the residual's read, then the vector engine's ADD
    (`add_latency`)."""
    return add_latency(config)


def resadd_read_tiles(config, desc):
    """The output word (channel tile) each tile a RESADD CONV writes per pixel, for the tiles whose write reads the
    residual's word (`issue_tiles` in order; a PAIR's pair is word k, an oc tile t word ``t*rows // cols``): all,
    or with ZPAD2 those of words below ``in2_ct``."""
    tiles = range(issue_tiles(desc))
    words = list(tiles) if desc.flags & PAIR else [t * config.array_rows // config.array_cols for t in tiles]
    return [w for w in words if w < desc.in2_ct]


def conv_latency(config):
    """The conv engine's issue-to-write latency in `config` (CONV_LATENCY by default)."""
    return 2 + mac_latency(config) + 1 + requant_latency(config)


def im2col_read_stages(config):
    """Registers between `ConvIm2colGatherer`'s step and the SRAM's read port: 0, or 1 with `deep_pipeline` (its
    window arithmetic then ends at a register instead of running on into the SRAM's read enable)."""
    return 1 if _deep(config) else 0


DIRECT_SETUP_STEPS = 7     # multiplier steps of a direct CONV / DWCONV setup
PACKED_SETUP_STEPS = 14    # ... of a PACKED setup, plus one per im2col pixel of a group
PACKED_DIVISIONS = 4       # sequential divisions by the packed word's used bytes

VECTOR_SETUP_CYCLES = 2
VECTOR_DRAIN_CYCLES = {"ADD": 13, "MAXPOOL": 14, "AVGPOOL": 14, "COPY": 4, "LUT": 3, "MUL": 8, "MEAN": 10,
                       "PRELU": 8, "RESIZE": 6, "GATHER": 4}


def vector_drain_cycles(config):
    """VECTOR_DRAIN_CYCLES in `config`: ADD's rescaler and requantizer, MUL's, MEAN's and PRELU's requantizer
    (`rtl.npu.vector_arith`) are deeper with `deep_pipeline`, and ADD's, the pools' (MEAN's too), MUL's and
    PRELU's input passes `vector_input_stages` registers."""
    rq = requant_latency(config) - REQUANT_LATENCY
    vin = vector_input_stages(config)
    if not rq and not vin:
        return VECTOR_DRAIN_CYCLES
    drains = dict(VECTOR_DRAIN_CYCLES)
    drains["ADD"] += add_rescale_stages(config) - ADD_RESCALE_STAGES + rq + vin
    for op in ("MUL", "MEAN", "PRELU"):
        drains[op] += rq
    for op in ("MAXPOOL", "AVGPOOL", "MEAN", "MUL", "PRELU"):
        drains[op] += vin
    return drains


RESIZE_DATAPATH_LATENCY = 2   # rtl.npu.vector_resize: last tap on the address unit's p3 -> the word on `out`
RESIZE_PIXEL_CYCLES = 3    # RESIZE: weight reads of an output pixel's row and column entries before its taps
LUT_ROW_BYTES = 8          # LUT table rows: at most this many bytes per row (one row loaded per cycle)


def addr_bits(words):
    """Address bits of a memory of `words` words (at least 1), as `rtl.npu.ports.addr_bits`."""
    return max(1, (words - 1).bit_length())


def divider_width(config):
    """Bits of the PACKED setup's dividends (byte positions in the activation SRAM): one quotient bit a cycle."""
    return addr_bits(config.act_words) + config.array_cols.bit_length() + 2


def lut_row_bytes(config):
    """Bytes per row of the vector engine's LUT table: the weight word, at most LUT_ROW_BYTES."""
    return min(LUT_ROW_BYTES, config.weight_word_bytes)


def param_load_layout(config):
    """How the parameter loader moves records: (slot, records per beat, beats per weight word, weight words per
    record). A weight word of WB bytes holds WB // 16 records at a slot stride of WB // (WB // 16)
    (`quant.program._place_records`); a beat writes `gcd(WB // 16, cols)` records, never straddling a buffer
    word of `cols` records. With WB = 8 a record spans two words."""
    wb = config.array_rows * config.array_cols
    if wb >= PARAM_RECORD_BYTES:
        rpw = wb // PARAM_RECORD_BYTES
        grp = gcd(rpw, config.array_cols)
        return wb // rpw, grp, rpw // grp, 1
    return PARAM_RECORD_BYTES, 1, 1, -(-PARAM_RECORD_BYTES // wb)


# --- conv engine components ---------------------------------------------------------------------------------------

def setup_cycles(config, desc, im2col_pixels=None):
    """`ConvSetup`: cycles from its start to its last cycle, both included. Direct: one multiplier step per
    cycle; PACKED: the packed geometry's steps (one per im2col pixel too), four divisions of
    ``divider_width + 1`` cycles and one cycle for the first window origin."""
    if desc.flags & PACKED:
        g = im2col_pixels or config.im2col_pixels
        return PACKED_SETUP_STEPS + g + PACKED_DIVISIONS * (divider_width(config) + 1) + 1
    return DIRECT_SETUP_STEPS


def param_load_cycles(config, desc):
    """`ConvParamLoader`: ``param_words`` weight words, each taking `beats` cycles (one record group per cycle),
    plus one for the read latency."""
    _, _, beats, _ = param_load_layout(config)
    return desc.param_words * beats + 1


def pair_capable(config):
    """Whether the conv engine takes PAIR CONVs: an array of ``cols = 2 * rows`` (its requantizer is then `cols`
    lanes wide, an output word at once)."""
    return config.array_cols == 2 * config.array_rows


def issue_tiles(desc):
    """The tiles a direct CONV issues per pixel: its oc tiles, or with PAIR their pairs (the last one a single
    tile when ``oc_tiles`` is odd)."""
    return -(-desc.oc_tiles // 2) if desc.flags & PAIR else desc.oc_tiles


def tap_issues(oc_tiles, in_ct, pair):
    """Issues (activation and weight words) of a direct CONV per pixel and tap over all its tiles: ``oc_tiles *
    in_ct``; with PAIR (F = in_ct - 1) ``2F + 1`` per pair and ``F + 1`` for an odd last tile, i.e. every oc
    tile reads the F full input words and every issued tile the last one: ``oc_tiles*F + ceil(oc_tiles/2)``."""
    return oc_tiles * (in_ct - 1) + (-(-oc_tiles // 2) if pair else oc_tiles)


def direct_issue_cycles(desc):
    """`ConvDirectIssue` on a direct CONV: one tap word per cycle, no bubble: pixels x taps x `tap_issues`."""
    return (desc.out_h * desc.out_w * desc.kernel_h * desc.kernel_w
            * tap_issues(desc.oc_tiles, desc.in_ct, desc.flags & PAIR))


def dw_tap_issue_cycles(config, desc, dw_sets=None):
    """`ConvDirectIssue` on a DWCONV with more taps than the walk holds: one tap per cycle; a tile (one output
    word's channel tile) starts no sooner than `groups` (`dw_drain_groups`) cycles after the previous one (its
    drain)."""
    groups = dw_drain_groups(config, dw_sets)
    taps = desc.kernel_h * desc.kernel_w
    tiles = desc.out_h * desc.out_w * desc.out_ct
    return (tiles - 1) * max(taps, groups) + taps


def dw_walk_close_cycles(config, desc, dw_sets=None):
    """`ConvDepthwiseWalk`: cycles from its start to the issue that closes the last output, both included.

    Per channel tile the taps load (``tile_words`` cycles); then per output row and pass the walk issues
    ``kernel_h`` words per padded input column. A pass of outputs o0 .. o1-1 walks columns ``o0*sw`` ..
    ``(o1-1)*sw + kw - 1``: its first output closes after ``kw`` columns, each next one ``sw`` columns later.
    One pass per row when ``kw <= sets * sw``, else strips of `sets` outputs. A close waits until `groups`
    cycles after the previous one (the back end drains an output's sums in `groups` cycles), so closes are
    ``max(kh*kw [+ tile_words], groups)`` apart at a pass's first output and ``max(kh*sw, groups)`` after
    (`groups`: `dw_drain_groups`)."""
    groups = dw_drain_groups(config, dw_sets)
    ns = min(dw_sets or config.dw_sets, config.array_rows)
    kh, kw, sw = desc.kernel_h, desc.kernel_w, desc.stride_w
    passes = len(dw_walk_passes(desc, ns))
    first_gap = max(kh * kw, groups)
    load_gap = max(kh * kw + desc.tile_words, groups)
    next_gap = max(kh * sw, groups)
    pass_count = desc.out_ct * desc.out_h * passes
    closes = desc.out_ct * desc.out_h * desc.out_w
    return (desc.tile_words + kh * kw + (desc.out_ct - 1) * load_gap + (pass_count - desc.out_ct) * first_gap
            + (closes - pass_count) * next_gap)


LINE_KERNEL_ROWS = 3       # the depthwise line walk: kernel rows per column issue (MAC-array rows per set)


def dw_line_sets(config, dw_sets=None):
    """Accumulator sets of the depthwise line walk: ``LINE_KERNEL_ROWS`` MAC-array rows each, at most the walk's
    `dw_sets`."""
    ns = min(dw_sets or config.dw_sets, config.array_rows)
    return min(ns, config.array_rows // LINE_KERNEL_ROWS)


def dw_line_capable(config, dw_sets=None):
    """Whether the conv engine has the depthwise line walk: at least two sets of ``LINE_KERNEL_ROWS`` rows fit the
    array (`dw_line_sets`), every set's first row is an array row (``3 * (dw_sets - 1) < rows``: the other
    modes use it), and the arithmetic is not deep-pipelined."""
    ns = min(dw_sets or config.dw_sets, config.array_rows)
    return (not _deep(config) and dw_line_sets(config, dw_sets) >= 2
            and LINE_KERNEL_ROWS * (ns - 1) < config.array_rows)


def dw_walk_passes(desc, sets):
    """[(first, last padded input column)] of each pass of the depthwise walk over an output row with `sets`
    accumulator sets: one pass when ``kernel_w <= sets * stride_w`` ("rolling"), else strips of `sets` outputs."""
    d = desc
    kw, sw = d.kernel_w, d.stride_w
    last_col = (d.out_w - 1) * sw + kw - 1
    if kw <= sets * sw:
        return [(0, last_col)]
    return [(o0 * sw, min(last_col, o0 * sw + (sets - 1) * sw + kw - 1)) for o0 in range(0, d.out_w, sets)]


def dw_drain_groups(config, dw_sets=None):
    """Cycles the conv back end takes to drain a DWCONV output's sums: one per lane group of ``rows`` lanes
    (``cols // rows``), or 1 on an engine whose requantizer is ``cols`` lanes wide (with the line walk, or on an
    array of ``cols = 2 * rows`` for PAIR CONVs)."""
    wide = dw_line_capable(config, dw_sets) or pair_capable(config)
    return 1 if wide else config.array_cols // config.array_rows


def dw_line_depth(config):
    """Padded input columns the depthwise line buffer holds: the network input's width (at least 64), plus 2."""
    return max(64, config.input_width) + 2


def dw_line_mode(config, desc, dw_sets=None, dw_taps=None):
    """Whether a DWCONV runs on the line walk: the engine has it, the kernel has at most ``LINE_KERNEL_ROWS`` rows
    and at most ``dw_taps`` taps, and the row's padded columns fit the line buffer."""
    kh, kw, sw = desc.kernel_h, desc.kernel_w, desc.stride_w
    return (desc.opcode == OPCODES["DWCONV"] and dw_line_capable(config, dw_sets) and kh <= LINE_KERNEL_ROWS
            and kh * kw <= (dw_taps or config.dw_taps) and (desc.out_w - 1) * sw + kw <= dw_line_depth(config))


def dw_pool2_fits(config, desc, dw_sets=None, dw_taps=None):
    """Whether a DWCONV can write the 2x2 stride-2 max pool of its input beside its output (POOL2,
    `quant.program`): the line walk runs it (`dw_line_mode`) in one pass per output row (``kernel_w <=
    dw_line_sets * stride_w``), stride 2x2, no padding above or left, a kernel of at least 2x2 (each output row
    reads input rows 2y and 2y+1 as kernel rows 0 and 1, each column 2x and 2x+1 in order), a pool of
    ``out_h x out_w`` inside the input and clamps that hold ``in_zp`` (the padding lanes)."""
    d = desc
    return (dw_line_mode(config, d, dw_sets, dw_taps) and d.kernel_w <= dw_line_sets(config, dw_sets) * d.stride_w
            and d.stride_h == d.stride_w == 2 and d.pad_top == d.pad_left == 0 and min(d.kernel_h, d.kernel_w) >= 2
            and 2 * d.out_h <= d.in_h and 2 * d.out_w <= d.in_w and d.add_min <= d.in_zp <= d.add_max)


def dw_split_capable(config, dw_sets=None):
    """Whether the line walk has the split schedule (`dw_line_split`): exactly two line sets (`dw_line_sets`)."""
    return dw_line_capable(config, dw_sets) and dw_line_sets(config, dw_sets) == 2


def dw_line_split(config, desc, dw_sets=None):
    """Whether the line walk runs a DWCONV in its *split* schedule: two line sets (`dw_line_sets`, e.g. 8 array
    rows) and a 3-wide kernel at column stride 1, where a column feeds three open outputs (nine taps per lane)
    but the sets hold two. Even outputs on set 0, odd ones on set 1, the walk goes over the row once: per pair
    of columns (2t, 2t+1) three issues, each set taking one of the two columns (the datapath keeps the
    previous column's kernel rows for set 0): 1.5 cycles per column instead of strips of two outputs over four
    columns."""
    return (dw_split_capable(config, dw_sets) and dw_line_mode(config, desc, dw_sets) and desc.kernel_w == 3
            and desc.stride_w == 1)


def dw_line_passes(config, desc, dw_sets=None):
    """[(first, last padded input column)] of each pass of the line walk over an output row: one with the split
    schedule (`dw_line_split`), else `dw_walk_passes` with `dw_line_sets` sets."""
    if dw_line_split(config, desc, dw_sets):
        return [(0, (desc.out_w - 1) * desc.stride_w + desc.kernel_w - 1)]
    return dw_walk_passes(desc, dw_line_sets(config, dw_sets))


def _split_repeats(desc):
    """Issues the split schedule (`dw_line_split`) adds per output row: odd column c <= ``out_w`` is issued
    again (its second issue, no read), so ``(out_w + 1) // 2``."""
    return (desc.out_w + 1) // 2


def _line_new_rows(desc):
    """Kernel rows the line walk reads from the SRAM per column: all of them in a channel tile's first output
    row, ``min(stride_h, kernel_h)`` in the others (the rest come from the line buffer)."""
    return desc.kernel_h, min(desc.stride_h, desc.kernel_h)


def dw_line_close_cycles(config, desc, dw_sets=None):
    """The line walk (`ConvDepthwiseWalk` in line mode, `dw_line_sets` sets): cycles from its start to the issue
    that closes the last output, both included. Per channel tile the taps load (``tile_words`` cycles); per
    output row and pass (`dw_walk_passes`) the walk takes each of the pass's padded input columns in `n` cycles
    (`n` new kernel rows read, one per cycle; the column's MAC issue, all its kernel rows at once, in the last),
    n = ``kernel_h`` in a tile's first row, ``min(stride_h, kernel_h)`` after; a pass ends with its last output's
    close; the split schedule (`dw_line_split`) walks the row in one pass and issues ``(out_w + 1) // 2`` of its
    columns a second time, a cycle each with no read, and its row ends with the close of the row's last output.
    The back end drains an output in one cycle (`dw_drain_groups`), so closes never wait."""
    cols = sum(c1 - c0 + 1 for c0, c1 in dw_line_passes(config, desc, dw_sets))
    n0, n1 = _line_new_rows(desc)
    again = desc.out_h * _split_repeats(desc) if dw_line_split(config, desc, dw_sets) else 0
    return desc.out_ct * (desc.tile_words + cols * (n0 + (desc.out_h - 1) * n1) + again)


def im2col_groups(desc, im2col_pixels):
    """[(pixels, gather cycles)] of each pixel group of `ConvIm2colGatherer` in order: a window row costs one
    cycle per packed word it touches (the group's G windows overlap in it), or one when outside the input."""
    d = desc
    wby = d.in_ppw * d.in_c
    in_row_b, rowbytes, step_b = d.in_w * d.in_c, d.kernel_w * d.in_c, d.stride_w * d.in_c
    groups = []
    for oy in range(d.out_h):
        for ox0 in range(0, d.out_w, im2col_pixels):
            gv = min(im2col_pixels, d.out_w - ox0)
            u = rowbytes + (gv - 1) * step_b
            ix0b = (ox0 * d.stride_w - d.pad_left) * d.in_c
            steps = 0
            for ky in range(d.kernel_h):
                iy = oy * d.stride_h - d.pad_top + ky
                steps += -(-((iy * in_row_b + ix0b) % wby + u) // wby) if 0 <= iy < d.in_h else 1
            groups.append((gv, steps))
    return groups


def im2col_feed_cycles(config, desc, im2col_pixels=None):
    """PACKED CONV (`ConvIm2colGatherer` feeding `ConvDirectIssue`): cycles from the run's start to the last
    feed issue, both included. Two buffer sets: group n's gather starts the cycle after group n-1's ends and
    no sooner than the cycle after group n-2's feed ends (its set is free); it is full two cycles after its
    last gather step (plus `im2col_read_stages`), and its feed (``pixels * oc_tiles * in_ct`` cycles) starts
    then, or the cycle after the previous group's feed, whichever is later."""
    g = im2col_pixels or config.im2col_pixels
    per_pixel = desc.oc_tiles * desc.in_ct
    fill = 2 + im2col_read_stages(config)
    gather_end, feed_end = [], []
    for n, (gv, steps) in enumerate(im2col_groups(desc, g)):
        start = 0 if n == 0 else gather_end[-1] + 1
        if n >= 2:
            start = max(start, feed_end[n - 2] + 1)
        gather_end.append(start + steps - 1)
        first = gather_end[-1] + fill if n == 0 else max(gather_end[-1] + fill, feed_end[-1] + 1)
        feed_end.append(first + gv * per_pixel - 1)
    return feed_end[-1] + 1


def conv_cycles(config, desc, im2col_pixels=None, dw_sets=None, dw_taps=None):
    """`NPUConvEngine`: exact cycles from `start` to `done` of an accepted CONV or DWCONV descriptor: the start
    cycle, `setup_cycles`, `param_load_cycles`, the run (issue to the last write) and `done` with that write.
    A refused descriptor takes 2 (a RESADD refused for its banks: ``2 + setup_cycles``, after the setup)."""
    groups = dw_drain_groups(config, dw_sets)
    dw_taps = dw_taps or config.dw_taps
    t0 = 1 + setup_cycles(config, desc, im2col_pixels) + param_load_cycles(config, desc)
    if desc.opcode == OPCODES["DWCONV"]:
        if desc.kernel_h * desc.kernel_w > dw_taps:
            return t0 + dw_tap_issue_cycles(config, desc, dw_sets) + conv_latency(config) + groups
        if dw_line_mode(config, desc, dw_sets, dw_taps):
            return t0 + dw_line_close_cycles(config, desc, dw_sets) + conv_latency(config) + groups
        # The last close, the drain of its `groups` lane groups, the requantizer pipeline.
        return t0 + dw_walk_close_cycles(config, desc, dw_sets) + conv_latency(config) + groups
    if desc.flags & PACKED:
        return t0 + im2col_feed_cycles(config, desc, im2col_pixels) + conv_latency(config)
    # RESADD: every write passes the fused ADD's pipeline, one word per cycle, so only the last is later.
    fused = resadd_latency(config) if desc.flags & RESADD else 0
    return t0 + direct_issue_cycles(desc) + conv_latency(config) + fused


# --- vector engine --------------------------------------------------------------------------------------------------

def _pool_taps(size, k, stride, pad, n):
    return sum(len(range(max(0, o * stride - pad), min(size, o * stride - pad + k))) for o in range(n))


def gather_steps(config, desc):
    """GATHER: cycles per copied pixel: one per output word it touches, ``ceil((copy_c % cols + g_c) / cols)``,
    plus one when the source lane offset is past the destination's (the first source word is read before the
    first output word can be built)."""
    cols = config.array_cols
    return -(-(desc.copy_c % cols + desc.g_c) // cols) + (1 if desc.src_c % cols > desc.copy_c % cols else 0)


def add_read_words(desc):
    """(output words whose ADD/MUL reads both inputs, output words reading input 1 only): with ZPAD2 the words of
    the channel tiles past ``in2_ct`` take the second input's zero point without a read."""
    pixels = desc.out_h * desc.out_w
    if desc.opcode == OPCODES["ADD"] and desc.flags & ZPAD2:
        return pixels * desc.in2_ct, pixels * (desc.out_ct - desc.in2_ct)
    return pixels * desc.out_ct, 0


def vector_cycles(config, desc):
    """`NPUVectorEngine`: cycles from `start` to `done` of a valid ADD, MAXPOOL, AVGPOOL, COPY, LUT, MUL, MEAN,
    PRELU, RESIZE or GATHER descriptor: VECTOR_SETUP_CYCLES + 1, the work, and the pipeline drain
    (VECTOR_DRAIN_CYCLES). ADD and MUL are 2 cycles per output word (two reads, broadcast or not), an ADD with
    DUAL2 one (both reads in one cycle), an ADD with ZPAD2 one per word of its zero-point tiles
    (`add_read_words`); pools one per
    in-bounds tap, MEAN one per input word; COPY one per word written (FILL first); LUT the table load (256 /
    lut_row_bytes) and one per word; PRELU one cycle per channel tile to load the alphas, then one per word;
    RESIZE per output pixel RESIZE_PIXEL_CYCLES (its table entries) and 4 taps per output word; GATHER
    gather_steps per copied pixel (FILL first). One refused at setup takes VECTOR_SETUP_CYCLES + 2."""
    cols = config.array_cols
    op = {v: k for k, v in OPCODES.items()}.get(desc.opcode)
    words = desc.out_h * desc.out_w * desc.out_ct
    if op in ("ADD", "MUL"):
        both, one = add_read_words(desc)
        work = (1 if desc.flags & DUAL2 else 2) * both + one
    elif op == "MEAN":
        work = desc.in_h * desc.in_w * desc.in_ct
    elif op == "PRELU":
        work = desc.out_ct + words
    elif op in ("MAXPOOL", "AVGPOOL"):
        work = (_pool_taps(desc.in_h, desc.kernel_h, desc.stride_h, desc.pad_top, desc.out_h)
                * _pool_taps(desc.in_w, desc.kernel_w, desc.stride_w, desc.pad_left, desc.out_w) * desc.out_ct)
    elif op == "COPY":
        per_pixel = -(-(desc.copy_c % cols + desc.in_c) // cols)
        work = desc.in_h * desc.in_w * per_pixel + (words if desc.flags & FILL else 0)
    elif op == "LUT":
        work = 256 // lut_row_bytes(config) + words
    elif op == "GATHER":
        work = desc.g_h * desc.g_w * gather_steps(config, desc) + (words if desc.flags & FILL else 0)
    elif op == "RESIZE":
        work = desc.out_h * desc.out_w * (RESIZE_PIXEL_CYCLES + 4 * desc.out_ct)
    else:
        return VECTOR_SETUP_CYCLES + 2
    return VECTOR_SETUP_CYCLES + 1 + work + vector_drain_cycles(config)[op]


# --- whole descriptors and programs ---------------------------------------------------------------------------

def descriptor_cycles(config, desc):
    """Cycles of one descriptor as the die's per-descriptor counter reports it (its engine's `start` to `done`);
    0 for END, which no engine runs."""
    if desc.opcode == OPCODES["END"]:
        return 0
    if desc.opcode in (OPCODES["CONV"], OPCODES["DWCONV"]):
        return conv_cycles(config, desc)
    return vector_cycles(config, desc)


def sequencer_overhead(config):
    """Cycles the NPU sequencer spends per descriptor outside its engine's count: fetch (read and latch, once
    per weight word the descriptor spans) and decode. The engine's count starts with the cycle that starts it."""
    words = max(1, DESCRIPTOR_BYTES // config.weight_word_bytes)
    return 2 * words + 1


def program_cycles(config, descriptors):
    """{"descriptors": [cycles of each descriptor but END, as the die's per-descriptor counter reports it],
    "layers": {layer index: cycles}, "total": cycles of the whole run as the die's npu_cycles counter reports
    it (every descriptor, END included, is fetched and decoded; END's decode ends the run)}."""
    per = []
    layers = {}
    for d in descriptors:
        if d.opcode == OPCODES["END"]:
            continue
        c = descriptor_cycles(config, d)
        per.append(c)
        layers[d.layer] = layers.get(d.layer, 0) + c
    total = sum(per) + len(descriptors) * sequencer_overhead(config)
    return {"descriptors": per, "layers": layers, "total": total}


# --- activity (the SRAM traffic and MAC-array cycles the die's per-descriptor activity counters report) ---------

ACTIVITY_KEYS = ("mac_cycles", "act_reads", "act_write_bytes", "weight_reads")


def dw_line_rows(desc):
    """Input rows the line walk reads (each once per channel tile): per output row its new kernel rows
    (`_line_new_rows`) that are inside the input; a list of (row, times read per channel tile)."""
    d = desc
    n0, n1 = _line_new_rows(d)
    rows = {}
    for oy in range(d.out_h):
        for ky in range(d.kernel_h - (n0 if oy == 0 else n1), d.kernel_h):
            iy = oy * d.stride_h - d.pad_top + ky
            if 0 <= iy < d.in_h:
                rows[iy] = rows.get(iy, 0) + 1
    return sorted(rows.items())


def _dw_walk_counts(config, desc, dw_sets=None):
    """(walk issues, issues inside the input) of `ConvDepthwiseWalk` over the whole descriptor: per channel tile,
    output row and pass, ``kernel_h`` words per padded input column of the pass (line mode: one issue per column,
    its new kernel rows read; the split schedule's second issues of a column read nothing, and its row's first
    column, which no output of the row takes yet, leaves the MAC array idle)."""
    d = desc
    line = dw_line_mode(config, d, dw_sets)
    passes = (dw_line_passes(config, d, dw_sets) if line
              else dw_walk_passes(d, min(dw_sets or config.dw_sets, config.array_rows)))
    cols = sum(c1 - c0 + 1 for c0, c1 in passes)
    cols_in = sum(len(range(max(c0, d.pad_left), min(c1, d.pad_left + d.in_w - 1) + 1)) for c0, c1 in passes)
    if line:
        extra = _split_repeats(d) - 1 if dw_line_split(config, d, dw_sets) else 0
        return d.out_ct * d.out_h * (cols + extra), d.out_ct * sum(n for _, n in dw_line_rows(d)) * cols_in
    rows_in = _pool_taps(d.in_h, d.kernel_h, d.stride_h, d.pad_top, d.out_h)
    return d.out_ct * d.out_h * d.kernel_h * cols, d.out_ct * rows_in * cols_in


def im2col_read_words(desc, im2col_pixels):
    """Word offsets (from ``in_addr``) of the activation words `ConvIm2colGatherer` reads, one per read, in order:
    a window-row chunk (the bytes of one packed word) is read when some pixel of the group has a byte of its
    window row inside the input in it; rows outside the input are one step with no read."""
    d = desc
    wby = d.in_ppw * d.in_c
    in_row_b, rowbytes, step_b = d.in_w * d.in_c, d.kernel_w * d.in_c, d.stride_w * d.in_c
    for oy in range(d.out_h):
        for ox0 in range(0, d.out_w, im2col_pixels):
            gv = min(im2col_pixels, d.out_w - ox0)
            u = rowbytes + (gv - 1) * step_b
            ix0b = (ox0 * d.stride_w - d.pad_left) * d.in_c
            kxa, kxb = max(0, -ix0b), in_row_b - ix0b
            spans = [(max(kxa, g * step_b), min(kxb, g * step_b + rowbytes)) for g in range(gv)]
            spans = [(lo, hi) for lo, hi in spans if lo < hi]
            for ky in range(d.kernel_h):
                iy = oy * d.stride_h - d.pad_top + ky
                if not 0 <= iy < d.in_h or not spans:
                    continue
                origin = iy * in_row_b + ix0b
                word, cb, kxs = origin // wby, origin % wby, 0
                while True:
                    room = wby - cb
                    nb = min(u - kxs, room)
                    if any(lo < kxs + nb and hi > kxs for lo, hi in spans):
                        yield word
                    if u - kxs <= room:
                        break
                    kxs, cb, word = kxs + room, 0, word + 1


def descriptor_activity(config, desc):
    """What the die's per-descriptor activity counters report for one descriptor run by its engine (`ACTIVITY_KEYS`):
    `mac_cycles` (cycles the MAC array accumulated: the conv engine's issues; the vector engine's multipliers do
    not count), `act_reads` (activation-SRAM words of `array_cols` bytes read; taps in the padding are not
    read), `act_write_bytes` (activation-SRAM bytes written, by byte enable) and `weight_reads` (weight-SRAM
    words read, the parameter records', LUT tables, PRELU alphas and RESIZE table entries included). END (run by
    no engine) is all zeros. The sequencer's own descriptor fetches (`sequencer_overhead`) are not in these
    counts: see `program_activity`."""
    cols = config.array_cols
    op = {v: k for k, v in OPCODES.items()}.get(desc.opcode)
    d = desc
    words = d.out_h * d.out_w * d.out_ct
    zero = dict.fromkeys(ACTIVITY_KEYS, 0)
    if op in ("CONV", "DWCONV"):
        out = dict(zero, act_write_bytes=words * cols)
        taps = d.kernel_h * d.kernel_w
        rows_in = _pool_taps(d.in_h, d.kernel_h, d.stride_h, d.pad_top, d.out_h)
        cols_in = _pool_taps(d.in_w, d.kernel_w, d.stride_w, d.pad_left, d.out_w)
        if op == "DWCONV" and taps > config.dw_taps:
            issues = words * taps
            out.update(mac_cycles=issues, act_reads=d.out_ct * rows_in * cols_in, weight_reads=issues)
        elif op == "DWCONV":
            issues, inside = _dw_walk_counts(config, d)
            out.update(mac_cycles=issues, act_reads=inside, weight_reads=d.out_ct * d.tile_words)
            if d.flags & POOL2:                   # the max pool's words, written whole
                out["act_write_bytes"] += words * cols
        elif d.flags & PACKED:
            issues = d.out_h * d.out_w * d.oc_tiles * d.in_ct
            reads = sum(1 for _ in im2col_read_words(d, config.im2col_pixels))
            out.update(mac_cycles=issues, act_reads=reads, weight_reads=issues)
        else:
            issues = direct_issue_cycles(d)
            # RESADD: the residual's word read once per tile written (a PAIR's pair: one whole word), none for a
            # ZPAD2 word past the residual's tiles.
            fused = d.out_h * d.out_w * len(resadd_read_tiles(config, d)) if d.flags & RESADD else 0
            out.update(mac_cycles=issues, act_reads=tap_issues(d.oc_tiles, d.in_ct, d.flags & PAIR) * rows_in
                       * cols_in + fused, weight_reads=issues)
        out["weight_reads"] += d.param_words
        return out
    if op == "ADD":                       # two words per output word (one for ZPAD2's zero-point tiles)
        both, one = add_read_words(d)
        return dict(zero, act_reads=2 * both + one, act_write_bytes=words * cols)
    if op in ("MAXPOOL", "AVGPOOL"):
        taps = (_pool_taps(d.in_h, d.kernel_h, d.stride_h, d.pad_top, d.out_h)
                * _pool_taps(d.in_w, d.kernel_w, d.stride_w, d.pad_left, d.out_w) * d.out_ct)
        return dict(zero, act_reads=taps, act_write_bytes=words * cols)
    if op == "COPY":
        fill = words * cols if d.flags & FILL else 0
        return dict(zero, act_reads=d.in_h * d.in_w * d.in_ct, act_write_bytes=fill + d.in_h * d.in_w * d.in_c)
    if op == "LUT":
        return dict(zero, act_reads=words, act_write_bytes=words * cols, weight_reads=256 // lut_row_bytes(config))
    if op == "MUL":                       # as ADD: both inputs' words (a broadcast one re-read) per output word
        return dict(zero, act_reads=2 * words, act_write_bytes=words * cols)
    if op == "MEAN":
        return dict(zero, act_reads=d.in_h * d.in_w * d.in_ct, act_write_bytes=words * cols)
    if op == "PRELU":                     # one weight word read per channel tile's alphas
        return dict(zero, act_reads=words, act_write_bytes=words * cols, weight_reads=d.out_ct)
    if op == "RESIZE":                    # per output pixel its row and column entries; 4 taps per output word
        return dict(zero, act_reads=4 * words, act_write_bytes=words * cols, weight_reads=2 * d.out_h * d.out_w)
    if op == "GATHER":                    # per box pixel the source words its channels span
        nin = (d.src_c % cols + d.g_c - 1) // cols + 1
        fill = words * cols if d.flags & FILL else 0
        return dict(zero, act_reads=d.g_h * d.g_w * nin, act_write_bytes=fill + d.g_h * d.g_w * d.g_c)
    return zero


def program_activity(config, descriptors):
    """{"descriptors": [descriptor_activity of each descriptor but END], "layers": {layer: summed counts},
    "total": summed counts plus the sequencer's descriptor fetches (`fetch_weight_reads`, weight-SRAM words)}."""
    per, layers = [], {}
    for d in descriptors:
        if d.opcode == OPCODES["END"]:
            continue
        a = descriptor_activity(config, d)
        per.append(a)
        lay = layers.setdefault(d.layer, dict.fromkeys(ACTIVITY_KEYS, 0))
        for k in ACTIVITY_KEYS:
            lay[k] += a[k]
    total = {k: sum(a[k] for a in per) for k in ACTIVITY_KEYS}
    total["fetch_weight_reads"] = len(descriptors) * max(1, DESCRIPTOR_BYTES // config.weight_word_bytes)
    return {"descriptors": per, "layers": layers, "total": total}
