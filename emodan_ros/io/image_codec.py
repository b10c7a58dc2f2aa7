"""ROS image messages <-> BGR uint8 arrays, for rclpy messages and rosbags messages alike.

`decode_image` is the one entry point the node, the bag evaluation and the tests use. It
validates the message itself (encoding, size, step, data length, compressed payload) before
any conversion, so every malformed input raises `ImageDecodeError` with a message naming
the problem, instead of a numpy reshape error or a silently garbled frame. The pixel
conversion goes through cv_bridge where a ROS 2 install provides it and rosbags-image
otherwise; both receive tightly packed rows (rosbags-image ignores `step`).

`encode_image` / `compress_image` build messages (of a given rclpy or rosbags class) from
BGR arrays, for publishing, writing bags and tests.
"""
from __future__ import annotations

import dataclasses
import sys
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from emodan_ros.io.compressed_check import CompressedFrameError, check_payload, compressed_size, jpeg_truncated

__all__ = [
    "ImageDecodeError",
    "SUPPORTED_ENCODINGS",
    "DEFAULT_MAX_PIXELS",
    "decode_image",
    "encode_image",
    "compress_image",
    "default_backend",
]

#: Frames above this many pixels are rejected before any allocation (8K UHD is 33 Mpx):
#: a corrupt header must not make the node allocate gigabytes.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """A ROS image message that cannot be turned into a BGR image (the text says why)."""


# encoding -> (channels, bytes per channel), as laid out in Image.data.
_LAYOUT: dict[str, tuple[int, int]] = {
    "bgr8": (3, 1),
    "rgb8": (3, 1),
    "bgra8": (4, 1),
    "rgba8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
    "yuv422": (2, 1),  # UYVY: U0 Y0 V0 Y1
    "yuv422_yuy2": (2, 1),  # YUYV: Y0 U0 Y1 V0
    "bayer_rggb8": (1, 1),
    "bayer_bggr8": (1, 1),
    "bayer_gbrg8": (1, 1),
    "bayer_grbg8": (1, 1),
}
# Other names for the same memory layout; OpenCV-style types have no colour meaning in
# ROS, the usual producers (cameras, cv_bridge passthrough) mean grey / BGR by them.
_ALIASES = {"8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8", "uyvy": "yuv422", "yuyv": "yuv422_yuy2"}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUT) + tuple(_ALIASES)

# Bayer pattern -> which of R, G, B sits at (row % 2, col % 2).
_BAYER_PATTERN = {
    "bayer_rggb8": ((2, 1), (1, 0)),
    "bayer_bggr8": ((0, 1), (1, 2)),
    "bayer_gbrg8": ((1, 0), (2, 1)),
    "bayer_grbg8": ((1, 2), (0, 1)),
}  # channel indices in BGR order: 0 = B, 1 = G, 2 = R

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


def default_backend() -> str:
    """'cv_bridge' when a working ROS 2 cv_bridge is importable, else 'rosbags'."""
    return "cv_bridge" if _cv_bridge() is not None else "rosbags"


_BRIDGE: Any = None


def _cv_bridge() -> Any:
    """A CvBridge instance, or None (no ROS 2 cv_bridge, or a broken one such as the
    ROS 1 port on PyPI, which fails on ROS 2 messages and numpy 2)."""
    global _BRIDGE
    if _BRIDGE is None:
        try:
            from cv_bridge import CvBridge

            _BRIDGE = CvBridge()
        except Exception:  # any import/initialisation failure means "not usable here"
            _BRIDGE = False
    return _BRIDGE or None


