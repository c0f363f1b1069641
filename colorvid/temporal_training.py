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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from colorvid.color import lab_to_rgb, rgb_to_lab
from colorvid.errors import ColorizeError
from colorvid.flow import estimate_flow, warp
from colorvid.metrics import psnr
from colorvid.models.effnet_unet import (
    OUTPUT_STRIDE,
    Colorizer,
    follow_previous,
    read_model_file,
)
from colorvid.smoothing import DEFAULT_STRENGTH, warp_confidence
from colorvid.train import (
    HUBER_BETA,
    VIDEO_SUFFIXES,
    TrainOptions,
    _group_key,
    _is_validation,
    _load_image,
    list_sources,
    regression_loss,
    start_run,
    train_head,
)

log = logging.getLogger("colorvid.train")

STRENGTH = DEFAULT_STRENGTH["model"]  # the cap on the previous colors' share, as at inference
SEQUENCE_LENGTH = 3  # frames per training run
CUT_FRACTION = 0.05  # synthetic runs whose last frame is another picture: a missed scene cut
OBJECT_FRACTION = 0.5  # synthetic runs with a moving object
VALIDATION_RUNS = 256  # at most; fixed crops and motions, the same every epoch


@dataclass
class RunData:
    runs: list[tuple[np.ndarray, ...]]  # real consecutive frames, SEQUENCE_LENGTH of the same size
    stills: list[np.ndarray]  # every image, for synthetic runs


def _frame_number(path: Path) -> int:
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _video_runs(path: Path, step: int, min_side: int) -> list[tuple[np.ndarray, ...]]:
    import av

    runs, current = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i % step >= SEQUENCE_LENGTH:
                    continue
                scale = max(1.0, min_side / min(frame.height, frame.width))
                if scale > 1:
                    frame = frame.reformat(width=round(frame.width * scale), height=round(frame.height * scale))
                current = ([] if i % step == 0 else current) + [frame.to_ndarray(format="rgb24")]
                if len(current) == SEQUENCE_LENGTH:
                    runs.append(tuple(current))
    except (av.FFmpegError, IndexError) as exc:
        log.warning("%s: skipped (%s)", path, exc)
    return runs


def load_runs(options: TrainOptions) -> tuple[RunData, RunData]:
    """(training, validation) runs of frames and stills, split by sequence as in the colorizer's training."""
    train, val = RunData([], []), RunData([], [])
    sequences: dict[str, list[tuple[int, np.ndarray]]] = {}
    for path in list_sources(options.data):
        target = val if _is_validation(_group_key(path), options.val_fraction) else train
        if path.suffix.lower() in VIDEO_SUFFIXES:
            runs = _video_runs(path, max(SEQUENCE_LENGTH, options.video_step), options.size)
            target.runs.extend(runs)
            target.stills.extend(run[0] for run in runs)
            continue
        image = _load_image(path, options.size)
        if image is None:
            continue
        target.stills.append(image)
        if path.stem.startswith("vid-"):
            sequences.setdefault(_group_key(path), []).append((_frame_number(path), image))
    for key, numbered in sequences.items():
        target = val if _is_validation(key, options.val_fraction) else train
        frames = [image for _, image in sorted(numbered, key=lambda item: item[0])]
        for start in range(len(frames) - SEQUENCE_LENGTH + 1):
            run = tuple(frames[start : start + SEQUENCE_LENGTH])
            if all(f.shape == run[0].shape for f in run):
                target.runs.append(run)
    if not train.stills or not val.stills:
        raise ColorizeError(f"need both training and validation images (got {len(train.stills)} and {len(val.stills)})")
    return train, val


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0


def real_run(run: tuple[np.ndarray, ...], size: int, rng: np.random.Generator) -> torch.Tensor:
    """(SEQUENCE_LENGTH, 3, size, size): the same crop of each frame."""
    h, w = run[0].shape[:2]
    top, left = rng.integers(h - size + 1), rng.integers(w - size + 1)
    crops = torch.stack([_to_tensor(f[top : top + size, left : left + size]) for f in run])
    return crops.flip(-1) if rng.random() < 0.5 else crops


