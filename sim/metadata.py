"""Host-side decoding of what the die sends: the embedded-data line, RAW10 image lines, RGB888 tensor lines."""

import numpy as np

from stackcam.rtl.die import EMBEDDED_BYTES, EMBEDDED_FIELDS, EMBEDDED_MAGIC

from .frame_source import raw10_unpack

__all__ = ["parse_embedded", "frame_error", "image_from_lines", "input_tensor_from_lines", "bandwidth", "frame_bytes"]

UHD_4K60_BYTES_PER_S = 3840 * 2160 * 10 // 8 * 60      # 4K60 RAW10, the stream an AI sensor saves


def parse_embedded(payload):
    """The embedded-data line's fields as a dict; raises ValueError when it is not a stackcam header."""
    payload = bytes(payload)
    if len(payload) != EMBEDDED_BYTES or payload[:2] != EMBEDDED_MAGIC:
        raise ValueError(f"not a stackcam embedded-data line ({len(payload)} bytes, starts {payload[:2].hex()})")
    out = {}
    for name, offset, size in EMBEDDED_FIELDS:
        out[name] = int.from_bytes(payload[offset:offset + size], "little")
    out["has_tensor"] = bool(out["flags"] & 1)
    out["malformed"] = bool(out["flags"] & 2)
    out["no_model"] = bool(out["flags"] & 4)
    out["npu_failed"] = bool(out["flags"] & 8)
    out["sram_fault"] = bool(out["flags"] & 16)
    return out


def frame_error(emb, layers=()):
    """Why the die's embedded line refuses this frame's output, in one line; None when the network ran.

    `layers` is the compiled model's layer list (``io["layers"]``: index, name, op) to name the failing layer."""
    from stackcam.rtl.npu.core import NPU_ERRORS

    if emb is None:
        return "the frame has no embedded-data line"
    if emb["no_model"]:
        return "no valid model is loaded on the die"
    if emb["npu_failed"] or emb["npu_error"]:
        code = emb["npu_error"]
        what = NPU_ERRORS.get(code, f"NPU error {code}")
        index = emb["error_layer"]
        if index == 0xFFFF:         # the descriptor itself could not be read
            return (f"the network stopped at descriptor {emb['error_descriptor']} (reading the descriptor): {what} "
                    f"(NPU error {code})")
        layer = next((entry for entry in layers if entry.get("index") == index), None)
        where = f"layer {index}" + (f" ({layer['kind']} '{layer['name']}' as {layer['op']})" if layer else "")
        return f"the network stopped at descriptor {emb['error_descriptor']}, {where}: {what} (NPU error {code})"
    if emb.get("sram_fault"):
        return ("an SRAM parity error was detected while the output tensors were read out of the activation SRAM: "
                "the frame's output is not used")
    if not emb["has_tensor"]:
        return "the die sent no output tensors"
    return None


def image_from_lines(lines, width):
    """RAW10 image lines (payloads of data type 0x2B) -> uint16 [lines, width]."""
    return np.stack([raw10_unpack(line)[:width] for line in lines])


def input_tensor_from_lines(lines, width):
    """RGB888 input-tensor lines (B, G, R per pixel, int8 + 128) -> int8 [lines, width, 3] in R, G, B order."""
    arr = np.stack([np.frombuffer(bytes(line), np.uint8).reshape(width, 3) for line in lines])
    return (arr[..., ::-1] ^ 0x80).view(np.int8)


def bandwidth(config, bytes_per_frame):
    """Bytes per second at the configured frame rate next to the raw streams an AI sensor avoids sending."""
    per_s = bytes_per_frame * config.frame_rate
    raw_per_s = config.raw_frame_bytes * config.frame_rate
    return {
        "bytes_per_frame": bytes_per_frame,
        "bytes_per_s": per_s,
        "raw_frame_bytes": config.raw_frame_bytes,
        "raw_bytes_per_s": raw_per_s,
        "raw_ratio": raw_per_s / per_s,
        "uhd_4k60_bytes_per_s": UHD_4K60_BYTES_PER_S,
        "uhd_4k60_ratio": UHD_4K60_BYTES_PER_S / per_s,
    }


def frame_bytes(config, mode, output_shapes, ls_le=False, input_hw=None):
    """CSI-2 bytes the die sends for one well-formed frame in `mode`, from the packet structure.

    Short packets are 4 bytes, long packets 4 + payload + 2. Every mode ends with the output frame: FS, the rows
    of each output tensor (`output_shapes`, HWC), the embedded-data line, FE; image and tensors modes first send
    a frame of RAW10 image lines or RGB888 input-tensor lines (`input_hw`, default the configuration's input
    size). LS/LE add 8 bytes around every image/tensor line.
    """
    per_line = 8 if ls_le else 0
    out = 4 + sum(oh * (6 + ow * oc + per_line) for oh, ow, oc in output_shapes) + (6 + EMBEDDED_BYTES) + 4
    if mode == "metadata":
        return out
    if mode == "image":
        return 8 + config.frame_height * (6 + config.frame_width * 5 // 4 + per_line) + out
    if mode == "tensors":
        ih, iw = input_hw or (config.input_height, config.input_width)
        return 8 + ih * (6 + iw * 3 + per_line) + out
    raise ValueError(f"unknown mode {mode!r}")
