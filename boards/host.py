"""Host side of the board: a model, then a photo (or a tensor, or test-pattern frames) over a serial port; the
die's CSI-2 output comes back and is decoded. The same client talks to the simulated board (the board top in
Verilator behind a socket), which is how the tests check it.

    stackcam host --port /dev/ttyUSB0 --config fpga --model zoo:mobilenet_v1_0.25_96_2 --image photo.png
    stackcam host --sim --config fpga ...        # the same against the board top in Verilator

The byte protocol is described in `boards.uart`. A transport is anything with `write(bytes)` and `read(n)`
(returning b"" after a short timeout): a pyserial port (`serial.serial_for_url`, which also takes
`socket://host:port`), or `SocketTransport`.
"""

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from stackcam.errors import StackcamError
from stackcam.rtl.regs import MODES, REGISTER_BY_NAME

from .uart import (
    BOARD_ID,
    BOARD_REGISTERS,
    CMD_FRAME,
    CMD_PATTERN,
    CMD_READ,
    CMD_ROM,
    CMD_TENSOR,
    CMD_WRITE,
    TAG_CREDIT,
    TAG_CSI2,
    TAG_ERROR,
    TAG_READ,
)

__all__ = ["BoardClient", "BoardError", "SocketTransport", "SimulatedBoard", "board_harness_verilog",
           "run_frame"]

TB_TOP = "tb_board"
PERIOD_NS = 10
_CHUNK = 64                      # bytes per host->board chunk of the simulated serial line


class BoardError(StackcamError, RuntimeError):
    """The board answered something the protocol does not allow, refused the model, or did not answer in time."""


