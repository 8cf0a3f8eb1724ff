"""MIPI CSI-2 transmitter: packet header ECC, payload CRC-16, packetizer and lane distribution."""

from .ecc import ECC_MATRIX, HeaderECC, header_ecc
from .packetizer import CSI2Packetizer, packet_command_layout, packet_command_stream, ppi_beat_layout, ppi_beat_stream

__all__ = ["ECC_MATRIX", "HeaderECC", "header_ecc", "CSI2Packetizer", "packet_command_layout",
           "packet_command_stream", "ppi_beat_layout", "ppi_beat_stream"]
