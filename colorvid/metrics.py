"""Image and video quality measures used by training and `colorvid evaluate`.

All take RGB as float tensors in [0, 1], shaped (..., 3, H, W).
"""

from __future__ import annotations

import math

import torch


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements (inf when identical)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def colorfulness(rgb: torch.Tensor) -> float:
    """Hasler & Suesstrunk 2003 on 0..255 values: sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)."""
    r, g, b = (rgb.double() * 255).unbind(-3)
    rg = r - g
    yb = (r + g) / 2 - b
    std = torch.sqrt(rg.var(unbiased=False) + yb.var(unbiased=False))
    mean = torch.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(std + 0.3 * mean)
