"""The training script end to end on tiny generated data (never the research datasets)."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from emodan_ros.model.checkpoint import CheckpointError, load_model, read_checkpoint
from emodan_ros.evaluation import metrics
from emodan_ros.model.dan import default_mean_shape, standardize
from emodan_ros.training.trainer import TrainConfig, Trainer, train, weighted_mean_update

TINY_MODEL = {"input_size": 32, "width": 0.125, "fc_size": 32, "convs_per_block": 1}
VOTES = ["6,2,1,0,1,0,0,0,0,0", "0,8,2,0,0,0,0,0,0,0", "1,0,7,2,0,0,0,0,0,0", "0,0,0,9,1,0,0,0,0,0",
         "2,0,0,0,8,0,0,0,0,0", "0,0,0,0,0,10,0,0,0,0", "0,0,1,0,0,0,9,0,0,0", "0,0,0,0,0,0,0,0,10,0"]


def make_ferplus(root: Path, count: int = 16) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for index in range(count):
        name = f"fer{index:07d}.png"
        cv2.imwrite(str(root / name), rng.integers(0, 255, (48, 48), dtype=np.uint8))
        lines.append(f'{name},"(0, 0, 48, 48)",{VOTES[index % len(VOTES)]}')
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    return root


def make_pts(root: Path, count: int = 10) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        shape = default_mean_shape().numpy() * 80 + 24 + rng.normal(0, 1, (68, 2))
        image = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
        cv2.imwrite(str(root / f"face{index}.jpg"), image)
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in shape)
        (root / f"face{index}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    return root


@pytest.fixture
def data(tmp_path: Path) -> dict[str, str]:
    return {"ferplus_train": str(make_ferplus(tmp_path / "train")),
            "ferplus_valid": str(make_ferplus(tmp_path / "valid", 8)),
            "pts": str(make_pts(tmp_path / "pts"))}


def config(tmp_path: Path, data: dict[str, str], *extra: str) -> TrainConfig:
    overrides = [f"out={tmp_path / 'run'}", f"ferplus_train={data['ferplus_train']}",
                 f"ferplus_valid={data['ferplus_valid']}", f"landmark_dirs=[{data['pts']}]",
                 "landmark_holdout=0.2", "batch_size=4", "epochs=[2]", "epoch_length=16", "device=cpu",
                 "precision=fp32"] + [f"model.{k}={v}" for k, v in TINY_MODEL.items()] + list(extra)
    return TrainConfig.from_sources(None, overrides)


def test_config_rejects_unknown_and_inconsistent_options(tmp_path: Path, data: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="unknown training option"):
        config(tmp_path, data, "learning_rate=1")
    with pytest.raises(ValueError, match="one epoch count per stage"):
        config(tmp_path, data, "schedule=stagewise", "epochs=[1]")
    with pytest.raises(ValueError, match="label scheme"):
        config(tmp_path, data, "scheme=vote")


def test_joint_training_writes_checkpoints_metrics_and_plots(tmp_path: Path, data: dict[str, str]) -> None:
    result = train(config(tmp_path, data))
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.json", "curves.png", "confusion.png"):
        assert (run / name).is_file(), name
    assert 0.0 <= result["val_accuracy"] <= 1.0 and result["val_nme_inter_ocular"] > 0
    model, payload = load_model(run / "last.pt")
    assert payload["data"]["landmarks"]["n_holdout"] == 2
    assert payload["data"]["ferplus_train"]["scheme"] == "probability"
    assert len(payload["history"]) == 2 and payload["train_config"]["epochs"] == [2]
    # The mean shape comes from the landmark data, not the built-in placeholder.
    assert not torch.allclose(model.mean_shape, default_mean_shape())


def test_validation_scores_the_model_as_trained_though_it_runs_folded(tmp_path: Path, data: dict[str, str]) -> None:
    """validate() runs a BatchNorm-folded copy in training-size batches: the figures must be the model's own."""
    trainer = Trainer(config(tmp_path, data, "epochs=[1]"))
    trainer.run()
    record = trainer.validate(trainer.model, 2)
    model = trainer.model.eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the trained model is left as it is
    fer = trainer.valid_emotion["ferplus"]
    with torch.inference_mode():
        items = [fer[i] for i in range(len(fer))]
        images = standardize(torch.stack([item["image"] for item in items]))
        labels = torch.stack([item["label"] for item in items])
        logits = model(images, stages=2).logits[1]
        held = [trainer.valid_landmarks[i] for i in range(len(trainer.valid_landmarks))]
        points = model(standardize(torch.stack([item["image"] for item in held])), stages=2).landmarks[1]
    assert record["val_accuracy"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    truth = torch.stack([item["landmarks"] for item in held]).numpy()
    nme = metrics.summarize(pred_landmarks=points.numpy(), gt_landmarks=truth)["nme_inter_ocular"]
    assert record["val_nme_inter_ocular"] == pytest.approx(nme, rel=1e-4)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path, data: dict[str, str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    train(config(tmp_path / "straight", data))
    original_save = Trainer._save

    def save_then_die(self: Trainer, record, phase, epoch, optimizer, scheduler) -> None:
        original_save(self, record, phase, epoch, optimizer, scheduler)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "cut", data))
    monkeypatch.setattr(Trainer, "_save", original_save)
    assert read_checkpoint(tmp_path / "cut" / "run" / "last.pt")["epoch"] == 1
    train(config(tmp_path / "cut", data, f"resume={tmp_path / 'cut' / 'run' / 'last.pt'}"))
    resumed = read_checkpoint(tmp_path / "cut" / "run" / "last.pt")
    straight = read_checkpoint(tmp_path / "straight" / "run" / "last.pt")
    assert [record["epoch"] for record in resumed["history"]] == [1, 2]
    assert all(torch.allclose(resumed["state_dict"][k].float(), straight["state_dict"][k].float(), atol=1e-5)
               for k in straight["state_dict"])


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9997])
def test_weighted_mean_update_leaves_nothing_on_the_first_weights_but_their_share(decay: float) -> None:
    """After n updates the average is sum_k decay^(n-k) w_k / sum_k decay^(n-k): no weight stuck on w_0."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False), torch.nn.BatchNorm1d(1))
    average = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=weighted_mean_update(decay), use_buffers=True)
    seen = [torch.tensor([[3.0, -1.0]]), torch.tensor([[5.0, 0.0]]), torch.tensor([[-1.0, 2.0]])]
    for value in seen:
        model[0].weight.data.copy_(value)
        model(torch.randn(4, 2))
        average.update_parameters(model)
    shares = torch.tensor([decay ** (len(seen) - 1 - k) for k in range(len(seen))])
    expected = (torch.stack(seen) * shares[:, None, None]).sum(0) / shares.sum()
    assert torch.allclose(average.module[0].weight, expected, atol=1e-6)
    assert int(average.module[1].num_batches_tracked) == len(seen)  # a counter is copied, not averaged


def test_weight_average_is_what_is_validated_selected_and_resumed(tmp_path: Path, data: dict[str, str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With ema_decay, best.pt holds the average (not the trained weights), the trained weights' scores are
    kept beside it, and an interrupted run resumes its average as well as its weights."""
    train(config(tmp_path / "straight", data, "ema_decay=0.9"))
    straight = read_checkpoint(tmp_path / "straight" / "run" / "last.pt")
    average = {k.removeprefix("module."): v for k, v in straight["average"].items() if k.startswith("module.")}
    record = straight["history"][-1]
    assert {"raw_val_accuracy", "raw_val_nme_inter_ocular", "val_accuracy"} <= set(record)
    assert record["raw_val_nme_inter_ocular"] != record["val_nme_inter_ocular"]
    weights = [k for k in average if k.endswith(".weight")]
    assert any(not torch.allclose(average[k], straight["state_dict"][k]) for k in weights)  # an average, not a copy
    train(config(tmp_path / "one", data, "ema_decay=0.9", "epochs=[1]"))  # one epoch: best.pt is that epoch's
    one = read_checkpoint(tmp_path / "one" / "run" / "last.pt")["average"]
    best = read_checkpoint(tmp_path / "one" / "run" / "best.pt")["state_dict"]
    assert best.keys() == {k.removeprefix("module.") for k in one if k.startswith("module.")}
    assert all(torch.equal(best[k], one[f"module.{k}"]) for k in best)

    original_save = Trainer._save

    def save_then_die(self: Trainer, record, phase, epoch, optimizer, scheduler) -> None:
        original_save(self, record, phase, epoch, optimizer, scheduler)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "cut", data, "ema_decay=0.9"))
    monkeypatch.setattr(Trainer, "_save", original_save)
    cut = tmp_path / "cut" / "run" / "last.pt"
    train(config(tmp_path / "cut", data, "ema_decay=0.9", f"resume={cut}"))
    resumed = read_checkpoint(cut)["average"]
    assert all(torch.allclose(resumed[k].float(), straight["average"][k].float(), atol=1e-5) for k in resumed)
    train(config(tmp_path / "plain", data, "epochs=[1]"))
    with pytest.raises(CheckpointError, match="no weight average"):
        train(config(tmp_path / "plain", data, "ema_decay=0.9", f"resume={tmp_path / 'plain' / 'run' / 'last.pt'}"))
    with pytest.raises(ValueError, match="ema_decay"):
        config(tmp_path, data, "ema_decay=1.0")


