"""The NPU: activation and weight SRAMs, the layer-program sequencer and its engines, per-descriptor counters."""

from amaranth import Cat, DomainRenamer, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import DESCRIPTOR_BYTES

from ..clockgate import clock_gates, gating
from .conv import NPUConvEngine
from .ports import OPCODES, act_read_signature, act_write_signature, addr_bits, descriptor_layout
from .vector import NPUVectorEngine

__all__ = ["NPU", "NPU_ERRORS", "SRAM_PARITY_ERROR", "BANK_CONFLICT_ERROR", "SRAM_IDS", "BANK_COUNTERS",
           "parity_lanes", "parity_word"]

# `error` codes (0 = none).
SRAM_PARITY_ERROR = 5
BANK_CONFLICT_ERROR = 6
NPU_ERRORS = {1: "invalid opcode", 2: "engine refused the descriptor", 3: "program ran past the weight SRAM",
              4: "no valid model loaded",
              SRAM_PARITY_ERROR: "SRAM parity error (a bit of the activation or weight SRAM flipped)",
              BANK_CONFLICT_ERROR: "activation SRAM bank conflict (both read ports in one bank in one cycle)"}
DESC_BYTES = DESCRIPTOR_BYTES
# Cycles an engine's gated clock keeps running after it hands the SRAM ports back (`config.clock_gating`).
ENGINE_HOLD = 15
# The SRAM read ports' gated clock domains.
ACT_READ, WEIGHT_READ = "npu_act_read", "npu_weight_read"
# The SRAMs' identities (Memory attribute `stackcam_sram`), for the SRAM-macro lowering and fault injection.
SRAM_IDS = {"act": 1, "weight": 2}
# The per-bank activity counters, by their `bank_sel` kind (bits [10:8]); each counts in its SRAM's banks
# (activation banks 0 .. act_banks-1, weight banks 0 .. weight_banks-1 of their own address spaces). The first
# three are the last run's, the others since reset.
BANK_COUNTERS = ("act_reads", "act_write_bytes", "weight_reads", "weight_writes", "input_write_bytes",
                 "output_reads")


def parity_lanes(value, lanes):
    """Stored form of an activation word of `lanes` bytes: each byte followed by its even-parity bit (9-bit
    lanes, so that a byte-lane write writes its parity bit with it)."""
    return Cat(*(Cat(value[8 * i: 8 * i + 8], value[8 * i: 8 * i + 8].xor()) for i in range(lanes)))


def _data_lanes(stored, lanes):
    """The bytes of a stored activation word (parity bits dropped) and a 1-bit "some lane's parity is wrong"."""
    data = Cat(*(stored[9 * i: 9 * i + 8] for i in range(lanes)))
    bad = Cat(*(stored[9 * i: 9 * i + 9].xor() for i in range(lanes))).any()
    return data, bad


def _byte_parities(value, nbytes):
    return Cat(*(value[8 * i: 8 * i + 8].xor() for i in range(nbytes)))


def parity_word(value, nbytes):
    """Stored form of a weight word of `nbytes` bytes (always written whole): the bytes, then one even-parity bit
    per byte (bit 8 * nbytes + i for byte i). Kept apart rather than interleaved, so a 2048-byte word is a slice
    and a short concatenation in the Verilog, not 4096 parts on one line (more than Verilator's preprocessor
    takes)."""
    return Cat(value, _byte_parities(value, nbytes))


def _data_word(stored, nbytes):
    """The bytes of a stored weight word and a 1-bit "some byte's parity is wrong"."""
    data = stored[:8 * nbytes]
    return data, (stored[8 * nbytes:] ^ _byte_parities(data, nbytes)).any()


