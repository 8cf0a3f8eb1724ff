"""Stream payload layouts shared between the die's blocks (frame markers travel inside the payload)."""

from amaranth.hdl import signed
from amaranth.lib import data, stream

__all__ = ["pixel_beat_layout", "pixel_beat_stream", "tensor_pixel_layout", "tensor_pixel_stream",
           "byte_beat_layout", "byte_stream"]


def pixel_beat_layout(pixels_per_clock):
    """One beat of the RAW10 Bayer readout: `pixels_per_clock` pixels in raster order.

    `line_first`/`line_last` mark the first and last beat of a line, `frame_first`/`frame_last` the first and last
    beat of the frame (the frame's first beat also has `line_first`, its last beat `line_last`).
    """
    return data.StructLayout({
        "pixels": data.ArrayLayout(10, pixels_per_clock),
        "line_first": 1,
        "line_last": 1,
        "frame_first": 1,
        "frame_last": 1,
    })


def pixel_beat_stream(pixels_per_clock):
    return stream.Signature(pixel_beat_layout(pixels_per_clock))


def tensor_pixel_layout(channels=3):
    """One pixel of an int8 HWC tensor in raster order; `first`/`last` mark the tensor's first and last pixel."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8), channels),
        "first": 1,
        "last": 1,
    })


def tensor_pixel_stream(channels=3):
    return stream.Signature(tensor_pixel_layout(channels))


byte_beat_layout = data.StructLayout({"data": 8, "first": 1, "last": 1})


def byte_stream():
    """A byte stream; `first`/`last` mark the first and last byte of a packet or a tensor line."""
    return stream.Signature(byte_beat_layout)
