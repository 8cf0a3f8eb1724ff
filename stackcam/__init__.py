"""stackcam: a cycle-accurate, synthesizable model of the logic die of a stacked AI image sensor.

The import packages are mapped onto the repository's top-level folders:

- ``stackcam.rtl``    (rtl/)    the die in Amaranth HDL;
- ``stackcam.quant``  (quant/)  the int8 toolchain: importers, golden executor, compiler, program and ROM format;
- ``stackcam.sim``    (sim/)    Verilator/cocotb runs of the die and the host side of its CSI-2 stream;
- ``stackcam.boards`` (boards/) FPGA board tops and their build;
- ``stackcam.cli``              the one command-line layer (nothing imports it).
"""

__version__ = "0.1.0"
