"""Image decoding against independent numpy ground truth, for rclpy and rosbags messages.

The raw bytes of every encoding are built here from the encoding's definition (channel
order, YUV 4:2:2 byte order, Bayer pattern), not with the module's own encoder, so a
swapped channel or pattern in the decoder fails these tests.
"""
from __future__ import annotations

import importlib.util
import struct
import zlib

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from emodan_ros.io.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    compress_image,
    decode_image,
    default_backend,
    encode_image,
)

_STORE = get_typestore(Stores.ROS2_KILTED)
RB_IMAGE = _STORE.types["sensor_msgs/msg/Image"]
RB_COMPRESSED = _STORE.types["sensor_msgs/msg/CompressedImage"]
RB_HEADER = _STORE.types["std_msgs/msg/Header"]
RB_TIME = _STORE.types["builtin_interfaces/msg/Time"]
HAS_RCLPY_MSGS = importlib.util.find_spec("sensor_msgs") is not None
H, W = 24, 32


def _flavours() -> list:
    params = [pytest.param("rosbags", id="rosbags")]
    params.append(
        pytest.param(
            "rclpy", id="rclpy",
            marks=pytest.mark.skipif(not HAS_RCLPY_MSGS, reason="rclpy sensor_msgs not importable: run `make test`"),
        )
    )
    return params


def raw_image(flavour: str, encoding: str, height: int, width: int, step: int, data: bytes, bigendian: int = 0):
    """An Image message built field by field (no module code involved)."""
    if flavour == "rosbags":
        header = RB_HEADER(stamp=RB_TIME(sec=1, nanosec=2), frame_id="cam")
        return RB_IMAGE(
            header=header, height=height, width=width, encoding=encoding, is_bigendian=bigendian,
            step=step, data=np.frombuffer(data, np.uint8).copy(),
        )
    from sensor_msgs.msg import Image

    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step)
    msg.data = data
    return msg


