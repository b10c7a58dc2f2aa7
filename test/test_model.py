"""The network, its loss, checkpoints and the predictor (CPU, tiny configurations)."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from emodan_ros.model.checkpoint import CheckpointError, load_model, save_checkpoint
from emodan_ros.faces.classes import EDAN3_CLASSES
from emodan_ros.faces.crop import CROP_SHIFT
from emodan_ros.model.dan import PRESETS, DANConfig, EmotionalDAN, default_mean_shape, fold_batch_norms, standardize
from emodan_ros.model.loss import LossConfig, emotion_loss, joint_loss, landmark_nme
from emodan_ros.model.predictor import Predictor

TINY = DANConfig(input_size=32, num_stages=2, width=0.125, convs_per_block=1, fc_size=32)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        DANConfig(input_size=50)
    with pytest.raises(ValueError, match="num_stages"):
        DANConfig(num_stages=4)
    with pytest.raises(ValueError, match="unknown DANConfig"):
        DANConfig.from_dict({"input_size": 32, "depth": 3})


def test_presets_have_the_papers_sizes() -> None:
    assert PRESETS["dan112"].input_size == 112 and PRESETS["dan112"].channels == (64, 128, 256, 512)
    assert PRESETS["paper224"].input_size == 224 and PRESETS["paper224"].num_stages == 2


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_forward_shapes_per_stage(stages: int) -> None:
    config = DANConfig(input_size=32, num_stages=stages, width=0.125, fc_size=32, class_names=EDAN3_CLASSES)
    model = EmotionalDAN(config).eval()
    output = model(torch.randn(3, 1, 32, 32))
    assert len(output.landmarks) == stages
    assert all(shape.shape == (3, 68, 2) for shape in output.landmarks)
    assert output.final_logits.shape == (3, 3)
    assert all(logits is None for logits in output.logits[:-1])


def test_untrained_first_stage_starts_at_the_mean_shape() -> None:
    model = EmotionalDAN(TINY).eval()
    output = model(torch.randn(2, 1, 32, 32))
    assert torch.allclose(output.landmarks[0], default_mean_shape().expand(2, -1, -1), atol=1e-6)
    # Later stages start with zero offsets too: warping there and back must return the same shape.
    assert torch.allclose(output.landmarks[1], output.landmarks[0], atol=1e-5)


def test_gradients_reach_the_first_stage_through_the_feature_image() -> None:
    model = EmotionalDAN(TINY).train()
    for stage in model.stages:
        torch.nn.init.normal_(stage.landmarks.weight, std=0.01)
    output = model(torch.randn(4, 1, 32, 32))
    output.final_landmarks.sum().backward()
    assert model.stages[0].features[0].weight.grad.abs().sum() > 0
    assert model.feature_images[0].project.weight.grad.abs().sum() > 0


def test_standardize_gives_zero_mean_unit_std_per_crop() -> None:
    crops = torch.stack([torch.full((1, 8, 8), 10.0), torch.arange(64.0).view(1, 8, 8)])
    out = standardize(crops)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(out[1].std(), torch.tensor(1.0), atol=1e-5)
    assert torch.all(out[0] == 0)  # a flat crop stays flat instead of blowing up


def test_nme_is_normalised_by_eye_centre_distance() -> None:
    truth = default_mean_shape().unsqueeze(0)
    shifted = truth + torch.tensor([0.03, 0.04])
    distance = (truth[0, 42:48].mean(0) - truth[0, 36:42].mean(0)).norm()
    assert float(landmark_nme(shifted, truth)) == pytest.approx(0.05 / float(distance), rel=1e-5)


def test_emotion_loss_schemes() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    one_hot = torch.tensor([[0.0, 1.0, 0.0]])
    assert float(emotion_loss(logits, one_hot, "majority")) == pytest.approx(-np.log(0.3), rel=1e-5)
    votes = torch.tensor([[0.5, 0.5, 0.0]])
    expected = -(0.5 * np.log(0.5) + 0.5 * np.log(0.3))
    assert float(emotion_loss(logits, votes, "crossentropy")) == pytest.approx(expected, rel=1e-5)
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    assert float(emotion_loss(logits, mask, "multilabel")) == pytest.approx(-np.log(0.3), rel=1e-5)


def test_joint_loss_masks_missing_labels() -> None:
    model = EmotionalDAN(TINY).eval()
    output = model(torch.randn(2, 1, 32, 32))
    truth = default_mean_shape().expand(2, -1, -1) + torch.tensor([0.01, 0.0])
    target = torch.zeros(2, 8)
    target[:, 0] = 1
    config = LossConfig(alpha=1.0, beta=1.0)
    landmark_only = joint_loss(output, truth, torch.tensor([True, False]), target, torch.tensor([False, False]), config)
    assert float(landmark_only.emotion) == 0.0 and float(landmark_only.landmark) > 0
    both = joint_loss(output, truth, torch.tensor([True, True]), target, torch.tensor([True, True]), config)
    assert both.total.item() > landmark_only.total.item()
    garbage = truth.clone()
    garbage[1] = 1e6  # a sample without landmarks may hold anything
    masked = joint_loss(output, garbage, torch.tensor([True, False]), target, torch.tensor([False, False]), config)
    assert float(masked.total.detach()) == pytest.approx(float(landmark_only.total.detach()))


def test_checkpoint_round_trip_and_fp16_storage(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EmotionalDAN(TINY).eval()
    save_checkpoint(tmp_path / "m.pt", model, metrics={"accuracy": 0.5})
    save_checkpoint(tmp_path / "h.pt", model, half=True)
    loaded, payload = load_model(tmp_path / "m.pt")
    half, _ = load_model(tmp_path / "h.pt")
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(loaded(x).final_logits, model(x).final_logits)
    assert torch.allclose(half(x).final_logits, model(x).final_logits, atol=2e-2)
    assert payload["metrics"] == {"accuracy": 0.5} and payload["config"]["input_size"] == 32
    assert (tmp_path / "h.pt").stat().st_size < (tmp_path / "m.pt").stat().st_size


def test_bad_checkpoints_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no model checkpoint"):
        load_model(tmp_path / "missing.pt")
    model = EmotionalDAN(TINY)
    save_checkpoint(tmp_path / "ok.pt", model)
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "cut.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an emodan_ros checkpoint"):
        load_model(tmp_path / "other.pt")
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    payload["config"]["width"] = 0.25  # config and weights disagree
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "mismatch.pt")


def test_predictor_maps_landmarks_back_to_frame_pixels() -> None:
    predictor = Predictor.random(TINY)
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[100.0, 60.0, 180.0, 140.0], [10.0, 10.0, 50.0, 50.0]])
    result = predictor.predict(frame, boxes)
    assert result.landmarks.shape == (2, 68, 2) and result.probs.shape == (2, 8)
    assert np.allclose(result.probs.sum(axis=1), 1, atol=1e-5)
    assert np.all((result.quality >= 0) & (result.quality <= 1))
    # An untrained model outputs the mean shape, which sits inside the (1.25x, shifted) crop around each box.
    for box, points in zip(boxes, result.landmarks):
        side = box[2] - box[0]
        centre = (box[:2] + box[2:]) / 2 + np.array([0.0, CROP_SHIFT * side])
        assert np.all(np.abs(points - centre) <= side * 1.25 / 2)
    crop_centre = np.array([140.0, 100.0 + CROP_SHIFT * 80])
    expected = (default_mean_shape().numpy() * 32 - 0.5 - 15.5) * (100 / 32) + crop_centre
    assert np.allclose(result.landmarks[0], expected, atol=1e-3)


@pytest.mark.parametrize("side", [20.0, 60.0, 100.0, 150.0, 400.0])
@pytest.mark.parametrize("centre", [(220.0, 100.0), (30.0, 480.0)])  # inside; running off the corner
def test_predictor_on_device_crop_matches_training_crop(side: float, centre: tuple[float, float]) -> None:
    """The node's crop (area shrink and grid_sample on the device) is training's crop (OpenCV)."""
    from skimage import data

    from emodan_ros.faces.crop import crop_matrix, make_crop, to_gray
    from emodan_ros.model.predictor import cut_crop

    gray = to_gray(data.astronaut()[:, :, ::-1].copy())
    box = np.array([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2])
    expected, _ = make_crop(gray, box, 48)
    crop = cut_crop(torch.from_numpy(gray).float()[None, None], crop_matrix(box, 48), 48)[0, 0].numpy()
    difference = np.abs(crop - expected)
    # Training rounds to 8 bits twice; anything beyond that would be a different resampling.
    assert difference.mean() < 0.5 and difference.max() < 4


def _mirror(points: np.ndarray, width: int) -> np.ndarray:
    from emodan_ros.faces.crop import FLIP_INDEX

    mirrored = points[:, FLIP_INDEX].copy()
    mirrored[..., 0] = width - 1 - mirrored[..., 0]
    return mirrored


def test_flip_average_is_the_mean_of_a_face_and_its_mirror() -> None:
    plain = Predictor.random(TINY, seed=3)
    averaged = Predictor(plain.model, "cpu", "fp32", flip_average=True)
    faces = np.random.default_rng(2).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    mirrored_faces = np.ascontiguousarray(faces[:, :, ::-1])
    a, b = plain.predict_crops(faces), plain.predict_crops(mirrored_faces)
    both = averaged.predict_crops(faces)
    assert np.allclose(both.probs, (a.probs + b.probs) / 2, atol=1e-5)
    assert np.allclose(both.landmarks, (a.landmarks + _mirror(b.landmarks, 40)) / 2, atol=1e-3)
    # The mirrored face gets the mirrored answer, exactly, whatever the weights.
    other = averaged.predict_crops(mirrored_faces)
    assert np.allclose(other.probs, both.probs, atol=1e-5)
    assert np.allclose(_mirror(other.landmarks, 40), both.landmarks, atol=1e-3)
    frame = np.random.default_rng(4).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    result = averaged.predict(frame, np.array([[40.0, 20.0, 100.0, 80.0]]))
    assert result.landmarks.shape == (1, 68, 2) and np.allclose(result.probs.sum(), 1, atol=1e-5)


def test_predictor_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="device"):
        Predictor.random(TINY, device="tpu")
    with pytest.raises(ValueError, match="fp16"):
        Predictor.random(TINY, precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            Predictor.random(TINY, device="cuda")


def test_predict_with_no_faces_returns_empty_arrays() -> None:
    result = Predictor.random(TINY).predict(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 4)))
    assert result.landmarks.shape == (0, 68, 2) and result.probs.shape == (0, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu() -> None:
    cpu = Predictor.random(TINY, device="cpu", precision="fp32")
    gpu = Predictor(copy.deepcopy(cpu.model), device="cuda", precision="fp16")  # .to() moves a module in place
    frame = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    box = np.array([[100.0, 60.0, 180.0, 140.0], [20.0, 30.0, 60.0, 70.0]])
    a = cpu.predict(frame, box)
    b = gpu.predict(frame, box)
    assert np.allclose(a.probs, b.probs, atol=2e-2)
    assert np.abs(a.landmarks - b.landmarks).max() < 0.5  # frame pixels


def test_export_drops_training_state_and_halves_the_weights(tmp_path: Path) -> None:
    from emodan_ros.model.checkpoint import export_checkpoint, read_checkpoint

    model = EmotionalDAN(TINY).eval()
    save_checkpoint(tmp_path / "last.pt", model, optimizer={"state": {}}, epoch=3, metrics={"val_accuracy": 0.8})
    export_checkpoint(tmp_path / "last.pt", tmp_path / "ship.pt")
    payload = read_checkpoint(tmp_path / "ship.pt")
    assert "optimizer" not in payload and "epoch" not in payload
    assert payload["metrics"] == {"val_accuracy": 0.8} and payload["exported_from"]["storage"] == "fp16"
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values() if v.is_floating_point())
    shipped, _ = load_model(tmp_path / "ship.pt")
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(shipped(x).final_logits, model(x).final_logits, atol=2e-2)


def test_average_of_fine_tunings_is_the_mean_of_their_weights(tmp_path: Path) -> None:
    from emodan_ros.model.checkpoint import average_checkpoints, export_checkpoint

    torch.manual_seed(0)
    models = [EmotionalDAN(TINY).eval() for _ in range(2)]
    for index, model in enumerate(models):
        save_checkpoint(tmp_path / f"{index}.pt", model, metrics={"val_accuracy": 0.5 + index / 10})
    average_checkpoints([tmp_path / "0.pt", tmp_path / "1.pt"], tmp_path / "soup.pt")
    soup, payload = load_model(tmp_path / "soup.pt")
    a, b = (m.state_dict() for m in models)
    for key, value in soup.state_dict().items():
        expected = (a[key] + b[key]) / 2 if value.is_floating_point() else a[key]
        assert torch.allclose(value, expected), key
    assert [r["metrics"]["val_accuracy"] for r in payload["averaged_from"]] == [0.5, 0.6]
    export_checkpoint(tmp_path / "soup.pt", tmp_path / "ship.pt")  # the soup ships like any checkpoint
    assert load_model(tmp_path / "ship.pt")[1]["averaged_from"] == payload["averaged_from"]


def test_average_refuses_different_networks(tmp_path: Path) -> None:
    from emodan_ros.model.checkpoint import average_checkpoints

    save_checkpoint(tmp_path / "a.pt", EmotionalDAN(TINY))
    save_checkpoint(tmp_path / "b.pt", EmotionalDAN(DANConfig(**{**TINY.to_dict(), "fc_size": 64,
                                                                 "class_names": TINY.class_names})))
    with pytest.raises(CheckpointError, match="another network configuration"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "soup.pt")
    shifted = default_mean_shape() + 0.01
    save_checkpoint(tmp_path / "c.pt", EmotionalDAN(TINY, shifted))
    with pytest.raises(CheckpointError, match="another mean shape"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"], tmp_path / "soup.pt")
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([tmp_path / "a.pt"], tmp_path / "soup.pt")


def test_folded_batch_norms_give_the_same_outputs_without_batch_norm_layers() -> None:
    torch.manual_seed(0)
    model = EmotionalDAN(PRESETS["rt112"])
    for m in model.modules():  # non-trivial running statistics, as a trained model has
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    folded = fold_batch_norms(model)
    x = torch.randn(3, 1, 112, 112)
    with torch.no_grad():
        a, b = model(x), folded(x)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    torch.testing.assert_close(b.final_landmarks, a.final_landmarks, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b.final_logits, a.final_logits, atol=1e-4, rtol=1e-4)
