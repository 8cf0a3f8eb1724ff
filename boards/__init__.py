"""FPGA dev-board tops for the stackcam die."""
