"""The options of a training run, shared by the colorizer and the two head trainers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    white_balance: bool = False  # learn neutral surfaces as neutral: remove each crop's color cast from the target