def synthetic_run(image: np.ndarray, other: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    """(SEQUENCE_LENGTH, 3, size, size): one picture under a steady small camera move, maybe with a
    patch of ``other`` moving over it."""
    picture = _to_tensor(image)
    _, h, w = picture.shape
    top, left = rng.integers(h - size + 1), rng.integers(w - size + 1)
    angle = math.radians(rng.uniform(-3.0, 3.0))
    log_zoom = rng.uniform(-0.05, 0.05)
    shift = np.clip(rng.normal(0.0, 3.0, 2), -10, 10)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    dx, dy = xs - (size - 1) / 2, ys - (size - 1) / 2
    grids = []
    for k in range(SEQUENCE_LENGTH):
        cos, sin = math.cos(k * angle) * math.exp(k * log_zoom), math.sin(k * angle) * math.exp(k * log_zoom)
        src_x = left + (size - 1) / 2 + k * shift[0] + cos * dx - sin * dy
        src_y = top + (size - 1) / 2 + k * shift[1] + sin * dx + cos * dy
        grids.append(torch.stack((src_x / (w - 1) * 2 - 1, src_y / (h - 1) * 2 - 1), dim=-1))
    frames = F.grid_sample(picture.expand(SEQUENCE_LENGTH, -1, -1, -1), torch.stack(grids), mode="bilinear",
                           padding_mode="reflection", align_corners=True)
    patch_source = _to_tensor(other)
    if rng.random() < OBJECT_FRACTION:
        ph, pw = (int(v) for v in rng.integers(size // 5, size // 2, 2))
        oy, ox = rng.integers(patch_source.shape[1] - ph + 1), rng.integers(patch_source.shape[2] - pw + 1)
        patch = patch_source[:, oy : oy + ph, ox : ox + pw]
        y, x = rng.integers(size - ph + 1), rng.integers(size - pw + 1)
        move = np.clip(rng.normal(0.0, 4.0, 2), -12, 12)
        for k in range(SEQUENCE_LENGTH):
            yk, xk = (int(np.clip(round(v), 0, limit)) for v, limit in ((y + k * move[0], size - ph), (x + k * move[1], size - pw)))
            frames[k, :, yk : yk + ph, xk : xk + pw] = patch
    if rng.random() < CUT_FRACTION:
        oy, ox = rng.integers(patch_source.shape[1] - size + 1), rng.integers(patch_source.shape[2] - size + 1)
        frames[-1] = patch_source[:, oy : oy + size, ox : ox + size]
    return frames.flip(-1) if rng.random() < 0.5 else frames


def random_runs(data: RunData, batch: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Half real runs (when there are any), half synthetic: (SEQUENCE_LENGTH, B, 3, size, size)."""
    real = batch // 2 if data.runs else 0
    made = [real_run(data.runs[rng.integers(len(data.runs))], size, rng) for _ in range(real)]
    for _ in range(batch - real):
        image, other = (data.stills[i] for i in rng.integers(len(data.stills), size=2))
        made.append(synthetic_run(image, other, size, rng))
    return torch.stack(made, dim=1)


@dataclass
class Prepared:
    """A batch of runs through the frozen colorizer: everything that does not depend on the head."""

    features: list[torch.Tensor]  # per frame of the run, (B, C, h, w)
    own: list[torch.Tensor]  # each frame's own ab
    truth: list[torch.Tensor]  # its true ab at the output size
    flow: list[torch.Tensor | None]  # from each frame into the one before (None for the first)
    confidence: list[torch.Tensor | None]
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
    flow: list[torch.Tensor | None] = [None]
    confidence: list[torch.Tensor | None] = [None]
    for t in range(1, length):
        flow.append(estimate_flow(small[t - 1], small[t]))
        confidence.append(warp_confidence(small[t - 1], small[t], flow[t]))
    return Prepared(split(features), split(own), split(truth), flow, confidence, lightness[-batch:], runs[-1])


Mixer = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def unroll(prepared: Prepared, mix: Mixer, beta: float, kind: str) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Colorize the runs frame after frame: (mean loss, outputs, warped previous outputs) of the frames after
    the first. ``mix(t, own, warped, confidence, features)`` makes frame t's output."""
    out = prepared.own[0]
    loss = torch.zeros(())
    outputs, warps = [], []
    for t in range(1, len(prepared.own)):
        warped = warp(out, prepared.flow[t])
        out = mix(t, prepared.own[t], warped, prepared.confidence[t], prepared.features[t])
        change = 0.5 * (prepared.confidence[t] * ((out - warped) / 110) ** 2).mean() / HUBER_BETA
        loss = loss + beta * regression_loss(out, prepared.truth[t], kind) + (1 - beta) * change
        outputs.append(out)
        warps.append(warped)
    return loss / max(1, len(outputs)), outputs, warps


def head_mixer(model: Colorizer) -> Mixer:
    def mix(t, own, warped, confidence, features):
        return follow_previous(model.temporal(features, own, warped, confidence), own, warped, confidence, STRENGTH)

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
                weight = prepared.confidence[t]
                change += float(((weight * (out - warped).abs()).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp_min(1e-6)).sum() / 2)
            sums[f"change_{name}"] = sums.get(f"change_{name}", 0.0) + change / len(outputs)
        count += n
    return {k: v / count for k, v in sums.items()}


def load_base(path: str | os.PathLike) -> Colorizer:
    """The colorizer to build on, with a temporal head (fresh unless the file has one)."""
    config, state, _ = read_model_file(path)
    model = Colorizer(replace(config, temporal_head=True))
    missing, _ = model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    if any(not k.startswith("temporal.") and not k.endswith("num_batches_tracked") for k in missing):
        raise ColorizeError(f"{path}: weights do not match the architecture")
    return model


def train_previous_frame(options: TrainOptions, beta: float = 0.8, progress: bool = True) -> Path:
    """Train the TemporalHead of ``options.init`` (a colorvid model); returns the best model file."""
    if options.init in ("imagenet", "none"):
        raise ColorizeError("a previous-frame model is trained on top of a colorvid model: pass --init MODEL")
    t0 = start_run(options)
    train_data, val_data = load_runs(options)
    log.info("loaded %d real runs and %d images for training, %d and %d for validation in %.0f s",
             len(train_data.runs), len(train_data.stills), len(val_data.runs), len(val_data.stills), time.time() - t0)

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

    steps_per_epoch = max(1, len(train_data.stills) // options.batch_size)
    return train_head(options, model, model.temporal, steps_per_epoch, batch_loss, validate_epoch, progress,
                      metadata={"temporal_beta": beta}, t0=t0)
