"""The NPU: layer-program sequencer, MAC-array and vector engines, SRAMs and the model loader."""
