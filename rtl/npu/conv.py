"""The NPU's MAC-array engine: CONV (direct, and im2col over a pixel-packed input) and DWCONV descriptors.

The engine is a thin top (`NPUConvEngine`: the control FSM and the SRAM port multiplexers) over its components:

======================  ==============================  ==========================================================
component               file                            does
======================  ==============================  ==========================================================
`ConvSetup`             `conv_setup.py`                 address geometry: one multiplier, one divider (PACKED)
`ConvParamLoader`       `conv_params.py`                requantization records into the parameter buffer
`ConvDirectIssue`       `conv_issue.py`                 S0 of CONV, tap-per-cycle DWCONV, the PACKED feeder
`ConvDepthwiseWalk`     `conv_dwwalk.py`                S0 of DWCONV: the column walk over accumulator sets
`ConvIm2colGatherer`    `conv_im2col.py`                PACKED: window rows into two sets of im2col buffers
`ConvMACPipe`           `conv_datapath.py`              S1..S4: operands, MAC array, depthwise accumulators
`ConvBackEnd`           `conv_backend.py`               depthwise drain, parameter read, requantizers, write
`ConvResidualAdd`       `conv_resadd.py`                RESADD: the residual's read and the fused ADD (two ports)
`ConvPool2`             `conv_pool2.py`                 POOL2: the max pool of the line walk's rows 2y, 2y+1
======================  ==============================  ==========================================================

joined by the layouts of `conv_common.py`. Their cycle formulas, and the engine's, are `quant.timing`.
"""

from amaranth import DomainRenamer, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring

from stackcam.quant.program import FCSCALE, OPCODES, PACKED, PAIR, POOL2, RESADD, ZPAD2
from stackcam.quant.timing import conv_cycles, conv_latency

from ..clockgate import clock_gates, gating
from .conv_backend import ConvBackEnd
from .conv_common import ConvDims, param_record_layout
from .conv_datapath import ConvMACPipe
from .conv_dwwalk import ConvDepthwiseWalk
from .conv_im2col import ConvIm2colGatherer
from .conv_issue import ConvDirectIssue
from .conv_params import ConvParamLoader
from .conv_pool2 import ConvPool2
from .conv_resadd import ConvResidualAdd
from .conv_setup import ConvSetup
from .ports import banks_meet, engine_signature

__all__ = ["NPUConvEngine", "param_record_layout"]


