from pathlib import Path

import cv2
import numpy as np
import pytest

from emodan_ros.faces.classes import EDAN3_CLASSES, FER2013_CLASSES, FERPLUS_CLASSES
from emodan_ros.data.landmarks import PtsDataset, list_pts_files, read_pts, split_holdout
from emodan_ros.data.mix import WeightedMix, remap_sample
from emodan_ros.data.readers import (
    Fer2013CsvDataset,
    FerPlusDataset,
    ImageFolderDataset,
    ManifestDataset,
    Sample,
    clean_votes,
    ferplus_majority,
    read_image,
)

# votes: neutral happiness surprise sadness anger disgust fear contempt unknown NF
FERPLUS_ROWS = {
    "a.png": [6, 3, 1, 0, 0, 0, 0, 0, 0, 0],   # majority neutral (6 of 9 after clean-up)
    "b.png": [4, 4, 0, 2, 0, 0, 0, 0, 0, 0],   # no majority; distribution .4 .4 0 .2
    "c.png": [3, 2, 0, 0, 0, 0, 0, 0, 5, 0],   # top vote unknown -> dropped
    "d.png": [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face -> dropped
    "e.png": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],   # only single votes -> nothing left -> dropped
    "f.png": [5, 1, 1, 0, 1, 0, 2, 0, 0, 0],   # 5 of 10 raw, 5 of 7 cleaned -> majority neutral
    "g.png": [0, 4, 0, 0, 0, 0, 0, 0, 4, 2],   # tie happiness/unknown -> kept, no majority
    "broken.png": [0, 10, 0, 0, 0, 0, 0, 0, 0, 0],  # majority happiness, unreadable file
}


def _png(path: Path, value: int = 128, size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size, size), value, np.uint8))


