"""Training the previous-frame model: a TemporalHead on top of a trained colorizer.

The encoder and decoder of an existing colorvid model stay as they are; only
the small :class:`~colorvid.model.TemporalHead` learns, from pairs of
consecutive frames:

- real pairs: neighbouring frames of the video sequences in the data
  (``vid-<source>-<sequence>-<frame>`` images in name order, and frame k and
  k + 1 of every k-th frame of video files);
- synthetic pairs from any image: the second frame is the first seen by a
  camera that moved a little (shift, zoom, small rotation), with a patch of
  another image moving over both as an object would (occlusions, new colors).

The previous output the head sees is what it would get at inference: the
model's own colors for the previous frame, mixed with the truth by a random
amount (a steadied output is closer to the truth than a raw one), warped with
the same optical flow and weighted by the same confidence as in
:class:`~colorvid.smoothing.ModelSmoother`. The loss is
``beta * error(out, truth) + (1 - beta) * confidence * change(out, warped previous)``;
the CS230 report on previous-frame colorization used beta = 0.8.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorvid.color import lab_to_rgb, rgb_to_lab
from colorvid.errors import ColorizeError
from colorvid.flow import estimate_flow, warp
from colorvid.metrics import psnr
from colorvid.model import OUTPUT_STRIDE, Colorizer, TemporalHead, follow_previous, read_model_file, save_model
from colorvid.smoothing import DEFAULT_STRENGTH, warp_confidence
from colorvid.train import (
    HUBER_BETA, VIDEO_SUFFIXES, TrainOptions, _group_key, _is_validation, _load_image, list_sources, regression_loss,
    run_epochs,
)

log = logging.getLogger("colorvid.train")

STRENGTH = DEFAULT_STRENGTH["model"]  # the cap on the previous colors' share, as at inference
CUT_FRACTION = 0.05  # synthetic pairs whose second frame is another picture: a missed scene cut
OBJECT_FRACTION = 0.5  # synthetic pairs with a moving object
VALIDATION_PAIRS = 256  # at most; fixed crops and motions, the same every epoch


@dataclass
class PairData:
    pairs: list[tuple[np.ndarray, np.ndarray]]  # real consecutive frames, same size
    stills: list[np.ndarray]  # every image, for synthetic pairs


def _frame_number(path: Path) -> int:
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _video_pairs(path: Path, step: int, min_side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    import av

    pairs, previous = [], None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i % step not in (0, 1):
                    continue
                scale = max(1.0, min_side / min(frame.height, frame.width))
                if scale > 1:
                    frame = frame.reformat(width=round(frame.width * scale), height=round(frame.height * scale))
                rgb = frame.to_ndarray(format="rgb24")
                if i % step == 1 and previous is not None:
                    pairs.append((previous, rgb))
                previous = rgb if i % step == 0 else None
    except (av.FFmpegError, IndexError) as exc:
        log.warning("%s: skipped (%s)", path, exc)
    return pairs


def load_pairs(options: TrainOptions) -> tuple[PairData, PairData]:
    """(training, validation) frame pairs and stills, split by sequence as in the colorizer's training."""
    train, val = PairData([], []), PairData([], [])
    sequences: dict[str, list[tuple[int, np.ndarray]]] = {}
    for path in list_sources(options.data):
        target = val if _is_validation(_group_key(path), options.val_fraction) else train
        if path.suffix.lower() in VIDEO_SUFFIXES:
            pairs = _video_pairs(path, max(2, options.video_step), options.size)
            target.pairs.extend(pairs)
            target.stills.extend(first for first, _ in pairs)
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
        for first, second in zip(frames, frames[1:]):
            if first.shape == second.shape:
                target.pairs.append((first, second))
    if not train.stills or not val.stills:
        raise ColorizeError(f"need both training and validation images (got {len(train.stills)} and {len(val.stills)})")
    return train, val


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0


