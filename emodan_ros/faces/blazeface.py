"""The default face detector: MediaPipe BlazeFace short-range, resized to the frame, with a second look.

Why this detector (measured by ``emodan bench-detectors`` on synthetic range frames, see the
README section "Face detector range"): Haar, the old default, finds no face under ~48 px; this
229 kB model (``models/detectors/face_detection_short_range.tflite``, Apache-2.0, MediaPipe)
finds most faces from ~32 px at about the same cost per frame, on one CPU thread.

How it runs:

- The model is fully convolutional, so its input is resized to the frame's aspect (multiples
  of 16) rather than its training size 128x128. A *fine* pass at long side ``fine_side`` (0: sized
  to the frame, :func:`auto_fine_side`) reaches small faces; a *coarse* pass at ``coarse_side``
  covers faces up to the whole frame, with a pass at a third of the fine one between them where
  the gap is wide (:func:`pass_sides`). Each pass but the coarsest keeps only faces of up to
  ``MAX_FACE_IN_PASS`` of its pixels. Their boxes are merged by score-weighted NMS (MediaPipe's
  "weighted" suppression: steadier boxes).
  A dim frame is first brightened for the detector alone (``max_gain``: dark faces score low, and
  a gain is cheap; figures in README "Face detector range").
  A frame where these passes find nothing gets one more coarse pass with the frame shrunk inside a
  black margin (``frame_border``): a face that fills the frame, cut at chin or brow, is only
  recognised with some surroundings (README "Face detector range").
  Native 128x128 tiles (stride 96) over the frame at the fine scale instead of one resized pass
  found the same share of 24-48 px faces (range bench, 640x480) at +8 ms: the cost of this model
  is per input pixel, so only the scale buys range.
- Alone, the resized model scores textures (coins, headlights, star fields) up to ~0.9, and a
  threshold that removes them loses most faces under 48 px. So each candidate scoring between
  ``candidate_threshold`` and ``trust_threshold`` gets a *second look*: the same model on
  enlarged square crops around it (``looks``: ``(side, factor)`` pairs, the candidate at
  ``1 / factor`` of a ``side`` px crop), kept where the mean of those scores reaches
  ``score_threshold``. Small true faces gain from the closer views; textures rarely survive
  several. One view (80 px at 1.6) at 0.8, the earlier rule, confirmed only 81-90 % of the 32 px
  faces that were candidates 95-98 % of the time. Three views (80 px at 1.6, 64 px at 1.4 and at
  2.0) averaged at 0.7 confirm 91-98 % with no more false faces (range bench: the README run and
  five more of 300-W and astronaut faces; README "Face detector range"); two views (without 64 px
  at 2.0) at 0.72 found as many but let up to 0.04 false faces per frame through. A view is
  skipped once the mean can no longer reach the threshold, so a texture that fails the first look
  costs one look. Candidates of ``large_side`` px or more get the first look alone, at
  ``large_threshold`` (the earlier rule): the narrower views would shrink a face that fills the
  frame into black padding (tight 128 px LFW-style crops: 660 of 746 found by one look, 595 by
  three).
- Boxes are mapped onto the landmark-box convention by :data:`BLAZE_CAL` (see ``detector.py``).
- Runtime: ``ai-edge-litert`` (a dependency of the package; XNNPack, ``num_threads`` threads) or,
  without it, ``cv2.dnn`` (same outputs to ~1e-4, ~1.5x slower; OpenCV's thread pool:
  ``cv2.setNumThreads``).

The SSD anchor grid and box decoding are written here for any input size (MediaPipe's own
graph assumes 128x128).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emodan_ros.faces.boxes import iou_matrix, sort_by_area
from emodan_ros.faces.detector import BoxCalibration, DetectorError, check_image

MODEL_RELATIVE_PATH = "models/detectors/face_detection_short_range.tflite"
BACKENDS = ("auto", "litert", "opencv")
# The fine pass's long side when none is set: 0.8 of the frame's (a 640x480 frame at 512 px, 1280x720 at 1024), no
# less than 384 (small frames are seen enlarged) and no more than 1024. At 1280x720, 1024 rather than 768 px (README
# "Face detector range", range-bench seeds 21, 23, 25 on 300-W faces): 24 px faces 0.59-0.63 -> 0.89-0.94, 32 px
# 0.88-0.92 -> 0.92-0.96, 48-320 px 0.92-0.99 -> 0.95-0.99, no false faces, at 1.6x the time (followed faces do
# not wait for it, and an empty scene gives it at most the pipeline's idle_detector_share). At 640x480, 0.8
# rather than 0.7 (README "Face detector range", three-look second look, range-bench seeds 21, 23, 24 on 300-W
# faces): 24 px faces 0.76-0.85 -> 0.86-0.92, 32 px 0.91-0.97 -> 0.91-0.98, false faces 0-0.013 either way (the
# astronaut's run: 0.020 -> 0.033, on coins), 1.23-1.27x the time.
AUTO_FINE_FRACTION, AUTO_FINE_MIN, AUTO_FINE_MAX = 0.8, 384, 1024
# A pass's boxes larger than this (in its input's pixels) are left to the next, coarser pass: the
# short-range model saw faces of up to about its 128 px input, and a face twice that size comes out as
# confident boxes around part of it (range bench, 320 px faces at the fine pass of 0.6x).
MAX_FACE_IN_PASS = 128

# Raw box -> landmark bbox, medians over 296 300-W AFW crops (faces ~160 px, yaw asymmetry < 0.55,
# raw IoU > 0.3 with the 0-based landmark bbox; IQR 0.03/0.06/0.09/0.09). The same method gives
# Haar (-0.002, 0.149, 0.909, 0.890), matching its constant; faces pasted at 48-160 px give
# (-0.003, 0.037, 0.949, 0.919), so the mapping holds across sizes. BlazeFace's box is slightly
# larger than the landmark box and sits ~5 % high.
BLAZE_CAL = BoxCalibration(dx=0.005, dy=0.050, sw=0.951, sh=0.927)
# The second look's views, (crop side px, crop side / candidate side), and the mean score that confirms.
DEFAULT_LOOKS = ((80, 1.6), (64, 1.4), (64, 2.0))
DEFAULT_SCORE_THRESHOLD = 0.7
# Candidates this large (frame px) get the first look alone, kept at this score (the earlier rule).
LARGE_SIDE, LARGE_THRESHOLD = 96, 0.8
# Where the passes find nothing, one more coarse pass sees the frame inside a black margin of this fraction of
# its long side on each side. Tight 128 px photos through the frame path (README "Face detector range"): faces
# found in 687 instead of 661 of 746 LFW-style and 839 instead of 832 of 875 ExpW val photos; margins of 0.15,
# 0.25 and 0.4 as an extra pass on every frame found 680 / 677 / 670 and 839 / 839 / 837. Range-bench frames are
# unchanged (a face is found on each), and so are false faces on face-free ones (same count, seeds 21, 23, 25).
FRAME_BORDER = 0.15
# A dim frame (the 99th percentile of its brightest channel under DIM_LEVEL) is brightened for the detector
# alone, so that level reaches TARGET_LEVEL, by at most ``max_gain`` (a camera's auto-exposure, after the fact).
DIM_LEVEL, TARGET_LEVEL, MAX_GAIN = 128.0, 200.0, 4.0


def parse_looks(looks: str | Sequence[Sequence[float]]) -> tuple[tuple[int, float], ...]:
    """``looks`` as ``((side, factor), ...)``; the text form is ``"80x1.6+64x1.4"`` (bench specs)."""
    if isinstance(looks, str):
        try:
            pairs = [tuple(float(v) for v in item.split("x")) for item in looks.split("+")]
        except ValueError:
            pairs = []
    else:
        pairs = [tuple(float(v) for v in item) for item in looks]
    if not pairs or any(len(p) != 2 or not 16 <= p[0] <= 512 or not 1.0 <= p[1] <= 4.0 for p in pairs):
        raise ValueError(f"looks must be (side 16..512 px, factor 1..4) pairs, e.g. '80x1.6+64x1.4', "
                         f"not {looks!r}")
    return tuple((int(side), float(factor)) for side, factor in pairs)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


def default_model_path() -> Path | None:
    """The shipped model: colcon's share/emodan_ros first, then the source tree (``package_file``)."""
    from emodan_ros.compat import package_file

    return package_file(MODEL_RELATIVE_PATH)