class SocketTransport:
    """A connected socket as a serial transport: `read(n)` returns what arrived within `timeout` seconds."""

    def __init__(self, sock, timeout=0.05):
        self.sock = sock
        self.sock.settimeout(timeout)

    def write(self, data):
        self.sock.sendall(data)

    def read(self, n):
        try:
            return self.sock.recv(n)
        except (socket.timeout, BlockingIOError):
            return b""

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class BoardClient:
    """The protocol's host end over a transport, with credit flow control (never more bytes in flight than the
    board's receive FIFO holds, less one credit: a credit may complete a count a previous session began).

    CSI-2 packets the board sends are collected in `packets` (bytes each, as `sim.csi2` decodes them); every
    method keeps reading them while it waits for its own answer."""

    def __init__(self, transport, timeout=30.0):
        self.t = transport
        self.timeout = timeout
        self._rx = bytearray()
        self.packets = []
        self.replies = []
        self.errors = []
        self.sent = 0
        self.credits = 0
        self.credit_bytes = 1 << 30      # unknown until info(); the first commands fit any FIFO
        self.window = 16
        self.board = None

    # ---- receiving ----
    def _parse(self):
        from stackcam.sim.csi2 import ecc_correct
        rx = self._rx
        while rx:
            tag = rx[0]
            if tag == TAG_CREDIT:
                self.credits += 1
                del rx[:1]
            elif tag == TAG_READ:
                if len(rx) < 5:
                    return
                self.replies.append(int.from_bytes(rx[1:5], "little"))
                del rx[:5]
            elif tag == TAG_ERROR:
                if len(rx) < 2:
                    return
                self.errors.append(rx[1])
                del rx[:2]
            elif tag == TAG_CSI2:
                if len(rx) < 5:
                    return
                header, status = ecc_correct(rx[1] | rx[2] << 8 | rx[3] << 16, rx[4])
                if status == "error":
                    raise BoardError(f"CSI-2 packet header {bytes(rx[1:5]).hex()} has an uncorrectable ECC error")
                dt = header & 0x3F
                n = 4 if dt < 0x10 else 4 + (header >> 8) + 2
                if len(rx) < 1 + n:
                    return
                self.packets.append(bytes(rx[1:1 + n]))
                del rx[:1 + n]
            else:
                raise BoardError(f"unexpected byte {tag:#04x} from the board (not a message tag)")

    def _pump(self, until, what, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not until():
            data = self.t.read(65536)
            if data:
                self._rx += data
                self._parse()
                deadline = max(deadline, time.monotonic() + 2.0)
            elif time.monotonic() > deadline:
                raise BoardError(f"no answer from the board while waiting for {what}")

    # ---- sending ----
    def _room(self):
        return self.window - (self.sent - self.credits * self.credit_bytes)

    def _send(self, data):
        data = bytes(data)
        i = 0
        while i < len(data):
            room = self._room()
            if room <= 0:
                self._pump(lambda: self._room() > 0, "receive credits")
                continue
            n = min(room, len(data) - i, 4096)
            self.t.write(data[i:i + n])
            self.sent += n
            i += n

    # ---- commands ----
    def read_reg(self, addr):
        """A die register (or a board register, addr >= 0xE0) by address or name."""
        addr = self._addr(addr)
        n = len(self.replies)
        self._send(bytes([CMD_READ, addr]))
        self._pump(lambda: len(self.replies) > n, f"the value of register {addr:#04x}")
        return self.replies[n]

    def write_reg(self, addr, value):
        self._send(bytes([CMD_WRITE, self._addr(addr)]) + (int(value) & 0xFFFFFFFF).to_bytes(4, "little"))

    @staticmethod
    def _addr(addr):
        if isinstance(addr, str):
            return BOARD_REGISTERS[addr] if addr in BOARD_REGISTERS else REGISTER_BY_NAME[addr].addr
        return int(addr)

    def info(self):
        """The board's identity and geometry; also sets up flow control from its FIFO depth."""
        board_id = self.read_reg("board_id")
        if board_id != BOARD_ID:
            raise BoardError(f"board id {board_id:#010x}, expected {BOARD_ID:#010x}: not a stackcam board")
        frame, link = self.read_reg("board_frame"), self.read_reg("board_link")
        depth = link >> 16
        self.board = {"frame_width": frame & 0xFFFF, "frame_height": frame >> 16, "pixels_per_clock": link & 0xFF,
                      "csi2_lanes": (link >> 8) & 0xFF, "fifo_depth": depth}
        self.credit_bytes = depth // 4
        self.window = depth - self.credit_bytes
        return self.board

    def load_rom(self, rom):
        """Stream a weight ROM image into the model loader and wait for its verdict; returns npu_status.
        Raises BoardError when the loader refuses the image."""
        self._send(bytes([CMD_ROM]) + len(rom).to_bytes(4, "little") + bytes(rom))
        deadline = time.monotonic() + self.timeout
        while True:
            status = self.read_reg("npu_status")
            if not status >> 8 & 1:                   # loader idle
                break
            if time.monotonic() > deadline:
                raise BoardError("the model loader is still busy")
        if not status & 1:
            raise BoardError(f"the board refused the ROM image (npu_status {status:#06x}: loader error "
                             f"{(status >> 4) & 0xF})")
        return status

    def send_frame(self, raw):
        """One RAW10 frame (uint16 [H, W], the board's frame size) into the pixel port."""
        raw = np.asarray(raw)
        if self.board and raw.shape != (self.board["frame_height"], self.board["frame_width"]):
            raise BoardError(f"frame {raw.shape[1]}x{raw.shape[0]} but the board takes "
                             f"{self.board['frame_width']}x{self.board['frame_height']}")
        self._send(bytes([CMD_FRAME]) + raw.astype("<u2").tobytes())

    def send_tensor(self, x):
        """An int8 HWC tensor (3 channels) into the tensor port."""
        flat = np.asarray(x, np.int8).reshape(-1, 3)
        self._send(bytes([CMD_TENSOR]) + len(flat).to_bytes(4, "little") + flat.tobytes())

    def send_pattern(self, frames, kind=0):
        """`frames` test-pattern frames (boards.pattern: kind 0 colour bars, 1 ramp) into the pixel port."""
        self._send(bytes([CMD_PATTERN, frames, kind]))

    def wait_frame_ends(self, count, vc, timeout=None):
        """Read until `count` FE packets on virtual channel `vc` have arrived (counting from the start)."""
        fe = vc << 6 | 0x01
        self._pump(lambda: sum(1 for p in self.packets if p[0] == fe) >= count, f"{count} frame end(s) on VC {vc}",
                   timeout)


def run_frame(client, config, rom=None, io=None, raw=None, tensor=None, mode="metadata", input_range=(-1.0, 1.0),
              pattern=None, timeout=None):
    """One frame through the board: load `rom` (if given), set the registers for the model (`io`, from the ROM's
    model I/O section) and the mode, send the RAW frame, the tensor or `pattern` = (frames, kind), and decode
    what came back. Returns the `sim.dierun.FrameResult` list of the frames sent."""
    from stackcam.sim.csi2 import CSI2Decoder
    from stackcam.sim.dierun import decode_frames, model_registers

    if client.board is None:
        client.info()
    b = client.board
    want = (config.frame_width, config.frame_height, config.pixels_per_clock, config.csi2_lanes)
    got = (b["frame_width"], b["frame_height"], b["pixels_per_clock"], b["csi2_lanes"])
    if want != got:
        raise BoardError(f"the board is built for frame {got[0]}x{got[1]}, {got[2]} px/clk, {got[3]} lanes; config "
                         f"{config.name!r} has {want[0]}x{want[1]}, {want[2]} px/clk, {want[3]} lanes")
    if rom is not None:
        client.load_rom(rom)
    use_tensor = tensor is not None
    regs = {"mode": MODES[mode], "input_select": int(use_tensor)}
    if io is not None:
        regs.update(model_registers(config, io, input_range, isp=not use_tensor)[0])
    for name, value in regs.items():
        client.write_reg(name, value)
    vc_map, dt_output = client.read_reg("vc_map"), client.read_reg("dt_output")
    vc_output = (vc_map >> 2) & 3
    fe = vc_output << 6 | 0x01
    ends_before = sum(1 for p in client.packets if p[0] == fe)
    start = len(client.packets)
    if use_tensor:
        client.send_tensor(tensor)
        frames = 1
    elif pattern is not None:
        frames = pattern[0]
        client.send_pattern(*pattern)
    else:
        client.send_frame(raw)
        frames = 1
    client.wait_frame_ends(ends_before + frames, vc_output, timeout)
    dec = CSI2Decoder()
    dec.feed(b"".join(client.packets[start:]))
    dec.finish()
    if dec.error_count:
        raise BoardError(f"the CSI-2 stream from the board has errors: {dec.errors[:3]}")
    return decode_frames(config, dec, [io] * frames, dt_output, vc_output)


# ---- the simulated board ----------------------------------------------------------------------------------

_TB = """\
// The host's end of the serial line for the simulated board: cocotb loads up to 64 bytes at a time into
// h2b_data (h2b_len of them) and flips h2b_seq; they go out on `rx` as 8N1 at D clocks per bit. Bytes the board
// sends on `tx` are received the same way into the 64-byte ring b2h_ring; b2h_count counts them.
module {top} (
    input clk, input rst,
    input [511:0] h2b_data, input [6:0] h2b_len, input h2b_seq, output h2b_busy,
    output [511:0] b2h_ring, output [31:0] b2h_count, output [31:0] cycle, output [7:0] leds
);
    localparam D = {divisor};
    reg [511:0] ring;
    reg [31:0] count;
    reg [31:0] cyc;
    assign b2h_ring = ring;
    assign b2h_count = count;
    assign cycle = cyc;
    reg seq_d;
    reg [511:0] sh;
    reg [6:0] left;
    reg [9:0] frame_bits;
    reg [3:0] nbits;
    reg [15:0] timer;
    wire rx_line = (nbits == 0) ? 1'b1 : frame_bits[0];
    wire tx_line;
    assign h2b_busy = (left != 0) || (nbits != 0) || (h2b_seq != seq_d);
    initial begin
        seq_d = 0; left = 0; nbits = 0; timer = 0; count = 0; cyc = 0;
    end
    always @(posedge clk) begin
        cyc <= cyc + 1;
        if (h2b_seq != seq_d) begin
            seq_d <= h2b_seq; sh <= h2b_data; left <= h2b_len;
        end else if (nbits == 0) begin
            if (left != 0) begin
                frame_bits <= {{1'b1, sh[7:0], 1'b0}}; sh <= sh >> 8; left <= left - 1; nbits <= 10; timer <= D - 1;
            end
        end else if (timer == 0) begin
            frame_bits <= {{1'b1, frame_bits[9:1]}}; nbits <= nbits - 1; timer <= D - 1;
        end else begin
            timer <= timer - 1;
        end
    end
    reg [1:0] rstate;
    reg [15:0] rtimer;
    reg [3:0] rbits;
    reg [7:0] rbyte;
    initial begin rstate = 0; rtimer = 0; rbits = 0; end
    always @(posedge clk) begin
        case (rstate)
            2'd0: if (!tx_line) begin rtimer <= D / 2 - 1; rstate <= 2'd1; end
            2'd1: if (rtimer == 0) begin rtimer <= D - 1; rbits <= 0; rstate <= tx_line ? 2'd0 : 2'd2; end
                  else rtimer <= rtimer - 1;
            2'd2: if (rtimer == 0) begin
                      rbyte <= {{tx_line, rbyte[7:1]}}; rbits <= rbits + 1; rtimer <= D - 1;
                      if (rbits == 7) rstate <= 2'd3;
                  end else rtimer <= rtimer - 1;
            2'd3: if (rtimer == 0) begin
                      ring[count[5:0] * 8 +: 8] <= rbyte; count <= count + 1; rstate <= 2'd0;
                  end else rtimer <= rtimer - 1;
        endcase
    end
    stackcam_board board (.clk(clk), .rst(rst), .uart_rx(rx_line), .uart_tx(tx_line), .leds(leds),
        .ppi_data(), .ppi_strobe(), .ppi_valid(), .ppi_first(), .ppi_last());
endmodule
"""


def board_harness_verilog(config, divisor=4, fifo_depth=256):
    """Verilog of the board top (`StackcamBoard`, UART at `divisor` clocks per bit) inside the serial-line
    testbench `tb_board`."""
    from stackcam.rtl.verilog import convert
    from stackcam.sim.harness import public_ports

    from .ulx3s import StackcamBoard
    board = convert(StackcamBoard(config, divisor=divisor, fifo_depth=fifo_depth), name="stackcam_board")
    # Only the testbench's ports are visible to cocotb (sim.verilator builds without --public-flat-rw).
    return board + "\n" + public_ports(_TB.format(top=TB_TOP, divisor=divisor))


class SimulatedBoard:
    """The board top in Verilator, reachable as a transport: `with SimulatedBoard(config) as transport: ...`.

    The Verilator model is built once per configuration (cached by `sim.verilator.CocotbBuild`); the cocotb
    coroutine `board_bridge` below relays bytes between a Unix socket and the simulated serial line, waking
    every `poll` cycles. The simulation ends when the transport is closed or after `max_cycles`; `cycles` then
    holds the simulated cycles."""

    def __init__(self, config, divisor=4, fifo_depth=256, poll=200, max_cycles=50_000_000, log=None):
        from stackcam.sim.verilator import CocotbBuild
        self.config = config
        self.poll, self.max_cycles = poll, max_cycles
        text = board_harness_verilog(config, divisor, fifo_depth)
        self.build = CocotbBuild(text, TB_TOP, name=f"board-{config.name}")
        if not self.build.is_built and log:
            log(f"building the Verilator model of the board ({config.name}; cached after the first time)...")
        self.build.build()
        self.cycles = None
        self.result = None

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="stackcam-board-")
        tmp = Path(self._tmp.name)
        path = str(tmp / "uart.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(1)
        self._server.settimeout(120)
        env = {"STACKCAM_BOARD_SOCKET": path, "STACKCAM_BOARD_OUT": str(tmp / "out.json"),
               "STACKCAM_BOARD_POLL": str(self.poll), "STACKCAM_BOARD_MAX_CYCLES": str(self.max_cycles),
               "COCOTB_RESOLVE_X": "ZEROS"}
        self._error = None

        def target():
            try:
                self.build.run("stackcam.boards.host", extra_env=env, test_dir=tmp, log_file=tmp / "sim.log")
            except Exception as e:           # reported by __exit__
                self._error = e

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()
        try:
            conn, _ = self._server.accept()
        except socket.timeout:
            log = (tmp / "sim.log").read_text()[-2000:] if (tmp / "sim.log").exists() else ""
            raise BoardError(f"the simulated board did not start: {self._error}\n{log}") from None
        self.transport = SocketTransport(conn)
        return self.transport

    def __exit__(self, *exc):
        self.transport.close()
        self._server.close()
        self._thread.join(timeout=120)
        out = Path(self._tmp.name) / "out.json"
        if out.exists():
            self.result = json.loads(out.read_text())
            self.cycles = self.result["cycles"]
        self._tmp.cleanup()
        return False


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge, Timer
except ImportError:             # the host script on a lab PC needs no simulator
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def board_bridge(dut):
        """Relays bytes between the socket named by STACKCAM_BOARD_SOCKET and the testbench's serial line."""
        poll = int(os.environ.get("STACKCAM_BOARD_POLL", "200"))
        max_cycles = int(os.environ.get("STACKCAM_BOARD_MAX_CYCLES", "50000000"))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(os.environ["STACKCAM_BOARD_SOCKET"])
        sock.setblocking(False)
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        dut.h2b_seq.value = 0
        dut.h2b_len.value = 0
        dut.h2b_data.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        seq, seen, pending, closed = 0, 0, bytearray(), False
        stats = {"to_board": 0, "from_board": 0}
        while int(dut.cycle.value) < max_cycles:
            await Timer(poll * PERIOD_NS, unit="ns")
            count = int(dut.b2h_count.value)
            if count != seen:
                if count - seen > 64:
                    raise AssertionError(f"board->host ring overrun ({count - seen} bytes in one poll)")
                ring = int(dut.b2h_ring.value).to_bytes(64, "little")
                data = bytes(ring[(seen + i) % 64] for i in range(count - seen))
                seen = count
                stats["from_board"] += len(data)
                if not closed:
                    sock.setblocking(True)
                    try:
                        sock.sendall(data)
                    except OSError:
                        closed = True
                    sock.setblocking(False)
            if not closed:
                try:
                    data = sock.recv(1 << 16)
                    if not data:
                        closed = True
                    pending += data
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
            if closed:
                break
            if pending and not int(dut.h2b_busy.value):
                chunk = bytes(pending[:_CHUNK])
                del pending[:_CHUNK]
                stats["to_board"] += len(chunk)
                dut.h2b_data.value = int.from_bytes(chunk, "little")
                dut.h2b_len.value = len(chunk)
                seq ^= 1
                dut.h2b_seq.value = seq
        sock.close()
        with open(os.environ["STACKCAM_BOARD_OUT"], "w") as f:
            json.dump({"cycles": int(dut.cycle.value), "leds": int(dut.leds.value), **stats}, f)