def _data_bytes(data: Any) -> np.ndarray:
    """Message data (bytes, array.array, numpy array, list of ints) as a flat uint8 view."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.reshape(-1).astype(np.uint8)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError as exc:
        raise ImageDecodeError(f"image data of type {type(data).__name__} is not a byte buffer") from exc


def _is_compressed(msg: Any) -> bool:
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def decode_image(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, backend: str | None = None) -> np.ndarray:
    """Decode a sensor_msgs/Image or CompressedImage (rclpy or rosbags) to HxWx3 BGR uint8.

    `backend` forces 'cv_bridge' or 'rosbags' (default: cv_bridge when importable).
    Raises ImageDecodeError for unknown encodings, zero or absurd sizes (> max_pixels),
    step or data shorter than the declared size, and empty, corrupt, truncated JPEG/PNG payloads
    or ones far too small for the size their header claims (see ``io.compressed_check``).
    """
    backend = backend or default_backend()
    if backend not in ("cv_bridge", "rosbags"):
        raise ValueError(f"backend must be 'cv_bridge' or 'rosbags', not {backend!r}")
    if backend == "cv_bridge" and _cv_bridge() is None:
        raise ImageDecodeError("backend 'cv_bridge' requested but the ROS 2 cv_bridge is not importable")
    if _is_compressed(msg):
        image = _decode_compressed(msg, max_pixels, backend)
    else:
        image = _decode_raw(msg, max_pixels, backend)
    return _to_bgr(image)


def _decode_raw(msg: Any, max_pixels: int, backend: str) -> np.ndarray:
    try:
        encoding, height, width, step = str(msg.encoding), int(msg.height), int(msg.width), int(msg.step)
        raw = msg.data
    except AttributeError as exc:
        raise ImageDecodeError(f"not an image message ({type(msg).__name__}): {exc}") from exc
    name = _ALIASES.get(encoding, encoding)
    if name not in _LAYOUT:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image has zero size ({width}x{height} px)")
    if height * width > max_pixels:
        raise ImageDecodeError(f"image of {width}x{height} px exceeds the limit of {max_pixels} pixels")
    channels, depth = _LAYOUT[name]
    row = width * channels * depth
    if name.startswith("yuv422") and width % 2:
        raise ImageDecodeError(f"{encoding} needs an even width, got {width}")
    if step < row:
        raise ImageDecodeError(f"step {step} B is shorter than one {encoding} row of {width} px ({row} B)")
    data = _data_bytes(raw)
    if data.size < step * height:
        raise ImageDecodeError(
            f"image data has {data.size} B, {encoding} {width}x{height} with step {step} needs {step * height} B"
        )
    # Tightly packed rows: rosbags-image assumes step == row; extra bytes are dropped.
    rows = data[: step * height].reshape(height, step)[:, :row]
    packed = np.ascontiguousarray(rows)

    if name == "mono16":
        # Scale 0..65535 to 0..255 ourselves: the two backends round differently.
        big = bool(getattr(msg, "is_bigendian", 0))
        values = packed.view(">u2" if big else "<u2").reshape(height, width).astype(np.float32)
        gray = np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)

    view = SimpleNamespace(
        header=getattr(msg, "header", None), height=height, width=width, encoding=name,
        is_bigendian=0, step=row, data=packed.reshape(-1),
    )
    try:
        if backend == "cv_bridge":
            return _cv_bridge().imgmsg_to_cv2(view, desired_encoding="bgr8")
        from rosbags.image import message_to_cvimage

        return message_to_cvimage(view, "bgr8")
    except Exception as exc:  # backend-specific error types -> one typed error
        raise ImageDecodeError(f"cannot convert {encoding} {width}x{height} to bgr8: {exc}") from exc


def _decode_compressed(msg: Any, max_pixels: int, backend: str) -> np.ndarray:
    fmt = str(msg.format).lower()
    data = _data_bytes(msg.data).tobytes()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(f"compressed depth images are not supported (format {msg.format!r})")
    if not data:
        raise ImageDecodeError(f"compressed image ({msg.format!r}) has no data")
    if data.startswith(_JPEG_SOI):
        kind = "jpeg"
        if not data.rstrip(b"\x00").endswith(_JPEG_EOI):
            raise ImageDecodeError("corrupt JPEG: truncated (no end-of-image marker)")
    elif data.startswith(_PNG_MAGIC):
        kind = "png"
        if _PNG_IEND not in data[-32:]:
            raise ImageDecodeError("corrupt PNG: truncated (no IEND chunk)")
    else:
        raise ImageDecodeError(
            f"compressed image ({msg.format!r}, {len(data)} B) is neither JPEG nor PNG, or is corrupt"
        )
    try:
        width, height = compressed_size(kind, data)
        if width <= 0 or height <= 0:
            raise ImageDecodeError(f"{kind} image has zero size ({width}x{height} px)")
        if width * height > max_pixels:
            raise ImageDecodeError(f"{kind} image of {width}x{height} px exceeds the limit of {max_pixels} pixels")
        check_payload(kind, data, width, height)
    except CompressedFrameError as exc:
        raise ImageDecodeError(str(exc)) from exc
    view = SimpleNamespace(header=getattr(msg, "header", None), format=kind, data=np.frombuffer(data, np.uint8))
    try:
        if backend == "cv_bridge":
            image = _cv_bridge().compressed_imgmsg_to_cv2(view, desired_encoding="bgr8")
        else:
            from rosbags.image import compressed_image_to_cvimage

            image = compressed_image_to_cvimage(view, "bgr8")
    except Exception as exc:  # includes rosbags' bare assert on a failed imdecode
        raise ImageDecodeError(f"corrupt {kind} data ({len(data)} B): {exc or 'decoder failed'}") from exc
    if image is None or image.size == 0:
        raise ImageDecodeError(f"corrupt {kind} data ({len(data)} B): decoder returned no image")
    if kind == "jpeg" and jpeg_truncated(data, image):
        raise ImageDecodeError(f"corrupt JPEG ({len(data)} B): the data ends before the image does "
                               "(truncated; the decoder filled the rest with grey)")
    return image


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """Normalise a backend result to contiguous HxWx3 uint8 (grey PNGs decode to HxW)."""
    if image.dtype != np.uint8:
        raise ImageDecodeError(f"decoder returned {image.dtype}, expected uint8")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageDecodeError(f"decoder returned shape {image.shape}, expected HxWx3")
    return np.ascontiguousarray(image)


# ----------------------------------------------------------------------------- encoding


def _bgr_to_yuv422(bgr: np.ndarray, order: str) -> np.ndarray:
    """BGR -> packed 4:2:2 (BT.601 limited range, what OpenCV's YUV2BGR_UYVY inverts)."""
    b, g, r = (bgr[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2  # chroma shared by each horizontal pixel pair
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    h, w = y.shape
    out = np.empty((h, w // 2, 4), np.float32)
    if order == "uyvy":
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = u2, y[:, 0::2], v2, y[:, 1::2]
    else:
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = y[:, 0::2], u2, y[:, 1::2], v2
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(h, w * 2)


def _bgr_to_bayer(bgr: np.ndarray, encoding: str) -> np.ndarray:
    (c00, c01), (c10, c11) = _BAYER_PATTERN[encoding]
    out = np.empty(bgr.shape[:2], np.uint8)
    out[0::2, 0::2] = bgr[0::2, 0::2, c00]
    out[0::2, 1::2] = bgr[0::2, 1::2, c01]
    out[1::2, 0::2] = bgr[1::2, 0::2, c10]
    out[1::2, 1::2] = bgr[1::2, 1::2, c11]
    return out


def _pixels_for(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """The HxW(xC) array whose bytes are Image.data rows for `encoding` (before padding)."""
    name = _ALIASES.get(encoding, encoding)
    if name == "bgr8":
        return bgr
    if name == "rgb8":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if name == "bgra8":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    if name == "rgba8":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)
    if name == "mono8":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if name == "mono16":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype("<u2") * np.uint16(257)
    if name == "yuv422":
        return _bgr_to_yuv422(bgr, "uyvy")
    if name == "yuv422_yuy2":
        return _bgr_to_yuv422(bgr, "yuyv")
    if name in _BAYER_PATTERN:
        return _bgr_to_bayer(bgr, name)
    raise ValueError(f"cannot encode to {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def _check_bgr(bgr: np.ndarray) -> None:
    if not (isinstance(bgr, np.ndarray) and bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3):
        raise ValueError(f"expected an HxWx3 uint8 BGR array, got {getattr(bgr, 'shape', None)} {getattr(bgr, 'dtype', type(bgr))}")


def _new_message(msg_cls: type, **fields: Any) -> Any:
    """An instance of an rclpy message class or a rosbags dataclass with `fields` set."""
    if dataclasses.is_dataclass(msg_cls):
        values = {
            f.name: fields.pop(f.name) if f.name in fields else _zero_value(msg_cls, f)
            for f in dataclasses.fields(msg_cls)
            if f.init and not str(f.type).startswith("ClassVar")
        }
        if fields:
            raise TypeError(f"{msg_cls.__name__} has no fields {sorted(fields)}")
        return msg_cls(**values)
    msg = msg_cls()
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def _zero_value(owner: type, field: dataclasses.Field) -> Any:
    """Default for a rosbags message field (rosbags dataclasses have no defaults)."""
    type_name = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    simple = {"int": 0, "float": 0.0, "str": "", "bool": False}
    if type_name in simple:
        return simple[type_name]
    if type_name.startswith("np.ndarray") or type_name.startswith("list"):
        return np.zeros(0, np.uint8) if "uint8" in type_name else []
    nested = getattr(sys.modules[owner.__module__], type_name, None)
    if nested is None:
        raise TypeError(f"cannot build a default {type_name} for {owner.__name__}.{field.name}")
    return _new_message(nested)


def encode_image(
    bgr: np.ndarray, encoding: str, msg_cls: type, *, header: Any = None, step: int | None = None
) -> Any:
    """A sensor_msgs/Image of class `msg_cls` (rclpy or rosbags) holding `bgr` in `encoding`.

    `step` > the packed row length pads every row (as some camera drivers do); the
    padding bytes are 0xAB so a decoder that ignores `step` shows it.
    """
    _check_bgr(bgr)
    pixels = np.ascontiguousarray(_pixels_for(bgr, encoding))
    height, width = bgr.shape[:2]
    rows = pixels.reshape(height, -1).view(np.uint8)
    row = rows.shape[1]
    step = row if step is None else step
    if step < row:
        raise ValueError(f"step {step} is shorter than the {row} B row of {encoding}")
    if step > row:
        padded = np.full((height, step), 0xAB, np.uint8)
        padded[:, :row] = rows
        rows = padded
    fields: dict[str, Any] = dict(
        height=height, width=width, encoding=encoding, is_bigendian=0, step=step,
        data=_message_bytes(msg_cls, rows.reshape(-1)),
    )
    if header is not None:
        fields["header"] = header
    return _new_message(msg_cls, **fields)


def compress_image(
    bgr: np.ndarray, fmt: str, msg_cls: type, *, header: Any = None, quality: int = 90
) -> Any:
    """A sensor_msgs/CompressedImage of class `msg_cls` holding `bgr` as 'jpeg' or 'png'."""
    _check_bgr(bgr)
    fmt = fmt.lower()
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise ValueError(f"compressed format must be 'jpeg' or 'png', not {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {bgr.shape} image as {fmt}")
    fields: dict[str, Any] = dict(format="jpeg" if ext == ".jpg" else "png", data=_message_bytes(msg_cls, buf.reshape(-1)))
    if header is not None:
        fields["header"] = header
    return _new_message(msg_cls, **fields)


def _message_bytes(msg_cls: type, flat: np.ndarray) -> Any:
    """uint8[] field value: numpy for rosbags dataclasses, bytes for rclpy (fast path)."""
    return flat.copy() if dataclasses.is_dataclass(msg_cls) else flat.tobytes()
