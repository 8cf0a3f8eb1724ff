"""Hardware configuration of the stackcam die: one frozen dataclass with checks and named presets."""

from dataclasses import dataclass, field, replace

from stackcam.errors import StackcamError
from stackcam.quant.program import DESCRIPTOR_BYTES

__all__ = ["DieConfig", "ConfigError", "PRESETS", "preset"]


class ConfigError(StackcamError, ValueError):
    """An invalid hardware configuration; the message names the offending value."""


@dataclass(frozen=True)
class DieConfig:
    """One hardware configuration of the die.

    Every hardware constant lives here; the toolchain (`quant/`) and the simulation (`sim/`) read it from this
    object and never repeat it.
    """

    name: str = "custom"
    # Pixel die readout: RAW10 Bayer RGGB, raster order, `pixels_per_clock` pixels per beat.
    frame_width: int = 96
    frame_height: int = 72
    pixels_per_clock: int = 2
    frame_rate: float = 30.0            # sensor frames per second, for bandwidth accounting
    # Network input tensor produced by the ISP front end (int8 HWC, 3 channels).
    input_width: int = 16
    input_height: int = 16
    isp_shift: int = 20                 # fixed-point shift of the ISP's normalize/quantize multiply
    # NPU: MAC array of `array_rows` output channels x `array_cols` reduction lanes, int8 x int8 -> int32.
    array_rows: int = 4
    array_cols: int = 4
    # On-die SRAM shared by weights and activations: `weight_banks` of the banks hold the layer program,
    # per-channel parameters and weights (words of array_rows*array_cols bytes), the others hold activation
    # tensors (words of array_cols bytes, one channel vector).
    sram_banks: int = 4
    sram_bank_bytes: int = 16 * 1024
    weight_banks: int = 2
    # Read ports of the activation SRAM: 1, or 2 (each bank is a one-read-port macro; the second port is a second
    # bank-select crossbar, so two reads in one cycle must be in different banks). With 2 an ADD whose inputs lie
    # in disjoint banks reads both in one cycle (program flag DUAL2) and the vector engine has a second input
    # rescaler per lane for it.
    act_read_ports: int = 1
    # NPU: largest channel count of a layer (sizes the per-channel parameter buffer).
    max_channels: int = 1024
    # NPU: output pixels the im2col gatherer of a pixel-packed (RGB stem) convolution fills per pass; more is
    # faster on the stem (3x3 s2 RGB: about 3.4 cycles per output pixel at 1, 1.3 at 4) and costs logic (on an
    # ECP5, roughly 8.8 k LUT4 per pixel at 16 lanes).
    im2col_pixels: int = 4
    # NPU: bytes of each im2col pixel buffer (the largest PACKED kernel: 5x5 RGB, BlazeFace's stem).
    im2col_bytes: int = 5 * 5 * 3
    # NPU depthwise walk: accumulator sets (MAC-array rows used as open outputs) and taps held in registers.
    dw_sets: int = 3
    dw_taps: int = 9
    # NPU: per-descriptor cycle counters kept (a longer program runs; later descriptors are not counted).
    max_descriptors: int = 512
    # Model loader port: ROM image bytes per beat.
    rom_beat_bytes: int = 16
    # CSI-2 output line buffer: the longest output-tensor row (w * c bytes).
    max_output_line_bytes: int = 4096
    # CSI-2 transmitter.
    csi2_lanes: int = 1
    csi2_blanking: int = 0              # minimum idle cycles between CSI-2 packets (line blanking)
    # Nominal clock of the die, for converting cycles to time.
    clock_mhz: float = 100.0
    # Arithmetic pipelines for an FPGA's clock: the requantizers in 9 stages instead of 5, the MAC array's row
    # sums registered (3 cycles instead of 2), ADD's input rescaler in 8 stages instead of 4; one carry chain
    # or one multiplier deep each. Same results, more cycles per descriptor (`quant.timing` counts them).
    deep_pipeline: bool = False
    # Clock gating, as an ASIC does it (an ICG cell per gated domain): the NPU's engines get the clock only while
    # a program runs, its per-bank activity counters only in cycles with SRAM port traffic, its SRAMs' read data
    # registers only in cycles with a read, the model loader only while it loads. Same cycles and
    # results; fewer flip-flops toggle (and a simulation of the Verilog skips the stopped logic). In an ASIC flow's
    # Verilog only (`rtl.clockgate.gating`): not in amaranth.sim (no glitch-free derived clock there) nor in an FPGA
    # build (clocks belong on its clock network, not in logic); off in the fpga preset.
    clock_gating: bool = True
    notes: str = field(default="", compare=False)

    def __post_init__(self):
        def need(cond, what):
            if not cond:
                raise ConfigError(f"config {self.name!r}: {what}")

        for attr in ("frame_width", "frame_height", "input_width", "input_height", "array_rows",
                     "array_cols", "sram_banks", "sram_bank_bytes", "im2col_bytes", "dw_sets", "dw_taps",
                     "max_descriptors", "max_output_line_bytes"):
            value = getattr(self, attr)
            need(isinstance(value, int) and value > 0, f"{attr} must be a positive integer, got {value!r}")
        need(self.pixels_per_clock in (1, 2, 4),
             f"pixels_per_clock must be 1, 2 or 4, got {self.pixels_per_clock!r}")
        need(self.csi2_lanes in (1, 2, 4), f"csi2_lanes must be 1, 2 or 4, got {self.csi2_lanes!r}")
        need(isinstance(self.csi2_blanking, int) and 0 <= self.csi2_blanking < 1 << 16,
             f"csi2_blanking must be an integer in 0..65535, got {self.csi2_blanking!r}")
        need(self.frame_width % 2 == 0 and self.frame_height % 2 == 0,
             f"frame size must be even (whole RGGB quads), got {self.frame_width}x{self.frame_height}")
        need(self.frame_width % self.pixels_per_clock == 0,
             f"frame_width {self.frame_width} is not a multiple of pixels_per_clock {self.pixels_per_clock}")
        need(self.frame_width >= 2 * self.input_width and self.frame_height >= 2 * self.input_height,
             f"frame {self.frame_width}x{self.frame_height} is smaller than twice the input "
             f"{self.input_width}x{self.input_height} (one RGGB quad per input pixel at least)")
        k = min(self.frame_width // (2 * self.input_width), self.frame_height // (2 * self.input_height))
        need((2 * k) % self.pixels_per_clock == 0,
             f"pixels_per_clock {self.pixels_per_clock} must divide the bin width {2 * k}")
        need(k < 256, f"a bin of {k}x{k} RGGB quads is more than the ISP's 8-bit bin factor holds")
        need(self.array_cols >= 3, f"array_cols must be at least 3 (RGB input), got {self.array_cols}")
        need(isinstance(self.im2col_pixels, int) and 1 <= self.im2col_pixels <= 8,
             f"im2col_pixels must be an integer in 1..8, got {self.im2col_pixels!r}")
        need(isinstance(self.max_channels, int) and self.max_channels >= self.array_cols,
             f"max_channels must be an integer >= array_cols ({self.array_cols}), got {self.max_channels!r}")
        need(8 <= self.isp_shift <= 24, f"isp_shift must be in 8..24, got {self.isp_shift}")
        need(isinstance(self.deep_pipeline, bool), f"deep_pipeline must be True or False, got {self.deep_pipeline!r}")
        need(self.act_read_ports in (1, 2), f"act_read_ports must be 1 or 2, got {self.act_read_ports!r}")
        need(isinstance(self.clock_gating, bool), f"clock_gating must be True or False, got {self.clock_gating!r}")
        need(self.clock_mhz > 0, f"clock_mhz must be positive, got {self.clock_mhz!r}")
        need(self.frame_rate > 0, f"frame_rate must be positive, got {self.frame_rate!r}")
        need(self.sram_bank_bytes & (self.sram_bank_bytes - 1) == 0,
             f"sram_bank_bytes must be a power of two, got {self.sram_bank_bytes}")
        need(isinstance(self.weight_banks, int) and 0 < self.weight_banks < self.sram_banks,
             f"weight_banks must be in 1..sram_banks-1 ({self.sram_banks - 1}), got {self.weight_banks!r}")
        need(self.rom_beat_bytes in (1, 2, 4, 8, 16),
             f"rom_beat_bytes must be 1, 2, 4, 8 or 16 (a beat inside one 16-byte aligned block), got "
             f"{self.rom_beat_bytes!r}")
        need(self.max_output_line_bytes < 1 << 16,
             f"max_output_line_bytes must be below 65536 (a CSI-2 word count), got {self.max_output_line_bytes}")
        need(self.frame_width % 4 == 0,
             f"frame_width {self.frame_width} must be a multiple of 4 (CSI-2 RAW10 image lines pack 4 pixels in 5 "
             f"bytes)")
        for what, n in (("a RAW10 line", self.frame_width * 5 // 4), ("an input tensor row", self.input_width * 3)):
            need(n < 1 << 16, f"{what} of {n} bytes exceeds a CSI-2 word count (65535)")
        need(self.array_cols & (self.array_cols - 1) == 0,
             f"array_cols must be a power of two (the vector engine's lanes), got {self.array_cols}")
        need(self.array_cols % self.array_rows == 0,
             f"the NPU needs array_cols ({self.array_cols}) to be a multiple of array_rows ({self.array_rows}): an "
             f"output-channel tile fills whole lanes of one activation word")
        wb = self.array_rows * self.array_cols
        need(wb % DESCRIPTOR_BYTES == 0 or DESCRIPTOR_BYTES % wb == 0,
             f"a weight word of {wb} bytes must divide or be a multiple of a descriptor ({DESCRIPTOR_BYTES} bytes)")
        need(self.sram_bank_bytes % (self.array_rows * self.array_cols) == 0,
             f"sram_bank_bytes {self.sram_bank_bytes} is not a whole number of weight words "
             f"({self.array_rows * self.array_cols} bytes)")

    # ISP geometry: a centred crop of whole bins; each input pixel is the average of a
    # (2*bin_factor) x (2*bin_factor) block of Bayer pixels (bin_factor^2 RGGB quads). Computed in one place,
    # quant.isp.IspGeometry.for_input (the largest bin that fits, crop aligned to a beat and a quad).
    @property
    def isp_geometry(self):
        from stackcam.quant.isp import IspGeometry
        return IspGeometry.for_input(self, self.input_width, self.input_height)

    @property
    def bin_factor(self):
        return self.isp_geometry.bin_factor

    @property
    def crop_width(self):
        return self.isp_geometry.crop_width

    @property
    def crop_height(self):
        return self.isp_geometry.crop_height

    @property
    def crop_x(self):
        return self.isp_geometry.crop_x

    @property
    def crop_y(self):
        return self.isp_geometry.crop_y

    @property
    def macs_per_cycle(self):
        return self.array_rows * self.array_cols

    @property
    def sram_bytes(self):
        return self.sram_banks * self.sram_bank_bytes

    @property
    def act_words(self):
        """Words of the activation SRAM (array_cols bytes each)."""
        return self.act_banks * self.sram_bank_bytes // self.array_cols

    @property
    def weight_words(self):
        """Words of the weight SRAM (array_rows * array_cols bytes each)."""
        return self.weight_banks * self.sram_bank_bytes // self.weight_word_bytes

    @property
    def act_banks(self):
        return self.sram_banks - self.weight_banks

    @property
    def weight_word_bytes(self):
        """Bytes of one weight-SRAM word: one rows x cols int8 block of the MAC array."""
        return self.array_rows * self.array_cols

    @property
    def act_word_bytes(self):
        """Bytes of one activation-SRAM word: one pixel's vector of array_cols channels."""
        return self.array_cols

    @property
    def raw_frame_bytes(self):
        """Bytes of one full frame as RAW10 (4 pixels in 5 bytes)."""
        return self.frame_width * self.frame_height * 10 // 8

    @property
    def act_bank_words(self):
        """Activation words per SRAM bank (a power of two): word address ``a`` is in bank ``a // act_bank_words``."""
        return self.sram_bank_bytes // self.array_cols

    def cycles_to_ms(self, cycles):
        return cycles / (self.clock_mhz * 1e3)

    def with_(self, **changes):
        return replace(self, **changes)

    def summary(self):
        return (f"{self.name}: frame {self.frame_width}x{self.frame_height} RAW10 @ {self.pixels_per_clock} px/clk, "
                f"input {self.input_width}x{self.input_height}x3, MAC array {self.array_rows}x{self.array_cols}, "
                f"SRAM {self.sram_banks}x{self.sram_bank_bytes // 1024} KiB ({self.weight_banks} for weights"
                f"{', activations with 2 read ports' if self.act_read_ports == 2 else ''}), "
                f"CSI-2 {self.csi2_lanes} lane(s), "
                f"{self.clock_mhz:g} MHz" + (", deep arithmetic pipelines" if self.deep_pipeline else ""))


PRESETS = {
    # Fast CI: a small frame, binning by 2, a 4x4 array; 1 MiB of SRAM so that BlazeFace and the 2-class
    # MobileNet V1 0.25 96 person detector run on it (through the tensor port: the frame is too small for them).
    "tiny": DieConfig(
        name="tiny", frame_width=96, frame_height=72, pixels_per_clock=2, input_width=16, input_height=16,
        array_rows=4, array_cols=4, sram_banks=16, sram_bank_bytes=64 * 1024, weight_banks=8, csi2_lanes=1,
        clock_mhz=100.0,
        notes="fast CI configuration"),
    # Sized for a ULX3S-85F (LFE5U-85F: 83,640 LUTs, 208 DP16KD block RAMs, 156 MULT18X18D) and measured there
    # (`stackcam build ulx3s`, README: FPGA board): 4x4 MACs, one im2col pixel per gatherer pass and at most 256
    # channels (the parameter buffer fits distributed RAM) leave the router headroom (8x8 needed 89% of the LUTs
    # and, with the FULLY_CONNECTED requantizer, 126% of the multipliers); the deep arithmetic pipelines for
    # the 50 MHz clock.
    "fpga": DieConfig(
        name="fpga", frame_width=640, frame_height=480, pixels_per_clock=2, input_width=128, input_height=128,
        array_rows=4, array_cols=4, sram_banks=21, sram_bank_bytes=16 * 1024, weight_banks=16,
        max_channels=256, im2col_pixels=1, rom_beat_bytes=1,
        csi2_lanes=2, clock_mhz=50.0, deep_pipeline=True, clock_gating=False,
        notes="ULX3S-85F: 16 MACs, 336 KiB SRAM in block RAM (256 KiB for weights: the 2-class "
              "MobileNet V1 0.25 96 person detector fits; BlazeFace needs 512,896 B, more than the device's "
              "425,984 B of block RAM); deep arithmetic pipelines"),
    # The main job's die: BlazeFace (128x128 input) on an XGA readout through the whole die, fast enough to
    # simulate in a minute or two. The ISP bins 6x6 Bayer pixels per input pixel over a centred 768x768 crop.
    "demo": DieConfig(
        name="demo", frame_width=1024, frame_height=768, pixels_per_clock=2, input_width=128, input_height=128,
        array_rows=8, array_cols=16, sram_banks=12, sram_bank_bytes=64 * 1024, weight_banks=5,
        act_read_ports=2, csi2_lanes=2, clock_mhz=200.0,
        notes="main job: 128 MACs, 768 KiB SRAM (320 KiB for weights: BlazeFace and MobileNet V1 0.25 96 fit), "
              "XGA readout, 200 MHz nominal"),
    # The reference ASIC, IMX500 class: 12.3 MP readout, 2048 MACs, 8 MiB SRAM.
    "imx500": DieConfig(
        name="imx500", frame_width=4056, frame_height=3040, pixels_per_clock=4, input_width=224,
        input_height=224, array_rows=32, array_cols=64, sram_banks=64, sram_bank_bytes=128 * 1024,
        weight_banks=44, act_read_ports=2, csi2_lanes=4, clock_mhz=200.0,
        notes="IMX500 class: 2048 MACs, 8 MiB SRAM, 200 MHz nominal"),
}


def preset(name):
    """Return the named preset, or raise ConfigError listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown configuration {name!r}; presets are: {', '.join(PRESETS)}") from None
