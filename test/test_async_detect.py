"""The detector on its own thread (``detect_async``): faces followed without waiting, detections merged late.

A scripted world draws each frame (a textured background, one texture per person pasted at that
person's box) and remembers which people it drew where, under a frame number written into the
top-left pixel. The stand-in detector reads that number from the frame it is given, so its boxes
belong to the frame it saw, however late it answers; the stand-in model snaps its landmarks to the
person under the box, as in test_pipeline.py. ``wait()`` after a frame stands for a camera slower
than the detector; a gate held closed stands for a detector slower than the camera.
"""

from __future__ import annotations

import gc
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from emodan_ros.faces.async_detect import AsyncDetector, match_detections
from emodan_ros.faces.boxes import iou_matrix
from emodan_ros.faces.config import PipelineConfig
from emodan_ros.faces.pipeline import EmotionPipeline

CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
GRID = np.stack(np.meshgrid(np.linspace(0, 1, 17), np.linspace(0, 1, 4)), -1).reshape(-1, 2)[:68]


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX)


BACKGROUND = _texture(480, 640, 0)
LOOKS = {name: _texture(100, 100, seed) for seed, name in enumerate("ABCD", start=1)}


class World:
    """Frames with people at known boxes; any copy of a frame says which frame it is."""

    def __init__(self) -> None:
        self.frames: dict[int, dict[str, np.ndarray]] = {}

    def frame(self, people: dict[str, list[float]]) -> np.ndarray:
        image = BACKGROUND.copy()
        for name, box in people.items():
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            image[y0:y1, x0:x1] = cv2.resize(LOOKS[name], (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        number = len(self.frames) + 1
        image[0, 0] = (number % 256, number // 256, 7)
        self.frames[number] = {k: np.array(v, np.float32) for k, v in people.items()}
        return image

    def boxes(self, image: np.ndarray) -> np.ndarray:
        people = self.frames[int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])]
        return np.array(list(people.values()), np.float32).reshape(-1, 4)


class Detector:
    """Finds exactly the people of the frame it is given; can be held (``gate``) or made to fail."""

    name = "scripted"

    def __init__(self, world: World) -> None:
        self.world = world
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()  # set once a detection waits at the closed gate
        self.fail = False
        self.delay = 0.0  # seconds each detection takes
        self.calls = 0
        self.threads: set[str] = set()

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.threads.add(threading.current_thread().name)
        if not self.gate.is_set():
            self.held.set()
        assert self.gate.wait(10.0)
        time.sleep(self.delay)
        self.calls += 1
        if self.fail:
            raise RuntimeError("detector broke")
        boxes = self.world.boxes(image_bgr)
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        return boxes[order], np.full(len(boxes), 0.9, np.float32)


class Model:
    """Landmarks on the person under the box (quality 0.9), else on the box itself (quality 0.05)."""

    class_names = CLASSES

    def __init__(self, world: World) -> None:
        self.world = world

    def predict(self, image_bgr: np.ndarray, boxes: np.ndarray) -> SimpleNamespace:
        truth = self.world.boxes(image_bgr)
        lms, quality = [], []
        for box in np.asarray(boxes, np.float32).reshape(-1, 4):
            iou = iou_matrix(box[None], truth)
            target = truth[iou.argmax()] if iou.size and iou.max() > 0.2 else box
            lms.append(target[:2] + GRID * (target[2:] - target[:2]))
            quality.append(0.9 if target is not box else 0.05)
        probs = np.full((len(lms), len(CLASSES)), 1.0 / len(CLASSES), np.float32)
        return SimpleNamespace(landmarks=np.array(lms, np.float32).reshape(-1, 68, 2), probs=probs,
                               quality=np.array(quality, np.float32))


@pytest.fixture
def setup():
    world = World()
    detector = Detector(world)
    made: list[EmotionPipeline] = []

    def make(**settings) -> EmotionPipeline:
        pipe = EmotionPipeline(Model(world), detector, PipelineConfig(detect_async=True, **settings))
        made.append(pipe)
        return pipe

    yield world, detector, make
    detector.gate.set()
    for pipe in made:
        pipe.close()


def _ids(faces) -> dict[int, np.ndarray]:
    return {f.face_id: f.box for f in faces}


def test_a_moving_face_keeps_its_id_and_is_confirmed_by_the_detector_thread(setup) -> None:
    world, detector, make = setup
    pipe = make(redetect_every=3)
    ids = []
    for k in range(15):
        box = [100 + 6 * k, 120 + 2 * k, 200 + 6 * k, 220 + 2 * k]
        (face,) = pipe.process(world.frame({"A": box}))
        ids.append(face.face_id)
        np.testing.assert_allclose(face.box, box, atol=1e-3)
        if k > 0:
            assert pipe.stats.detect_ms == 0.0  # no frame after the first waited for the detector
        assert pipe.detections.wait()
    assert set(ids) == {1}
    assert detector.threads == {"MainThread", "emodan_detector"}  # the first frame, then the thread
    assert pipe.counters.detector_calls == detector.calls >= 5


def test_followed_faces_do_not_wait_for_a_slow_detector(setup) -> None:
    world, detector, make = setup
    pipe = make(redetect_every=1)
    pipe.process(world.frame({"A": [100, 100, 200, 200]}))
    detector.gate.clear()  # from now on the detector takes as long as we like
    for k in range(6):
        t0 = time.perf_counter()
        (face,) = pipe.process(world.frame({"A": [100 + 3 * k, 100, 200 + 3 * k, 200]}))
        assert time.perf_counter() - t0 < 0.5 and face.face_id == 1
    assert pipe.detections.busy and pipe.detections.replaced >= 4  # newest frame only, the rest replaced
    detector.gate.set()
    assert pipe.detections.wait()


def _camera(pipe: EmotionPipeline, frames: list[np.ndarray], period: float) -> list[list]:
    """``frames`` at one every ``period`` s (a frame that comes while the last is processed waits)."""
    start, out = time.monotonic(), []
    for k, frame in enumerate(frames):
        time.sleep(max(0.0, start + k * period - time.monotonic()))
        out.append(pipe.process(frame))
    return out


@pytest.mark.parametrize("share", [0.5, 0.25])
def test_an_empty_scene_gives_the_detector_its_idle_share_and_no_more(setup, share: float) -> None:
    """A detector slower than the camera: with nobody to follow, the frames between its runs are answered
    at once, so that it takes about ``idle_detector_share`` of the time instead of all of it."""
    world, detector, make = setup
    detector.delay = 0.05
    pipe = make(idle_detector_share=share)
    frames = [world.frame({}) for _ in range(16)]
    start = time.monotonic()
    assert _camera(pipe, frames, 0.03) == [[]] * 16
    busy = detector.calls * detector.delay / (time.monotonic() - start)
    assert 2 <= detector.calls <= 16 * share + 1 and busy <= share + 0.15
    assert pipe.counters.idle_unsearched == 16 - detector.calls
    assert detector.threads == {"MainThread"}  # the frames it skipped were not handed to its thread either


def test_with_the_whole_share_every_empty_frame_waits_for_the_detector(setup) -> None:
    world, detector, make = setup
    detector.delay = 0.05
    pipe = make(idle_detector_share=1.0)
    _camera(pipe, [world.frame({}) for _ in range(8)], 0.03)
    assert detector.calls == 8 and pipe.counters.idle_unsearched == 0


def test_a_face_entering_an_empty_scene_is_found_within_the_idle_wait(setup) -> None:
    world, detector, make = setup
    detector.delay = 0.05
    pipe = make(idle_detector_share=0.5)
    box = [100, 100, 200, 200]
    assert _camera(pipe, [world.frame({}) for _ in range(5)], 0.03) == [[]] * 5
    entered = time.monotonic()
    faces: list = []
    while not faces and time.monotonic() - entered < 2.0:
        faces = pipe.process(world.frame({"A": box}))
        time.sleep(0.03)
    # the longest wait: a run that just missed it (0.05 s), its idle pause (0.05 s), its own run (0.05 s)
    waited = time.monotonic() - entered - 0.03
    assert faces and waited <= 3 * detector.delay + 0.2, waited
    np.testing.assert_allclose(faces[0].box, box, atol=1e-3)
    assert len(pipe.process(world.frame({"A": box}))) == 1  # then followed


def test_the_first_frame_after_a_face_left_is_searched_at_once(setup) -> None:
    world, detector, make = setup
    detector.delay = 0.05
    pipe = make(idle_detector_share=0.1, redetect_every=100)
    pipe.process(world.frame({}))  # searched: the next empty frames would wait 0.45 s for their turn
    assert pipe.process(world.frame({"A": [100, 100, 200, 200]})) == []  # its turn had not come
    time.sleep(0.5)
    (face,) = pipe.process(world.frame({"A": [100, 100, 200, 200]}))
    calls = detector.calls
    assert pipe.process(world.frame({})) == [] and pipe.stats.detected  # gone: looked for at once
    assert detector.calls == calls + 1


def test_a_new_face_appears_one_detector_run_later_with_its_own_id(setup) -> None:
    world, detector, make = setup
    pipe = make(redetect_every=1)
    a = [60, 100, 160, 200]
    b = [400, 150, 500, 250]
    (first,) = pipe.process(world.frame({"A": a}))
    assert pipe.detections.wait()
    faces = pipe.process(world.frame({"A": a, "B": b}))  # B enters: this frame's detection is not back yet
    assert list(_ids(faces)) == [first.face_id]
    assert pipe.detections.wait()
    faces = pipe.process(world.frame({"A": a, "B": b}))
    assert len(faces) == 2 and faces[0].face_id == first.face_id
    np.testing.assert_allclose(faces[1].box, b, atol=1e-3)
    assert faces[1].face_id not in (first.face_id, 0)


def test_a_face_that_leaves_is_gone_at_once_and_an_old_detection_does_not_bring_it_back(setup) -> None:
    world, detector, make = setup
    pipe = make(redetect_every=1)
    a, b = [60, 100, 160, 200], [400, 150, 500, 250]
    pipe.process(world.frame({"A": a, "B": b}))
    assert pipe.detections.wait()
    ids = _ids(pipe.process(world.frame({"A": a, "B": b})))
    assert len(ids) == 2
    detector.gate.clear()  # the detection of the frame below, B still in it, is held back
    pipe.process(world.frame({"A": a, "B": b}))
    assert detector.held.wait(10.0)
    faces = pipe.process(world.frame({"A": a}))  # B left: its box shows the background
    assert len(faces) == 1 and pipe.stats.rejected == 1
    pipe.detections.discard()  # only the old detection comes back first (the newer one is not done yet)
    detector.gate.set()
    assert pipe.detections.wait()
    for _ in range(4):
        faces = pipe.process(world.frame({"A": a}))
        assert [f.face_id for f in faces] == [faces[0].face_id] and len(faces) == 1
        assert pipe.detections.wait()
    assert pipe.counters.stale_detections == 1
    a_id = faces[0].face_id
    later = _ids(pipe.process(world.frame({"A": a, "C": b})))  # someone else where B stood
    assert pipe.detections.wait()
    later = _ids(pipe.process(world.frame({"A": a, "C": b})))
    assert a_id in later and len(later) == 2 and not set(later) & (set(ids) - {a_id})


def test_two_people_crossing_keep_their_ids(setup) -> None:
    world, detector, make = setup
    pipe = make(redetect_every=2)
    tracks: dict[str, set[int]] = {"A": set(), "B": set()}
    for k in range(30):
        a = [40 + 15 * k, 100, 140 + 15 * k, 200]
        b = [500 - 15 * k, 160, 600 - 15 * k, 260]
        faces = pipe.process(world.frame({"A": a, "B": b}))
        assert len(faces) == 2, k
        for f in faces:
            name = "A" if iou_matrix(f.box[None], np.array([a]))[0, 0] > 0.5 else "B"
            tracks[name].add(f.face_id)
        assert pipe.detections.wait()
    assert len(tracks["A"]) == 1 and len(tracks["B"]) == 1 and tracks["A"] != tracks["B"]


def test_detector_exceptions_are_counted_and_the_faces_still_followed(setup) -> None:
    world, detector, make = setup
    pipe = make(redetect_every=1)
    box = [100, 100, 200, 200]
    (face,) = pipe.process(world.frame({"A": box}))
    detector.fail = True
    for _ in range(5):
        assert [f.face_id for f in pipe.process(world.frame({"A": box}))] == [face.face_id]
        assert pipe.detections.wait()
    assert pipe.counters.detector_errors >= 4 and pipe.detections.errors >= 4
    assert "RuntimeError: detector broke" in pipe.detections.last_error
    assert pipe.detections.alive
    detector.fail = False
    for _ in range(2):
        pipe.process(world.frame({"A": box, "B": [400, 150, 500, 250]}))
        assert pipe.detections.wait()
    assert len(pipe.process(world.frame({"A": box, "B": [400, 150, 500, 250]}))) == 2


def test_close_stops_the_thread_and_a_forgotten_pipeline_does_not_leak_one(setup) -> None:
    world, detector, make = setup
    pipe = make()
    pipe.process(world.frame({"A": [100, 100, 200, 200]}))
    pipe.process(world.frame({"A": [100, 100, 200, 200]}))
    pipe.detections.submit(99, world.frame({"A": [100, 100, 200, 200]}))
    assert pipe.detections.alive
    pipe.close()
    pipe.close()  # idempotent
    assert not pipe.detections.alive
    assert pipe.process(world.frame({})) == []  # still answers (nobody: the frame itself is looked at)

    def forgotten() -> threading.Thread:
        other = EmotionPipeline(Model(world), Detector(world), PipelineConfig(detect_async=True))
        other.process(world.frame({"A": [100, 100, 200, 200]}))
        other.detections.submit(1, world.frame({"A": [100, 100, 200, 200]}))
        return other.detections._thread

    thread = forgotten()
    gc.collect()
    thread.join(5.0)
    assert not thread.is_alive()


def test_switching_modes_at_run_time_keeps_the_face(setup) -> None:
    world, detector, make = setup
    pipe = make(redetect_every=2)
    box = [100, 100, 200, 200]
    ids = []
    for k in range(8):
        if k in (3, 6):
            pipe.configure(detect_async=k == 6)
        ids += [f.face_id for f in pipe.process(world.frame({"A": box}))]
        pipe.detections.wait()
    assert ids == [1] * 8


def test_match_detections_pairs_by_overlap_then_by_centre() -> None:
    current = np.array([[0, 0, 100, 100], [300, 0, 400, 100], [600, 0, 700, 100]], np.float32)
    detected = np.array([[350, 0, 450, 100], [10, 0, 110, 100], [900, 0, 1000, 100]], np.float32)
    match, rest = match_detections(current, detected, 0.3)
    assert match.tolist() == [1, 0, -1] and rest == [2]


def test_a_detector_error_on_the_thread_never_reaches_the_caller() -> None:
    class Broken:
        name = "broken"

        def detect(self, image_bgr: np.ndarray):
            raise ValueError("bad frame")

    worker = AsyncDetector(Broken())
    worker.submit(1, np.zeros((10, 10, 3), np.uint8))
    assert worker.wait()
    result = worker.poll()
    assert result is not None and result.frame == 1 and result.error == "ValueError: bad frame"
    assert len(result.boxes) == 0 and worker.errors == 1 and worker.alive
    worker.close()
    assert not worker.alive
