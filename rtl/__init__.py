"""stackcam RTL: the synthesizable logic die, written in Amaranth HDL."""