def real_pair(pair: tuple[np.ndarray, np.ndarray], size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    first, second = pair
    h, w = first.shape[:2]
    top, left = rng.integers(h - size + 1), rng.integers(w - size + 1)
    crops = [_to_tensor(f[top : top + size, left : left + size]) for f in (first, second)]
    if rng.random() < 0.5:
        crops = [c.flip(-1) for c in crops]
    return crops[0], crops[1]


def synthetic_pair(
    image: np.ndarray, other: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two frames of one picture under a small camera move, maybe with a moving patch of ``other``."""
    picture = _to_tensor(image)
    _, h, w = picture.shape
    top, left = rng.integers(h - size + 1), rng.integers(w - size + 1)
    first = picture[:, top : top + size, left : left + size].clone()
    if rng.random() < CUT_FRACTION:
        second = synthetic_pair(other, image, size, rng)[0]
        return first, second
    angle = math.radians(rng.uniform(-3.0, 3.0))
    zoom = math.exp(rng.uniform(-0.05, 0.05))
    shift = np.clip(rng.normal(0.0, 3.0, 2), -10, 10)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    dx, dy = xs - (size - 1) / 2, ys - (size - 1) / 2
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    src_x = left + (size - 1) / 2 + shift[0] + cos * dx - sin * dy
    src_y = top + (size - 1) / 2 + shift[1] + sin * dx + cos * dy
    grid = torch.stack((src_x / (w - 1) * 2 - 1, src_y / (h - 1) * 2 - 1), dim=-1).unsqueeze(0)
    second = F.grid_sample(picture.unsqueeze(0), grid, mode="bilinear", padding_mode="reflection", align_corners=True)[0]
    if rng.random() < OBJECT_FRACTION:
        patch_source = _to_tensor(other)
        ph, pw = (int(v) for v in rng.integers(size // 5, size // 2, 2))
        oy, ox = rng.integers(patch_source.shape[1] - ph + 1), rng.integers(patch_source.shape[2] - pw + 1)
        patch = patch_source[:, oy : oy + ph, ox : ox + pw]
        y1, x1 = rng.integers(size - ph + 1), rng.integers(size - pw + 1)
        move = np.clip(rng.normal(0.0, 4.0, 2), -12, 12).round().astype(int)
        y2, x2 = int(np.clip(y1 + move[0], 0, size - ph)), int(np.clip(x1 + move[1], 0, size - pw))
        first[:, y1 : y1 + ph, x1 : x1 + pw] = patch
        second[:, y2 : y2 + ph, x2 : x2 + pw] = patch
    if rng.random() < 0.5:
        first, second = first.flip(-1), second.flip(-1)
    return first, second


def random_pairs(data: PairData, batch: int, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Half real pairs (when there are any), half synthetic: (first, second) RGB (B, 3, size, size)."""
    real = batch // 2 if data.pairs else 0
    made = [real_pair(data.pairs[rng.integers(len(data.pairs))], size, rng) for _ in range(real)]
    for _ in range(batch - real):
        image, other = (data.stills[i] for i in rng.integers(len(data.stills), size=2))
        made.append(synthetic_pair(image, other, size, rng))
    return torch.stack([m[0] for m in made]), torch.stack([m[1] for m in made])


@dataclass
class Step:
    """One batch through the frozen colorizer and the warp, ready for the head."""

    features: torch.Tensor
    own: torch.Tensor  # the second frame's own ab
    truth: torch.Tensor  # its true ab at the output size
    warped: torch.Tensor  # the previous output moved onto it
    confidence: torch.Tensor
    lightness: torch.Tensor  # its full-size L
    rgb: torch.Tensor  # its full-size truth


@torch.no_grad()
def prepare(model: Colorizer, first: torch.Tensor, second: torch.Tensor, mix: torch.Tensor) -> Step:
    """``mix`` (B,) in 0..1: how much of the truth is in the previous output (0: the model's own colors)."""
    lab = rgb_to_lab(torch.cat((first, second)))
    lightness = lab[:, :1].contiguous()
    features, own = model.trunk(lightness)
    truth = F.avg_pool2d(lab[:, 1:], OUTPUT_STRIDE)
    small_l = F.interpolate(lightness, size=own.shape[-2:], mode="area")
    n = len(first)
    previous = torch.lerp(own[:n], truth[:n], mix.view(-1, 1, 1, 1))
    flow = estimate_flow(small_l[:n], small_l[n:])
    confidence = warp_confidence(small_l[:n], small_l[n:], flow)
    return Step(features[n:], own[n:], truth[n:], warp(previous, flow), confidence, lightness[n:], second)


def head_output(model: Colorizer, step: Step) -> torch.Tensor:
    gate = model.temporal(step.features, step.own, step.warped, step.confidence)
    return follow_previous(gate, step.own, step.warped, step.confidence, STRENGTH)


def temporal_loss(out: torch.Tensor, step: Step, beta: float, kind: str) -> torch.Tensor:
    change = 0.5 * (step.confidence * ((out - step.warped) / 110) ** 2).mean() / HUBER_BETA
    return beta * regression_loss(out, step.truth, kind) + (1 - beta) * change


@torch.no_grad()
def validate(model: Colorizer, batches: list[Step], beta: float, kind: str) -> dict[str, float]:
    """PSNR and frame-to-frame change of frame-by-frame, flow blending and the head, and the head's loss."""
    flow_strength = DEFAULT_STRENGTH["flow"]
    sums: dict[str, float] = {}
    count = 0
    for step in batches:
        outputs = {
            "frame": step.own,
            "flow": torch.lerp(step.own, step.warped, flow_strength * step.confidence),
            "model": head_output(model, step),
        }
        sums["loss"] = sums.get("loss", 0.0) + float(temporal_loss(outputs["model"], step, beta, kind)) * len(step.own)
        for name, ab in outputs.items():
            full = F.interpolate(ab, size=step.lightness.shape[-2:], mode="bilinear", align_corners=False)
            rgb = lab_to_rgb(torch.cat((step.lightness, full), 1))
            change = (step.confidence * (ab - step.warped).abs()).sum((1, 2, 3)) / step.confidence.sum((1, 2, 3)).clamp_min(1e-6)
            sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + sum(psnr(rgb[i], step.rgb[i]) for i in range(len(rgb)))
            sums[f"change_{name}"] = sums.get(f"change_{name}", 0.0) + float(change.sum() / 2)
        count += len(step.own)
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
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_data, val_data = load_pairs(options)
    log.info("loaded %d real pairs and %d images for training, %d and %d for validation in %.0f s",
             len(train_data.pairs), len(train_data.stills), len(val_data.pairs), len(val_data.stills), time.time() - t0)

    model = load_base(options.init)
    model.eval()  # the trunk's batch norm keeps its statistics; the head has none
    for p in model.parameters():
        p.requires_grad_(False)
    head: TemporalHead = model.temporal
    for p in head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=1e-4)

    val_rng = np.random.default_rng(12345)
    val_steps = []
    val_pairs = min(VALIDATION_PAIRS, len(val_data.pairs) + len(val_data.stills))
    for _ in range(max(1, math.ceil(val_pairs / options.batch_size))):
        first, second = random_pairs(val_data, options.batch_size, options.size, val_rng)
        val_steps.append(prepare(model, first, second, torch.zeros(len(first))))  # as at inference: no truth

    steps_per_epoch = max(1, len(train_data.stills) // options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    step_no, best, history = 0, math.inf, []
    ckpt = options.out_dir / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        step_no, best, history = saved["step"], saved["best"], saved["history"]
        log.info("resumed from %s at step %d", ckpt, step_no)

    def save_checkpoint(step: int) -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"head": head.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "best": best,
                    "history": history, "beta": beta}, tmp)
        os.replace(tmp, ckpt)

    rng = np.random.default_rng(options.seed + step_no)
    best_path = options.out_dir / "best.safetensors"

    def train_step(step: int) -> float:
        for group in optimizer.param_groups:
            group["lr"] = options.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
        first, second = random_pairs(train_data, options.batch_size, options.size, rng)
        batch = prepare(model, first, second, torch.from_numpy(rng.random(len(first))).float())
        loss = temporal_loss(head_output(model, batch), batch, beta, options.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def end_epoch(epoch: int, step: int, mean_loss: float) -> None:
        nonlocal best
        metrics = validate(model, val_steps, beta, options.loss)
        metrics.update(epoch=epoch, step=step, train_loss=mean_loss, minutes=(time.time() - t0) / 60)
        history.append(metrics)
        log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
        if metrics["loss"] < best:
            best = metrics["loss"]
            tmp = best_path.with_suffix(".tmp")
            save_model(model, tmp, half=True, metadata={"metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()}),
                                                         "temporal_beta": beta})
            os.replace(tmp, best_path)
        save_checkpoint(step)
        (options.out_dir / "history.json").write_text(json.dumps(history, indent=1))

    run_epochs(options, step_no, steps_per_epoch, train_step, end_epoch, save_checkpoint, progress)
    return best_path
