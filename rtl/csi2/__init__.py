"""MIPI CSI-2 transmitter: packet header ECC, payload CRC-16, packetizer and lane distribution."""
