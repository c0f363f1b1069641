"""Training the confidence head: where a trained colorizer should hold back its colors.

The encoder, decoder and both ab heads of an existing colorvid model stay as
they are; only the small :class:`~colorvid.models.effnet_unet.ConfidenceHead` learns, to
predict :func:`~colorvid.models.effnet_unet.hue_agreement` of the model's own
classification head (its posterior with the class rebalancing weights taken
back out). So the model file must carry a classification head, as every
model ``colorvid train`` writes does.

After each epoch the read-out's gain (ab = regression * gain * confidence) is
chosen on the validation images: the gain with the highest PSNR among those
whose output keeps at least MIN_COLORFULNESS of the truth's colorfulness.
PSNR alone would pick a duller gain, since a muted color is never far wrong.
PSNR and colorfulness are logged for every gain tried.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorvid.color import rgb_to_lab
from colorvid.errors import ColorizeError
from colorvid.models.effnet_unet import Colorizer, hue_agreement, read_model_file
from colorvid.training.colorizer import add_scores, rebalance_weights
from colorvid.training.data import center_crops, load_dataset, random_batch
from colorvid.training.loop import Trainee, TrainingLoop, head_param_groups, with_head
from colorvid.training.options import TrainOptions

log = logging.getLogger("colorvid.train")

GAINS = tuple(round(1.0 + 0.1 * i, 1) for i in range(11))  # 1.0 .. 2.0
MIN_COLORFULNESS = 0.5  # of the truth's


def load_base(path: str | os.PathLike) -> Colorizer:
    """The colorizer to build on, with a confidence head (fresh unless the file has one)."""
    config, state, _ = read_model_file(path)
    if not config.ab_bins or "ab_centers" not in state:
        raise ColorizeError(f"{path}: the confidence head learns from a classification head, and this model has none")
    return with_head(path, replace(config, readout="regression", confidence_head=True), state, "confidence")


def confidence_parts(model: Colorizer) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The confidence head and the classification head it learns from (load_base makes sure of both)."""
    if model.confidence is None or model.classify is None:
        raise ValueError("the model has no confidence head or no classification head")
    return model.confidence, model.classify


def distillation_loss(model: Colorizer, lightness: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Squared error between the confidence head and the classification head's hue agreement."""
    head, classify = confidence_parts(model)
    with torch.no_grad():
        features = model.features(lightness)
        target = hue_agreement(classify(features), model.ab_centers, class_weights)
    return F.mse_loss(head(features), target)


@torch.no_grad()
def validate(model: Colorizer, images: torch.Tensor, batch_size: int, class_weights: torch.Tensor,
             gains: tuple[float, ...] = GAINS) -> dict[str, float]:
    """Distillation loss, and PSNR and colorfulness of the read-out at each gain (and of the plain regression)."""
    head, classify = confidence_parts(model)
    sums: dict[str, float] = {"loss": 0.0}
    for start in range(0, len(images), batch_size):
        rgb = images[start : start + batch_size]
        lab = rgb_to_lab(rgb)
        lightness = lab[:, :1]
        features = model.features(lightness)
        ab = model.regress(features) * 110.0
        confidence = head(features)
        target = hue_agreement(classify(features), model.ab_centers, class_weights)
        sums["loss"] += F.mse_loss(confidence, target, reduction="sum").item() / target[0].numel()
        outputs = {"regression": ab, **{f"gain_{g}": ab * g * confidence for g in gains}}
        add_scores(sums, rgb, lightness, outputs)
    return {k: v / len(images) for k, v in sums.items()}


def best_gain(metrics: dict[str, float], gains: tuple[float, ...] = GAINS) -> float:
    """The highest-PSNR gain that is colorful enough; the most colorful one if none is."""
    enough = [g for g in gains if metrics[f"colorfulness_gain_{g}"] >= MIN_COLORFULNESS * metrics["colorfulness_truth"]]
    if not enough:
        return max(gains, key=lambda g: metrics[f"colorfulness_gain_{g}"])
    return max(enough, key=lambda g: metrics[f"psnr_gain_{g}"])


def train_confidence(options: TrainOptions, progress: bool = True) -> Path:
    """Train the ConfidenceHead of ``options.init`` (a colorvid model); returns the best model file."""
    if options.init in ("imagenet", "none"):
        raise ColorizeError("the confidence head is trained on top of a colorvid model: pass --init MODEL")
    loop = TrainingLoop(options)
    model = load_base(options.init)
    train_images, val_images, probabilities = load_dataset(options)
    log.info("loaded %d training and %d validation images in %.0f s",
             len(train_images), len(val_images), time.time() - loop.started)
    val_batch = center_crops(val_images, options.size)
    state = {"class_weights": rebalance_weights(train_images, model.ab_centers)}

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        lab = rgb_to_lab(random_batch(train_images, options.batch_size, options.size, rng, probabilities))
        return distillation_loss(model, lab[:, :1].contiguous(), state["class_weights"])

    def validate_epoch() -> tuple[dict[str, float], float]:
        metrics = validate(model, val_batch, options.batch_size, state["class_weights"])
        gain = best_gain(metrics)
        model.config = replace(model.config, confidence_gain=gain)
        metrics["gain"] = gain
        return metrics, metrics[f"psnr_gain_{gain}"]

    head, _ = confidence_parts(model)
    return loop.run(Trainee(
        model=model, trained=head, param_groups=head_param_groups(model, head, options.lr),
        steps_per_epoch=max(1, len(train_images) // options.batch_size),
        batch_loss=batch_loss, validate=validate_epoch, state=state, loss_name="train_loss",
    ), progress)