def test_stagewise_training_freezes_earlier_stages(tmp_path: Path, data: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    original_save = Trainer._save

    def save_and_snapshot(self: Trainer, record, phase, epoch, optimizer, scheduler) -> None:
        snapshots[phase] = {k: v.clone() for k, v in self.model.state_dict().items()}
        original_save(self, record, phase, epoch, optimizer, scheduler)

    monkeypatch.setattr(Trainer, "_save", save_and_snapshot)
    train(config(tmp_path, data, "schedule=stagewise", "epochs=[1,1]"))
    first, second = snapshots[0], snapshots[1]
    stage_one = [k for k in first if k.startswith("stages.0.")]
    stage_two = [k for k in first if k.startswith("stages.1.") and "running" not in k and "num_batches" not in k]
    assert all(torch.equal(first[k], second[k]) for k in stage_one)  # weights and batch-norm statistics
    assert any(not torch.equal(first[k], second[k]) for k in stage_two)


def test_same_seed_gives_the_same_model(tmp_path: Path, data: dict[str, str]) -> None:
    train(config(tmp_path / "a", data, "epochs=[1]"))
    train(config(tmp_path / "b", data, "epochs=[1]"))
    a = read_checkpoint(tmp_path / "a" / "run" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "b" / "run" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_fine_tunes_from_another_runs_weights(tmp_path: Path, data: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    train(config(tmp_path / "base", data, "epochs=[1]"))
    base = read_checkpoint(tmp_path / "base" / "run" / "last.pt")["state_dict"]
    loaded: dict[str, torch.Tensor] = {}
    original_run = Trainer.run

    def capture_then_run(self: Trainer) -> dict:
        original_init = self._initialise

        def initialise(path: str) -> None:
            original_init(path)
            loaded.update({k: v.clone() for k, v in self.model.state_dict().items()})

        self._initialise = initialise
        return original_run(self)

    monkeypatch.setattr(Trainer, "run", capture_then_run)
    train(config(tmp_path / "tuned", data, "epochs=[1]", f"init={tmp_path / 'base' / 'run' / 'last.pt'}"))
    assert all(torch.equal(loaded[k], base[k].float() if base[k].is_floating_point() else base[k]) for k in base)
    tuned = read_checkpoint(tmp_path / "tuned" / "run" / "last.pt")
    assert [record["epoch"] for record in tuned["history"]] == [1]  # a fresh schedule, not a continuation
    assert any(not torch.equal(tuned["state_dict"][k], base[k]) for k in base)


def test_init_rejects_another_architecture_and_resume_together(tmp_path: Path, data: dict[str, str]) -> None:
    train(config(tmp_path / "base", data, "epochs=[1]"))
    checkpoint = tmp_path / "base" / "run" / "last.pt"
    with pytest.raises(CheckpointError, match="does not fit"):
        train(config(tmp_path / "wide", data, "epochs=[1]", "model.width=0.25", f"init={checkpoint}"))
    with pytest.raises(ValueError, match="not both"):
        config(tmp_path, data, f"init={checkpoint}", f"resume={checkpoint}")


def test_init_moves_weights_of_an_older_crop_convention_to_this_one(tmp_path: Path, data: dict[str, str]) -> None:
    """Checkpoints from before CROP_SHIFT cannot be used but can be fine-tuned; the mean shape is recomputed."""
    from emodan_ros.model.checkpoint import load_model

    train(config(tmp_path / "base", data, "epochs=[1]"))
    payload = torch.load(tmp_path / "base" / "run" / "last.pt", weights_only=True)
    data_mean_shape = torch.tensor(payload["mean_shape"])
    del payload["crop"]["shift"]  # as written before the shift existed
    payload["state_dict"]["mean_shape"] = data_mean_shape + 0.05  # that run's crops put the face elsewhere
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    with pytest.raises(CheckpointError, match="shift 0.0"):
        load_model(old)
    train(config(tmp_path / "tuned", data, "epochs=[1]", f"init={old}"))
    tuned, _ = load_model(tmp_path / "tuned" / "run" / "last.pt")
    assert torch.allclose(tuned.mean_shape, data_mean_shape)


def test_the_shipped_models_recipe_trains_on_every_source_and_never_on_the_posed_set() -> None:
    """train_rt112.yaml is one command: FER+ votes, ExpW, the LFW-style set and 300-W, each with a
    validation split, class-balanced; the posed validation-only set is never named; the shipped
    checkpoint records that recipe."""
    root = Path(__file__).resolve().parents[1]
    config = TrainConfig.from_sources(str(root / "config" / "train_rt112.yaml"), [])
    paths = [config.ferplus_train, config.ferplus_valid, *config.landmark_dirs,
             *(e[k] for e in config.emotion_sets for k in ("train", "valid"))]
    assert not any("taiwanese" in path.lower() for path in paths)
    assert not config.init and config.preset == "rt112" and config.scheme == "crossentropy"
    assert {e["name"] for e in config.emotion_sets} == {"expw", "lfw"} and all(e["valid"] for e in config.emotion_sets)
    assert config.ferplus_valid and config.landmark_dirs and 0 < config.class_balance <= 1
    network = config.model_config()
    assert network.stage_sizes == (64, 112) and network.stage_blocks == ("vgg", "dwsep")
    shipped = root / "models" / "emodan_default.pt"
    if shipped.is_file():
        recorded = torch.load(shipped, map_location="cpu", weights_only=True).get("train_config", {})
        assert recorded.get("preset") == "rt112" and recorded.get("emotion_sets") == config.emotion_sets


def test_the_paper_size_config_trains_the_papers_network() -> None:
    config = TrainConfig.from_sources(str(Path(__file__).resolve().parents[1] / "config" / "train_paper224.yaml"), [])
    network = config.model_config()
    assert (network.input_size, network.num_stages, network.width, network.convs_per_block) == (224, 2, 1.0, 2)
    assert config.ferplus_train and config.landmark_dirs and config.scheme == "crossentropy"


def test_set_values_are_typed_at_parse_time() -> None:
    """`--set lr=1e-3` (YAML reads it as a string) becomes a float; a wrong type fails now, by name."""
    config = TrainConfig.from_sources(None, ["lr=1e-3", "weight_decay=0", "epochs=3", "ferplus_train=x"])
    assert isinstance(config.lr, float) and config.lr == pytest.approx(1e-3)
    assert isinstance(config.weight_decay, float) and config.epochs == [3]
    for bad, name in (("lr=fast", "lr"), ("batch_size=6.5", "batch_size"), ("epochs=[2, x]", "epochs[1]"),
                      ("seed=true", "seed"), ("model=3", "model")):
        with pytest.raises(ValueError, match=re.escape(f"training option {name} must be")):
            TrainConfig.from_sources(None, [bad, "ferplus_train=x"])
