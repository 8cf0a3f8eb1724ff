"""stackcam toolchain: TFLite int8 arithmetic, references and the compiler. Plain numpy, no Amaranth."""
