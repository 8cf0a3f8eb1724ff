"""Configuration presets and their checks."""

import re

import pytest

from stackcam.rtl.params import PRESETS, ConfigError, DieConfig, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_consistent(name):
    c = preset(name)
    assert c.name == name
    assert c.crop_x % max(2, c.pixels_per_clock) == 0 and c.crop_y % 2 == 0
    assert c.crop_x + c.crop_width <= c.frame_width and c.crop_y + c.crop_height <= c.frame_height
    assert c.crop_width == 2 * c.bin_factor * c.input_width


def test_preset_budgets():
    fpga, asic = preset("fpga"), preset("imx500")
    assert fpga.macs_per_cycle <= 156 and fpga.sram_bytes <= 400 * 1024
    assert asic.macs_per_cycle <= 2048 and asic.sram_bytes <= 8 * 1024 * 1024
    assert (asic.frame_width, asic.frame_height) == (4056, 3040)


@pytest.mark.parametrize("changes,needle", [
    ({"pixels_per_clock": 3}, "pixels_per_clock must be 1, 2 or 4, got 3"),
    ({"csi2_lanes": 3}, "csi2_lanes must be 1, 2 or 4, got 3"),
    ({"frame_width": 95}, "frame size must be even"),
    ({"input_width": 60}, "smaller than twice the input"),
    ({"array_cols": 2}, "array_cols must be at least 3"),
    ({"sram_bank_bytes": 1000}, "power of two, got 1000"),
    ({"array_rows": 0}, "array_rows must be a positive integer, got 0"),
    ({"clock_mhz": -1}, "clock_mhz must be positive"),
    ({"frame_width": 98}, "frame_width 98 must be a multiple of 4"),
    ({"array_rows": 8, "array_cols": 4}, "needs array_cols (4) to be a multiple of array_rows (8)"),
    ({"array_cols": 12, "array_rows": 4}, "array_cols must be a power of two"),
    ({"frame_width": 60000}, "a RAW10 line of 75000 bytes exceeds a CSI-2 word count"),
    ({"input_width": 22000, "frame_width": 52000, "frame_height": 44000, "input_height": 2},
     "an input tensor row of 66000 bytes exceeds a CSI-2 word count"),
])
def test_invalid_configs_name_the_value(changes, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        DieConfig(**changes)


def test_unknown_preset_lists_names():
    with pytest.raises(ConfigError, match="presets are: tiny, fpga, demo, imx500"):
        preset("nope")


def test_weight_words_divide_descriptors():
    # 4x12 would be 48-byte weight words (neither divides nor is a multiple of a 128-byte descriptor), but
    # 12 lanes are refused first; 2x64 gives 128-byte words, which hold one descriptor each.
    assert DieConfig(array_rows=2, array_cols=64, sram_bank_bytes=64 * 1024).weight_word_bytes == 128
