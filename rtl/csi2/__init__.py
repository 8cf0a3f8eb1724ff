"""MIPI CSI-2 transmitter: packet header ECC, payload CRC-16, packetizer and lane distribution."""

from .crc import CRC_INIT, crc16_update
from .ecc import ECC_MATRIX, HeaderECC, header_ecc
from .packetizer import CSI2Packetizer, packet_command_layout, packet_command_stream, ppi_beat_layout, ppi_beat_stream

__all__ = ["CRC_INIT", "crc16_update", "ECC_MATRIX", "HeaderECC", "header_ecc", "CSI2Packetizer",
           "packet_command_layout", "packet_command_stream", "ppi_beat_layout", "ppi_beat_stream"]