def auto_fine_side(width: int, height: int) -> int:
    """The fine pass's long side for a ``width x height`` frame when ``fine_side`` is 0 (a multiple of 16)."""
    side = int(round(AUTO_FINE_FRACTION * max(width, height) / 16)) * 16
    return min(AUTO_FINE_MAX, max(AUTO_FINE_MIN, side))


def pass_sides(fine: int, coarse: int) -> list[int]:
    """Long sides of the passes, finest first: ``fine``, then a third of it while that stays well above
    ``coarse`` (multiples of 16), then ``coarse``: 384 -> [384, 128], 768 -> [768, 256, 128]."""
    sides = [fine]
    while sides[-1] // 3 >= 1.5 * coarse:
        sides.append(max(16, sides[-1] // 3 // 16 * 16))
    return sides if coarse in sides else sides + [coarse]


def short_range_anchors(in_w: int, in_h: int) -> np.ndarray:
    """Anchor centres ``(N, 2)`` in input pixels for the short-range model at ``in_w x in_h``.

    MediaPipe's SSD options for this model: strides 8, 16, 16, 16, two anchors per layer and
    cell, fixed anchor size, offset 0.5. Layers of one stride share a grid, so: a stride-8 grid
    with 2 anchors per cell, then a stride-16 grid with 6, row-major, a cell's anchors adjacent.
    At 128x128 this is MediaPipe's 896 anchors; at 384x288 the resized model's 6048 outputs.
    """
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        gw, gh = -(-in_w // stride), -(-in_h // stride)
        cx, cy = np.meshgrid((np.arange(gw, dtype=np.float32) + 0.5) * stride,
                             (np.arange(gh, dtype=np.float32) + 0.5) * stride)
        out.append(np.repeat(np.stack([cx.ravel(), cy.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(out, axis=0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float,
                 max_out: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS keeping the score-weighted mean of each group's boxes and its best score."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    alive = np.ones(len(boxes), bool)
    out_b: list[np.ndarray] = []
    out_s: list[float] = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        group = alive & (iou_matrix(boxes[i:i + 1], boxes)[0] >= iou_thr)  # one row: N can be large
        group[i] = True
        w = scores[group][:, None]
        out_b.append((boxes[group] * w).sum(0) / w.sum())
        out_s.append(float(scores[i]))
        alive &= ~group
        if len(out_b) >= max_out:
            break
    if not out_b:
        return _empty()
    return np.asarray(out_b, np.float32), np.asarray(out_s, np.float32)


class _LiteRTNet:
    """The model at one input size on LiteRT (XNNPack)."""

    def __init__(self, model_path: str, in_w: int, in_h: int, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._it = Interpreter(model_path=model_path, num_threads=num_threads)
        self._in = self._it.get_input_details()[0]["index"]
        self._it.resize_tensor_input(self._in, [1, in_h, in_w, 3])
        self._it.allocate_tensors()
        outs = {d["name"]: d["index"] for d in self._it.get_output_details()}
        self._reg, self._cls = outs["regressors"], outs["classificators"]

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._it.set_tensor(self._in, x[None])
        self._it.invoke()
        return self._it.get_tensor(self._reg)[0], self._it.get_tensor(self._cls)[0, :, 0]


class _OpenCVNet:
    """The model on ``cv2.dnn`` (NCHW input), for machines without ``ai-edge-litert``."""

    def __init__(self, model_path: str, in_w: int, in_h: int, num_threads: int) -> None:
        import cv2

        self._net = cv2.dnn.readNetFromTFLite(model_path)
        self._names = list(self._net.getUnconnectedOutLayersNames())

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._net.setInput(np.ascontiguousarray(x.transpose(2, 0, 1))[None])
        out = dict(zip(self._names, self._net.forward(self._names)))
        return out["regressors"].reshape(-1, 16), out["classificators"].reshape(-1)


def _resize(cv2: Any, image: np.ndarray, w: int, h: int) -> np.ndarray:
    # area averaging only where linear would alias (it is 3-5x slower at non-integer ratios)
    interp = cv2.INTER_AREA if w < 0.55 * image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def _square_crop(cv2: Any, bgr: np.ndarray, cx: float, cy: float, side: float, out: int) -> np.ndarray:
    """``side`` x ``side`` square around (cx, cy), zero-padded past the frame, resized to ``out``."""
    h, w = bgr.shape[:2]
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = max(1, int(round(side)))
    roi = bgr[max(0, y0):max(0, min(h, y0 + n)), max(0, x0):max(0, min(w, x0 + n))]
    if roi.size == 0:
        return np.zeros((out, out, 3), np.uint8)
    top, left = max(0, -y0), max(0, -x0)
    sq = cv2.copyMakeBorder(roi, top, n - top - roi.shape[0], left, n - left - roi.shape[1],
                            cv2.BORDER_CONSTANT, value=0)
    return _resize(cv2, sq, out, out)


def _confirmed(boxes: np.ndarray, scores: np.ndarray, side: int, expected: float) -> float:
    """Best score among the crop's boxes that are the candidate: centred within 20 % of the crop's
    side of its centre, and of about the candidate's size (``expected`` px, within 1.6x).

    Without the size check a loose candidate around a small face (e.g. the coarse pass's box
    around face and hair) would be confirmed by the face inside it and kept as a second box.
    """
    if len(boxes) == 0:
        return 0.0
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6, None))
    ratio = np.maximum(size / expected, expected / size)
    ok = np.all(np.abs(centres - side / 2) < 0.2 * side, axis=1) & (ratio <= 1.6)
    return float(scores[ok].max()) if ok.any() else 0.0


class BlazeFaceDetector:
    """MediaPipe BlazeFace short-range: resized passes from fine to coarse, then a second look.

    Operating point (three looks averaged at ``score_threshold=0.7``, ``trust_threshold=0.9``):
    0-0.013 false faces per face-free range-bench frame with 300-W faces, up to 0.033 on the astronaut's
    frames (mostly on coins with embossed heads).
    ``fine_side`` (the node's ``detector_max_side``; 0 = :func:`auto_fine_side`) trades range for
    time: 512 (the 640x480 default) instead of 448 finds 0.86-0.92 instead of 0.76-0.85 of the 24 px
    faces at ~1.25x the time; a verifier CNN trained to let more candidates through did less for more. A
    phantom face on a static object would persist through the tracker frame after frame, so a
    missed far face is the smaller evil; at 0.66 the three looks find a few more 32 px faces at up
    to 0.05 false faces per frame. Scores are the model's sigmoid (trusted candidates) or the
    mean of the looks (a large candidate's one look), 0..1.
    """

    name = "blaze"

    def __init__(self, fine_side: int = 0, coarse_side: int = 128,
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD, candidate_threshold: float = 0.25,
                 trust_threshold: float = 0.9, verify: bool = True,
                 looks: str | Sequence[Sequence[float]] = DEFAULT_LOOKS, large_side: float = LARGE_SIDE,
                 large_threshold: float = LARGE_THRESHOLD, max_verify: int = 12,
                 nms_iou: float = 0.3, frame_border: float = FRAME_BORDER, max_gain: float = MAX_GAIN,
                 backend: str = "auto",
                 model_path: str | Path | None = None, num_threads: int = 1) -> None:
        import cv2

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if backend == "auto":
            backend = "litert" if importlib.util.find_spec("ai_edge_litert") else "opencv"
        elif backend == "litert" and importlib.util.find_spec("ai_edge_litert") is None:
            raise DetectorError("detector 'blaze' with backend 'litert' needs `pip install ai-edge-litert`")
        path = Path(model_path) if model_path else default_model_path()
        if path is None or not path.is_file():
            raise DetectorError(
                f"detector 'blaze' needs its model file {path or MODEL_RELATIVE_PATH!s}, which does not "
                "exist (it ships in the package's models/detectors/; reinstall, or choose detector 'haar')")
        self._cv2 = cv2
        self.backend = backend
        self._net_cls = _LiteRTNet if backend == "litert" else _OpenCVNet
        self._model_path = str(path)
        self._num_threads = int(num_threads)
        self._nets: dict[tuple[int, int], tuple[Any, np.ndarray]] = {}
        self.fine_side, self.coarse_side = int(fine_side), int(coarse_side)
        self.verify = bool(verify)
        self.score_threshold = float(score_threshold)
        self.candidate_threshold = float(candidate_threshold if verify else score_threshold)
        self.trust_threshold = float(trust_threshold)
        self.looks = parse_looks(looks)
        self.large_side, self.large_threshold = float(large_side), float(large_threshold)
        self.max_verify, self.nms_iou = int(max_verify), float(nms_iou)
        if not 0.0 <= frame_border <= 1.0:
            raise ValueError(f"frame_border must be in [0, 1] (a fraction of the long side), not {frame_border!r}")
        self.frame_border = float(frame_border)
        if not 1.0 <= max_gain <= 16.0:
            raise ValueError(f"max_gain must be in [1, 16] (1: dim frames as they are), not {max_gain!r}")
        self.max_gain = float(max_gain)
        c = min(max(self.candidate_threshold, 1e-6), 1 - 1e-6)
        self._logit_thr = float(np.log(c / (1 - c)))
        try:  # load now, so a broken file or runtime fails at start, not on the first frame
            self._net(128, 128)
        except Exception as exc:  # noqa: BLE001 - any runtime error means "cannot load"
            raise DetectorError(f"detector 'blaze' cannot load {self._model_path} on {backend}: {exc}") from exc

    def _net(self, in_w: int, in_h: int) -> tuple[Any, np.ndarray]:
        key = (in_w, in_h)
        if key not in self._nets:
            self._nets[key] = (self._net_cls(self._model_path, in_w, in_h, self._num_threads),
                               short_range_anchors(in_w, in_h))
        return self._nets[key]

    @staticmethod
    def _input_size(w: int, h: int, long_side: int, border: float = 0.0) -> tuple[int, int, float]:
        """The model's input size (multiples of 16) for a ``w x h`` image at ``long_side`` with ``border``,
        and the image's scale in it."""
        f = long_side / (max(h, w) * (1 + 2 * border))
        pad = 2 * border * max(h, w)
        return max(16, int(round((w + pad) * f / 16)) * 16), max(16, int(round((h + pad) * f / 16)) * 16), f

    def _pass(self, bgr: np.ndarray, long_side: int, border: float = 0.0,
              shrunk: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Candidates ``(boxes xyxy in bgr's pixels, scores)`` of one pass at ``long_side``.

        ``border`` (a fraction of the long side): the frame is seen smaller, inside a black margin.
        ``shrunk``: the same frame already made smaller (resized from instead of ``bgr``: cheaper).
        """
        cv2 = self._cv2
        h, w = bgr.shape[:2]
        src = bgr if shrunk is None else shrunk
        in_w, in_h, f = self._input_size(w, h, long_side, border)
        net, anchors = self._net(in_w, in_h)
        if border > 0:
            fw, fh = max(1, int(round(w * f))), max(1, int(round(h * f)))
            ox, oy = (in_w - fw) // 2, (in_h - fh) // 2
            small = cv2.copyMakeBorder(_resize(cv2, src, fw, fh), oy, in_h - fh - oy, ox, in_w - fw - ox,
                                       cv2.BORDER_CONSTANT, value=0)
        else:
            fw, fh, ox, oy = in_w, in_h, 0, 0
            small = src if src.shape[1::-1] == (in_w, in_h) else _resize(cv2, src, in_w, in_h)
        x = cv2.cvtColor(small, cv2.COLOR_BGR2RGB).astype(np.float32)
        x *= 1.0 / 127.5
        x -= 1.0
        reg, logits = net.run(x)
        keep = np.flatnonzero(logits > self._logit_thr)
        if len(keep) == 0:
            return _empty()
        r = reg[keep, :4]
        cx, cy = anchors[keep, 0] + r[:, 0] - ox, anchors[keep, 1] + r[:, 1] - oy
        hw, hh = np.abs(r[:, 2]) / 2, np.abs(r[:, 3]) / 2
        sx, sy = w / fw, h / fh
        boxes = np.stack([(cx - hw) * sx, (cy - hh) * sy, (cx + hw) * sx, (cy + hh) * sy], axis=1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -100, 100)))
        ok = np.isfinite(boxes).all(1) & np.isfinite(scores)
        return boxes[ok].astype(np.float32), scores[ok].astype(np.float32)

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_image(image_bgr)
        h, w = image_bgr.shape[:2]
        if min(h, w) < 16:  # nothing the model could call a face
            return _empty()
        bgr = self._brightened(image_bgr if image_bgr.flags.c_contiguous else np.ascontiguousarray(image_bgr))
        sides = [s for s in pass_sides(self.fine_side or auto_fine_side(w, h), self.coarse_side)
                 if 0 < s < 1.5 * max(h, w)] or [max(h, w)]
        thumb = None
        parts = []
        for n, side in enumerate(sides):
            if n == len(sides) - 1 and self.frame_border > 0:  # the coarsest pass's input, kept for the border pass
                thumb = _resize(self._cv2, bgr, *self._input_size(w, h, side)[:2])
            b, sc = self._pass(bgr, side, shrunk=thumb)
            if n < len(sides) - 1:  # a face too large for this scale is the next (coarser) pass's
                keep = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * (side / max(h, w)) <= MAX_FACE_IN_PASS
                b, sc = b[keep], sc[keep]
            parts.append((b, sc))
        boxes, scores = self._kept(bgr, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        if len(boxes) == 0 and self.frame_border > 0:  # nothing found: a face filling the frame, seen with a margin
            boxes, scores = self._kept(bgr, *self._pass(bgr, sides[-1], self.frame_border, shrunk=thumb))
        boxes = BLAZE_CAL.apply(boxes)
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        ok = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
        return sort_by_area(boxes[ok], scores[ok])

    def _brightened(self, bgr: np.ndarray) -> np.ndarray:
        """``bgr``, or where it is dim a brighter copy (dark faces score low)."""
        if self.max_gain <= 1.0:
            return bgr
        sample = bgr[::8, ::8].max(axis=2).ravel()
        k = int(0.99 * (sample.size - 1))
        level = float(np.partition(sample, k)[k])  # the 99th percentile
        if level >= DIM_LEVEL:
            return bgr
        return self._cv2.convertScaleAbs(bgr, alpha=min(self.max_gain, TARGET_LEVEL / max(level, 1.0)))

    def _kept(self, bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates merged (NMS) and judged (second look): the faces, raw boxes in frame pixels."""
        if len(boxes) == 0:
            return _empty()
        boxes, scores = weighted_nms(boxes, scores, self.nms_iou)
        if self.verify:
            scores = self._second_look(bgr, boxes, scores)
        keep = scores >= self.score_threshold
        return boxes[keep], scores[keep]

    def _second_look(self, bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Re-score candidates under ``trust_threshold`` by the mean of their ``looks``.

        At most ``max_verify`` of them (best first) are looked at, which bounds the cost on a
        cluttered frame; the rest are dropped.
        """
        out = scores.copy()
        todo = [i for i in np.argsort(-scores, kind="stable") if scores[i] < self.trust_threshold]
        for n, i in enumerate(todo):
            out[i] = self._look(bgr, boxes[i]) if n < self.max_verify else 0.0
        return out

    def _look(self, bgr: np.ndarray, box: np.ndarray) -> float:
        """Mean confirmed score over the looks (a large candidate: its first look, at
        ``large_threshold``), 0 where under the threshold; stops once the threshold is out of reach."""
        x0, y0, x1, y1 = box
        size = max(x1 - x0, y1 - y0, 4.0)
        looks, threshold = ((self.looks[:1], self.large_threshold) if size >= self.large_side
                             else (self.looks, self.score_threshold))
        total = 0.0
        for k, (side, factor) in enumerate(looks):
            crop = _square_crop(self._cv2, bgr, (x0 + x1) / 2, (y0 + y1) / 2, factor * size, side)
            b, s = self._pass(crop, side)
            total += _confirmed(b, s, side, side / factor)
            if total + (len(looks) - k - 1) < threshold * len(looks):
                return 0.0
        return total / len(looks)
