"""Temporal smoothing of predicted ab, with scene-cut detection.

Frame-by-frame colorization flickers. Blending each frame's predicted ab with
the previous *output* ab (an exponential moving average) damps that, but
must not drag one shot's colors into the next: the state resets at cuts.
Everything works at the model's output resolution, where it is cheap.
"""

from __future__ import annotations

import torch

HISTOGRAM_BINS = 32
# A cut is declared when the lightness histograms of consecutive frames differ
# by more than this (L1 distance of normalised histograms, range 0..2), or the
# mean absolute lightness change exceeds CUT_MEAN_DIFF (L units, 0..100).
CUT_HISTOGRAM_DISTANCE = 0.6
CUT_MEAN_DIFF = 25.0


def lightness_histograms(lightness: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) L in 0..100 -> (B, HISTOGRAM_BINS) normalised histograms."""
    flat = lightness.flatten(1).float()
    idx = (flat / 100.0 * HISTOGRAM_BINS).long().clamp_(0, HISTOGRAM_BINS - 1)
    hist = torch.zeros(flat.shape[0], HISTOGRAM_BINS, device=flat.device)
    hist.scatter_add_(1, idx, torch.ones_like(flat))
    return hist / flat.shape[1]


def detect_cuts(lightness: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """Bool (B,): True where frame i starts a new shot relative to frame i-1.

    ``previous`` is the L of the frame before the batch (or None at the start).
    """
    frames = lightness if previous is None else torch.cat((previous, lightness))
    hist = lightness_histograms(frames)
    hist_dist = (hist[1:] - hist[:-1]).abs().sum(1)
    mean_diff = (frames[1:].float() - frames[:-1].float()).abs().flatten(1).mean(1)
    cuts = (hist_dist > CUT_HISTOGRAM_DISTANCE) | (mean_diff > CUT_MEAN_DIFF)
    if previous is None:
        cuts = torch.cat((torch.ones(1, dtype=torch.bool, device=cuts.device), cuts))
    return cuts


class TemporalSmoother:
    """Exponential blend of ab over time: out_t = (1 - s) * pred_t + s * out_{t-1}.

    ``strength`` s is in [0, 1]: 0 turns smoothing off, 1 holds a shot's first colors. Frames must be fed in
    presentation order; batches may have any size.
    """

    def __init__(self, strength: float):
        if not 0.0 <= strength <= 1.0:
            raise ValueError("smoothing strength must be in [0, 1]")
        self.strength = strength
        self._prev_ab: torch.Tensor | None = None
        self._prev_lightness: torch.Tensor | None = None

    def reset(self) -> None:
        self._prev_ab = None
        self._prev_lightness = None

    def __call__(self, ab: torch.Tensor, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ab (B, 2, h, w) and L (B, 1, h, w) at the same small size -> (smoothed ab, cut flags)."""
        if self._prev_lightness is not None and self._prev_lightness.shape[1:] != lightness.shape[1:]:
            self.reset()
        cuts = detect_cuts(lightness, self._prev_lightness)
        self._prev_lightness = lightness[-1:].clone()
        if self.strength == 0.0:
            return ab, cuts
        out = torch.empty_like(ab)
        prev = self._prev_ab
        for i in range(ab.shape[0]):
            prev = ab[i] if prev is None or cuts[i] else (1 - self.strength) * ab[i] + self.strength * prev
            out[i] = prev
        self._prev_ab = prev.clone()
        return out, cuts