def raw_compressed(flavour: str, fmt: str, data: bytes):
    if flavour == "rosbags":
        header = RB_HEADER(stamp=RB_TIME(sec=0, nanosec=0), frame_id="cam")
        return RB_COMPRESSED(header=header, format=fmt, data=np.frombuffer(data, np.uint8).copy())
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _yuv_to_bgr(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """BT.601 limited range, the ROS/OpenCV meaning of yuv422."""
    y, u, v = (a.astype(np.float64) for a in (y, u, v))
    c = 1.164 * (y - 16)
    r = c + 1.596 * (v - 128)
    g = c - 0.813 * (v - 128) - 0.391 * (u - 128)
    b = c + 2.018 * (u - 128)
    return np.clip(np.rint(np.stack([b, g, r], -1)), 0, 255).astype(np.uint8)


# (bytes of the rows, expected BGR) for every encoding, from first principles.
def ground_truth(encoding: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """(row-major raw pixels HxK uint8, expected HxWx3 BGR, tolerance)."""
    bgr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)
    if encoding in ("bgr8", "8UC3"):
        return bgr.reshape(H, -1), bgr, 0
    if encoding == "rgb8":
        return bgr[..., ::-1].reshape(H, -1), bgr, 0
    if encoding in ("bgra8", "8UC4"):
        return np.concatenate([bgr, alpha], -1).reshape(H, -1), bgr, 0
    if encoding == "rgba8":
        return np.concatenate([bgr[..., ::-1], alpha], -1).reshape(H, -1), bgr, 0
    if encoding in ("mono8", "8UC1"):
        gray = bgr[..., 0]
        return gray, np.repeat(gray[..., None], 3, -1), 0
    if encoding == "mono16":
        gray16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
        expected = np.rint(gray16 * (255.0 / 65535.0)).astype(np.uint8)
        return gray16.astype("<u2").view(np.uint8), np.repeat(expected[..., None], 3, -1), 0
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        # Mid-range values keep clean of the clipping at the gamut edges.
        y = rng.integers(40, 200, (H, W), dtype=np.uint8)
        u = rng.integers(100, 156, (H, W // 2), dtype=np.uint8)
        v = rng.integers(100, 156, (H, W // 2), dtype=np.uint8)
        packed = np.empty((H, W // 2, 4), np.uint8)
        if encoding in ("yuv422", "uyvy"):  # U0 Y0 V0 Y1
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
        else:  # Y0 U0 Y1 V0
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
        expected = _yuv_to_bgr(y, np.repeat(u, 2, 1), np.repeat(v, 2, 1))
        return packed.reshape(H, -1), expected, 3
    raise KeyError(encoding)


NON_BAYER = [e for e in SUPPORTED_ENCODINGS if not e.startswith("bayer")]
BAYER = {  # pattern as written in the encoding name: colours at (0,0) (0,1) (1,0) (1,1)
    "bayer_rggb8": "RGGB", "bayer_bggr8": "BGGR", "bayer_gbrg8": "GBRG", "bayer_grbg8": "GRBG",
}
BGR_INDEX = {"B": 0, "G": 1, "R": 2}


def mosaic(bgr: np.ndarray, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """(mosaic HxW, channel index HxW measured at each pixel)."""
    channel = np.empty(bgr.shape[:2], np.int64)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        channel[dy::2, dx::2] = BGR_INDEX[pattern[k]]
    rows, cols = np.indices(bgr.shape[:2])
    return bgr[rows, cols, channel].astype(np.uint8), channel


@pytest.mark.parametrize("flavour", _flavours())
@pytest.mark.parametrize("encoding", NON_BAYER)
@pytest.mark.parametrize("padding", [0, 7])
def test_raw_encodings_decode_to_ground_truth(flavour: str, encoding: str, padding: int) -> None:
    rows, expected, tol = ground_truth(encoding, _rng(zlib.crc32(encoding.encode())))
    step = rows.shape[1] + padding
    data = np.full((H, step), 0xAB, np.uint8)  # padding bytes must be ignored
    data[:, : rows.shape[1]] = rows
    out = decode_image(raw_image(flavour, encoding, H, W, step, data.tobytes()))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    assert int(np.abs(out.astype(int) - expected.astype(int)).max()) <= tol


@pytest.mark.parametrize("flavour", _flavours())
def test_mono16_big_endian(flavour: str) -> None:
    gray16 = _rng(3).integers(0, 65536, (H, W), dtype=np.uint16)
    msg = raw_image(flavour, "mono16", H, W, W * 2, gray16.astype(">u2").tobytes(), bigendian=1)
    expected = np.rint(gray16 * (255.0 / 65535.0)).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(msg)[..., 1], expected)


@pytest.mark.parametrize("flavour", _flavours())
@pytest.mark.parametrize("encoding", sorted(BAYER))
def test_bayer_constant_colour_is_exact(flavour: str, encoding: str) -> None:
    colour = np.array([40, 130, 220], np.uint8)  # B, G, R all different: a swap shows
    bgr = np.broadcast_to(colour, (H, W, 3)).copy()
    raw, _ = mosaic(bgr, BAYER[encoding])
    out = decode_image(raw_image(flavour, encoding, H, W, W, raw.tobytes()))
    np.testing.assert_array_equal(out, bgr)


@pytest.mark.parametrize("flavour", _flavours())
@pytest.mark.parametrize("encoding", sorted(BAYER))
def test_bayer_keeps_measured_samples(flavour: str, encoding: str) -> None:
    bgr = _rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    raw, channel = mosaic(bgr, BAYER[encoding])
    out = decode_image(raw_image(flavour, encoding, H, W, W, raw.tobytes()))
    rows, cols = np.indices((H, W))
    measured = out[rows, cols, channel]
    # Demosaicing keeps each pixel's own measurement (borders are extrapolated).
    np.testing.assert_array_equal(measured[1:-1, 1:-1], raw[1:-1, 1:-1])


@pytest.mark.parametrize("flavour", _flavours())
def test_png_is_lossless_and_grey_png_becomes_bgr(flavour: str) -> None:
    bgr = _rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    np.testing.assert_array_equal(decode_image(raw_compressed(flavour, "png", buf.tobytes())), bgr)
    ok, buf = cv2.imencode(".png", bgr[..., 0])
    out = decode_image(raw_compressed(flavour, "mono8; png compressed ", buf.tobytes()))
    np.testing.assert_array_equal(out, np.repeat(bgr[..., :1], 3, -1))


@pytest.mark.parametrize("flavour", _flavours())
def test_jpeg_matches_reference_decoder(flavour: str) -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    bgr = np.stack([xx * 7 % 256, yy * 9 % 256, (xx + yy) * 4 % 256], -1).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = decode_image(raw_compressed(flavour, "bgr8; jpeg compressed bgr8", buf.tobytes()))
    np.testing.assert_array_equal(out, cv2.imdecode(buf, cv2.IMREAD_COLOR))
    assert float(np.abs(out.astype(int) - bgr).mean()) < 4


@pytest.mark.parametrize("flavour", _flavours())
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_encode_image_roundtrip(flavour: str, encoding: str) -> None:
    """encode_image builds what decode_image reads (smooth image: chroma/Bayer safe)."""
    yy, xx = np.mgrid[0:H, 0:W]
    bgr = np.stack([60 + xx, 90 + yy, 120 + xx // 2], -1).astype(np.uint8)
    cls = RB_IMAGE if flavour == "rosbags" else __import__("sensor_msgs.msg", fromlist=["Image"]).Image
    msg = encode_image(bgr, encoding, cls, step=W * 8 + 3)
    assert (msg.encoding, msg.height, msg.width, msg.step) == (encoding, H, W, W * 8 + 3)
    out = decode_image(msg)
    if encoding in ("mono8", "mono16", "8UC1"):
        expected = np.repeat(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[..., None], 3, -1)
    else:
        expected = bgr
    tol = 4 if ("yuv" in encoding or encoding in ("uyvy", "yuyv") or encoding.startswith("bayer")) else 0
    assert int(np.abs(out[1:-1, 1:-1].astype(int) - expected[1:-1, 1:-1]).max()) <= tol


@pytest.mark.parametrize("flavour", _flavours())
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compress_image_roundtrip(flavour: str, fmt: str) -> None:
    bgr = np.full((H, W, 3), (10, 100, 200), np.uint8)
    cls = RB_COMPRESSED if flavour == "rosbags" else __import__("sensor_msgs.msg", fromlist=["CompressedImage"]).CompressedImage
    msg = compress_image(bgr, fmt, cls)
    assert msg.format == fmt
    assert int(np.abs(decode_image(msg).astype(int) - bgr).max()) <= (0 if fmt == "png" else 3)


# --------------------------------------------------------------------------- bad input

def _bgr_bytes(h: int = H, w: int = W) -> bytes:
    return bytes(h * w * 3)


@pytest.mark.parametrize("flavour", _flavours())
@pytest.mark.parametrize(
    "case, fields, needle",
    [
        ("unknown encoding", dict(encoding="32FC1"), "unsupported image encoding"),
        ("made-up encoding", dict(encoding="bgr9"), "unsupported image encoding"),
        ("zero width", dict(width=0, step=0, data=b""), "zero size"),
        ("zero height", dict(height=0, data=b""), "zero size"),
        ("short data", dict(data=_bgr_bytes()[:-1]), "needs"),
        ("no data", dict(data=b""), "needs"),
        ("step shorter than row", dict(step=W * 3 - 1), "shorter than one"),
        ("odd yuv width", dict(encoding="yuv422", width=W - 1, step=(W - 1) * 2), "even width"),
        ("absurd size", dict(height=100_000, width=100_000, step=300_000), "exceeds the limit"),
    ],
)
def test_bad_raw_images_raise_typed_error(flavour: str, case: str, fields: dict, needle: str) -> None:
    values = dict(encoding="bgr8", height=H, width=W, step=W * 3, data=_bgr_bytes())
    values.update(fields)
    msg = raw_image(flavour, values["encoding"], values["height"], values["width"], values["step"], values["data"])
    with pytest.raises(ImageDecodeError, match=needle) as info:
        decode_image(msg)
    assert isinstance(info.value, ValueError)


def test_max_pixels_is_configurable() -> None:
    msg = raw_image("rosbags", "bgr8", H, W, W * 3, _bgr_bytes())
    assert decode_image(msg, max_pixels=H * W).shape == (H, W, 3)
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 100 pixels"):
        decode_image(msg, max_pixels=100)


def _jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((H, W, 3), 128, np.uint8))
    return buf.tobytes()


def _png() -> bytes:
    ok, buf = cv2.imencode(".png", np.full((H, W, 3), 128, np.uint8))
    return buf.tobytes()


@pytest.mark.parametrize("flavour", _flavours())
@pytest.mark.parametrize(
    "fmt, data, needle",
    [
        ("jpeg", b"", "no data"),
        ("jpeg", _jpeg()[: len(_jpeg()) // 2], "truncated"),
        ("jpeg", b"\xff\xd8" + bytes(_rng(1).integers(0, 256, 500, dtype=np.uint8)) + b"\xff\xd9", "corrupt"),
        ("jpeg", b"hello, not an image", "neither JPEG nor PNG"),
        ("png", _png()[:-20], "truncated"),
        ("png", _png()[:8] + bytes(40) + _png()[-12:], "corrupt PNG"),
        ("16UC1; compressedDepth png", _png(), "compressed depth"),
    ],
    ids=["empty", "truncated-jpeg", "garbage-jpeg", "not-an-image", "truncated-png", "garbage-png", "compressed-depth"],
)
def test_bad_compressed_images_raise_typed_error(flavour: str, fmt: str, data: bytes, needle: str) -> None:
    with pytest.raises(ImageDecodeError, match=needle):
        decode_image(raw_compressed(flavour, fmt, data))


def test_absurd_jpeg_dimensions_rejected_before_decoding() -> None:
    data = bytearray(_jpeg())
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    with pytest.raises(ImageDecodeError, match="60000x60000 px exceeds the limit"):
        decode_image(raw_compressed("rosbags", "jpeg", bytes(data)))


def test_non_image_object_raises_typed_error() -> None:
    with pytest.raises(ImageDecodeError, match="not an image message"):
        decode_image(object())


def test_encode_rejects_non_bgr_input() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        encode_image(np.zeros((4, 4), np.uint8), "bgr8", RB_IMAGE)
    with pytest.raises(ValueError, match="cannot encode"):
        encode_image(np.zeros((4, 4, 3), np.uint8), "32FC1", RB_IMAGE)


@pytest.mark.skipif(importlib.util.find_spec("cv_bridge") is None, reason="cv_bridge (ROS 2) not installed: only on a real ROS install")
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_cv_bridge_and_rosbags_backends_agree(encoding: str) -> None:
    assert default_backend() == "cv_bridge"
    from sensor_msgs.msg import Image

    yy, xx = np.mgrid[0:H, 0:W]
    bgr = np.stack([60 + xx, 90 + yy, 120 + xx // 2], -1).astype(np.uint8)
    msg = encode_image(bgr, encoding, Image)
    a = decode_image(msg, backend="cv_bridge")
    b = decode_image(msg, backend="rosbags")
    assert int(np.abs(a[1:-1, 1:-1].astype(int) - b[1:-1, 1:-1]).max()) <= 2


def test_backend_without_cv_bridge_is_rosbags() -> None:
    if importlib.util.find_spec("cv_bridge") is not None:
        pytest.skip("cv_bridge installed here: the rosbags fallback is not the default")
    assert default_backend() == "rosbags"
    with pytest.raises(ImageDecodeError, match="cv_bridge"):
        decode_image(raw_image("rosbags", "bgr8", H, W, W * 3, _bgr_bytes()), backend="cv_bridge")


def _astronaut_jpeg(quality: int = 75, **flags: int) -> bytes:
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] + [v for k, x in flags.items() for v in (getattr(cv2, k), x)]
    return cv2.imencode(".jpg", bgr, params)[1].tobytes()


def _claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same stream with its frame header (SOF0) claiming another size."""
    out = bytearray(jpeg)
    sof = out.find(b"\xff\xc0")
    out[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(out)


@pytest.mark.parametrize("flavour", _flavours())
def test_a_jpeg_claiming_a_huge_size_is_refused_before_decoding(flavour: str) -> None:
    """50 KB claiming 5773x5773 (33 Mpx, under the 40 Mpx limit): refused at once, nothing decoded."""
    import time

    bomb = _claim_size(_astronaut_jpeg(60), 5773, 5773)
    assert len(bomb) < 60_000
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="claims 5773x5773"):
        decode_image(raw_compressed(flavour, "jpeg", bomb))
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize("flavour", _flavours())
def test_a_jpeg_header_forged_within_the_payload_bound_is_caught_as_truncated(flavour: str) -> None:
    forged = _claim_size(_astronaut_jpeg(90), 1024, 1024)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(raw_compressed(flavour, "jpeg", forged))


@pytest.mark.parametrize("flavour", _flavours())
@pytest.mark.parametrize("cut", [0.1, 0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("optimize", [0, 1])
def test_a_truncated_jpeg_with_its_end_marker_re_added_is_refused(flavour: str, cut: float, optimize: int) -> None:
    jpeg = _astronaut_jpeg(90, IMWRITE_JPEG_OPTIMIZE=optimize)
    cut_stream = jpeg[: int(len(jpeg) * cut)] + b"\xff\xd9"
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(raw_compressed(flavour, "jpeg", cut_stream))


@pytest.mark.parametrize("value", [0, 128, 255])
@pytest.mark.parametrize("optimize", [0, 1])
def test_flat_frames_of_any_size_still_decode(value: int, optimize: int) -> None:
    """The smallest real JPEGs (flat, optimised tables) and mid-grey ones pass both checks."""
    for shape in ((480, 640), (3000, 4000), (3000, 4000, 3)):
        flat = np.full(shape, value, np.uint8)
        jpeg = cv2.imencode(".jpg", flat, [cv2.IMWRITE_JPEG_OPTIMIZE, optimize])[1].tobytes()
        image = decode_image(raw_compressed("rosbags", "jpeg", jpeg))
        assert image.shape[:2] == shape[:2] and np.abs(image.astype(int) - value).max() <= 1


def test_a_png_claiming_a_huge_size_is_refused() -> None:
    png = bytearray(cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
    png[16:24] = struct.pack(">II", 5000, 5000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    with pytest.raises(ImageDecodeError, match="claims 5000x5000"):
        decode_image(raw_compressed("rosbags", "png", bytes(png)))