class NPU(wiring.Component):
    """Runs the layer program in the weight SRAM on the activation SRAM, descriptor after descriptor.

    `start` (pulse) runs the program from descriptor 0 if `model_ok`; `busy` is high until `done` pulses (after
    END, or with a non-zero `error` code, see `NPU_ERRORS`). `error` is valid in the cycle `done` pulses (and
    holds until the next `start`), so a consumer that sees `done` sees the run's verdict with it; `error_desc`
    and `error_layer` name the descriptor that stopped the run (its index and its `layer` field) from the cycle
    after `done` (0 after a run without error). Each descriptor is fetched from the weight SRAM
    (128 bytes as a byte stream from word 0: one word read when the weight word holds whole descriptors, else
    128 / WB reads), decoded and handed to the MAC-array engine (CONV, DWCONV) or the vector engine (ADD, pools,
    COPY, LUT); the engine owns the SRAM ports until it is done. Between programs the SRAMs belong to the
    outside: `ext_act_w`/`ext_act_r` (the ISP's input writer and the CSI-2 output reader) and `load_w` (the
    model loader). While `busy`, external accesses are ignored. With `config.act_read_ports` 2 the activation SRAM
    has a second read port, the vector engine's (ADD and MUL with DUAL2); its banks have one read port each, so a
    cycle in which both ports read one bank stops the run with error 6 (`BANK_CONFLICT_ERROR`) at the end of the
    descriptor (the engine refuses such a descriptor at setup, so this is the die's check on its own logic).

    SRAM fault detection: every byte of both SRAMs is stored with an even-parity bit (activation words: 9 bits per
    byte lane; weight words: the bytes, then a parity bit per byte), written with the byte on every write, so a
    zero-initialised SRAM is consistent, and every word read, by the
    sequencer, the engines or the outside, is checked the cycle its data arrives. A bad word read during a run
    stops the run at the next descriptor boundary (at once if it is the descriptor itself) with error 5
    (`SRAM_PARITY_ERROR`): its outputs are never presented as a result. Cycle counts of fault-free runs are
    unchanged (the check is combinational on the read data). `sram_fault` pulses the cycle after any bad read
    (also one by the output reader between runs); `sram_errors` counts them (saturating).

    Counters: `cycles` and `mac_cycles` of the last run (start to done; cycles the MAC array accumulated), and
    per descriptor (up to `config.max_descriptors`): reading `counter_sel` = i gives descriptor i's `counter_cycles`
    and `counter_macs` one cycle later (from two cycles after its engine's `done`: they are written the cycle after
    it); `descriptors` is how many ran.

    Activity counters (for the energy model, `sim.energy`), per descriptor as the cycle counters: words read
    from the activation SRAM (`counter_act_reads`, one word of `array_cols` bytes per read enable), bytes written
    to it (`counter_act_write_bytes`, the write's byte enables) and words read from the weight SRAM
    (`counter_weight_reads`) by its engine. They only observe the SRAM ports: no timing depends on them.

    Per-bank activity (`bank_sel`, `bank_counter`): a counter per bank of each SRAM, at its ports. Of the run
    (cleared at `start`, counted while `busy`, so the sequencer's descriptor fetches are in it): activation words
    read, activation bytes written (byte enables) and weight words read per bank; since reset, the traffic of
    the outside between runs: weight words the loader wrote, activation bytes the input writer wrote and
    activation words the output reader read, per bank. `bank_sel` [7:0] names the bank and [10:8] the counter
    (`BANK_COUNTERS`); `bank_counter` shows it one cycle later (0 for a bank the SRAM does not have or a kind
    past the list), with the ports' activity up to two cycles before (the counters see the ports a cycle late).
    The bank of a word address is ``addr // words_per_bank`` of its SRAM.

    Clock gating (`config.clock_gating`, `rtl.clockgate`): each engine's clock runs while it owns the SRAM ports
    (from the cycle it is started) and ENGINE_HOLD cycles after, the per-bank counters' in cycles with port
    traffic, each SRAM read port's in cycles with a read; nothing else changes.
    """

    def __init__(self, config):
        self.config = config
        wb = config.weight_word_bytes    # DieConfig checks that it divides or is a multiple of DESC_BYTES
        super().__init__({
            "start": In(1), "model_ok": In(1),
            "busy": Out(1), "done": Out(1), "error": Out(3), "error_desc": Out(16), "error_layer": Out(16),
            "ext_act_w": In(act_write_signature(config)),
            "ext_act_r": In(act_read_signature(config)),
            "load_w": In(wiring.Signature({"addr": Out(addr_bits(config.weight_words)),
                                           "data": Out(8 * wb), "en": Out(1)})),
            "cycles": Out(32), "mac_cycles": Out(32), "descriptors": Out(16),
            "counter_sel": In(16), "counter_cycles": Out(32), "counter_macs": Out(32),
            "counter_act_reads": Out(32), "counter_act_write_bytes": Out(32), "counter_weight_reads": Out(32),
            "sram_fault": Out(1), "sram_errors": Out(16),
            "bank_sel": In(11), "bank_counter": Out(32),
        })

    def _srams(self, m, gated):
        """The activation and weight SRAMs with a parity bit per byte, behind ports that carry plain bytes:
        (act_r, act_r2, act_w, w_r, w_w, w_bad_word, bad_now), act_r2 the activation SRAM's second read port
        (`config.act_read_ports` 2; else None); `sram_fault`/`sram_errors` counted here. With `gated` the
        read ports are in clock domains of their own (ACT_READ, WEIGHT_READ), for gates that run them in cycles
        with a read (their data registers change only then)."""
        cfg = self.config
        wb = cfg.weight_word_bytes
        cols = cfg.array_cols
        # Stored words: activation 9 bits per byte lane (the byte and its parity bit); weight the bytes and then
        # a parity bit per byte.
        m.submodules.act = act = memory.Memory(shape=9 * cols, depth=cfg.act_words, init=[],
                                               attrs={"stackcam_sram": "act"})
        m.submodules.wmem = wmem = memory.Memory(shape=9 * wb, depth=cfg.weight_words, init=[],
                                                 attrs={"stackcam_sram": "weight"})
        act_mem_r = act.read_port(domain=ACT_READ if gated else "sync")
        act_mem_r2 = act.read_port(domain=ACT_READ if gated else "sync") if cfg.act_read_ports == 2 else None
        act_mem_w = act.write_port(granularity=9)
        w_mem_r = wmem.read_port(domain=WEIGHT_READ if gated else "sync")
        w_mem_w = wmem.write_port()
        # The ports the rest of the NPU sees carry plain bytes; parity is added on write, checked on read.
        act_r = wiring.Signature({"addr": Out(len(act_mem_r.addr)), "en": Out(1), "data": In(8 * cols)}).create()
        act_w = wiring.Signature({"addr": Out(len(act_mem_w.addr)), "data": Out(8 * cols),
                                  "en": Out(cols)}).create()
        w_r = wiring.Signature({"addr": Out(len(w_mem_r.addr)), "en": Out(1), "data": In(8 * wb)}).create()
        w_w = wiring.Signature({"addr": Out(len(w_mem_w.addr)), "data": Out(8 * wb), "en": Out(1)}).create()
        act_bad_word = Signal()
        w_bad_word = Signal()
        act_data, act_bad_bits = _data_lanes(act_mem_r.data, cols)
        act_r2 = None
        if act_mem_r2 is not None:
            act_r2 = wiring.Signature({"addr": Out(len(act_mem_r.addr)), "en": Out(1),
                                       "data": In(8 * cols)}).create()
            act_data2, act_bad_bits2 = _data_lanes(act_mem_r2.data, cols)
            m.d.comb += [act_mem_r2.addr.eq(act_r2.addr), act_mem_r2.en.eq(act_r2.en), act_r2.data.eq(act_data2)]
        w_data, w_bad_bits = _data_word(w_mem_r.data, wb)
        m.d.comb += [
            act_mem_r.addr.eq(act_r.addr), act_mem_r.en.eq(act_r.en), act_r.data.eq(act_data),
            act_mem_w.addr.eq(act_w.addr), act_mem_w.data.eq(parity_lanes(act_w.data, cols)),
            act_mem_w.en.eq(act_w.en),
            w_mem_r.addr.eq(w_r.addr), w_mem_r.en.eq(w_r.en), w_r.data.eq(w_data),
            w_mem_w.addr.eq(w_w.addr), w_mem_w.data.eq(parity_word(w_w.data, wb)), w_mem_w.en.eq(w_w.en),
        ]
        # A read's data arrives the cycle after its `en`: check it then.
        act_read_d = Signal()
        w_read_d = Signal()
        m.d.sync += [act_read_d.eq(act_r.en), w_read_d.eq(w_r.en)]
        m.d.comb += [act_bad_word.eq(act_read_d & act_bad_bits), w_bad_word.eq(w_read_d & w_bad_bits)]
        if act_r2 is not None:
            act_read2_d = Signal()
            m.d.sync += act_read2_d.eq(act_r2.en)
            m.d.comb += act_bad_word.eq((act_read_d & act_bad_bits) | (act_read2_d & act_bad_bits2))
        bad_now = Signal()
        m.d.comb += bad_now.eq(act_bad_word | w_bad_word)
        m.d.sync += self.sram_fault.eq(bad_now)
        with m.If(bad_now & (self.sram_errors != 0xFFFF)):
            m.d.sync += self.sram_errors.eq(self.sram_errors + 1)
        return act_r, act_r2, act_w, w_r, w_w, w_bad_word, bad_now

    def _bank_counters(self, m, act_r, act_r2, act_w, w_r, w_w, clear, domain):
        """Per-bank activity counters at the SRAM ports (see the class docstring): one increment per port and
        cycle into the bank its address decodes to (both activation read ports into the activation reads);
        `clear` zeroes the run's counters. The counters are in clock
        domain `domain`; returns the enable of a clock gate for it: the cycles where one of them changes (a port
        was active, or `clear`)."""
        cfg = self.config
        act_wpb = cfg.sram_bank_bytes // cfg.array_cols
        w_wpb = cfg.sram_bank_bytes // cfg.weight_word_bytes
        wbytes = Signal(range(cfg.array_cols + 1))
        m.d.comb += wbytes.eq(sum(act_w.en[i] for i in range(cfg.array_cols)))

        # The counters see the ports one cycle late (registered address, increment, busy and clear): the ports'
        # decode logic then ends at these registers instead of running on into 32-bit adders (on an FPGA the
        # engines' address paths were the design's deepest through here). They are read long after.
        def late(value, name):
            reg = Signal.like(value, name=f"bank_{name}_q")
            m.d.sync += reg.eq(value)
            return reg

        busy, clear = late(self.busy, "busy"), late(clear, "clear")
        act_r_addr, act_r_en = late(act_r.addr, "act_r_addr"), late(act_r.en, "act_r_en")
        act_reads = [(act_r_addr, act_r_en)]
        if act_r2 is not None:
            act_reads.append((late(act_r2.addr, "act_r2_addr"), late(act_r2.en, "act_r2_en")))
        act_w_addr, wbytes = late(act_w.addr, "act_w_addr"), late(wbytes, "act_w_bytes")
        w_r_addr, w_r_en = late(w_r.addr, "w_r_addr"), late(w_r.en, "w_r_en")
        w_w_addr, w_w_en = late(w_w.addr, "w_w_addr"), late(w_w.en, "w_w_en")

        def hits(addr, wpb, banks):
            if wpb & (wpb - 1) == 0:
                shift = wpb.bit_length() - 1
                return [addr[shift:] == b for b in range(banks)]
            return [(addr >= b * wpb) & (addr < (b + 1) * wpb) for b in range(banks)]

        kinds = (  # ([(address, increment) of each port], words per bank, banks, the run's (cleared at `start`,
            #           counted while busy) or the outside's (counted while not busy, since reset)), in
            #           BANK_COUNTERS order
            (act_reads, act_wpb, cfg.act_banks, True),
            ([(act_w_addr, wbytes)], act_wpb, cfg.act_banks, True),
            ([(w_r_addr, w_r_en)], w_wpb, cfg.weight_banks, True),
            ([(w_w_addr, w_w_en)], w_wpb, cfg.weight_banks, False),
            ([(act_w_addr, wbytes)], act_wpb, cfg.act_banks, False),
            ([(act_r_addr, act_r_en)], act_wpb, cfg.act_banks, False),
        )
        sel_bank = self.bank_sel[:8]
        sel_kind = self.bank_sel[8:]
        all_counters = []
        for k, (ports, wpb, banks, run) in enumerate(kinds):
            counters = [Signal(32, name=f"bank_{BANK_COUNTERS[k]}_{b}") for b in range(banks)]
            all_counters.append(counters)
            port_hits = [(hits(addr, wpb, banks), inc) for addr, inc in ports]
            for b in range(banks):
                if len(port_hits) == 1:
                    (h, inc), = port_hits
                    hit = h[b]
                else:
                    hit = Cat(*(h[b] for h, _ in port_hits)).any()
                    inc = sum(Mux(h[b], n, 0) for h, n in port_hits)
                if run:
                    with m.If(clear):
                        m.d[domain] += counters[b].eq(0)
                    with m.Elif(busy & hit):
                        m.d[domain] += counters[b].eq(counters[b] + inc)
                else:
                    with m.If(~busy & hit):
                        m.d[domain] += counters[b].eq(counters[b] + inc)
        shown = Signal(32)
        with m.Switch(sel_kind):
            for k, counters in enumerate(all_counters):
                banks = len(counters)
                with m.Case(k):
                    with m.Switch(sel_bank):
                        for b in range(banks):
                            with m.Case(b):
                                m.d.comb += shown.eq(counters[b])
        m.d.sync += self.bank_counter.eq(shown)
        return clear | Cat(*(en for _, en in act_reads)).any() | (wbytes != 0) | w_r_en | w_w_en

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        wb = cfg.weight_word_bytes

        gated = gating(cfg, platform)
        act_r, act_r2, act_w, w_r, w_w, w_bad_word, bad_now = self._srams(m, gated)
        run_clear = Signal()         # a run starts: clear the run's per-bank counters
        bank_domain = "npu_bank_counters" if gated else "sync"
        bank_enable = self._bank_counters(m, act_r, act_r2, act_w, w_r, w_w, run_clear, bank_domain)
        act_read_any = act_r.en | act_r2.en if act_r2 is not None else act_r.en
        run_fault = Signal()         # a bad word was read since this run started (sticky)
        conv, vec = NPUConvEngine(cfg), NPUVectorEngine(cfg)
        owner = Signal(2)            # 0: sequencer/outside, 1: conv engine, 2: vector engine
        if gated:
            # Each engine holds still while it does not own the SRAM ports (the other engine's descriptors, the
            # readout of the next frame, the output read-out): its clock runs from the cycle it is started (the
            # sequencer names it the owner the cycle before) until ENGINE_HOLD cycles after it hands the ports
            # back, for its pipelines to drain. An engine reads `desc` only from its `start` on.
            gates = []
            for k, name in ((1, "npu_conv"), (2, "npu_vec")):
                hold = Signal(range(ENGINE_HOLD + 1), name=f"{name}_hold")
                with m.If(owner == k):
                    m.d.sync += hold.eq(ENGINE_HOLD)
                with m.Elif(hold != 0):
                    m.d.sync += hold.eq(hold - 1)
                gates.append((name, (owner == k) | (hold != 0)))
            clock_gates(m, [*gates, (bank_domain, bank_enable), (ACT_READ, act_read_any), (WEIGHT_READ, w_r.en)])
            conv, vec = DomainRenamer("npu_conv")(conv), DomainRenamer("npu_vec")(vec)
        m.submodules.conv = conv
        m.submodules.vec = vec

        # ---- the weight write port belongs to the loader ----
        m.d.comb += [w_w.addr.eq(self.load_w.addr), w_w.data.eq(self.load_w.data),
                     w_w.en.eq(self.load_w.en & ~self.busy)]

        desc = Signal(descriptor_layout())
        desc_bits = desc.as_value()
        pc = Signal(16)
        seq_w_addr = Signal.like(w_r.addr)
        seq_w_en = Signal()

        # ---- SRAM port ownership ----
        for e in (conv, vec):
            m.d.comb += [e.desc.eq(desc), e.act_r.data.eq(act_r.data), e.w_r.data.eq(w_r.data)]
        with m.Switch(owner):
            with m.Case(1):
                m.d.comb += [act_r.addr.eq(conv.act_r.addr), act_r.en.eq(conv.act_r.en),
                             act_w.addr.eq(conv.act_w.addr), act_w.data.eq(conv.act_w.data),
                             act_w.en.eq(conv.act_w.en), w_r.addr.eq(conv.w_r.addr), w_r.en.eq(conv.w_r.en)]
            with m.Case(2):
                m.d.comb += [act_r.addr.eq(vec.act_r.addr), act_r.en.eq(vec.act_r.en),
                             act_w.addr.eq(vec.act_w.addr), act_w.data.eq(vec.act_w.data),
                             act_w.en.eq(vec.act_w.en), w_r.addr.eq(vec.w_r.addr), w_r.en.eq(vec.w_r.en)]
            with m.Default():
                m.d.comb += [w_r.addr.eq(seq_w_addr), w_r.en.eq(seq_w_en)]
                with m.If(~self.busy):
                    m.d.comb += [act_r.addr.eq(self.ext_act_r.addr), act_r.en.eq(self.ext_act_r.en),
                                 act_w.addr.eq(self.ext_act_w.addr), act_w.data.eq(self.ext_act_w.data),
                                 act_w.en.eq(self.ext_act_w.en)]
        m.d.comb += self.ext_act_r.data.eq(act_r.data)
        # The second activation read port is the vector engine's (ADD and MUL with DUAL2) and the conv engine's (the
        # residual of a CONV with RESADD). Each bank has one read port: two reads of one bank in a cycle are a
        # conflict, which stops the run (BANK_CONFLICT_ERROR) instead of returning what a banked SRAM could not
        # have read. The engines refuse a descriptor whose two read streams share a bank, so only a fault of the
        # die's own logic gets here.
        conflict = Signal()
        if act_r2 is not None:
            m.d.comb += [vec.act_r2.data.eq(act_r2.data), conv.act_r2.data.eq(act_r2.data)]
            with m.If(owner == 1):
                m.d.comb += [act_r2.addr.eq(conv.act_r2.addr), act_r2.en.eq(conv.act_r2.en)]
            with m.Elif(owner == 2):
                m.d.comb += [act_r2.addr.eq(vec.act_r2.addr), act_r2.en.eq(vec.act_r2.en)]
            shift = (cfg.act_bank_words - 1).bit_length()
            m.d.comb += conflict.eq(act_r.en & act_r2.en & (act_r.addr[shift:] == act_r2.addr[shift:]))

        # ---- counters ----
        run_cycles = Signal(32)
        run_macs = Signal(32)
        d_cycles = Signal(32)
        d_macs = Signal(32)
        d_act_reads = Signal(32)
        d_act_wbytes = Signal(32)
        d_w_reads = Signal(32)
        act_wbytes_now = Signal(range(cfg.array_cols + 1))
        m.d.comb += act_wbytes_now.eq(sum(act_w.en[i] for i in range(cfg.array_cols)))
        mac_active = Signal()
        # The MAC array is the conv engine's; the vector engine's multipliers do not count for utilization.
        m.d.comb += mac_active.eq((owner == 1) & conv.mac_active)
        m.submodules.counters = counters = memory.Memory(shape=160, depth=cfg.max_descriptors, init=[])
        c_w = counters.write_port()
        c_r = counters.read_port()
        m.d.comb += [c_r.addr.eq(self.counter_sel), c_r.en.eq(1),
                     self.counter_cycles.eq(c_r.data[:32]), self.counter_macs.eq(c_r.data[32:64]),
                     self.counter_act_reads.eq(c_r.data[64:96]), self.counter_act_write_bytes.eq(c_r.data[96:128]),
                     self.counter_weight_reads.eq(c_r.data[128:160])]
        # The engines own the ports only while `owner` names them; the sequencer's own descriptor fetches are
        # not an engine's (sequencer_overhead's reads, counted by the model).
        engine_act_r = Signal(2)
        act_read_count = act_r.en + act_r2.en if act_r2 is not None else act_r.en
        engine_act_w = Signal(range(cfg.array_cols + 1))
        engine_w_r = Signal()
        m.d.comb += [engine_act_r.eq(Mux(owner != 0, act_read_count, 0)), engine_w_r.eq((owner != 0) & w_r.en),
                     engine_act_w.eq(Mux(owner != 0, act_wbytes_now, 0))]
        with m.If(self.busy):
            m.d.sync += [run_cycles.eq(run_cycles + 1), run_macs.eq(run_macs + mac_active),
                         d_cycles.eq(d_cycles + 1), d_macs.eq(d_macs + mac_active)]
        # The SRAM-port activity is counted one cycle late (registered enables: the engines' address and enable
        # logic ends at a register instead of running on into 32-bit adders), so a descriptor's counters are
        # written the cycle after its engine's `done` (`count_write`), when d_cycles and d_macs have taken the
        # done cycle's increments too and the SRAM counts only lack the registered last cycle's. The owner is
        # the sequencer in the cycle before DECODE clears them (FETCH), so no engine count is lost there.
        late_act_r, late_act_w, late_w_r = Signal(2), Signal.like(engine_act_w), Signal()
        m.d.sync += [late_act_r.eq(engine_act_r), late_act_w.eq(engine_act_w), late_w_r.eq(engine_w_r),
                     d_act_reads.eq(d_act_reads + late_act_r), d_act_wbytes.eq(d_act_wbytes + late_act_w),
                     d_w_reads.eq(d_w_reads + late_w_r)]
        count_write = Signal()
        count_addr = Signal.like(pc)
        m.d.sync += count_write.eq(0)
        m.d.comb += [c_w.addr.eq(count_addr),
                     c_w.data.eq(Cat(d_cycles, d_macs, (d_act_reads + late_act_r)[:32],
                                     (d_act_wbytes + late_act_w)[:32], (d_w_reads + late_w_r)[:32])),
                     c_w.en.eq(count_write)]

        # ---- sequencer ----
        words_per_desc = max(1, DESC_BYTES // wb)
        descs_per_word = max(1, wb // DESC_BYTES)
        fetch_idx = Signal(range(words_per_desc + 1))
        slot = Signal(range(descs_per_word))
        engine_done = Signal()
        engine_error = Signal()
        m.d.comb += [engine_done.eq(Mux(owner == 1, conv.done, vec.done)),
                     engine_error.eq(Mux(owner == 1, conv.error, vec.error))]

        # The run's error code is registered for later readers and driven combinationally in the cycle `done`
        # pulses, so that `done` and the verdict are always seen together.
        error_reg = Signal(3)
        error_now = Signal(3)
        m.d.comb += self.error.eq(Mux(self.done, error_now, error_reg))

        def finish(code, layer=None):
            m.d.sync += [error_reg.eq(code), self.cycles.eq(run_cycles + 1), self.mac_cycles.eq(run_macs),
                         self.descriptors.eq(pc)]
            if code:
                m.d.sync += [self.error_desc.eq(pc), self.error_layer.eq(desc.layer if layer is None else layer)]
            m.d.comb += [self.done.eq(1), error_now.eq(code)]
            m.next = "IDLE"

        with m.If(bad_now):
            m.d.sync += run_fault.eq(1)
        run_conflict = Signal()      # the two activation read ports met in one bank since this run started
        with m.If(conflict):
            m.d.sync += run_conflict.eq(1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    with m.If(self.model_ok):
                        m.d.comb += run_clear.eq(1)
                        m.d.sync += [pc.eq(0), run_cycles.eq(0), run_macs.eq(0), error_reg.eq(0),
                                     self.error_desc.eq(0), self.error_layer.eq(0), run_fault.eq(0),
                                     run_conflict.eq(0),
                                     fetch_idx.eq(0)]
                        m.next = "FETCH"
                    with m.Else():
                        m.d.sync += [error_reg.eq(4), self.error_desc.eq(0), self.error_layer.eq(0)]
                        m.next = "NO_MODEL"
            with m.State("NO_MODEL"):
                m.d.comb += [self.done.eq(1), error_now.eq(4)]
                m.next = "IDLE"
            with m.State("FETCH"):
                m.d.comb += self.busy.eq(1)
                # Byte address of the descriptor in the weight stream: pc * 128.
                if descs_per_word > 1:
                    m.d.comb += [seq_w_addr.eq(pc // descs_per_word), seq_w_en.eq(1)]
                    m.d.sync += slot.eq(pc % descs_per_word)
                    m.next = "FETCH_WAIT"
                else:
                    m.d.comb += [seq_w_addr.eq(pc * words_per_desc + fetch_idx), seq_w_en.eq(1)]
                    m.d.sync += fetch_idx.eq(fetch_idx + 1)
                    with m.If(pc * words_per_desc + fetch_idx >= cfg.weight_words):
                        finish(3)
                    with m.Else():
                        m.next = "FETCH_WAIT"
            with m.State("FETCH_WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(w_bad_word):
                    finish(SRAM_PARITY_ERROR, layer=0xFFFF)   # the descriptor itself is damaged: not decoded
                with m.Else():
                    if descs_per_word > 1:
                        slices = [w_r.data[DESC_BYTES * 8 * k: DESC_BYTES * 8 * (k + 1)]
                                  for k in range(descs_per_word)]
                        with m.Switch(slot):
                            for k in range(descs_per_word):
                                with m.Case(k):
                                    m.d.sync += desc_bits.eq(slices[k])
                        m.next = "DECODE"
                    else:
                        # Shift the words in: word 0 of the descriptor ends up in the lowest bits.
                        m.d.sync += desc_bits.eq(Cat(desc_bits[8 * wb:], w_r.data))
                        with m.If(fetch_idx == words_per_desc):
                            m.d.sync += fetch_idx.eq(0)
                            m.next = "DECODE"
                        with m.Else():
                            m.next = "FETCH"
            with m.State("DECODE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [d_cycles.eq(0), d_macs.eq(0), d_act_reads.eq(0), d_act_wbytes.eq(0), d_w_reads.eq(0)]
                with m.Switch(desc.opcode):
                    with m.Case(OPCODES["END"]):
                        finish(0)
                    with m.Case(OPCODES["CONV"], OPCODES["DWCONV"]):
                        m.d.sync += owner.eq(1)
                        m.next = "RUN"
                    with m.Case(OPCODES["ADD"], OPCODES["MAXPOOL"], OPCODES["AVGPOOL"], OPCODES["COPY"],
                                OPCODES["LUT"], OPCODES["MUL"], OPCODES["MEAN"], OPCODES["PRELU"],
                                OPCODES["RESIZE"], OPCODES["GATHER"]):
                        m.d.sync += owner.eq(2)
                        m.next = "RUN"
                    with m.Default():
                        finish(1)
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                m.d.comb += [conv.start.eq(owner == 1), vec.start.eq(owner == 2)]
                m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(engine_done):
                    m.d.sync += owner.eq(0)
                    m.d.sync += [count_write.eq(pc < cfg.max_descriptors), count_addr.eq(pc)]
                    with m.If(run_fault | bad_now):
                        finish(SRAM_PARITY_ERROR)
                    with m.Elif(run_conflict | conflict):
                        finish(BANK_CONFLICT_ERROR)
                    with m.Elif(engine_error):
                        finish(2)
                    with m.Else():
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"
        return m
