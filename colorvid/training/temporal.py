"""Training the previous-frame model: a TemporalHead on top of a trained colorizer.

The encoder and decoder of an existing colorvid model stay as they are; only
the small :class:`~colorvid.models.effnet_unet.TemporalHead` learns, from short runs of
consecutive frames:

- real runs: neighbouring frames of the video sequences in the data
  (``vid-<source>-<sequence>-<frame>`` images in name order, and frames k,
  k + 1, ... of every k-th frame of video files);
- synthetic runs from any image: each frame is the one before seen by a
  camera that moved a little (shift, zoom, small rotation), with a patch of
  another image moving over them as an object would (occlusions, new colors).

Each run of SEQUENCE_LENGTH frames is colorized as inference does it: the
first frame takes its own colors, and every later one gets the head's output
for the frame before, warped with the same optical flow and weighted by the
same confidence as in :class:`~colorvid.smoothing.ModelSmoother`. So the head
learns from its own outputs, not from the truth it never has at inference
(trained on the truth, an earlier head learned to trust the previous frame
fully everywhere). The loss, over the frames after the first, is
``beta * error(out, truth) + (1 - beta) * confidence * change(out, warped previous)``;
the CS230 report on previous-frame colorization used beta = 0.8.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorvid.color import lab_to_rgb, rgb_to_lab
from colorvid.errors import ColorizeError
from colorvid.flow import estimate_flow, warp
from colorvid.metrics import psnr
from colorvid.models.effnet_unet import OUTPUT_STRIDE, Colorizer, follow_previous, read_model_file
from colorvid.smoothing import DEFAULT_STRENGTH, warp_confidence
from colorvid.training.colorizer import HUBER_BETA, regression_loss
from colorvid.training.data import load_runs, random_runs
from colorvid.training.loop import Trainee, TrainingLoop, head_param_groups, with_head
from colorvid.training.options import TrainOptions

log = logging.getLogger("colorvid.train")

STRENGTH = DEFAULT_STRENGTH["model"]  # the cap on the previous colors' share, as at inference
VALIDATION_RUNS = 256  # at most; fixed crops and motions, the same every epoch


@dataclass
class Prepared:
    """A batch of runs through the frozen colorizer: everything that does not depend on the head."""

    features: list[torch.Tensor]  # per frame of the run, (B, C, h, w)
    own: list[torch.Tensor]  # each frame's own ab
    truth: list[torch.Tensor]  # its true ab at the output size
    flow: list[torch.Tensor]  # flow[t - 1]: from frame t into frame t - 1
    confidence: list[torch.Tensor]  # confidence[t - 1]: how far that warp can be trusted
    lightness: torch.Tensor  # the last frame's full-size L
    rgb: torch.Tensor  # the last frame's full-size truth


@torch.no_grad()
def prepare(model: Colorizer, runs: torch.Tensor) -> Prepared:
    length, batch = runs.shape[:2]
    lab = rgb_to_lab(runs.flatten(0, 1))
    lightness = lab[:, :1].contiguous()
    features, own = model.trunk(lightness)
    truth = F.avg_pool2d(lab[:, 1:], OUTPUT_STRIDE)
    small_l = F.interpolate(lightness, size=own.shape[-2:], mode="area")
    split = lambda x: list(x.split(batch))  # noqa: E731
    small = split(small_l)
    flow: list[torch.Tensor] = []
    confidence: list[torch.Tensor] = []
    for t in range(1, length):
        flow.append(estimate_flow(small[t - 1], small[t]))
        confidence.append(warp_confidence(small[t - 1], small[t], flow[-1]))
    return Prepared(split(features), split(own), split(truth), flow, confidence, lightness[-batch:], runs[-1])


Mixer = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def unroll(
    prepared: Prepared, mix: Mixer, beta: float, kind: str
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Colorize the runs frame after frame: (mean loss, outputs, warped previous outputs) of the frames after
    the first. ``mix(t, own, warped, confidence, features)`` makes frame t's output."""
    out = prepared.own[0]
    loss = torch.zeros(())
    outputs, warps = [], []
    for t in range(1, len(prepared.own)):
        confidence = prepared.confidence[t - 1]
        warped = warp(out, prepared.flow[t - 1])
        out = mix(t, prepared.own[t], warped, confidence, prepared.features[t])
        change = 0.5 * (confidence * ((out - warped) / 110) ** 2).mean() / HUBER_BETA
        loss = loss + beta * regression_loss(out, prepared.truth[t], kind) + (1 - beta) * change
        outputs.append(out)
        warps.append(warped)
    return loss / max(1, len(outputs)), outputs, warps


