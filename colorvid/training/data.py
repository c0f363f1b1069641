"""Training data: finding images and videos, loading them, the train/validation split, and batches.

Everything is held in memory as uint8 RGB arrays whose short side is at least
the crop size. Video files are decoded with :class:`colorvid.io.VideoReader`.
The split is by sequence (:func:`group_key`), so frames of one shot never land
on both sides.

The colorizer and confidence trainers draw random crops of single images
(:func:`random_batch`); the previous-frame trainer draws runs of
SEQUENCE_LENGTH consecutive frames (:func:`random_runs`), real ones from
video sequences and synthetic ones made from stills.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorvid.errors import ColorizeError, InputError
from colorvid.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoReader
from colorvid.training.options import TrainOptions

log = logging.getLogger("colorvid.train")

SEQUENCE_LENGTH = 3  # frames per run
CUT_FRACTION = 0.05  # synthetic runs whose last frame is another picture: a missed scene cut
OBJECT_FRACTION = 0.5  # synthetic runs with a moving object


# --- finding and loading ------------------------------------------------------------


def group_key(path: Path) -> str:
    """Frames of one video sequence share a key, so the split never leaks a shot."""
    name = path.stem
    if name.startswith("vid-"):
        parts = name.split("-")
        return "-".join(parts[:3])
    return str(path.resolve())  # the real file: a symlinked view of the same data keeps its split


def is_validation(key: str, fraction: float) -> bool:
    digest = hashlib.sha1(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def list_sources(data: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for root in data:
        if root.is_file():
            files.append(root)
            continue
        if not root.is_dir():
            raise ColorizeError(f"{root}: training data folder not found")
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES or is_video(path):
                files.append(path)
    if not files:
        raise ColorizeError(f"no images or videos found in {', '.join(map(str, data))}")
    return files


def load_image(path: Path, min_side: int) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if min(w, h) < min_side:
                scale = min_side / min(w, h)
                size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
                im = im.resize(size, Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        log.warning("%s: skipped (%s)", path, exc)
        return None


def video_frames(path: Path, min_side: int, wanted: Callable[[int], bool]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB) of the frames of a video file whose index is ``wanted``, upscaled to at least
    ``min_side``. A file that cannot be read is logged and skipped; frames before the failure count."""
    try:
        with VideoReader(path) as reader:
            for index, frame in enumerate(reader):
                if not wanted(index):
                    continue
                scale = max(1.0, min_side / min(frame.height, frame.width))
                if scale > 1:
                    frame = frame.reformat(width=round(frame.width * scale), height=round(frame.height * scale))
                yield index, frame.to_ndarray(format="rgb24")
    except InputError as exc:
        log.warning("%s; skipped", exc)


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
        validation = is_validation(group_key(path), options.val_fraction)
        if is_video(path):
            step = options.video_step
            images = [rgb for _, rgb in video_frames(path, options.size, lambda i: i % step == 0)]
        else:
            image = load_image(path, options.size)
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


# --- single images ------------------------------------------------------------------


def random_batch(
    images: list[np.ndarray], batch: int, size: int, rng: np.random.Generator, probabilities: np.ndarray | None = None
) -> torch.Tensor:
    """Random crops with horizontal flips, as RGB float (B, 3, size, size)."""
    crops = np.empty((batch, size, size, 3), dtype=np.uint8)
    for i in range(batch):
        pick = rng.choice(len(images), p=probabilities) if probabilities is not None else rng.integers(len(images))
        image = images[pick]
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


# --- runs of consecutive frames -----------------------------------------------------


@dataclass
class RunData:
    runs: list[tuple[np.ndarray, ...]]  # real consecutive frames, SEQUENCE_LENGTH of the same size
    stills: list[np.ndarray]  # every image, for synthetic runs


def frame_number(path: Path) -> int:
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def video_runs(path: Path, step: int, min_side: int) -> list[tuple[np.ndarray, ...]]:
    """Frames k, k + 1, ... (SEQUENCE_LENGTH of them) of every k-th frame of a video file."""
    runs, current = [], []
    for index, rgb in video_frames(path, min_side, lambda i: i % step < SEQUENCE_LENGTH):
        current = ([] if index % step == 0 else current) + [rgb]
        if len(current) == SEQUENCE_LENGTH:
            runs.append(tuple(current))
    return runs


