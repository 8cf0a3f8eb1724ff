"""stackcam simulation: Verilator runner, cocotb testbenches, frame source and CSI-2 decoder."""