def temporal_head(model: Colorizer) -> torch.nn.Module:
    """The head being trained (load_base gives every model one)."""
    if model.temporal is None:
        raise ValueError("the model has no previous-frame head")
    return model.temporal


def head_mixer(model: Colorizer) -> Mixer:
    head = temporal_head(model)

    def mix(t, own, warped, confidence, features):
        return follow_previous(head(features, own, warped, confidence), own, warped, confidence, STRENGTH)

    return mix


@torch.no_grad()
def validate(model: Colorizer, batches: list[Prepared], beta: float, kind: str) -> dict[str, float]:
    """Loss, PSNR of the last frame, and frame-to-frame change for frame-by-frame, flow blending and the head."""
    flow_strength = DEFAULT_STRENGTH["flow"]
    mixers: dict[str, Mixer] = {
        "frame": lambda t, own, warped, confidence, features: own,
        "flow": lambda t, own, warped, confidence, features: torch.lerp(own, warped, flow_strength * confidence),
        "model": head_mixer(model),
    }
    sums: dict[str, float] = {}
    count = 0
    for prepared in batches:
        n = len(prepared.rgb)
        for name, mix in mixers.items():
            loss, outputs, warps = unroll(prepared, mix, beta, kind)
            if name == "model":
                sums["loss"] = sums.get("loss", 0.0) + float(loss) * n
            full = F.interpolate(outputs[-1], size=prepared.lightness.shape[-2:], mode="bilinear", align_corners=False)
            rgb = lab_to_rgb(torch.cat((prepared.lightness, full), 1))
            sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + sum(psnr(rgb[i], prepared.rgb[i]) for i in range(n))
            change = 0.0
            for t, (out, warped) in enumerate(zip(outputs, warps), start=1):
                weight = prepared.confidence[t - 1]
                per_run = (weight * (out - warped).abs()).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp_min(1e-6)
                change += float(per_run.sum() / 2)
            sums[f"change_{name}"] = sums.get(f"change_{name}", 0.0) + change / len(outputs)
        count += n
    return {k: v / count for k, v in sums.items()}


def load_base(path: str | os.PathLike) -> Colorizer:
    """The colorizer to build on, with a temporal head (fresh unless the file has one)."""
    config, state, _ = read_model_file(path)
    return with_head(path, replace(config, temporal_head=True), state, "temporal")


def train_previous_frame(options: TrainOptions, beta: float = 0.8, progress: bool = True) -> Path:
    """Train the TemporalHead of ``options.init`` (a colorvid model); returns the best model file."""
    if options.init in ("imagenet", "none"):
        raise ColorizeError("a previous-frame model is trained on top of a colorvid model: pass --init MODEL")
    loop = TrainingLoop(options)
    train_data, val_data = load_runs(options)
    log.info("loaded %d real runs and %d images for training, %d and %d for validation in %.0f s",
             len(train_data.runs), len(train_data.stills), len(val_data.runs), len(val_data.stills),
             time.time() - loop.started)

    model = load_base(options.init).eval()  # the trunk's batch norm keeps its statistics
    val_rng = np.random.default_rng(12345)
    val_count = min(VALIDATION_RUNS, len(val_data.runs) + len(val_data.stills))
    val_batches = [prepare(model, random_runs(val_data, options.batch_size, options.size, val_rng))
                   for _ in range(max(1, math.ceil(val_count / options.batch_size)))]

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        prepared = prepare(model, random_runs(train_data, options.batch_size, options.size, rng))
        return unroll(prepared, head_mixer(model), beta, options.loss)[0]

    def validate_epoch() -> tuple[dict[str, float], float]:
        metrics = validate(model, val_batches, beta, options.loss)
        return metrics, -metrics["loss"]

    head = temporal_head(model)
    return loop.run(Trainee(
        model=model, trained=head, param_groups=head_param_groups(model, head, options.lr),
        steps_per_epoch=max(1, len(train_data.stills) // options.batch_size),
        batch_loss=batch_loss, validate=validate_epoch, metadata={"temporal_beta": beta}, loss_name="train_loss",
    ), progress)
