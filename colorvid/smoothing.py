"""Temporal smoothing of predicted ab, with scene-cut detection.

Frame-by-frame colorization flickers. Blending each frame's predicted ab with
the previous *output* ab (an exponential moving average) damps that, but
must not drag one shot's colors into the next: the state resets at cuts.
Plain blending also drags colors behind anything that moves; the motion-
compensated smoother first moves the previous output along the optical flow
and blends only where that warp is confirmed by the lightness.
Everything works at the model's output resolution, where it is cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from colorvid.flow import estimate_flow, inside, warp

HISTOGRAM_BINS = 32
# A cut is declared when the lightness histograms of consecutive frames differ
# by more than this (L1 distance of normalized histograms, range 0..2), or the
# mean absolute lightness change exceeds CUT_MEAN_DIFF (L units, 0..100).
CUT_HISTOGRAM_DISTANCE = 0.6
CUT_MEAN_DIFF = 25.0
# Motion-compensated smoothing trusts the warped previous colors by
# exp(-(e / WARP_TOLERANCE)^2), where e is how far the warped previous L is from
# the current L (L units, after removing the frames' mean difference, averaged
# over 3 x 3 pixels): 1 for e = 0, 0.37 at e = WARP_TOLERANCE, ~0 from twice that.
WARP_TOLERANCE = 4.0

TEMPORAL_MODES = ("none", "blend", "flow", "model")
DEFAULT_MODE = "flow"
# Strength of each mode when none is given. On the six color clips (docs/MODEL_CARD.md),
# against frame by frame: the shipped head at 0.9 cut color flicker (CDC) by 36%, with
# PSNR +0.23 dB and colorfulness -5%; flow at 0.7 by 26% (the default for a model
# without a head); blend at 0.5 by 18%.
DEFAULT_STRENGTH = {"none": 0.0, "blend": 0.5, "flow": 0.7, "model": 0.9}


def temporal_settings(mode: str | None, strength: float | None, has_head: bool = False) -> tuple[str, float]:
    """The smoothing to run, from a mode and a strength that may each be unset (None).

    No mode: "model" for a model with a previous-frame head (``has_head``), else
    DEFAULT_MODE; "none" when the strength is 0. No strength: the mode's
    DEFAULT_STRENGTH.

    Raises:
        ValueError: an unknown mode, a mode and strength that contradict each
            other ("none" with a strength above 0, the others with 0), or
            "model" without ``has_head``.
    """
    if mode is not None and mode not in TEMPORAL_MODES:
        raise ValueError(f"unknown temporal mode {mode!r}: choose from {', '.join(TEMPORAL_MODES)}")
    if mode == "model" and not has_head:
        raise ValueError("temporal mode 'model' needs a model with a previous-frame head "
                         "(made by 'colorvid train --previous-frame')")
    if mode is None:
        mode = "none" if strength == 0 else ("model" if has_head else DEFAULT_MODE)
    if strength is None:
        return mode, DEFAULT_STRENGTH[mode]
    if mode == "none" and strength > 0:
        raise ValueError(f"a smoothing strength of {strength:g} with no temporal smoothing")
    if mode != "none" and strength == 0:
        raise ValueError(f"temporal mode {mode!r} with a smoothing strength of 0 (that is 'none')")
    return mode, strength


MEMORY_TOLERANCE = 1 / 256  # an earlier frame's weight in the output below which it is forgotten
MEMORY_MAX_FRAMES = 150


def memory_frames(mode: str | None, strength: float) -> int:
    """How many earlier frames still shape a frame's smoothed colors (0 without smoothing).

    Both smoothers weigh the frame k steps back by at most strength^k, so
    colorizing this many frames before the first one written (and dropping
    them) puts the smoother in the state an uninterrupted run has there.
    Capped at MEMORY_MAX_FRAMES (strength 1 never forgets within a shot).
    """
    if mode == "none" or strength <= 0:
        return 0
    if strength >= 1:
        return MEMORY_MAX_FRAMES
    return min(MEMORY_MAX_FRAMES, math.ceil(math.log(MEMORY_TOLERANCE) / math.log(strength)))


def lightness_histograms(lightness: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) L in 0..100 -> (B, HISTOGRAM_BINS) normalized histograms."""
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

    def _next_cuts(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cut flags for this batch and the L of the frame before it (None at a fresh start)."""
        if self._prev_lightness is not None and self._prev_lightness.shape[1:] != lightness.shape[1:]:
            self.reset()
        previous = self._prev_lightness
        cuts = detect_cuts(lightness, previous)
        self._prev_lightness = lightness[-1:].clone()
        return cuts, previous

    def __call__(
        self, ab: torch.Tensor, lightness: torch.Tensor, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ab (B, 2, h, w) and L (B, 1, h, w) at the same small size -> (smoothed ab, cut flags).

        ``features`` (the decoder's, for ModelSmoother) are not used here.
        """
        cuts, _ = self._next_cuts(lightness)
        if self.strength == 0.0:
            return ab, cuts
        out = torch.empty_like(ab)
        prev = self._prev_ab
        for i in range(ab.shape[0]):
            prev = ab[i] if prev is None or cuts[i] else (1 - self.strength) * ab[i] + self.strength * prev
            out[i] = prev
        assert prev is not None, "an empty batch before any frame"
        self._prev_ab = prev.clone()
        return out, cuts


class MotionSmoother(TemporalSmoother):
    """Exponential blend along the motion: out_t = pred_t + s * c_t * (warp(out_{t-1}) - pred_t).

    The previous output ab is warped onto the current frame with optical flow
    estimated on L; the confidence c_t (0..1 per pixel) says how well the same
    warp maps the previous L onto the current one. Occlusions, new objects and
    failed flow get c ~ 0, so they take the current prediction instead of a
    ghost of the previous frame. ``strength`` s in [0, 1] as for
    TemporalSmoother; the state resets at cuts. Same call interface.
    """

    def __init__(self, strength: float, tolerance: float = WARP_TOLERANCE):
        super().__init__(strength)
        self.tolerance = tolerance

    def __call__(
        self, ab: torch.Tensor, lightness: torch.Tensor, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ab (B, 2, h, w) and L (B, 1, h, w) at the same small size -> (smoothed ab, cut flags).

        ``features``: the decoder features of the batch, for ModelSmoother.
        """
        cuts, previous = self._next_cuts(lightness)
        if self.strength == 0.0:
            return ab, cuts
        # everything that depends only on L is done for the whole batch at once
        prev_l = torch.cat((lightness[:1] if previous is None else previous, lightness[:-1]))
        flow = estimate_flow(prev_l, lightness)
        confidence = self.confidence(prev_l, lightness, flow)
        # the recursion itself: one small warp and mix per frame
        out = torch.empty_like(ab)
        prev = self._prev_ab
        for i in range(ab.shape[0]):
            if prev is None or cuts[i]:
                prev = ab[i]
            else:
                warped = warp(prev.unsqueeze(0), flow[i : i + 1])
                own, trust = ab[i : i + 1], confidence[i : i + 1]
                prev = self.mix(own, warped, trust, None if features is None else features[i : i + 1])[0]
            out[i] = prev
        assert prev is not None, "an empty batch before any frame"
        self._prev_ab = prev.clone()
        return out, cuts

    def mix(
        self, own: torch.Tensor, warped: torch.Tensor, confidence: torch.Tensor, features: torch.Tensor | None
    ) -> torch.Tensor:
        """One frame's output from its own ab and the warped previous output (all (1, C, h, w))."""
        return torch.lerp(own, warped, self.strength * confidence)

    def confidence(self, prev_l: torch.Tensor, cur_l: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return warp_confidence(prev_l, cur_l, flow, self.tolerance)


def warp_confidence(
    prev_l: torch.Tensor, cur_l: torch.Tensor, flow: torch.Tensor, tolerance: float = WARP_TOLERANCE
) -> torch.Tensor:
    """(B, 1, h, w) in 0..1: how well ``flow`` carries the previous L onto the current L."""
    residual = cur_l.float() - warp(prev_l.float(), flow)
    residual = residual - residual.mean((-2, -1), keepdim=True)  # film flicker is not a mismatch
    error = F.avg_pool2d(residual.abs(), 3, stride=1, padding=1, count_include_pad=False)
    return torch.exp(-((error / tolerance) ** 2)) * inside(flow)


class ModelSmoother(MotionSmoother):
    """The previous-frame model: a learned TemporalHead decides how much of the warped
    previous output each pixel keeps, instead of a fixed blend.

    Same warp and confidence as MotionSmoother; ``strength`` caps the share of the
    previous colors (see :func:`colorvid.models.effnet_unet.follow_previous`). Called with the
    decoder features of the batch besides ab and L.
    """

    def __init__(self, strength: float, head, tolerance: float = WARP_TOLERANCE):
        super().__init__(strength, tolerance)
        self.head = head

    def mix(
        self, own: torch.Tensor, warped: torch.Tensor, confidence: torch.Tensor, features: torch.Tensor | None
    ) -> torch.Tensor:
        from colorvid.models.effnet_unet import follow_previous

        assert features is not None, "ModelSmoother is called with the decoder's features"
        gate = self.head(features.to(own.dtype), own, warped, confidence)
        return follow_previous(gate, own, warped, confidence, self.strength)
