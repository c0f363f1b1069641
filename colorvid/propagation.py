"""Carrying a colorist's keyframe colors through its shot.

A keyframe is a color image of one frame of the film (painted by hand, or
colorized by a slow, strong model). Its ab replaces the automatic colors at
that frame and is then moved along the optical flow, frame after frame, until
the shot ends (a scene cut) or another keyframe takes over. Each pixel carries
a trust in 0..1 with its color:

- at the keyframe, how well the keyframe's lightness maps onto the frame's
  (flow from the keyframe to the frame, then the same warp check the motion
  smoother uses, with a wider tolerance since painting changes lightness a
  little): a keyframe of another shot, or of another framing, gets little
  trust, and the automatic colors stay;
- at each later frame, the trust is carried along with the color and lowered
  where the warp from the previous frame does not hold (occlusions, new
  objects, failed flow): those pixels take the automatic colors from then on.

The output is ``automatic + trust * (carried - automatic)``. Everything works at
the model's output resolution (about 64 x 112), as the smoothers do.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from colorvid.color import luma_to_lightness, rgb_to_lab
from colorvid.flow import estimate_flow, inside, warp
from colorvid.smoothing import WARP_TOLERANCE, warp_confidence

# How far (L units, after removing the mean difference) the keyframe's lightness may be from the
# frame's where its colors are trusted: painting a frame shifts its lightness a little.
KEY_TOLERANCE = 8.0
# How well a keyframe's pixels match the frame on average (0..1): at KEY_MATCH and above it is a
# picture of this frame; at KEY_CHANCE and below, of something else (two unrelated pictures of
# similar texture match that well by chance), and none of its colors are taken; between, its
# trust is scaled down in proportion.
KEY_MATCH = 0.7
KEY_CHANCE = 0.3
# A warp confidence (smoothing.warp_confidence, 0..1) at or above this keeps a carried color's trust
# for that frame step; below it the trust falls in proportion. A well-tracked pixel has about 0.8
# per step (sensor noise and grain), which must not wear the keyframe's colors away within a shot.
STEP_CONFIDENCE = 0.5
_BT601_LUMA = (0.299, 0.587, 0.114)  # gray of the keyframe, as the frame's luma is made
# The keyframe's colors by place and lightness (a bilateral grid), for what the flow loses: cells of
# GRID_CELL pixels of the model's output and GRID_BINS lightness bins; a pixel the carried colors no
# longer cover takes the colors the keyframe has near it at its lightness.
GRID_CELL = 8
GRID_BINS = 12
# The grid's colors are used while at least this share of the keyframe's trust is still carried
# (fully), less below (in proportion): the picture has become another one.
SCENE_KEPT = 0.5
def keyframe_lab(rgb: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A keyframe image (3, H, W) RGB in 0..1 -> (ab (1, 2, h, w), lightness (1, 1, h, w)) at ``size``.

    The lightness is made from the image's luma (R'G'B' weighted as BT.601), as
    the frames' is from their Y plane, so that the two compare like with like.
    """
    small = F.interpolate(rgb.float().unsqueeze(0), size=size, mode="bilinear", antialias=True, align_corners=False)
    small = small.clamp(0, 1)
    ab = rgb_to_lab(small)[:, 1:]
    weights = torch.tensor(_BT601_LUMA, device=small.device).view(1, 3, 1, 1)
    luma = (small * weights).sum(1, keepdim=True)
    return ab, luma_to_lightness(luma * 255.0, 8, True)


