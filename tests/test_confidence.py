"""The confidence head: what it measures, how the read-out uses it, and `colorvid train --confidence`."""

from __future__ import annotations

import json

import pytest
import torch
from media import make_images

from colorvid.errors import ColorizeError
from colorvid.models import load_model
from colorvid.models.effnet_unet import Colorizer, ModelConfig, hue_agreement, save_model
from colorvid.training import TrainOptions, train_confidence
from colorvid.training.colorizer import gamut_bins, rebalance_weights
from colorvid.training.confidence import GAINS, best_gain, load_base, validate
from colorvid.training.data import center_crops, list_sources


def _posterior_logits(probabilities: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor(probabilities).clamp(min=1e-12)).view(1, -1, 1, 1)


def test_hue_agreement_is_one_for_one_hue_and_zero_for_opposite_hues():
    centers = torch.tensor([[40.0, 0.0], [-40.0, 0.0], [20.0, 0.0], [0.0, 30.0]])
    assert hue_agreement(_posterior_logits([1, 0, 0, 0]), centers).item() == pytest.approx(1.0, abs=1e-4)
    # two strengths of one hue still agree
    assert hue_agreement(_posterior_logits([0.5, 0, 0.5, 0]), centers).item() == pytest.approx(1.0, abs=1e-4)
    # red or green: no hue to commit to
    assert hue_agreement(_posterior_logits([0.5, 0.5, 0, 0]), centers).item() == pytest.approx(0.0, abs=1e-4)
    # at right angles: |(20, 15)| / 35
    assert hue_agreement(_posterior_logits([0.5, 0, 0, 0.5]), centers).item() == pytest.approx(25 / 35, abs=1e-3)


def test_hue_agreement_takes_the_rebalancing_weights_back_out():
    centers = torch.tensor([[40.0, 0.0], [-40.0, 0.0]])
    weights = torch.tensor([1.0, 3.0])
    # a rebalanced head predicts p * w: p = (0.75, 0.25) shows up as (0.5, 0.5)
    logits = _posterior_logits([0.5, 0.5])
    assert hue_agreement(logits, centers).item() == pytest.approx(0.0, abs=1e-4)
    assert hue_agreement(logits, centers, weights).item() == pytest.approx(0.5, abs=1e-3)


def _confident_model(gate_bias: float, gain: float) -> Colorizer:
    torch.manual_seed(0)
    model = Colorizer(ModelConfig(ab_bins=4, confidence_head=True, confidence_gain=gain), torch.zeros(4, 2))
    assert model.confidence is not None and model.confidence.out.bias is not None
    assert model.regress.bias is not None
    with torch.no_grad():
        model.regress.weight.zero_()
        model.regress.bias.copy_(torch.tensor([30.0, -20.0]) / 110.0)
        model.confidence.out.bias.fill_(gate_bias)
    return model.eval()


def test_the_read_out_scales_the_regression_by_gain_and_confidence_and_survives_saving(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(_confident_model(gate_bias=0.0, gain=1.5), path)
    lightness = (torch.rand(2, 1, 64, 96) * 100).contiguous(memory_format=torch.channels_last)
    eager, optimized = load_model(path), load_model(path, optimize=True)
    assert isinstance(eager, Colorizer)
    assert eager.config.confidence_head and eager.config.confidence_gain == 1.5
    with torch.no_grad():
        ab = eager(lightness)
        # sigmoid(0) = 0.5, times a gain of 1.5
        assert torch.allclose(ab[:, 0], torch.full_like(ab[:, 0], 30.0 * 0.75), atol=0.05)
        assert torch.allclose(ab[:, 1], torch.full_like(ab[:, 1], -20.0 * 0.75), atol=0.05)
        assert torch.allclose(optimized(lightness), ab, atol=1e-3)


def test_the_gain_is_the_sharpest_that_keeps_half_the_colorfulness():
    gains = (1.0, 1.2, 1.4, 1.6)
    metrics = {"colorfulness_truth": 40.0}
    for g, p, c in zip(gains, (26.0, 25.9, 25.8, 25.6), (14.0, 18.0, 21.0, 24.0)):
        metrics[f"psnr_gain_{g}"], metrics[f"colorfulness_gain_{g}"] = p, c
    assert best_gain(metrics, gains) == 1.4  # 1.0 and 1.2 score higher but are too dull
    metrics["colorfulness_truth"] = 100.0
    assert best_gain(metrics, gains) == 1.6  # none is colorful enough: the most colorful


def _classifying_model(path) -> None:
    torch.manual_seed(1)
    save_model(Colorizer(ModelConfig(ab_bins=len(gamut_bins())), gamut_bins()), path)


def test_confidence_training_learns_the_hue_agreement_picks_a_gain_and_resumes(tmp_path):
    data = make_images(tmp_path / "data", count=48)
    start = tmp_path / "start.safetensors"
    _classifying_model(start)
    options = TrainOptions(data=(data,), out_dir=tmp_path / "run", epochs=1, batch_size=2, size=64, init=str(start),
                           val_fraction=0.5, lr=0.1)

    # the untrained head: how far it is from the classification head's agreement on the validation crops
    from colorvid.training.data import load_dataset

    train_images, val_images, _ = load_dataset(options)
    fresh = load_base(start).eval()
    weights = rebalance_weights(train_images, fresh.ab_centers)
    before = validate(fresh, center_crops(val_images, 64), 4, weights, gains=(1.0,))["loss"]

    best = train_confidence(options, progress=False)
    history = json.loads((options.out_dir / "history.json").read_text())
    assert len(history) == 1 and history[0]["loss"] < 0.7 * before
    assert history[0]["gain"] in GAINS
    assert all(f"psnr_gain_{g}" in history[0] for g in GAINS)
    model = load_model(best)
    assert isinstance(model, Colorizer)
    assert model.config.confidence_head and model.config.confidence_gain == history[0]["gain"]
    assert model.config.readout == "regression"

    train_confidence(TrainOptions(**{**options.__dict__, "epochs": 2}), progress=False)
    history = json.loads((options.out_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["step"] == 2 * history[0]["step"]


def test_confidence_training_needs_a_model_with_a_classification_head(tiny_model):
    with pytest.raises(ColorizeError, match="classification head"):
        load_base(tiny_model)


def test_train_confidence_without_a_model_is_a_usage_error(tmp_path, run):
    data = make_images(tmp_path / "data", count=2)
    status, err = run(["train", str(data), "-o", str(tmp_path / "run"), "--confidence"])
    assert status == 2 and "--init MODEL" in err
    status, err = run(["train", str(data), "-o", str(tmp_path / "run"), "--confidence", "--previous-frame",
                       "--init", "colorvid-base"])
    assert status == 2 and "one after the other" in err
    assert list_sources((data,))  # the data was fine: only the options were refused


def test_the_shipped_model_mutes_its_colors_with_a_confidence_head():
    from colorvid.weights import load_registry, resolve

    registry = load_registry()
    model = load_model(resolve(registry.default_name(), registry))
    assert isinstance(model, Colorizer)
    assert model.config.confidence_head and model.config.readout == "regression"
    assert model.config.confidence_gain in GAINS and model.config.temporal_head
