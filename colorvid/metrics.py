"""Image and video quality measures used by training and `colorvid evaluate`.

All take RGB as float tensors in [0, 1], shaped (..., 3, H, W).
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch

from colorvid.color import luma


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements (inf when identical).

    Differences are taken in float32 (or the inputs' wider type) and their squares summed in float64.
    """
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    diff = a.to(dtype) - b.to(dtype)
    mse = torch.mean(diff * diff, dtype=torch.float64).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def colorfulness(rgb: torch.Tensor) -> float:
    """Hasler & Suesstrunk 2003 on 0..255 values: sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2).

    rg = R - G and yb = (R + G) / 2 - B, signed (no absolute values); the
    statistics are over all pixels (of the whole batch, if one is given).
    """
    rgb = rgb.to(torch.promote_types(rgb.dtype, torch.float32))
    r, g, b = rgb.unbind(-3)
    var_rg, mean_rg = torch.var_mean((r - g) * 255, correction=0)
    var_yb, mean_yb = torch.var_mean(((r + g) * 0.5 - b) * 255, correction=0)
    std = math.sqrt(var_rg.item() + var_yb.item())
    mean = math.hypot(mean_rg.item(), mean_yb.item())
    return std + 0.3 * mean


# --- luma ------------------------------------------------------------------------------


def gray_rgb(rgb: torch.Tensor, matrix: str = "bt601") -> torch.Tensor:
    """The picture as a black-and-white film shows it: its luma in all three channels (zero chroma)."""
    return luma(rgb, matrix).expand_as(rgb)


# --- structural similarity -------------------------------------------------------------


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM of two RGB images (3, H, W) in [0, 1]: scikit-image's, over the three channels.

    Uses scikit-image's defaults (7x7 uniform window) with ``data_range=1``.
    """
    from skimage.metrics import structural_similarity

    x = a.permute(1, 2, 0).double().cpu().numpy()
    y = b.permute(1, 2, 0).double().cpu().numpy()
    # scikit-image is untyped: the inferred return type includes the gradient and full-image
    # variants, which this call does not ask for; it returns the mean SSIM.
    return float(cast(float, structural_similarity(x, y, channel_axis=-1, data_range=1.0)))


# --- color distribution consistency (CDC) ------------------------------------------

CDC_STEPS = (1, 2, 4)  # frame distances compared; Liu et al. weight them equally
HISTOGRAM_BINS = 256


def channel_histograms(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (3, 256) float64 histograms of the 8-bit values, each summing to 1.

    Takes floats in [0, 1] (rounded to 8 bits) or uint8 values, counted as they are.
    """
    if rgb.dtype != torch.uint8:
        rgb = (rgb.detach().float() * 255).round_().clamp_(0, 255).to(torch.uint8)
    planes = rgb.reshape(3, -1).cpu().numpy()
    counts = np.stack([np.bincount(plane, minlength=HISTOGRAM_BINS) for plane in planes])
    return torch.from_numpy(counts / planes.shape[1])


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log, so 0..ln 2) between distributions on the last axis."""
    p = p.double()
    q = q.double()
    m = (p + q) / 2

    def kl(x: torch.Tensor) -> torch.Tensor:  # KL(x || m); 0 log 0 = 0, and m > 0 wherever x > 0
        return torch.where(x > 0, x * torch.log(x / torch.where(x > 0, m, 1.0)), 0.0).sum(-1)

    return (kl(p) + kl(q)) / 2


class CDC:
    """Color distribution consistency (Liu et al., temporally consistent video colorization).

    For each frame distance d in ``CDC_STEPS``, the Jensen-Shannon divergence
    between the per-channel histograms of frames i and i+d, averaged over i;
    then averaged over the distances (equal weights) and the three channels.
    0 for a clip whose color distribution never changes; lower is steadier.

    Frames are added one at a time and only the last ``max(CDC_STEPS)``
    histograms are kept, so any length of video fits in memory. A distance
    with no pair of frames (a clip shorter than d + 1 frames) is left out;
    :meth:`value` is None for a single frame.
    """

    def __init__(self, steps: tuple[int, ...] = CDC_STEPS):
        self.steps = steps
        self._recent: list[torch.Tensor] = []  # newest last
        self._sums = {d: 0.0 for d in steps}
        self._pairs = {d: 0 for d in steps}

    def add(self, histograms: torch.Tensor) -> None:
        """Add the next frame's (3, 256) histograms (see :func:`channel_histograms`)."""
        for d in self.steps:
            if len(self._recent) >= d:
                self._sums[d] += float(js_divergence(self._recent[-d], histograms).mean())
                self._pairs[d] += 1
        self._recent.append(histograms)
        del self._recent[: -max(self.steps)]

    def value(self) -> float | None:
        means = [self._sums[d] / self._pairs[d] for d in self.steps if self._pairs[d]]
        return sum(means) / len(means) if means else None


def cdc(frames_histograms) -> float | None:
    """CDC of a sequence of (3, 256) histograms; see :class:`CDC`."""
    acc = CDC()
    for hist in frames_histograms:
        acc.add(hist)
    return acc.value()