@pytest.fixture
def ferplus_dir(tmp_path: Path) -> Path:
    lines = []
    for i, (name, votes) in enumerate(FERPLUS_ROWS.items()):
        lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        if name == "broken.png":
            (tmp_path / name).write_bytes(b"not a png")
        else:
            _png(tmp_path / name, 10 * i)
    (tmp_path / "label.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_vote_clean_up_and_majority():
    raw = np.array([FERPLUS_ROWS[k] for k in ("a.png", "b.png", "f.png", "g.png")])
    clean = clean_votes(raw)
    assert clean[2].tolist() == [5, 0, 0, 0, 0, 0, 2, 0, 0, 0]
    assert ferplus_majority(clean).tolist() == [0, -1, 0, -1]
    # without the clean-up f would have no majority (5 is not more than half of 10)
    assert ferplus_majority(raw.astype(np.float32))[2] == -1


def test_ferplus_majority_scheme(ferplus_dir: Path):
    ds = FerPlusDataset(ferplus_dir, scheme="majority")
    assert ds.classes == FERPLUS_CLASSES
    assert [Path(p).name for p in ds.paths] == ["a.png", "f.png"]
    assert [Path(p).name for p in ds.bad_files] == ["broken.png"]
    s = ds[0]
    assert isinstance(s, Sample)
    assert s.image.shape == (48, 48) and s.image.dtype == np.uint8
    assert s.landmarks is None and s.label == 0
    assert s.target.tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    ev = FerPlusDataset.evaluation(ferplus_dir)
    assert ev.scheme == "majority" and ev.paths == ds.paths


def test_ferplus_crossentropy_and_multilabel(ferplus_dir: Path):
    ce = FerPlusDataset(ferplus_dir, scheme="crossentropy")
    names = [Path(p).name for p in ce.paths]
    assert names == ["a.png", "b.png", "f.png", "g.png"]
    b = ce[1]
    np.testing.assert_allclose(b.target, [0.4, 0.4, 0, 0.2, 0, 0, 0, 0], atol=1e-6)
    assert b.label == -1
    np.testing.assert_allclose(ce[0].target, [6 / 9, 3 / 9, 0, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(ce[3].target, [0, 1, 0, 0, 0, 0, 0, 0])
    ml = FerPlusDataset(ferplus_dir, scheme="multilabel")
    assert ml[1].target.tolist() == [1, 1, 0, 1, 0, 0, 0, 0]
    assert ml[2].target.tolist() == [1, 0, 0, 0, 0, 0, 1, 0]  # single votes removed
    with pytest.raises(ValueError):
        FerPlusDataset(ferplus_dir, scheme="bogus")


def test_probability_drawing_reproducible_and_distributed_like_votes(ferplus_dir: Path):
    ds = FerPlusDataset(ferplus_dir, scheme="probability", seed=3)
    ds.set_epoch(5)
    first = [ds[i].label for i in range(len(ds))]
    again = [ds[i].label for i in reversed(range(len(ds)))][::-1]  # order does not matter
    assert first == again
    other = FerPlusDataset(ferplus_dir, scheme="probability", seed=3)
    other.set_epoch(5)
    assert [other[i].label for i in range(len(other))] == first
    counts = np.zeros(8)
    n_epochs = 2000
    for epoch in range(n_epochs):
        ds.set_epoch(epoch)
        s = ds[1]  # b.png: votes .4 .4 0 .2
        assert s.target.sum() == 1 and s.target[s.label] == 1
        counts[s.label] += 1
    np.testing.assert_allclose(counts / n_epochs, [0.4, 0.4, 0, 0.2, 0, 0, 0, 0], atol=0.05)
    assert counts[0] > 0 and counts[1] > 0 and counts[3] > 0


def test_read_image_gray_color_and_garbage(tmp_path: Path):
    _png(tmp_path / "g.png")
    color = np.zeros((8, 10, 3), np.uint8)
    color[..., 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / "c.png"), color)
    (tmp_path / "x.jpg").write_bytes(b"")
    assert read_image(tmp_path / "g.png").shape == (48, 48)
    c = read_image(tmp_path / "c.png")
    assert c.shape == (8, 10, 3) and c[0, 0].tolist() == [0, 0, 255]
    assert read_image(tmp_path / "x.jpg") is None
    assert read_image(tmp_path / "missing.png") is None


def test_unverified_reader_skips_bad_file_at_fetch(ferplus_dir: Path):
    ds = FerPlusDataset(ferplus_dir, scheme="majority", verify=False)
    assert [Path(p).name for p in ds.paths] == ["a.png", "f.png", "broken.png"]
    s = ds[2]  # unreadable: the next readable item comes back instead
    assert Path(s.path).name == "a.png"
    assert [Path(p).name for p in ds.bad_files] == ["broken.png"]


def test_fer2013_csv(tmp_path: Path):
    px = " ".join(["7"] * 2304)
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text(
        "emotion,pixels,Usage\n"
        f"3,{px},Training\n"
        f"0,{px},PublicTest\n"
        f"6,1 2 3,Training\n"
        f"5,{px},PrivateTest\n"
        f"4,{px},Training\n")
    ds = Fer2013CsvDataset(csv_path, usage="Training")
    assert ds.classes == FER2013_CLASSES
    assert len(ds) == 2 and ds.bad_files == [f"{csv_path}#2"]
    s = ds[0]
    assert s.image.shape == (48, 48) and s.image[0, 0] == 7
    assert s.label == 3 and FER2013_CLASSES[s.label] == "happiness"
    assert s.target.argmax() == 3
    assert [ds[i].label for i in range(2)] == [3, 4]
    tests = Fer2013CsvDataset(csv_path, usage=["PublicTest", "PrivateTest"])
    assert [tests[i].label for i in range(len(tests))] == [0, 5]
    assert len(Fer2013CsvDataset(csv_path, usage=None)) == 4


def test_image_folder_by_name(tmp_path: Path):
    _png(tmp_path / "happy" / "1.png")
    _png(tmp_path / "happy" / "sub" / "2.png")
    _png(tmp_path / "angry" / "3.png")
    _png(tmp_path / "bored" / "4.png")
    (tmp_path / "angry" / "bad.png").write_bytes(b"garbage")
    (tmp_path / "angry" / "notes.txt").write_text("ignored")
    own = ImageFolderDataset(tmp_path)
    assert own.classes == ("anger", "bored", "happiness")
    assert len(own) == 4 and [Path(p).name for p in own.bad_files] == ["bad.png"]
    ds = ImageFolderDataset(tmp_path, classes=FERPLUS_CLASSES)
    assert ds.unknown_classes == {"bored": 1}
    labels = {Path(p).name: ds[i].label for i, p in enumerate(ds.paths)}
    assert labels == {"1.png": 1, "2.png": 1, "3.png": 4}
    edan = ImageFolderDataset(tmp_path, classes=EDAN3_CLASSES)
    assert sorted(edan.labels) == [1, 1, 2]


def test_manifest(tmp_path: Path):
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png")
    _png(tmp_path / "elsewhere.png")
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "list.csv"
    manifest.write_text(
        "path,label\n"
        "../imgs/a.png,Happy\n"
        f"{tmp_path / 'elsewhere.png'},sad\n"
        "../imgs/b.png,\n"
        "../imgs/missing.png,happy\n"
        "../imgs/b.png,bored\n")
    ds = ManifestDataset(manifest, classes=FERPLUS_CLASSES)
    assert ds.unknown_classes == {"bored": 1}
    assert [Path(p).name for p in ds.bad_files] == ["missing.png"]
    samples = [ds[i] for i in range(len(ds))]
    assert [s.label for s in samples] == [1, 3, -1]
    assert samples[2].target is None
    own = ManifestDataset(manifest)
    assert own.classes == ("bored", "happiness", "sadness")
    bad = tmp_path / "idx.csv"
    bad.write_text("path,label\nx.png,3\n")
    with pytest.raises(ValueError, match="class names"):
        ManifestDataset(bad)


def _write_pts(path: Path, points: np.ndarray) -> None:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}\n")


def test_pts_parsing_and_dataset(tmp_path: Path):
    pts = np.stack([np.arange(68) + 0.5, 2 * np.arange(68)], axis=1).astype(np.float32)
    _write_pts(tmp_path / "f1.pts", pts)
    cv2.imwrite(str(tmp_path / "f1.jpg"), np.zeros((32, 32, 3), np.uint8))
    _write_pts(tmp_path / "f2.pts", pts[:67])           # wrong point count
    cv2.imwrite(str(tmp_path / "f2.png"), np.zeros((32, 32, 3), np.uint8))
    _write_pts(tmp_path / "f3.pts", pts)                # no image
    np.testing.assert_allclose(read_pts(tmp_path / "f1.pts"), pts, atol=1e-3)
    with pytest.raises(ValueError):
        read_pts(tmp_path / "f2.pts")
    ds = PtsDataset(tmp_path)
    assert len(ds) == 1
    assert sorted(Path(p).name for p in ds.bad_files) == ["f2.pts", "f3.pts"]
    s = ds[0]
    assert s.image.shape == (32, 32, 3) and s.target is None and s.label == -1
    assert s.landmarks.shape == (68, 2) and s.landmarks.dtype == np.float32
    np.testing.assert_allclose(s.landmarks, pts, atol=1e-3)
    one_based = PtsDataset(files=[tmp_path / "f1.pts"], offset=1.0)
    np.testing.assert_allclose(one_based[0].landmarks, pts - 1, atol=1e-3)
    with pytest.raises(ValueError):
        PtsDataset()


def test_split_holdout_deterministic():
    files = [f"/d/{i:03d}.pts" for i in range(50)]
    keep, held = split_holdout(files, 0.2, seed=1)
    assert len(held) == 10 and len(keep) == 40
    assert set(keep).isdisjoint(held) and set(keep) | set(held) == set(files)
    assert split_holdout(list(reversed(files)), 0.2, seed=1) == (keep, held)
    assert split_holdout(files, 0.2, seed=2)[1] != held
    with pytest.raises(ValueError):
        split_holdout(files, 1.5)


def test_list_pts_files(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.pts").write_text("")
    (tmp_path / "y.pts").write_text("")
    assert [Path(p).name for p in list_pts_files(tmp_path)] == ["x.pts", "y.pts"]


def _landmark_dir(root: Path, n: int) -> Path:
    root.mkdir()
    pts = np.stack([np.arange(68), np.arange(68)], axis=1).astype(np.float32)
    for i in range(n):
        _write_pts(root / f"l{i}.pts", pts)
        cv2.imwrite(str(root / f"l{i}.png"), np.zeros((16, 16, 3), np.uint8))
    return root


def test_weighted_mix(ferplus_dir: Path, tmp_path: Path):
    emo = FerPlusDataset(ferplus_dir, scheme="crossentropy")   # 4 items
    lmk = PtsDataset(_landmark_dir(tmp_path / "lmk", 3))        # 3 items
    mix = WeightedMix([emo, lmk], [3, 1], length=8, seed=0)
    assert mix.classes == FERPLUS_CLASSES
    assert mix.counts().tolist() == [6, 2]
    plan0 = mix.plan.copy()
    assert (plan0[:, 0] == 0).sum() == 6
    # first pass over a dataset has no repeats
    assert len(set(plan0[plan0[:, 0] == 1, 1].tolist())) == 2
    samples = [mix[i] for i in range(len(mix))]
    with_lmk = [s for s in samples if s.landmarks is not None]
    assert len(with_lmk) == 2 and all(s.target is None and s.label == -1 for s in with_lmk)
    assert all(s.target is not None for s in samples if s.landmarks is None)
    mix.set_epoch(1)
    assert emo.epoch == 1 and lmk.epoch == 1
    mix.set_epoch(0)
    assert (mix.plan == plan0).all()
    assert mix.counts().tolist() == [6, 2]


def test_weighted_mix_passes_without_repeats(tmp_path: Path):
    lmk = PtsDataset(_landmark_dir(tmp_path / "lmk", 3))
    for seed in range(5):
        mix = WeightedMix([lmk, lmk], [0, 1], length=6, seed=seed)
        assert mix.counts().tolist() == [0, 6]
        # two full passes: every item exactly twice
        assert np.bincount(mix.plan[:, 1], minlength=3).tolist() == [2, 2, 2]


def test_weighted_mix_remaps_classes(ferplus_dir: Path, tmp_path: Path):
    px = " ".join(["1"] * 2304)
    csv_path = tmp_path / "fer.csv"
    csv_path.write_text(f"emotion,pixels,Usage\n3,{px},Training\n")
    fer7 = Fer2013CsvDataset(csv_path)
    emo = FerPlusDataset(ferplus_dir, scheme="majority")
    with pytest.raises(ValueError, match="classes="):
        WeightedMix([emo, fer7], [1, 1])
    mix = WeightedMix([emo, fer7], [1, 1], length=4, classes=EDAN3_CLASSES)
    for s in (mix[i] for i in range(4)):
        assert s.classes == EDAN3_CLASSES
        expected = 1 if s.path.startswith(str(csv_path)) else 0  # happiness / neutral
        assert s.label == expected and s.target.tolist() == [float(k == expected) for k in range(3)]


def test_remap_sample_masks_and_distributions():
    img = np.zeros((2, 2), np.uint8)
    mask = np.array([1, 1, 1, 0, 0, 0, 0, 1], np.float32)  # neutral happiness surprise contempt
    s = remap_sample(Sample(img, None, mask, -1, "m", FERPLUS_CLASSES), EDAN3_CLASSES)
    assert s.target.tolist() == [1, 1, 1]
    dist = np.array([0.5, 0, 0, 0, 0, 0, 0, 0.5], np.float32)
    s = remap_sample(Sample(img, None, dist, -1, "d", FERPLUS_CLASSES), FER2013_CLASSES)
    assert s.target[FER2013_CLASSES.index("neutral")] == pytest.approx(1.0)  # contempt dropped
    only_contempt = np.eye(8, dtype=np.float32)[7]
    s = remap_sample(Sample(img, None, only_contempt, 7, "c", FERPLUS_CLASSES), FER2013_CLASSES)
    assert s.target is None and s.label == -1