class NPUConvEngine(wiring.Component):
    """CONV (opcode 1, with or without the PACKED flag) and DWCONV (opcode 2) on the MAC array, by the rules of
    `quant.program`; ports are `rtl.npu.ports.engine_signature(config)`.

    Sequence of one descriptor (`start` with `desc` valid, `desc` stable until `done`):

    1. **Setup** (7 cycles; PACKED: ``14 + im2col_pixels`` plus four sequential divisions of
       ``addr_bits(act_words) + bits(cols) + 3`` cycles each): address strides and window origins from one
       shared multiplier (and divider), so the run loops only add.
    2. **Parameter load**: the layer's records (``param_words`` weight words at ``param_addr``) go into the
       parameter buffer, a Memory of ``ceil(max_channels / cols)`` words of ``cols`` records (one output
       word's channels), ``gcd(WB // 16, cols)`` records per cycle: one weight word per cycle while
       ``WB // 16 <= cols``, two cycles per word on imx500 (128 records per word), one record per two words
       when WB = 8: ``param_words`` times the cycles per word, plus 1.
    3. **Run**, output-stationary, output pixels in raster order. The issue stage S0 walks ``pixel > tile >
       ky > kx > ic`` and reads one activation word and one weight word per cycle, never stalling (direct
       CONV); S1 has the SRAM data and registers ``x - in_zp`` (0 for a tap in the padding, where the read is
       not even issued) and the weights; S2 presents them to the MAC array (`mac_active`); the tile's sums
       are in the accumulators at S4, where the back end takes them: parameter-buffer read (S4), the tile's
       records and the descriptor's zero point and clamps into `RequantUnit` (FCSCALE: `FCRequantUnit`)
       (S5..S9), write of the tile's ``rows`` lanes at S10 (the pixel's last tile also writes ``out_zp`` into
       the word's lanes above it).
       Consecutive tiles follow each other with no bubble, so even a 1x1 conv with one input tile retires
       one tile per cycle: ``out_h*out_w*oc_tiles*tile_words`` run cycles, plus setup, load and the 10-cycle
       pipeline (`latency`).
    4. `done` pulses (`busy` falls after it) in the cycle the last output word's write is issued.

    `quant.timing.conv_cycles(config, desc)` gives the exact count from `start` to `done` for any accepted
    descriptor (`cycles(desc)` on an engine with non-default sizes); the components' docstrings give theirs.

    **DWCONV** runs on the MAC array's multipliers: the activation word is broadcast down the array as for
    CONV, and rows 0 .. ``dw_sets - 1`` (NS, default 3) are accumulator *sets*, each holding one open output
    pixel of the current output row and multiplying the word by that output's tap; their registered products
    (`MACArray.products`) are summed lane by lane in NS x ``cols`` 32-bit accumulators (the array's own
    row sums are unused). Loop: channel tile > output row > input column (padded) > kernel row, one
    activation word per cycle, read once per (output row, column) instead of once per tap: an output opens
    at its first column and closes at its last, on the sets round robin. With ``kernel_w <= NS * stride_w``
    one pass covers the row, ``kernel_h * ((out_w - 1) * stride_w + kernel_w)`` cycles per row and channel
    tile (3x3 s1: about 3 cycles per output word instead of 9, s2: 6); otherwise passes of NS outputs step
    back to the next pass's first column (strips). The tile's taps sit in ``dw_taps`` (default 9) registers
    of ``cols`` bytes, loaded from the depthwise block at each channel tile (``tile_words`` cycles). A kernel
    with more taps falls back to one tap per cycle on set 0 (``kh*kw*out_h*out_w*out_ct`` cycles). On an
    array with room for two or more sets of three rows (`quant.timing.dw_line_capable`: demo, imx500) the walk
    has a *line mode* for kernels of at most 3 rows: each of `dw_line_sets` sets owns three array rows (the
    column's kernel rows, multiplied at once, each row its own activation vector), the kernel rows already read
    for the previous output row come from a line buffer in the datapath (``max(64, input_width) + 2`` padded
    columns of two words), so a column takes one cycle per new kernel row (3x3 s1: one cycle per output with
    three sets; with two, 1.5 in the walk's split schedule, each set on one of two adjacent columns; s2: two per
    column) and each input word is read once per channel tile and pass;
    the requantizer is then ``cols`` lanes wide and an output drains in one cycle. Otherwise a closed
    output's sums are requantized ``rows`` lanes per cycle over ``cols // rows`` cycles (each write fills one
    lane group of the output word); a close sooner than that after the previous one waits. `mac_active` is
    high in cycles where at least one set (or the array) takes a tap.

    **PACKED** (im2col): a gatherer copies window rows of the pixel-packed input into per-pixel im2col
    buffers (``im2col_words`` words each, prefilled with ``in_zp`` for taps outside the input). It works on
    groups of ``im2col_pixels`` (G) horizontally adjacent output pixels: their window rows overlap in the
    input row, which is contiguous in the packed words, so each read of a packed word is shifted into all G
    pixels' buffers at once. One cycle per (window row, packed word the group's row touches). Two sets of G
    buffers: the feeder runs ``oc_tiles * in_ct`` MAC-array words per pixel (like a 1x1 conv's input tiles)
    from one set while the gatherer fills the other. A 3x3 s2 RGB stem in 64-lane words (imx500) runs at
    about 1.27 cycles per output pixel for an ideal 1 (G = 1: 3.4; G = 8: 1.03).

    **FCSCALE** (a FULLY_CONNECTED): the same run, with the records' float64 scale loaded instead of the Q31
    multiplier and shift and the tiles requantized by `FCRequantUnit` (LiteRT's reference double rescale, in
    integers) instead of `RequantUnit`; same latency, so the same cycles as without the flag.

    **PAIR** (the input's last channel tile at most half full, on an array of ``cols = 2 * rows``: demo,
    imx500): that tile's words would leave the upper half of each row's lanes idle, so oc tiles run in pairs
    (`quant.program`): per tap the ``F = in_ct - 1`` full input words of the first tile (into the MAC array's
    `acc`), of the second (into its `acc2`), then one word carrying both tiles' last input tile, one per half:
    the datapath copies the input's lower lanes into the upper half and the MAC array sums each half into its
    own accumulator. The back end requantizes and writes the pair, a whole output word, at once: ``2F + 1``
    issues per pair and tap instead of ``2F + 2``. An odd last tile is a pair of one (``F + 1`` per tap, its
    merged word first, the absent tile's accumulator started at 0 and its lanes requantized with their zero
    records): ``out_h*out_w*kh*kw*(oc_tiles*F + ceil(oc_tiles/2))`` run cycles (`quant.timing.tap_issues`).

    **RESADD** (a residual ADD fused into the CONV; a die with two activation read ports: demo, imx500): every
    write of the back end passes `ConvResidualAdd`, which reads the same word of the residual on the second read
    port and writes the ADD of the two instead, `quant.timing.resadd_latency` cycles later (12; one word per
    cycle, so only the run's end moves). The conv reads its input on the first port meanwhile: the two tensors
    must lie in disjoint banks, which the engine checks at the end of the setup (refused there: ``2 +
    setup_cycles``).

    **POOL2** (a MAX_POOL_2D of 2x2 stride 2 fused into a stride-2 DWCONV over the same input; an engine with the
    depthwise line walk): `ConvPool2` takes each line issue's kernel rows 0 and 1 (input rows 2y and 2y+1) from
    the datapath, maxes them lane by lane and pairs of columns, clamps, and writes the pool's words at
    ``in2_addr`` in cycles in which the back end writes nothing: no cycle more than the DWCONV alone, and the
    MAXPOOL's own reads of the input (one word a cycle, its whole input) are gone.

    **Errors** (`error` with `done`, one cycle after `start`, nothing written): an opcode other than CONV and
    DWCONV; DWCONV with a flag other than POOL2, or POOL2 where its line walk cannot run it; PAIR on another array
    shape, with PACKED or FCSCALE or over ``cols / 2`` channels in the input's last tile; RESADD on a die with one
    read port, with PACKED or FCSCALE, a residual not of the output's shape and tiles, an ADD shift outside
    -31..31 (and, after the setup, a residual in a bank the input spans); more output channels than the parameter
    buffer holds; a PACKED K above ``im2col_words`` words (default: 5x5 RGB); a zero loop bound.

    No back-pressure: the engine owns the SRAM ports from `start` to `done` and every stage advances every
    cycle; the only internal waits are the PACKED feeder waiting for a gathered group and the DWCONV issue
    waiting for a drain or a channel tile's taps.
    """

    def __init__(self, config, im2col_words=None, im2col_pixels=None, dw_sets=None, dw_taps=None):
        self.config = config
        self.dims = ConvDims(config, im2col_words, im2col_pixels, dw_sets, dw_taps)
        self.rows, self.cols = config.array_rows, config.array_cols
        self.groups = self.dims.NG
        self.param_depth = self.dims.param_depth
        self.im2col_words = self.dims.GM
        self.im2col_pixels = self.dims.G
        self.dw_sets = self.dims.NS
        self.dw_taps = self.dims.TM
        # Fixed pipeline depth from the issue of a tile's last tap to its write (S0 -> S10).
        self.latency = conv_latency(config)
        self.second = config.act_read_ports == 2        # RESADD reads the residual on the second read port
        super().__init__(engine_signature(config, second_read=self.second))

    def cycles(self, desc):
        """Exact cycles of `desc` on this engine, `start` to `done`: `quant.timing.conv_cycles`."""
        return conv_cycles(self.config, desc, self.im2col_pixels, self.dw_sets, self.dw_taps)

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        d = self.desc
        m.submodules.setup = setup = ConvSetup(dm)
        m.submodules.loader = loader = ConvParamLoader(self.config, dm)
        m.submodules.issue = issue = ConvDirectIssue(dm)
        m.submodules.walk = walk = ConvDepthwiseWalk(dm)
        m.submodules.im2col = gather = ConvIm2colGatherer(dm)
        m.submodules.pipe = pipe = ConvMACPipe(dm)
        m.submodules.backend = back = ConvBackEnd(self.config, dm)
        m.submodules.pbuf = pbuf = memory.Memory(shape=unsigned(dm.C * param_record_layout.size),
                                                 depth=dm.param_depth, init=[])
        pbuf_w = pbuf.write_port(granularity=param_record_layout.size)
        pbuf_r = pbuf.read_port()

        is_dw = Signal()
        is_packed = Signal()
        is_fc = Signal()                       # CONV with FCSCALE: the float64 rescale
        is_pair = Signal()                     # CONV with PAIR: two oc tiles per issue
        is_resadd = Signal()                   # CONV with RESADD: the fused residual ADD
        is_pool2 = Signal()                    # DWCONV with POOL2: the input's max pool written too
        wk_mode = Signal()                     # DWCONV on the column walk (kernel of at most dw_taps taps)
        init = Signal()                        # the run's first cycle is next: the run components load
        stop = Signal()                        # the last write is on the port

        # The zero points and clamps the datapath's lanes read, registered in the engine's domain (`desc` is stable
        # from `start`, the run begins after the setup): the lanes' logic then depends on nothing outside the
        # domain, so a simulation does not evaluate it while the engine's clock is stopped.
        run_in_zp, run_out_zp = Signal(signed(8)), Signal(signed(8))
        run_act_min, run_act_max = Signal(signed(8)), Signal(signed(8))
        m.d.sync += [run_in_zp.eq(d.in_zp), run_out_zp.eq(d.out_zp), run_act_min.eq(d.act_min),
                     run_act_max.eq(d.act_max)]

        # Data paths between the components.
        for c in (setup, issue, walk, gather):
            m.d.comb += c.desc.eq(d)
        for c in (issue, walk, gather):
            m.d.comb += [c.geom.eq(setup.geom), c.init.eq(init), c.stop.eq(stop)]
        m.d.comb += [
            setup.packed.eq(is_packed),
            loader.param_addr.eq(d.param_addr), loader.param_words.eq(d.param_words), loader.fc.eq(is_fc),
            loader.w_r.data.eq(self.w_r.data),
            pbuf_w.addr.eq(loader.pbuf.addr), pbuf_w.data.eq(loader.pbuf.data.as_value()),
            pbuf_w.en.eq(loader.pbuf.en),
            issue.enable.eq(~wk_mode), issue.dw.eq(is_dw), issue.packed.eq(is_packed), issue.full.eq(gather.full),
            walk.enable.eq(wk_mode), walk.w_data.eq(self.w_r.data),
            gather.enable.eq(is_packed), gather.act_data.eq(self.act_r.data), gather.feed.eq(issue.feed),
            gather.release.eq(issue.release),
            pipe.issue.eq(Mux(wk_mode, walk.issue.as_value(), issue.issue.as_value())), pipe.gword.eq(gather.word),
            pipe.act_data.eq(self.act_r.data), pipe.w_data.eq(self.w_r.data), pipe.taps.eq(walk.taps),
            pipe.in_zp.eq(run_in_zp), pipe.dw.eq(is_dw), pipe.packed.eq(is_packed), pipe.walk.eq(wk_mode),
            back.tile.eq(pipe.tile), back.acc.eq(pipe.acc), back.dw_sum.eq(pipe.dw_sum), back.dw.eq(is_dw),
            back.fc.eq(is_fc), back.out_zp.eq(run_out_zp), back.act_min.eq(run_act_min),
            back.act_max.eq(run_act_max),
            pbuf_r.addr.eq(back.pbuf.addr), pbuf_r.en.eq(1), back.pbuf.data.as_value().eq(pbuf_r.data),
            self.mac_active.eq(pipe.mac_active),
        ]
        # The back end's writes reach the SRAM through the fused ADD (passed through unless RESADD); POOL2's words
        # take the cycles in which there is none.
        last = back.last
        main_addr, main_data = Signal.like(self.act_w.addr), Signal.like(self.act_w.data)
        main_en = Signal.like(self.act_w.en)
        # The fused units run on gated clocks of their own, each while the engine runs a descriptor with its flag
        # (`is_resadd`, `is_pool2`: set at the start and kept until the next): a simulation does not evaluate their
        # lanes during other layers.
        gated = gating(self.config, platform)
        if gated and (self.second or dm.LINE):
            clock_gates(m, [("conv_resadd", is_resadd), ("conv_pool2", is_pool2)], latch="conv_icg_latch")
        if self.second:
            resadd = ConvResidualAdd(self.config, dm)
            m.submodules.resadd = resadd = DomainRenamer("conv_resadd")(resadd) if gated else resadd
            m.d.comb += [
                resadd.enable.eq(is_resadd), resadd.init.eq(init), resadd.desc.eq(d),
                resadd.w_in.addr.eq(back.act_w.addr),
                resadd.w_in.data.eq(back.act_w.data), resadd.w_in.en.eq(back.act_w.en), resadd.last_in.eq(back.last),
                self.act_r2.addr.eq(resadd.act_r2.addr), self.act_r2.en.eq(resadd.act_r2.en),
                resadd.act_r2.data.eq(self.act_r2.data),
                main_addr.eq(resadd.act_w.addr), main_data.eq(resadd.act_w.data), main_en.eq(resadd.act_w.en),
            ]
            last = resadd.last
        else:
            m.d.comb += [main_addr.eq(back.act_w.addr), main_data.eq(back.act_w.data), main_en.eq(back.act_w.en)]
        m.d.comb += [self.act_w.addr.eq(main_addr), self.act_w.data.eq(main_data), self.act_w.en.eq(main_en)]
        if dm.LINE:
            pool2 = ConvPool2(dm)
            m.submodules.pool2 = pool2 = DomainRenamer("conv_pool2")(pool2) if gated else pool2
            m.d.comb += [pool2.enable.eq(is_pool2), pool2.init.eq(init), pool2.desc.eq(d), pool2.pool.eq(pipe.pool)]
            with m.If(pool2.w_valid & is_pool2 & ~main_en.any()):
                m.d.comb += [self.act_w.addr.eq(pool2.w_addr), self.act_w.data.eq(pool2.w_data),
                             self.act_w.en.eq((1 << dm.C) - 1), pool2.taken.eq(1)]

        if dm.LINE:
            m.d.comb += pipe.line.eq(walk.line)
        if dm.PAIR:
            m.d.comb += [issue.pair.eq(is_pair), back.pair.eq(is_pair),
                         back.acc2.eq(pipe.acc2)]

        # Descriptors the engine refuses.
        op_conv = d.opcode == OPCODES["CONV"]
        op_dw = d.opcode == OPCODES["DWCONV"]
        packed_flag = (d.flags & PACKED) != 0
        pair_flag = (d.flags & PAIR) != 0
        resadd_flag = (d.flags & RESADD) != 0
        zpad_flag = (d.flags & ZPAD2) != 0             # with RESADD: the residual's tiles past in2_ct are in2_zp
        pair_last_c = Signal(signed(18))        # channels of the input's last tile (PAIR: at most cols / 2)
        m.d.comb += pair_last_c.eq(d.in_c - (d.in_ct - 1) * dm.C)
        tiles_used = Mux(op_dw, d.out_ct * dm.NG, d.oc_tiles)      # R-channel groups the layer's tiles use
        pool2_flag = (d.flags & POOL2) != 0
        # POOL2: the line walk in one pass per row (`quant.timing.dw_pool2_fits`, as the walk decides it).
        pool2_ok = Signal()
        if dm.LINE:
            m.d.comb += pool2_ok.eq(
                (d.kernel_h <= 3) & (d.kernel_h * d.kernel_w <= dm.TM) & (d.kernel_h >= 2) & (d.kernel_w >= 2)
                & (((d.out_w - 1) << 1) + d.kernel_w <= dm.LBD) & (d.kernel_w <= 2 * dm.NSL)
                & (d.stride_h == 2) & (d.stride_w == 2) & (d.pad_top == 0) & (d.pad_left == 0)
                & ((d.out_h << 1) <= d.in_h) & ((d.out_w << 1) <= d.in_w)
                & (d.add_min <= d.in_zp) & (d.in_zp <= d.add_max))
        bad = Signal()
        m.d.comb += bad.eq(
            ~(op_conv | op_dw)
            | (op_dw & ((d.flags & (0xFF ^ POOL2)) != 0))
            | (op_dw & pool2_flag & ~pool2_ok)
            | (tiles_used > dm.param_depth * dm.NG)
            | (op_conv & packed_flag & ((d.in_ct > dm.GM) | (d.in_ppw == 0)))
            | (d.kernel_h == 0) | (d.kernel_w == 0) | (d.stride_h == 0) | (d.stride_w == 0)
            | (d.out_h == 0) | (d.out_w == 0) | (d.in_ct == 0) | (d.out_ct == 0) | (d.param_words == 0)
            | (op_conv & (d.oc_tiles == 0))
            | (op_conv & pair_flag & (((d.flags & (PACKED | FCSCALE)) != 0) | (pair_last_c > dm.C // 2)
                                       | (not dm.PAIR)))
            | (op_conv & zpad_flag & ~resadd_flag)
            | (op_conv & resadd_flag & ((not self.second) | ((d.flags & (PACKED | FCSCALE)) != 0)
                                        | (d.in2_h != d.out_h) | (d.in2_w != d.out_w) | (d.in2_c > d.out_c)
                                        | Mux(zpad_flag, d.in2_ct > d.out_ct, d.in2_ct != d.out_ct)
                                        | (d.in_shift < -31) | (d.in_shift > 31)
                                        | (d.in2_shift < -31) | (d.in2_shift > 31) | (d.out_shift < -31)
                                        | (d.out_shift > 31)))
        )
        # RESADD: the banks the input and the residual span (registered: `desc` is stable from `start`; read at
        # the end of the setup) must not meet, each bank having one read port.
        resadd_bad = Signal()
        if self.second:
            m.d.comb += resadd_bad.eq(is_resadd & banks_meet(m, self.config, (
                (d.in_addr, d.in_h * d.in_w * d.in_ct), (d.in2_addr, d.in2_h * d.in2_w * d.in2_ct))))
        fail = Signal()

        # Control. States: an explicit register decoded with if/elif rather than m.FSM, so the Verilog has no
        # case statement with uncovered values (Verilator lint stays clean).
        IDLE, FAIL, SETUP, LOAD, RUN = range(5)
        state = Signal(range(5))
        with m.If(state == IDLE):
            with m.If(self.start):
                m.d.sync += [is_dw.eq(op_dw), is_packed.eq(op_conv & packed_flag),
                             is_fc.eq(op_conv & ((d.flags & FCSCALE) != 0)), is_pair.eq(op_conv & pair_flag),
                             is_resadd.eq(op_conv & resadd_flag), is_pool2.eq(op_dw & pool2_flag),
                             wk_mode.eq(op_dw & (d.kernel_h * d.kernel_w <= dm.TM))]
                with m.If(bad):
                    m.d.sync += state.eq(FAIL)
                with m.Else():
                    m.d.comb += setup.start.eq(1)
                    m.d.sync += state.eq(SETUP)
        with m.Elif(state == FAIL):
            m.d.comb += fail.eq(1)
            m.d.sync += state.eq(IDLE)
        with m.Elif(state == SETUP):
            with m.If(setup.done & resadd_bad):
                m.d.sync += state.eq(FAIL)
            with m.Elif(setup.done):
                m.d.comb += loader.start.eq(1)
                m.d.sync += state.eq(LOAD)
        with m.Elif(state == LOAD):
            m.d.comb += [loader.active.eq(1), self.w_r.addr.eq(loader.w_r.addr), self.w_r.en.eq(loader.w_r.en)]
            with m.If(loader.done):
                m.d.comb += init.eq(1)
                m.d.sync += state.eq(RUN)
        with m.Elif(state == RUN):
            with m.If(wk_mode):
                m.d.comb += [
                    self.w_r.en.eq(walk.w_r.en), self.w_r.addr.eq(walk.w_r.addr),
                    self.act_r.en.eq(walk.act_r.en), self.act_r.addr.eq(walk.act_r.addr),
                ]
            with m.Else():
                m.d.comb += [
                    self.w_r.en.eq(issue.w_r.en), self.w_r.addr.eq(issue.w_r.addr),
                    self.act_r.en.eq(Mux(is_packed, gather.act_r.en, issue.act_r.en)),
                    self.act_r.addr.eq(Mux(is_packed, gather.act_r.addr, issue.act_r.addr)),
                ]
            with m.If(last):
                m.d.comb += stop.eq(1)
                m.d.sync += state.eq(IDLE)
        m.d.comb += [
            self.done.eq(fail | last),
            self.error.eq(fail),
            self.busy.eq(state != IDLE),
        ]
        return m