def load_runs(options: TrainOptions) -> tuple[RunData, RunData]:
    """(training, validation) runs of frames and stills, split by sequence as in the colorizer's training."""
    train, val = RunData([], []), RunData([], [])
    sequences: dict[str, list[tuple[int, np.ndarray]]] = {}
    for path in list_sources(options.data):
        target = val if is_validation(group_key(path), options.val_fraction) else train
        if is_video(path):
            runs = video_runs(path, max(SEQUENCE_LENGTH, options.video_step), options.size)
            target.runs.extend(runs)
            target.stills.extend(run[0] for run in runs)
            continue
        image = load_image(path, options.size)
        if image is None:
            continue
        target.stills.append(image)
        if path.stem.startswith("vid-"):
            sequences.setdefault(group_key(path), []).append((frame_number(path), image))
    for key, numbered in sequences.items():
        target = val if is_validation(key, options.val_fraction) else train
        frames = [image for _, image in sorted(numbered, key=lambda item: item[0])]
        for start in range(len(frames) - SEQUENCE_LENGTH + 1):
            run = tuple(frames[start : start + SEQUENCE_LENGTH])
            if all(f.shape == run[0].shape for f in run):
                target.runs.append(run)
    if not train.stills or not val.stills:
        raise ColorizeError(f"need both training and validation images (got {len(train.stills)} and {len(val.stills)})")
    return train, val


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0


def real_run(run: tuple[np.ndarray, ...], size: int, rng: np.random.Generator) -> torch.Tensor:
    """(SEQUENCE_LENGTH, 3, size, size): the same crop of each frame."""
    h, w = run[0].shape[:2]
    top, left = rng.integers(h - size + 1), rng.integers(w - size + 1)
    crops = torch.stack([to_tensor(f[top : top + size, left : left + size]) for f in run])
    return crops.flip(-1) if rng.random() < 0.5 else crops


def synthetic_run(image: np.ndarray, other: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    """(SEQUENCE_LENGTH, 3, size, size): one picture under a steady small camera move, maybe with a
    patch of ``other`` moving over it."""
    picture = to_tensor(image)
    _, h, w = picture.shape
    top, left = rng.integers(h - size + 1), rng.integers(w - size + 1)
    angle = math.radians(rng.uniform(-3.0, 3.0))
    log_zoom = rng.uniform(-0.05, 0.05)
    shift = np.clip(rng.normal(0.0, 3.0, 2), -10, 10)
    axis = torch.arange(size, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    dx, dy = xs - (size - 1) / 2, ys - (size - 1) / 2
    grids = []
    for k in range(SEQUENCE_LENGTH):
        cos, sin = math.cos(k * angle) * math.exp(k * log_zoom), math.sin(k * angle) * math.exp(k * log_zoom)
        src_x = left + (size - 1) / 2 + k * shift[0] + cos * dx - sin * dy
        src_y = top + (size - 1) / 2 + k * shift[1] + sin * dx + cos * dy
        grids.append(torch.stack((src_x / (w - 1) * 2 - 1, src_y / (h - 1) * 2 - 1), dim=-1))
    frames = F.grid_sample(picture.expand(SEQUENCE_LENGTH, -1, -1, -1), torch.stack(grids), mode="bilinear",
                           padding_mode="reflection", align_corners=True)
    patch_source = to_tensor(other)
    if rng.random() < OBJECT_FRACTION:
        ph, pw = (int(v) for v in rng.integers(size // 5, size // 2, 2))
        oy, ox = rng.integers(patch_source.shape[1] - ph + 1), rng.integers(patch_source.shape[2] - pw + 1)
        patch = patch_source[:, oy : oy + ph, ox : ox + pw]
        y, x = rng.integers(size - ph + 1), rng.integers(size - pw + 1)
        move = np.clip(rng.normal(0.0, 4.0, 2), -12, 12)
        for k in range(SEQUENCE_LENGTH):
            yk = int(np.clip(round(y + k * move[0]), 0, size - ph))
            xk = int(np.clip(round(x + k * move[1]), 0, size - pw))
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
