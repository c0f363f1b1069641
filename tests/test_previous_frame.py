"""The previous-frame model: its head, its smoother, its training, and `--temporal model` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from media import TINT_AB, make_clip, mean_chroma_offset, read_video_pts, y_psnr
from PIL import Image

from colorvid.models import load_model
from colorvid.models.effnet_unet import Colorizer, ModelConfig, OptimizedColorizer, follow_previous, save_model
from colorvid.smoothing import ModelSmoother, temporal_settings
from colorvid.training import TrainOptions, train_previous_frame
from colorvid.training.data import SEQUENCE_LENGTH, load_runs, random_runs, synthetic_run


def _head_model(gate_bias: float = 4.0) -> Colorizer:
    """A tinted colorizer (TINT_AB everywhere) whose head opens its gate wide everywhere."""
    torch.manual_seed(0)
    model = Colorizer(ModelConfig(temporal_head=True))
    assert model.regress.bias is not None and model.temporal is not None and model.temporal.out.bias is not None
    with torch.no_grad():
        model.regress.weight.zero_()
        model.regress.bias.copy_(torch.tensor(TINT_AB) / 110.0)
        model.temporal.out.bias.fill_(gate_bias)
    return model.eval()


@pytest.fixture(scope="module")
def head_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "steady.safetensors"
    save_model(_head_model(), path)
    return str(path)


def test_follow_previous_stays_between_own_and_previous_colors():
    own, previous = torch.full((1, 2, 4, 4), 10.0), torch.full((1, 2, 4, 4), -20.0)
    gate = torch.rand(1, 1, 4, 4)
    confidence = torch.rand(1, 1, 4, 4)
    out = follow_previous(gate, own, previous, confidence, 0.8)
    assert (out <= 10.0).all() and (out >= -20.0 * 0.8 + 10.0 * 0.2 - 1e-4).all()
    # an untrusted warp (a cut, an occlusion) leaves the frame its own colors
    assert torch.equal(follow_previous(gate, own, previous, torch.zeros_like(confidence), 0.8), own)


def test_head_survives_saving_and_the_optimized_graph_matches(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(_head_model(gate_bias=0.3), path)
    eager, optimized = load_model(path), load_model(path, optimize=True)
    assert isinstance(eager, Colorizer) and eager.temporal is not None and isinstance(optimized, OptimizedColorizer)
    assert eager.config.temporal_head and optimized.temporal is not None
    lightness = (torch.rand(2, 1, 64, 96) * 100).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        features, own = eager.trunk(lightness)
        features_o, own_o = optimized.trunk(lightness)
        assert torch.allclose(own, own_o, atol=1e-3) and torch.allclose(optimized(lightness), own_o)
        previous, confidence = own.flip(0) - 5, torch.rand(2, 1, *own.shape[-2:])
        gate = eager.temporal(features, own, previous, confidence)
        assert torch.allclose(gate, optimized.temporal(features_o, own_o, previous, confidence), atol=1e-4)
    assert torch.allclose(gate, torch.sigmoid(torch.tensor(0.3)), atol=1e-3)  # the saved gate bias came back (fp16)


def test_model_smoother_holds_still_colors_and_never_builds_up():
    """60 frames of a still scene whose own colors flicker: the output is steadier and stays in their range."""
    model = _head_model()
    smoother = ModelSmoother(0.8, model.temporal)
    rng = torch.Generator().manual_seed(0)
    lightness = torch.linspace(20, 80, 16 * 24).reshape(1, 1, 16, 24).repeat(6, 1, 1, 1)
    outs, owns = [], []
    for _ in range(10):
        own = torch.tensor(TINT_AB).view(1, 2, 1, 1) + torch.randn(6, 2, 1, 1, generator=rng) * 8
        own = own.expand(6, 2, 16, 24).contiguous()
        features = torch.zeros(6, 64, 16, 24)
        out, cuts = smoother(own, lightness, features)
        outs.append(out)
        owns.append(own)
    outs, owns = torch.cat(outs), torch.cat(owns)
    assert outs.min() >= owns.min() - 1e-4 and outs.max() <= owns.max() + 1e-4
    flicker = lambda x: (x[1:] - x[:-1]).abs().mean()  # noqa: E731
    assert flicker(outs) < 0.5 * flicker(owns)


def test_a_cut_resets_the_model_smoother():
    model = _head_model()
    smoother = ModelSmoother(0.8, model.temporal)
    dark, bright = torch.full((3, 1, 16, 24), 10.0), torch.full((3, 1, 16, 24), 90.0)
    own = torch.cat((torch.full((3, 2, 16, 24), 40.0), torch.full((3, 2, 16, 24), -40.0)))
    out, cuts = smoother(own, torch.cat((dark, bright)), torch.zeros(6, 64, 16, 24))
    assert cuts.tolist() == [True, False, False, True, False, False]
    assert torch.equal(out[3], own[3])  # the new shot's first frame has nothing of the old one


def test_temporal_mode_defaults_to_the_head_when_the_model_has_one():
    assert temporal_settings(None, None, has_head=True) == ("model", 0.9)
    assert temporal_settings(None, None, has_head=False) == ("flow", 0.7)
    assert temporal_settings(None, 0, has_head=True) == ("none", 0)
    with pytest.raises(ValueError, match="previous-frame head"):
        temporal_settings("model", None, has_head=False)


def test_the_shipped_model_has_the_head_so_colorize_steadies_colors_with_it():
    from colorvid.pipeline import ColorizeOptions, Pipeline

    pipeline = Pipeline(ColorizeOptions(device="cpu"))  # the registry's default model
    assert (pipeline.options.temporal, pipeline.options.smooth) == ("model", 0.9)


def test_synthetic_runs_move_the_picture_and_a_patch():
    rng = np.random.default_rng(3)
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    other = np.zeros((80, 80, 3), dtype=np.uint8)
    for _ in range(20):
        frames = synthetic_run(image, other, 64, rng)
        assert frames.shape == (SEQUENCE_LENGTH, 3, 64, 64)
        assert 0 <= frames.min() and frames.max() <= 1
        assert all(not torch.equal(frames[k], frames[k + 1]) for k in range(SEQUENCE_LENGTH - 1))


def _sequence_folder(folder, frames: int = 8, size: int = 80):
    """A moving gradient as vid-<source>-<sequence>-<frame> images, and a few stills."""
    folder.mkdir()
    x = np.arange(size)
    for seq in range(4):
        for i in range(frames):
            r = (np.sin((x[None, :] + 3 * i + 20 * seq) / 9.0) * 100 + 128)
            img = np.stack(np.broadcast_arrays(r, np.full((size, size), 80.0 + 30 * seq), x[:, None] * 2.0), -1)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"vid-test-s{seq}-{i * 2:04d}.png")
    rng = np.random.default_rng(1)
    for i in range(12):
        img = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"still-{i}.png")
    return folder


def test_runs_come_from_consecutive_frames_of_one_sequence(tmp_path):
    data = _sequence_folder(tmp_path / "data")
    train, val = load_runs(TrainOptions(data=(data,), out_dir=tmp_path / "run", size=64, val_fraction=0.3))
    assert len(train.runs) + len(val.runs) == 4 * (8 - SEQUENCE_LENGTH + 1)  # never across sequences
    assert len(train.stills) + len(val.stills) == 4 * 8 + 12
    run = train.runs[0]
    assert not np.array_equal(run[0], run[1])  # frames in order, not one repeated
    assert random_runs(train, 4, 64, np.random.default_rng(0)).shape == (SEQUENCE_LENGTH, 4, 3, 64, 64)


def test_training_the_head_leaves_the_colorizer_alone_and_colorize_uses_it(tmp_path, run):
    from dataclasses import replace

    from colorvid.models.effnet_unet import read_model_file
    from colorvid.weights import load_registry, resolve

    data = _sequence_folder(tmp_path / "data")
    # the shipped colorizer without its previous-frame head (a random one colors every frame alike,
    # leaving a head nothing to steady)
    registry = load_registry()
    config, state, _ = read_model_file(resolve(registry.default_name(), registry))
    colorizer = Colorizer(replace(config, temporal_head=False), state["ab_centers"])
    colorizer.load_state_dict({k: v.float() for k, v in state.items() if not k.startswith("temporal.")})
    base = tmp_path / "base.safetensors"
    save_model(colorizer, base)
    options = TrainOptions(data=(data,), out_dir=tmp_path / "run", epochs=1, batch_size=4, size=64, init=str(base),
                           val_fraction=0.3, lr=1e-2)
    # asked only for steady colors (beta 0), the head learns to follow the previous frame where the warp
    # is trusted: its colors change less than the fixed flow blend's, which the fresh head's (gate 0.5) do not
    best = train_previous_frame(options, beta=0.0, progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert {"psnr_frame", "psnr_flow", "psnr_model", "change_frame", "change_model"} <= set(history[0])
    assert history[0]["change_model"] < 0.7 * history[0]["change_flow"], history[0]
    trained, original = load_model(best), load_model(base)
    assert isinstance(trained, Colorizer) and isinstance(original, Colorizer)
    assert trained.config.temporal_head and trained.temporal is not None
    lightness = torch.rand(1, 1, 64, 64) * 100
    with torch.no_grad():
        assert torch.allclose(trained(lightness), original(lightness), atol=0.1)  # fp16 file; same colorizer

    source = tmp_path / "film.mkv"
    pts = make_clip(source, width=96, height=64, frames=10, color=False, audio_tracks=0)
    out = tmp_path / "film-color.mkv"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", str(best), "--render-size", "64"])
    assert status == 0, err
    assert read_video_pts(out) == pts
    assert y_psnr(source, out) >= 45.0


def test_the_head_colors_a_film_and_keeps_its_timing(tmp_path, head_model_file, run, monkeypatch):
    calls = []
    original = ModelSmoother.__call__

    def spy(self, ab, lightness, features=None):
        calls.append((self.strength, len(ab), features is not None))
        return original(self, ab, lightness, features)

    monkeypatch.setattr(ModelSmoother, "__call__", spy)
    source = tmp_path / "film.mkv"
    pts = make_clip(source, width=96, height=64, frames=12, vfr=True, color=False, audio_tracks=0)
    out = tmp_path / "film-color.mkv"
    status, err = run(["colorize", str(source), "-o", str(out), "--model", head_model_file, "--batch-size", "5"])
    assert status == 0, err
    assert calls == [(0.9, 5, True), (0.9, 5, True), (0.9, 2, True)]  # the default for a model with a head
    assert mean_chroma_offset(out) > 10.0
    assert y_psnr(source, out) >= 45.0
    assert read_video_pts(out) == pts


def test_temporal_model_without_a_head_fails_in_one_line(tmp_path, tiny_model, run):
    source = tmp_path / "film.mkv"
    make_clip(source, frames=3, color=False, audio_tracks=0)
    status, err = run(["colorize", str(source), "-o", str(tmp_path / "o.mkv"), "--model", str(tiny_model),
                       "--temporal", "model"])
    assert status == 1 and "previous-frame head" in err and len(err.strip().splitlines()) == 1