class ColorGrid:
    """A keyframe's mean ab per (lightness bin, grid cell), blurred over neighboring cells and bins."""

    def __init__(self, ab: torch.Tensor, lightness: torch.Tensor, weight: torch.Tensor | None = None):
        """ab (1, 2, h, w), L (1, 1, h, w) of the keyframe; ``weight`` (1, 1, h, w): how much each pixel counts."""
        h, w = lightness.shape[-2:]
        self.mean_lightness = lightness.mean()
        self.cells = (max(1, -(-h // GRID_CELL)), max(1, -(-w // GRID_CELL)))
        bins = _bins(lightness)
        weight = torch.ones_like(lightness) if weight is None else weight
        kernel = torch.ones(1, 1, 3, 3, 3, device=ab.device) / 27.0

        def blurred(values: torch.Tensor) -> torch.Tensor:  # (C, bins, ch, cw), blurred over cells and bins
            return F.conv3d(self._splat(values, bins).unsqueeze(1), kernel, padding=1).squeeze(1)

        count = blurred(torch.ones_like(lightness))  # (1, bins, ch, cw): the share of pixels in each bin and cell
        mass = blurred(weight)
        self.mean = blurred(ab * weight) / mass.clamp(min=1e-6)  # (2, bins, ch, cw)
        # how much to believe a cell's colors: the trust of the keyframe pixels behind them, and
        # whether there are enough of them
        self.mass = mass / count.clamp(min=1e-6) * (count * GRID_BINS * 4.0).clamp(max=1.0)

    def _splat(self, values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """Sum of values (1, C, h, w) per (bin, cell) -> (C, GRID_BINS, ch, cw)."""
        pooled = []
        for b in range(GRID_BINS):
            inside_bin = (bins == b).to(values.dtype)
            pooled.append(F.adaptive_avg_pool2d(values * inside_bin, self.cells))
        return torch.stack(pooled, dim=2)[0]

    def colors(self, lightness: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ab (1, 2, h, w), confidence (1, 1, h, w) in 0..1) for a frame's L at the keyframe's size.

        ``shift`` (2,) is where the picture was in the keyframe, relative to now (x, y in
        pixels: the camera's motion since), so a pan does not leave the keyframe's colors
        behind. The frame's lightness is shifted by its mean difference from the keyframe's,
        so that old film's flicker (the whole picture lighter or darker) does not change the bins.
        """
        bins = _bins(lightness - (lightness.mean() - self.mean_lightness))[0, 0]  # (h, w)
        h, w = bins.shape
        mean = F.interpolate(self.mean, size=(h, w), mode="bilinear", align_corners=False)  # (2, bins, h, w)
        mass = F.interpolate(self.mass, size=(h, w), mode="bilinear", align_corners=False)  # (1, bins, h, w)
        motion = shift.view(1, 2, 1, 1).expand(1, 2, h, w)
        mean = warp(mean, motion.expand(2, 2, h, w))
        mass = warp(mass, motion)[0] * inside(motion)[0]  # (bins, h, w): nothing known from outside the keyframe
        index = bins.unsqueeze(0)
        ab = torch.stack([mean[c].gather(0, index)[0] for c in range(2)]).unsqueeze(0)
        confidence = mass.gather(0, index).clamp(0.0, 1.0).unsqueeze(0)
        return ab, confidence


def _bins(lightness: torch.Tensor) -> torch.Tensor:
    return (lightness / 100.0 * GRID_BINS).long().clamp_(0, GRID_BINS - 1)


class KeyframeGuide:
    """Keyframe colors carried through their shots, for one video's frames in presentation order."""

    def __init__(self, key_tolerance: float = KEY_TOLERANCE, step_tolerance: float = WARP_TOLERANCE):
        self.key_tolerance = key_tolerance
        self.step_tolerance = step_tolerance
        self._carried: torch.Tensor | None = None  # (1, 2, h, w) ab
        self._trust: torch.Tensor | None = None  # (1, 1, h, w)
        self._previous: torch.Tensor | None = None  # the last frame's L (1, 1, h, w)
        self._grid: ColorGrid | None = None  # the keyframe's colors by place and lightness
        self._shift = torch.zeros(2)  # the camera's motion since the keyframe (x, y pixels)
        self._key_trust = torch.tensor(1.0)  # the mean trust at the keyframe

    def _start_grid(self, ab: torch.Tensor, lightness: torch.Tensor, trust: torch.Tensor) -> None:
        self._grid = ColorGrid(ab, lightness, trust)
        self._key_trust = trust.mean().clamp(min=1e-3)
        self._shift = torch.zeros(2, device=ab.device)

    def __call__(
        self,
        ab: torch.Tensor,
        lightness: torch.Tensor,
        cuts: torch.Tensor,
        keys: Mapping[int, torch.Tensor],
        model_keys: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """A batch's automatic ab (B, 2, h, w) and L (B, 1, h, w), its cut flags (B,) and its keyframes
        (batch index -> RGB (3, H, W) in 0..1) -> the guided ab.

        ``model_keys`` (batch index -> ab (1, 2, h, w)) are keyframe colors another model
        predicted for that very frame: fully trusted there, carried as a keyframe's.
        """
        model_keys = model_keys or {}
        previous = self._previous
        self._previous = lightness[-1:].clone()
        if previous is not None and previous.shape[1:] != lightness.shape[1:]:
            previous, self._carried, self._trust = None, None, None
        if self._carried is None and not keys and not model_keys:
            return ab
        prev_l = torch.cat((lightness[:1] if previous is None else previous, lightness[:-1]))
        flow = estimate_flow(prev_l, lightness)
        step = (warp_confidence(prev_l, lightness, flow, self.step_tolerance) / STEP_CONFIDENCE).clamp_(max=1.0)
        out = ab.clone()
        for i in range(ab.shape[0]):
            frame_l = lightness[i : i + 1]
            if i in keys:  # a colorist's keyframe comes first
                key_ab, key_l = keyframe_lab(keys[i].to(ab.device), (frame_l.shape[-2], frame_l.shape[-1]))
                # A keyframe is a picture of this very frame: compared in place, not searched for
                # with the flow, which would also find a fit for a picture of something else.
                self._carried = key_ab
                match = warp_confidence(key_l, frame_l, torch.zeros_like(flow[:1]), self.key_tolerance)
                self._trust = match * ((match.mean() - KEY_CHANCE) / (KEY_MATCH - KEY_CHANCE)).clamp(0.0, 1.0)
                self._start_grid(key_ab, frame_l, self._trust)
            elif i in model_keys:
                self._carried = model_keys[i].to(ab.device, ab.dtype)
                self._trust = torch.ones_like(frame_l, dtype=ab.dtype)
                self._start_grid(self._carried, frame_l, self._trust)
            elif bool(cuts[i]) or self._carried is None or self._trust is None:
                self._carried = self._trust = self._grid = None
                continue
            else:
                motion = flow[i : i + 1]
                self._carried = warp(self._carried, motion)
                self._trust = warp(self._trust, motion) * step[i : i + 1]
                self._shift = self._shift + motion.flatten(2).median(dim=2).values[0]
            guided = torch.lerp(ab[i : i + 1], self._carried, self._trust)
            if self._grid is not None:  # where the carried colors are lost, the keyframe's at that place and L
                fill, found = self._grid.colors(frame_l, self._shift)
                # ... while the shot still holds the keyframe's scene: when most of the carried
                # trust is gone at once (a cut the detector missed, a dissolve), so is the grid's
                still_there = (self._trust.mean() / self._key_trust / SCENE_KEPT).clamp(max=1.0)
                guided = guided + (1 - self._trust) * (found * still_there) * (fill - ab[i : i + 1])
            out[i] = guided[0]
        return out
